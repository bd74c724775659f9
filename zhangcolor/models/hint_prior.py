"""The points' own vote on each pixel's colour, for a guided classification network.

A user's points say the colour of a few pixels. Spread to every pixel from the nearest point
(:func:`nearest_fill`), they make a distribution of their own over the bins: a Gaussian around
that point's ab. The network's distribution and this one are combined as a product of experts,

    log p(q | x) = logits(q | x) + c(x) · log N(q; fill(x), σ²)   (up to a constant),

where the confidence c of each pixel is learnt from the network's features and the distance to
the nearest point: high near a point and within its object, low across an edge or far away.
Without points, or where c = 0, the network decides alone; with c large, the pixel takes its
nearest point's colour. c starts at zero (and is free to learn any sign), so a guided network
starts out as the automatic one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zhangcolor.constants import AB_NORM, STRIDE

#: σ (ab units) of each point's vote: twice the soft-encoding's, so that neighbouring bins share.
VOTE_SIGMA = 10.0
#: The side (input pixels) of the cells the nearest point is looked for in: twice the output's
#: stride, 1,024 cells at the working size of 256.
CELL = 2 * STRIDE


def nearest_fill(hints: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Every cell of a ``size`` grid (the network's output) filled from its nearest point.

    The search runs on cells of :data:`CELL` input pixels (twice the output's stride), all
    cells against all, so its shapes never depend on how many points there are, and it exports
    to ONNX as it is; the result is then enlarged to ``size``.

    Args:
        hints: ``(B, 3, H, W)`` hint channels (a / 110, b / 110, mask); a cell is hinted when
            any of its pixels is, with their mean ab.
        size: the output grid ``(h, w)``.

    Returns:
        ``ab (B, 2, h, w)`` in ab units (0 where there is no point at all), ``distance (B, 1, h,
        w)`` to the nearest point in cells divided by the grid's longer side (1 where there is
        no point), and ``reached (B, 1, h, w)``, 1 where there is a point anywhere.
    """
    pooled = F.avg_pool2d(hints, CELL, ceil_mode=True)  # (B, 3, gh, gw)
    covered = pooled[:, 2:]  # the hinted share of each cell
    ab = pooled[:, :2] / covered.clamp_min(1e-6)  # the mean ab of its hinted pixels
    hinted = (covered > 0).flatten(1)  # (B, N)
    rows = torch.arange(pooled.shape[-2], device=hints.device).to(hints.dtype)
    cols = torch.arange(pooled.shape[-1], device=hints.device).to(hints.dtype)
    cells = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)  # (N, 2)
    squared = (cells[:, None] - cells[None]).square().sum(-1)  # (N, N)
    inf = torch.full_like(squared, float("inf"))
    candidates = torch.where(hinted[:, None, :], squared[None], inf[None])  # (B, N, N)
    nearest, index = candidates.min(-1)  # (B, N)
    values = ab.flatten(2).gather(2, index[:, None].expand(-1, 2, -1))  # (B, 2, N)
    reached = torch.isfinite(nearest)[:, None]  # (B, 1, N)
    longer = max(pooled.shape[-2], pooled.shape[-1])
    distance = nearest.clamp_max(float(longer) ** 2)[:, None].sqrt() / longer
    out = torch.cat(
        [
            torch.where(reached, values * AB_NORM, torch.zeros_like(values)),
            torch.where(reached, distance, torch.ones_like(distance)),
            reached.to(hints.dtype),
        ],
        1,
    )  # (B, 4, N)
    out = F.interpolate(out.unflatten(2, tuple(pooled.shape[-2:])), size=size, mode="nearest")
    return out[:, :2], out[:, 2:3], out[:, 3:]


class HintPrior(nn.Module):
    """Logit offsets ``(B, Q, h, w)`` from the points: c(x) · log N(q; fill(x), σ²).

    Args:
        centers: ``(Q, 2)`` the bin centres the logits index.
        features: channels of the network's features at the output's resolution, which the
            confidence reads beside the distance to the nearest point.
    """

    #: The confidence's output scale, so that Adam grows it from zero at the pace of the rest.
    GAIN = 10.0

    def __init__(self, centers: Tensor, features: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("centers", centers.float().clone(), persistent=False)
        self.confidence = nn.Sequential(
            nn.Conv2d(features + 2, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )
        nn.init.zeros_(self.confidence[-1].weight)
        nn.init.zeros_(self.confidence[-1].bias)

    def forward(self, hints: Tensor, features: Tensor) -> Tensor:
        size = (features.shape[-2], features.shape[-1])
        fill, distance, reached = nearest_fill(hints, size)
        confidence = self.confidence(torch.cat([features, distance, reached], 1))
        confidence = confidence * self.GAIN * reached  # (B, 1, h, w)
        centers = self.centers.to(fill.dtype)  # (Q, 2)
        squared = (fill[:, None] - centers[None, :, :, None, None]).square().sum(2)  # (B, Q, h, w)
        return -confidence * squared / (2 * VOTE_SIGMA**2)
