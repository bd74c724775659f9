"""Simulated users for training a guided network (Zhang et al., SIGGRAPH 2017, section 3.3, as
richzhang/colorization-pytorch draws them): each training crop gets a random number of colour
points, each a square patch whose hint is the true mean ab over the patch.

- **How many**: geometric, P(n) = (1 − p)ⁿ p with p = 1/8, so about one crop in eight gets none
  (and learns automatic colorization) and the mean is 7;
- **where**: a patch's top-left corner from a normal distribution centred on the crop with σ a
  quarter of its size (users click near the middle), or uniform, clipped to the crop;
- **how big**: a side drawn uniformly from 1 to 9 pixels at the training resolution.

The draws are made per sample on the CPU from the sample's own generator (seeded by run seed,
epoch and index, like its crop), so a resumed run gets the very same points; the patches are
averaged and painted per batch on the training device (:func:`paint_points`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.constants import AB_NORM
from zhangcolor.hints import CHANNELS
from zhangcolor.options import HintConfig

#: Values drawn per point: the patch's side in pixels (0 for no point), then two numbers that
#: place it (standard normal draws, or uniform in [0, 1)), rows then columns.
POINT_VALUES = 3


def draw_points(generator: torch.Generator, config: HintConfig) -> Tensor:
    """One sample's colour points, drawn from ``generator``.

    Returns:
        ``(config.max_points, 3)`` float64: per point its side (0 beyond the drawn count) and
        its two placement draws; :func:`paint_points` turns them into pixels.
    """
    points = torch.zeros(config.max_points, POINT_VALUES, dtype=torch.float64)
    count = 0
    while count < config.max_points and _uniform(generator) >= config.stop_probability:
        side = int(torch.randint(config.min_side, config.max_side + 1, (1,), generator=generator))
        if config.location == "normal":
            place = torch.randn(2, generator=generator, dtype=torch.float64)
        else:
            place = torch.rand(2, generator=generator, dtype=torch.float64)
        points[count] = torch.tensor([side, *place.tolist()], dtype=torch.float64)
        count += 1
    return points


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def corners(points: Tensor, height: int, width: int, location: str) -> Tensor:
    """Each point's patch as ``(top, left)`` ints ``(B, N, 2)``, from :func:`draw_points`'s
    values ``(B, N, 3)`` for a ``height × width`` crop: a normal draw z places the corner at
    (n − P + 1)/2 + z (n − P + 1)/4, a uniform one u at u (n − P + 1), both floored and clipped
    to [0, n − P] (n the side of the crop along that axis, P the patch's)."""
    side = points[..., 0]
    spans = [height - side + 1, width - side + 1]  # (B, N) each
    placed = []
    for axis, span in enumerate(spans):
        draw = points[..., 1 + axis]
        position = span / 2 + draw * span / 4 if location == "normal" else draw * span
        placed.append(torch.minimum(position.floor().clamp_min(0), span - 1))
    return torch.stack(placed, -1).long()


def paint_points(ab: Tensor, mask: Tensor, points: Tensor, location: str) -> Tensor:
    """A batch's hint channels from its truth and each sample's drawn points.

    Each point's hint is the mean true ab over its patch's valid pixels (a patch with none is
    left out); points are painted in order, so a later one covers an earlier one where they
    overlap, identically on every device.

    Args:
        ab: ``(B, 2, H, W)`` true ab.
        mask: ``(B, H, W)`` True where a pixel counts (opaque).
        points: ``(B, N, 3)`` from :func:`draw_points`, on any device.
        location: ``normal`` or ``uniform``: how the points were drawn.

    Returns:
        ``(B, 3, H, W)``: hinted a / 110 and b / 110 (0 elsewhere), and the mask, 1 where hinted.
    """
    b, _, h, w = ab.shape
    points = points.to(ab.device)
    side = points[..., 0].long()  # (B, N)
    top_left = corners(points, h, w, location)  # (B, N, 2)
    valid = mask.to(ab.dtype)[:, None]  # (B, 1, H, W)
    sums = _summed_area(torch.cat([ab * valid, valid], 1))  # (B, 3, H + 1, W + 1)
    top, left = top_left[..., 0], top_left[..., 1]
    bottom, right = top + side, left + side
    totals = _box_sums(sums, top, left, bottom, right)  # (B, 3, N)
    counts = totals[:, 2]  # (B, N) valid pixels in each patch
    means = totals[:, :2] / counts.clamp_min(1)[:, None]  # (B, 2, N)
    used = (side > 0) & (counts > 0)  # (B, N)
    rows = torch.arange(h, device=ab.device).view(1, h, 1)
    cols = torch.arange(w, device=ab.device).view(1, 1, w)
    hints = ab.new_zeros(b, CHANNELS, h, w)
    for n in range(points.shape[1]):
        if not bool(used[:, n].any()):
            continue
        inside = (
            (rows >= top[:, n].view(b, 1, 1))
            & (rows < bottom[:, n].view(b, 1, 1))
            & (cols >= left[:, n].view(b, 1, 1))
            & (cols < right[:, n].view(b, 1, 1))
            & used[:, n].view(b, 1, 1)
        )[:, None]  # (B, 1, H, W)
        value = torch.cat([means[:, :, n] / AB_NORM, torch.ones_like(means[:, :1, n])], 1)
        hints = torch.where(inside, value.to(hints.dtype).view(b, CHANNELS, 1, 1), hints)
    return hints


def _summed_area(x: Tensor) -> Tensor:
    """``(B, C, H + 1, W + 1)`` float64 sums of ``x (B, C, H, W)`` over [0, y) × [0, x)."""
    return F.pad(x.double().cumsum(2).cumsum(3), (1, 0, 1, 0))


def _box_sums(sums: Tensor, top: Tensor, left: Tensor, bottom: Tensor, right: Tensor) -> Tensor:
    """``(B, C, N)`` float64 sums over the boxes [top, bottom) × [left, right) ``(B, N)``."""
    b, c, _, w1 = sums.shape
    flat = sums.flatten(2)  # (B, C, (H + 1)(W + 1))

    def at(y: Tensor, x: Tensor) -> Tensor:
        index = (y * w1 + x)[:, None].expand(b, c, -1)  # (B, C, N)
        return flat.gather(2, index)

    return at(bottom, right) - at(top, right) - at(bottom, left) + at(top, left)


def expected_count(stop_probability: float) -> float:
    """The mean number of points a sample gets: (1 − p) / p, 7 for the paper's p = 1/8."""
    return (1 - stop_probability) / stop_probability if stop_probability > 0 else math.inf
