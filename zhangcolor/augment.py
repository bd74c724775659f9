"""Training augmentation, drawn per sample and applied per batch on the training device.

Each sample's augmentation is a handful of numbers drawn on the CPU from a generator seeded by
(run seed, epoch, index), so a resumed run sees the very same crops. The pixels move once, per
batch, on the device: the crop, the flip and the rotation compose into one affine map per sample,
and one ``grid_sample`` applies them all, sampling at twice the crop's resolution and averaging
down (so a crop shrunk up to 2× is antialiased, as torchvision's resized crop is).

- crop: a random resized crop (torchvision's ``RandomResizedCrop``: area share in ``scale``,
  aspect ratio in [3/4, 4/3], ten tries, then the centre);
- flip: horizontal, p = ½;
- rotation: up to ±15° with p = 0.3, about the crop's centre. Pixels it brings in from outside
  the photo are transparent and carry no weight; from outside the crop but inside the photo,
  they are real pixels.
- lightness (color-neutral): contrast, brightness and gamma of L, and film-like grain, with the
  target ab unchanged, for the network's input only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.constants import L_MAX

#: Parameters per sample: crop box (x0, y0, width, height) in pixels, flip (0/1), angle (rad).
PARAMS = 6
_RATIO = (3 / 4, 4 / 3)
_ROTATION = (math.radians(15.0), 0.3)  # largest angle, probability


def random_crop_params(
    generator: torch.Generator, height: int, width: int, scale: tuple[float, float]
) -> Tensor:
    """Draw one sample's augmentation for a ``height × width`` photo: ``(PARAMS,)`` float64."""
    area = height * width
    box = None
    for _ in range(10):
        target = area * _uniform(generator, *scale)
        ratio = math.exp(_uniform(generator, math.log(_RATIO[0]), math.log(_RATIO[1])))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            box = (x0, y0, w, h)
            break
    if box is None:
        box = centre_box(height, width)
    flip = float(_uniform(generator, 0, 1) < 0.5)
    angle = 0.0
    if _uniform(generator, 0, 1) < _ROTATION[1]:
        angle = _uniform(generator, -_ROTATION[0], _ROTATION[0])
    return torch.tensor([*box, flip, angle], dtype=torch.float64)


def centre_params(height: int, width: int) -> Tensor:
    """The validation view: the centred square of the short side, no flip, no rotation."""
    return torch.tensor([*centre_box(height, width), 0.0, 0.0], dtype=torch.float64)


def centre_box(height: int, width: int) -> tuple[int, int, int, int]:
    side = min(height, width)
    return ((width - side) // 2, (height - side) // 2, side, side)


def needed_region(params: Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """The part of a ``height × width`` photo that a sample's crop, flip and rotation read:
    ``(top, left, bottom, right)``, the crop box grown to hold its rotation (and a pixel for
    the bilinear kernel), within the photo. Cutting it out first makes batches small."""
    x0, y0, w, h, _, angle = params.tolist()
    grow = abs(math.cos(angle)) + abs(math.sin(angle))
    cx, cy = x0 + w / 2, y0 + h / 2
    half_w, half_h = w / 2 * grow + 1, h / 2 * grow + 1
    top, left = max(0, math.floor(cy - half_h)), max(0, math.floor(cx - half_w))
    return top, left, min(height, math.ceil(cy + half_h)), min(width, math.ceil(cx + half_w))


def shifted(params: Tensor, top: int, left: int) -> Tensor:
    """``params`` for the photo cut at ``(top, left)``."""
    moved = params.clone()
    moved[0] -= left
    moved[1] -= top
    return moved


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def affine(params: Tensor, height: int, width: int) -> Tensor:
    """``theta (B, 2, 3)`` for ``F.affine_grid`` (``align_corners=False``): from the output
    crop's normalised coordinates to the ``height × width`` (padded) batch's, per sample.

    An output point p is rotated back by the angle, flipped, and placed in its crop box:
    out = rotate(flip(crop(photo))), as torchvision's transforms compose.
    """
    x0, y0, w, h, flip, angle = params.double().unbind(1)  # (B,) each
    cos, sin = torch.cos(angle), torch.sin(angle)
    sign = 1.0 - 2.0 * flip  # -1 flips horizontally
    # (u, v) in [-1, 1]² of the output -> R(-angle) -> flip u -> box pixels -> batch [-1, 1]².
    sx, sy = w / width, h / height  # half the box's size, in the batch's normalised units
    cx, cy = (2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1  # the box's centre
    theta = torch.stack(
        [
            torch.stack([sign * sx * cos, sign * sx * sin, cx], 1),
            torch.stack([-sy * sin, sy * cos, cy], 1),
        ],
        1,
    )  # (B, 2, 3)
    return theta.float()


def crop_flip_rotate(rgba: Tensor, params: Tensor, crop: int, supersample: int = 2) -> Tensor:
    """Apply each sample's crop, flip and rotation to a padded uint8 batch, on its device.

    Args:
        rgba: ``(B, 4, H, W)`` uint8 RGBA, each photo at the top left, zeros (transparent)
            beyond it.
        params: ``(B, PARAMS)`` from :func:`random_crop_params` or :func:`centre_params`.
        crop: side of the output.
        supersample: sample at this multiple of ``crop``, then average down (antialiasing).

    Returns:
        ``(B, 4, crop, crop)`` float RGBA in [0, 1].
    """
    b, _, height, width = rgba.shape
    theta = affine(params, height, width).to(rgba.device)
    side = crop * supersample
    grid = F.affine_grid(theta, [b, 4, side, side], align_corners=False)
    out = F.grid_sample(
        rgba.float() * (1.0 / 255.0), grid, mode="bilinear", align_corners=False
    )  # (B, 4, side, side); beyond the photo: 0, transparent
    return F.avg_pool2d(out, supersample) if supersample > 1 else out


def jitter_lightness(lightness: Tensor, generator: torch.Generator, strength: float) -> Tensor:
    """Color-neutral augmentation of the network's input L ``(B, 1, H, W)`` in [0, L_MAX]:
    per sample a gamma in [1/(1+s), 1+s], a contrast about the mean and a brightness shift of
    up to ±s·25 %, and grain of up to s·3 L units. ``strength`` s = 0 is the identity."""
    if strength <= 0:
        return lightness
    b, device = lightness.shape[0], generator.device

    def draw(low: float, high: float) -> Tensor:
        values = torch.rand(b, 1, 1, 1, generator=generator, device=device)
        return (low + (high - low) * values).to(lightness)

    x = lightness / L_MAX
    x = x.clamp_min(0).pow(draw(1 / (1 + strength), 1 + strength))
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * draw(1 - strength / 4, 1 + strength / 4) + mean
    x = x + draw(-strength / 4, strength / 4)
    noise = torch.randn(lightness.shape, generator=generator, device=device).to(lightness)
    x = x + noise * draw(0, strength * 3 / L_MAX)
    return (x * L_MAX).clamp(0, L_MAX)
