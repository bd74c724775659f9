"""The points' own vote on each pixel's colour, for a guided classification network.

A user's points say the colour of a few pixels. Spread to every pixel along geodesic paths
(:func:`geodesic_fill`: paths that pay for every change of lightness they cross, so a point's
colour stays within its region, each pixel taking the points' colours weighted by the inverse
cube of their distances), they make a distribution of their own over the bins: a Gaussian
around that blend of the points' ab. The network's distribution and this one are combined as a
product of experts,

    log p(q | x) = logits(q | x) + c(x) · log N(q; fill(x), σ²)   (up to a constant),

where the confidence c of each pixel is learnt from the network's features and the geodesic
distance to its nearest point: high near a point and within its object, low across an edge or
far away. Without points, or where c = 0, the network decides alone; with c large, the pixel
takes the points' colour. c starts at zero (and is free to learn any sign), so a guided network
starts out as the automatic one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zhangcolor.constants import AB_NORM, L_MAX, STRIDE

#: σ (ab units) of each point's vote: twice the soft-encoding's, so that neighbouring bins share.
VOTE_SIGMA = 10.0
#: What a step of the geodesic search costs per unit of lightness change (L / 100) it crosses,
#: beside its length: at 1000, an edge of 10 L units is as far as 100 cells of flat colour.
#: On 40 validation photos with 10 true-colour points, every pixel taking the colour of its
#: geodesically nearest point (no network) scores 1.1 dB PSNR above the plain nearest point's
#: at 1000 (+0.8 at 100, +0.4 at 10, and no more at 3000).
EDGE_COST = 1000.0
#: The power of the inverse distances that weight the points' colours at a cell. On 80
#: validation photos with 10 true-colour points, the shipped model (point strength 6) scores
#: 27.13 dB PSNR at 3 (27.06 at 2, 27.09 at 4), where the nearest point's colour alone scored
#: 26.39–26.46 at point strengths 3–10.
POWER = 3.0
#: Added to every distance (in cells) before it is inverted, so that a point's own cells (at 0)
#: take its colour: a tiny fraction of a cell.
_OFFSET = 1e-3
#: The most rounds of sweeps (:func:`_swept`). Paths through texture turn often, so running
#: to convergence takes tens of rounds; on 80 validation photos with 10 true-colour points, 16
#: rounds score 27.12 dB against 27.13 run to convergence, in a third of the time.
SWEEPS = 16
#: The most numbers (sources × cells) the sweeps take on at once (:func:`_shortest`).
_CHUNK = 16384
#: The eight neighbours of a cell, as (dy, dx).
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
#: The distance of a cell no point reaches: the search's infinity (within float32's range).
_FAR = 1e30


def _from(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``x (B, C, h, w)`` moved so that each cell holds its (dy, dx) neighbour's value
    (``fill`` beyond the edge)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _step_costs(light: Tensor, neighbours: list[tuple[int, int]]) -> list[Tensor]:
    """The cost of the step from each of ``neighbours`` (dy, dx) to every cell of a grid of
    lightness ``light (N, 1, h, w)``: its length × (1 + :data:`EDGE_COST` · |ΔL|), each
    ``(N, 1, h, w)``."""
    return [
        math.hypot(dy, dx) * (1 + EDGE_COST * (light - _from(light, dy, dx, 0.0)).abs())
        for dy, dx in neighbours
    ]


def _step(distance: Tensor, neighbours: list[tuple[int, int]], costs: list[Tensor]) -> Tensor:
    """``distance`` shortened by one step from each of ``neighbours`` in turn, at ``costs``."""
    for (dy, dx), cost in zip(neighbours, costs, strict=True):
        distance = torch.minimum(distance, _from(distance, dy, dx, _FAR) + cost)
    return distance


def _relaxed(distance: Tensor, light: Tensor) -> Tensor:
    """:func:`_shortest` by Bellman-Ford: each round a step further, 2 × the grid's longer side
    rounds (a path of more steps, around many edges, is approximated by a longer one). The form
    an ONNX trace unrolls."""
    costs = _step_costs(light, _NEIGHBOURS)
    for _ in range(2 * max(distance.shape[-2:])):
        distance = _step(distance, _NEIGHBOURS, costs)
    return distance


def _swept(distance: Tensor, light: Tensor) -> Tensor:
    """:func:`_shortest` by sweeps, in float64: each round relaxes whole rows and columns in
    both directions at once, as a running minimum (the cost from column j to column x being
    C(x) − C(j) for the running sum C of the steps' costs along the row), then the four diagonal
    steps. A round carries a path through all its straight runs, so it takes as many rounds as
    the path turns rather than steps; at most :data:`SWEEPS`, ending early once nothing
    changes."""
    distance, light = distance.double(), light.double()
    across = F.pad((1 + EDGE_COST * light.diff(dim=-1).abs()).cumsum(-1), (1, 0))  # (N,1,h,w)
    down = F.pad((1 + EDGE_COST * light.diff(dim=-2).abs()).cumsum(-2), (0, 0, 1, 0))
    diagonals = [(dy, dx) for dy, dx in _NEIGHBOURS if dy and dx]
    costs = _step_costs(light, diagonals)
    for _ in range(SWEEPS):
        before = distance
        for dim, run in ((-1, across), (-2, down)):
            forward = run + (distance - run).cummin(dim).values
            backward = (distance + run).flip(dim).cummin(dim).values.flip(dim) - run
            distance = torch.minimum(distance, torch.minimum(forward, backward))
        distance = _step(distance, diagonals, costs)
        if torch.equal(before, distance):
            break
    return distance.float()


def _shortest(distance: Tensor, light: Tensor) -> Tensor:
    """Shortest-path costs ``distance (N, 1, h, w)`` from its sources (0 there, :data:`_FAR`
    elsewhere) on a grid of cells of lightness ``light (N, 1, h, w)`` (L / 100), a step to one
    of the eight neighbours costing its length (1 or √2) × (1 + :data:`EDGE_COST` · |ΔL|).
    Sweeps (:func:`_swept`) in eager mode; Bellman-Ford (:func:`_relaxed`), of fixed shapes,
    in an ONNX trace. Both find the shortest paths, or longer ones where a path needs more
    rounds than they run (:data:`SWEEPS`; 2 × the grid's longer side), so on textured photos
    the two can differ a little."""
    if torch.jit.is_tracing():
        return _relaxed(distance, light)
    # A few sources at a time: torch splits an op of more numbers than that over threads, and
    # the search's many small ops cost more in waking them than they gain (10 points at 256 px:
    # 27 ms, against 46 ms in one piece on 2 cores; 1,000 points: 2 s against 6 s).
    at_once = max(1, _CHUNK // math.prod(distance.shape[1:]))
    parts = [
        _swept(distance[i : i + at_once], light[i : i + at_once])
        for i in range(0, distance.shape[0], at_once)
    ]
    return torch.cat(parts) if parts else distance


def geodesic_fill(
    hints: Tensor, lightness: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Every cell of a ``size`` grid (the network's output) filled from the points, weighted by
    their geodesic distances.

    On cells of :data:`~zhangcolor.constants.STRIDE` input pixels (the mean L of each), a step
    to one of the eight neighbours costs its length (1 or √2) times 1 + :data:`EDGE_COST` ·
    |ΔL| / 100. Each point (the hinted cells of one colour in one image) has its own shortest
    paths (:func:`_shortest`), and a cell takes the mean of the points' colours weighted by the
    inverse of their distances to the power :data:`POWER` (Shepard's interpolation, geodesic):
    its nearest point's colour where the others lie across edges, a blend where several are
    about as near, and a point's own colour on its cells. It exports to ONNX as it is, the
    number of points a dynamic dimension. The time grows with the number of points (about 25
    ms for 10 points at 64 × 64 cells on a 2-core CPU, 2 s for 1,000). Runs in float32 (the
    paths in float64) whatever the input's dtype and under autocast.

    Args:
        hints: ``(B, 3, H, W)`` hint channels (a / 110, b / 110, mask); a cell is hinted when
            any of its pixels is, with their mean ab.
        lightness: ``(B, 1, H, W)`` L in [0, 100].
        size: the output grid ``(h, w)``.

    Returns:
        ``ab (B, 2, h, w)`` in ab units (0 where there is no point at all), ``distance (B, 1, h,
        w)``: the path's cost to the nearest point in cells divided by the grid's longer side,
        at most 1 (1 where there is no point), and ``reached (B, 1, h, w)``, 1 where there is a
        point anywhere.
    """
    pooled = F.avg_pool2d(hints.float(), STRIDE, ceil_mode=True)  # (B, 3, gh, gw)
    light = F.avg_pool2d(lightness.float() / L_MAX, STRIDE, ceil_mode=True)  # (B, 1, gh, gw)
    if tuple(pooled.shape[-2:]) != tuple(size):
        pooled = F.interpolate(pooled, size=size, mode="nearest")
        light = F.interpolate(light, size=size, mode="nearest")
    batch, h, w = pooled.shape[0], size[0], size[1]
    longer = max(size)
    covered = pooled[:, 2:] > 0  # (B, 1, h, w)
    ab = torch.where(covered, pooled[:, :2] / pooled[:, 2:].clamp_min(1e-6), 0.0)
    # The points: the distinct (image, a, b) of the hinted cells, S of them in the batch.
    image = torch.arange(batch, device=ab.device)[:, None, None].expand(batch, h, w)
    # A point's cells hold its colour up to the rounding of the pooling; in hundredths of an ab
    # unit they hold the same.
    key = torch.round(ab * (AB_NORM * 100))  # (B, 2, h, w)
    cells = torch.stack([image.float(), key[:, 0], key[:, 1]], -1).reshape(-1, 3)  # (B·h·w, 3)
    hinted = covered.reshape(-1)
    points, which = torch.unique(cells[hinted], dim=0, return_inverse=True)  # (S, 3), (n,)
    owner = points[:, 0].long()  # (S,) each point's image
    place = torch.full((batch * h * w,), -1, dtype=torch.long, device=ab.device)
    place[hinted] = which
    place = place.reshape(batch, h, w)[owner]  # (S, h, w) the point of each cell of its image
    index = torch.arange(points.shape[0], device=ab.device)[:, None, None]
    sources = (place == index)[:, None]  # (S, 1, h, w)
    distance = _shortest(torch.where(sources, 0.0, _FAR), light[owner])  # (S, 1, h, w)
    nearest = _shortest(torch.where(covered, 0.0, _FAR), light)  # (B, 1, h, w) from any point
    belongs = owner[None] == torch.arange(batch, device=ab.device)[:, None]  # (B, S)
    # Relative to the nearest, so that the weights lie in [0, 1] (the nearest's is 1).
    weight = ((nearest[owner] + _OFFSET) / (distance + _OFFSET)).pow(POWER)[:, 0]  # (S, h, w)
    colours = points[:, 1:] / (AB_NORM * 100)  # (S, 2) as the hint channels hold them
    with torch.autocast(ab.device.type, enabled=False):  # float32 sums, not autocast's bf16
        total = torch.einsum("bs,shw->bhw", belongs.float(), weight)[:, None]  # (B, 1, h, w)
        blend = torch.einsum("bs,shw,sc->bchw", belongs.float(), weight, colours)  # (B, 2, h, w)
    reached = covered.flatten(1).any(1)[:, None, None, None].expand_as(nearest)
    blend = torch.where(reached, blend / total.clamp_min(1e-12), 0.0)
    distance = torch.where(reached, (nearest / longer).clamp_max(1.0), 1.0)
    return blend * AB_NORM, distance, reached.float()


class HintPrior(nn.Module):
    """Logit offsets ``(B, Q, h, w)`` from the points: c(x) · log N(q; fill(x), σ²).

    Args:
        centers: ``(Q, 2)`` the bin centres the logits index.
        features: channels of the network's features at the output's resolution, which the
            confidence reads beside the geodesic distance to the point.
    """

    #: The confidence's output scale, so that Adam grows it from zero at the pace of the rest.
    GAIN = 30.0

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

    def forward(self, hints: Tensor, lightness: Tensor, features: Tensor) -> Tensor:
        """``hints (B, 3, H, W)``, ``lightness (B, 1, H, W)`` and the network's ``features (B,
        C, h, w)`` -> logit offsets ``(B, Q, h, w)``, float32."""
        size = (features.shape[-2], features.shape[-1])
        fill, distance, reached = geodesic_fill(hints, lightness, size)  # float32
        inputs = torch.cat([features, distance.to(features.dtype), reached.to(features.dtype)], 1)
        # The vote in float32 whatever the network's dtype: its offsets reach hundreds of logits,
        # which bf16 would round to a quarter of a logit and fp16 could overflow.
        confidence = self.confidence(inputs).float() * self.GAIN * reached  # (B, 1, h, w)
        squared = (fill[:, None] - self.centers.float()[None, :, :, None, None]).square().sum(2)
        return -confidence * (squared / (2 * VOTE_SIGMA**2))  # (B, Q, h, w)
