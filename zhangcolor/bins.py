"""The quantised ab space: the paper's 313 in-gamut bin centres (grid 10), and nearest-bin search.

Nearest-bin search is exact and all in torch. Points are first sorted into square cells; for each
cell a table lists every centre that can be among the k nearest of *any* point in it (a centre is a
candidate when its nearest distance to the cell is within the k-th smallest farthest distance).
Each point then compares itself with a handful of candidates instead of all 313 centres.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zhangcolor.constants import GRID, Q

#: Half-width (ab units) of the square covered by the candidate tables; points outside it,
#: which no real colour reaches, fall back to a brute-force search.
_TABLE_RADIUS = 160.0
#: Side (ab units) of a cell of the candidate tables.
_CELL = 5.0


@functools.lru_cache(maxsize=1)
def _ab_bins_array() -> np.ndarray:
    text = resources.files("zhangcolor.default_bins").joinpath("zhang2016_ab_bins.txt")
    centers = np.loadtxt(text.open("r"), dtype=np.float64, comments="#")
    if centers.shape != (Q, 2):
        raise RuntimeError(f"the shipped bin list has shape {centers.shape}, expected ({Q}, 2)")
    return centers


def ab_bins(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The paper's 313 ab bin centres, in the authors' order (``pts_in_hull.npy``).

    Returns:
        ``(313, 2)`` tensor of (a, b) centres on a grid of 10.
    """
    return torch.tensor(_ab_bins_array(), dtype=dtype, device=device)


def grid_index(centers: Tensor, grid: float = GRID) -> tuple[Tensor, Tensor, int]:
    """Place grid-aligned centres on a square 2-D grid.

    Args:
        centers: ``(Q, 2)`` ab centres, multiples of ``grid``.

    Returns:
        ``rows (Q,)`` (from a) and ``cols (Q,)`` (from b) long indices into an ``(n, n)`` grid
        centred on ab = 0, and ``n``.
    """
    steps = torch.round(centers / grid).long()
    half = int(steps.abs().max())
    return steps[:, 0] + half, steps[:, 1] + half, 2 * half + 1


@functools.lru_cache(maxsize=8)
def _candidate_table(centers_key: bytes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, the centres that can be among the k nearest of a point in it.

    Returns ``(cells, M)`` candidate indices (padded with ``Q``, an index to a sentinel centre
    far away) and the ``(n, n)`` cell-grid side.
    """
    centers = np.frombuffer(centers_key, dtype=np.float64).reshape(-1, 2)
    n = round(2 * _TABLE_RADIUS / _CELL)
    lo = -_TABLE_RADIUS + _CELL * np.arange(n)  # lower edge of each cell, per axis

    def axis_distances(coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest and farthest distance, along one axis, from each cell to each centre: (n, Q)."""
        to_lo, to_hi = lo[:, None] - coord[None, :], lo[:, None] + _CELL - coord[None, :]
        near = np.maximum(np.maximum(to_lo, -to_hi), 0.0)
        return near, np.maximum(np.abs(to_lo), np.abs(to_hi))

    near_a, far_a = axis_distances(centers[:, 0])  # (n, Q)
    near_b, far_b = axis_distances(centers[:, 1])
    near = near_a[:, None, :] ** 2 + near_b[None, :, :] ** 2  # (n, n, Q) squared
    far = far_a[:, None, :] ** 2 + far_b[None, :, :] ** 2
    kth_far = np.partition(far, k - 1, axis=-1)[..., k - 1 : k]  # (n, n, 1)
    is_candidate = (near <= kth_far + 1e-9).reshape(n * n, -1)
    width = int(is_candidate.sum(1).max())
    order = np.argsort(~is_candidate, axis=1, kind="stable")[:, :width]
    table = np.where(np.take_along_axis(is_candidate, order, 1), order, len(centers))
    return table.astype(np.int64), np.array(n)


def nearest_bins(ab: Tensor, centers: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """The k nearest bin centres of every ab point, nearest first.

    Args:
        ab: ``(B, 2, H, W)`` float ab values.
        centers: ``(Q, 2)`` bin centres.
        k: number of neighbours, ``1 <= k <= Q``.

    Returns:
        ``dist2 (B, k, H, W)`` squared distances (ab units²) and ``index (B, k, H, W)`` long
        indices into ``centers``.
    """
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must have shape (B, 2, H, W), got {tuple(ab.shape)}")
    if centers.dim() != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape (Q, 2), got {tuple(centers.shape)}")
    if not 1 <= k <= centers.shape[0]:
        raise ValueError(f"k must be in [1, {centers.shape[0]}], got {k}")
    b, _, h, w = ab.shape
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (N, 2)
    centers = centers.to(dtype=ab.dtype, device=ab.device)

    key = centers.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    table_np, n = _candidate_table(key, k)
    n = int(n)
    table = torch.from_numpy(table_np).to(ab.device)  # (cells, M)
    padded = torch.cat([centers, centers.new_full((1, 2), 1e8)])  # the sentinel is never chosen
    table_ab = padded[table]  # (cells, M, 2)

    cell = torch.floor((points.detach() + _TABLE_RADIUS) * (1.0 / _CELL)).long()  # (N, 2)
    inside = ((cell >= 0) & (cell < n)).all(1)
    cell_id = cell.clamp(0, n - 1) @ torch.tensor([n, 1], device=ab.device)  # (N,)
    diff = points[:, None, :] - table_ab[cell_id]  # (N, M, 2)
    dist2 = diff[..., 0] ** 2 + diff[..., 1] ** 2  # (N, M)
    dist2, pos = dist2.topk(k, dim=1, largest=False, sorted=True)  # (N, k)
    index = table[cell_id[:, None], pos]  # (N, k)
    if not bool(inside.all()):
        # Far outside any real colour, where the tables do not reach: search all centres.
        outside = (~inside).nonzero().squeeze(1)
        brute = ((points[outside, None, :] - centers[None]) ** 2).sum(-1)  # (n_out, Q)
        dist2[outside], index[outside] = brute.topk(k, dim=1, largest=False, sorted=True)
    dist2 = dist2.view(b, h, w, k).permute(0, 3, 1, 2)
    index = index.view(b, h, w, k).permute(0, 3, 1, 2)
    return dist2, index


def load_bins(path: str | Path | None = None) -> dict[str, Tensor]:
    """Load a ``bins.npz`` written by ``zhangcolor build-bins``; the shipped default prior if None.

    Returns:
        float64 tensors ``centers (Q, 2)``, ``counts``, ``prior``, ``prior_smoothed`` and
        ``weights`` (each ``(Q,)``).
    """
    if path is None:
        source = resources.files("zhangcolor.default_bins").joinpath("bins.npz")
    else:
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(
                f"no bins file at {source}; "
                "make one with `zhangcolor build-bins DATA_DIR --out DIR`"
            )
    with source.open("rb") as f, np.load(f) as npz:
        missing = {"centers", "counts", "prior", "prior_smoothed", "weights"} - set(npz.files)
        if missing:
            raise ValueError(f"{path or 'the default bins'} lacks {', '.join(sorted(missing))}")
        return {name: torch.from_numpy(npz[name].astype(np.float64)) for name in npz.files}
