"""The quantised ab space: the paper's 313 in-gamut bin centres (grid 10), the full 529-node grid
that the authors' SIGGRAPH 2017 network classifies into, and nearest-bin search.

The plain search computes the distances to all 313 centres (``cdist``), then takes the
``topk``. :func:`nearest_bins` gives the same answer (tests/test_bins.py checks it against that
and against sklearn) about 10× faster (k = 5) to 25× (k = 1) on a CPU, which matters since
training soft-encodes every target pixel of every batch: for bins on the grid, the k ≤ 5
nearest of a point are among 6 grid nodes around it, found by arithmetic. Points near the
gamut's edge use per-cell candidate tables (for each cell, every centre that can be among the k
nearest of any point in it), and points far outside any colour a brute-force search.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zhangcolor.constants import GRID, GRID_MAX, GRID_SIDE, Q

#: Half-width (ab units) of the square covered by the candidate tables; points outside it,
#: which no real color reaches, fall back to a brute-force search.
_TABLE_RADIUS = 160.0
#: Side (ab units) of a cell of the candidate tables.
_CELL = 5.0


def _asset(name: str) -> Traversable:
    """A file shipped in ``zhangcolor/assets``."""
    return resources.files("zhangcolor").joinpath("assets", name)


@functools.lru_cache(maxsize=1)
def _ab_bins_array() -> np.ndarray:
    with _asset("zhang2016_ab_bins.txt").open("r") as text:
        centers = np.loadtxt(text, dtype=np.float64, comments="#")
    if centers.shape != (Q, 2):
        raise RuntimeError(f"the shipped bin list has shape {centers.shape}, expected ({Q}, 2)")
    return centers


def ab_bins(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The paper's 313 ab bin centres, in the authors' order (``pts_in_hull.npy``).

    Returns:
        ``(313, 2)`` tensor of (a, b) centres on a grid of 10.
    """
    return torch.tensor(_ab_bins_array(), dtype=dtype, device=device)


def grid_bins(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The 529 classes of the authors' SIGGRAPH 2017 network: every node of the 23 × 23 ab grid
    of step 10 from -110 to 110, in gamut or not, in their order (colorization-pytorch's
    ``encode_ab_ind``): class 23 · i + j is (a, b) = (-110 + 10 i, -110 + 10 j).

    Returns:
        ``(529, 2)`` tensor of (a, b) centres; the paper's 313 are among them.
    """
    steps = torch.arange(GRID_SIDE, dtype=torch.float64) * GRID - GRID_MAX  # (23,)
    a, b = torch.meshgrid(steps, steps, indexing="ij")  # a varies along rows: the slow index
    return torch.stack([a.flatten(), b.flatten()], dim=1).to(dtype=dtype, device=device)


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
def _candidate_table(centers_key: bytes, k: int) -> tuple[np.ndarray, int]:
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
    return table.astype(np.int64), n


@functools.lru_cache(maxsize=8)
def _grid_lookup(centers_key: bytes) -> np.ndarray | None:
    """``(n, n)`` bin index of each node of the ab grid (-1 off the gamut), or None when the
    centres are not on the grid. The lookup reaches past the table radius, so its border is -1."""
    centers = np.frombuffer(centers_key, dtype=np.float64).reshape(-1, 2)
    steps = centers / GRID
    if not np.array_equal(steps, np.round(steps)):
        return None
    half = _GRID_HALF
    if np.abs(steps).max() >= half:
        return None
    lookup = np.full((2 * half + 1, 2 * half + 1), -1, dtype=np.int64)
    lookup[steps[:, 0].astype(int) + half, steps[:, 1].astype(int) + half] = np.arange(len(centers))
    return lookup


#: Half-width, in grid steps, of the grid lookup (past the table radius).
_GRID_HALF = int(_TABLE_RADIUS // GRID) + 2
#: The 6 grid nodes that hold the 5 nearest nodes of a point, as (step along a, step along b)
#: from its nearest node in the frame turned towards the point: the nearest node, the 3 other
#: corners of the point's cell, and the 2 nodes behind the nearest one. Index 0, 1, 2 of a step
#: means 0, +1 (towards the point) and -1.
_NEAR_A = (0, 1, 0, 1, 2, 0)
_NEAR_B = (0, 0, 1, 1, 0, 2)


def _grid_candidates(points: Tensor, k: int, lookup: Tensor) -> tuple[Tensor, Tensor]:
    """The grid nodes that hold the k nearest of each point, with their squared distances.

    Args:
        points: ``(2, N)`` contiguous ab points.

    Returns:
        ``dist2 (M, N)`` and bin indices ``(M, N)``, with M = 1 for k = 1 and 6 otherwise; an
        index is -1 where the node is off the gamut (then the table search is needed).
    """
    n = lookup.shape[0]
    half = n // 2
    nearest = torch.round(points.detach() * (1.0 / GRID)).clamp_(1 - half, half - 1)  # (2, N)
    offset = points - nearest * GRID  # (2, N) from the nearest node, in ab units
    node = nearest.long() + half  # (2, N) in the lookup
    base = node[0] * n + node[1]  # (N,) flat lookup id of the nearest node
    if k == 1:
        return offset.square().sum(0, keepdim=True), lookup.view(-1)[base][None]
    forward = offset >= 0  # (2, N) whether "towards the point's cell" is +1 along each axis
    toward = torch.where(forward, GRID, -GRID)  # (2, N)
    # Offsets to the nodes 0, +1 and -1 steps towards the point, per axis: (3, N) each.
    a = torch.stack([offset[0], offset[0] - toward[0], offset[0] + toward[0]])
    b = torch.stack([offset[1], offset[1] - toward[1], offset[1] + toward[1]])
    near_a = torch.tensor(_NEAR_A, device=points.device)
    near_b = torch.tensor(_NEAR_B, device=points.device)
    dist2 = a.square_()[near_a] + b.square_()[near_b]  # (6, N)
    # The 6 nodes' lookup ids, relative to the nearest node, for each of the 4 quadrants.
    step = torch.tensor([0, 1, -1], device=points.device)
    sign = torch.tensor([[-1, -1], [-1, 1], [1, -1], [1, 1]], device=points.device)  # (4, 2)
    delta = sign[:, :1] * step[near_a] * n + sign[:, 1:] * step[near_b]  # (4, 6)
    quadrant = forward[0].long() * 2 + forward[1].long()  # (N,)
    ids = base + delta.T[:, quadrant]  # (6, N)
    return dist2, lookup.view(-1)[ids]


def _table_search(points: Tensor, centers: Tensor, k: int, key: bytes) -> tuple[Tensor, Tensor]:
    """Exact k-nearest search through the per-cell candidate tables: ``(N, k)`` each."""
    table_np, n = _candidate_table(key, k)
    table = torch.from_numpy(table_np).to(points.device)  # (cells, M)
    padded = torch.cat([centers, centers.new_full((1, 2), 1e8)])  # the sentinel is never chosen
    cell = torch.floor((points.detach() + _TABLE_RADIUS) * (1.0 / _CELL)).long()  # (N, 2)
    inside = ((cell >= 0) & (cell < n)).all(1)
    cell = cell.clamp(0, n - 1)
    cell_id = cell[:, 0] * n + cell[:, 1]  # (N,); elementwise, since CUDA has no int64 matmul
    candidates = table[cell_id]  # (N, M)
    dist2, pos = _distances(points, padded, candidates).topk(k, dim=1, largest=False)
    index = candidates.gather(1, pos)  # (N, k)
    if not bool(inside.all()):
        # Far outside any real color, where the tables do not reach: search all centres.
        outside = (~inside).nonzero().squeeze(1)
        brute = ((points[outside, None, :] - centers[None]) ** 2).sum(-1)  # (n_out, Q)
        dist2[outside], index[outside] = brute.topk(k, dim=1, largest=False)
    return dist2, index


def _distances(points: Tensor, centers: Tensor, index: Tensor) -> Tensor:
    """Squared distances ``(N, M)`` from each point ``(N, 2)`` to its centres ``index (N, M)``."""
    a = centers[:, 0][index]  # (N, M)
    b = centers[:, 1][index]
    return (points[:, :1] - a).square_() + (points[:, 1:] - b).square_()


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
    centers = centers.to(dtype=ab.dtype, device=ab.device)
    key = centers.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()

    lookup = _grid_lookup(key) if k <= len(_NEAR_A) - 1 else None
    if lookup is None:
        dist2, index = _table_search(ab.permute(0, 2, 3, 1).reshape(-1, 2), centers, k, key)
        dist2, index = dist2.T, index.T  # (k, N)
    else:
        # Bins on the grid: the k nearest nodes around each point are found by arithmetic;
        # only points with one of those nodes off the gamut need the table search.
        points = ab.transpose(0, 1).reshape(2, -1)  # (2, N)
        dist2, candidates = _grid_candidates(points, k, torch.from_numpy(lookup).to(ab.device))
        if k == 1:
            index = candidates
        else:
            dist2, pos = dist2.sort(dim=0)  # (6, N); sorting 6 beats topk here
            dist2, index = dist2[:k], candidates.gather(0, pos[:k])
        off_gamut = (candidates < 0).any(0)
        if bool(off_gamut.any()):
            rest = off_gamut.nonzero().squeeze(1)
            found = _table_search(points[:, rest].T, centers, k, key)
            dist2[:, rest], index[:, rest] = found[0].T, found[1].T
    dist2 = dist2.view(k, b, h, w).transpose(0, 1).contiguous()
    index = index.view(k, b, h, w).transpose(0, 1).contiguous()
    return dist2, index


#: The arrays of a bins.npz, each ``(Q,)`` but the centres ``(Q, 2)``.
BINS_ARRAYS = ("centers", "counts", "prior", "prior_smoothed", "weights")
#: The most bins a bins file may have, the farthest (ab units) a centre may lie from gray, and
#: the largest class weight: the limits a model's record keeps (model_record.MAX_BINS,
#: MAX_CENTER and MAX_WEIGHT; tests/test_bins.py holds them equal), so that bins that load
#: also go into every checkpoint a run saves.
MAX_BINS, MAX_CENTER, MAX_WEIGHT = 4096, 200.0, 1e6
#: The largest array member a bins.npz may hold, uncompressed: 4096 × 2 float64 is 64 KB.
_MAX_MEMBER_BYTES = 1 << 20
#: What the first bytes of a file that is not an .npz archive say it is.
_NOT_NPZ = ((b"\x93NUMPY", "a single .npy array"), (b"\x80", "a Python pickle"))


class BinsError(ValueError):
    """A bins file cannot be used; the message names it and says why."""


def load_bins(path: str | Path | None = None) -> dict[str, Tensor]:
    """Load a ``bins.npz`` written by ``zhangcolor build-bins``; the shipped default prior if None.

    Every array is checked where it enters (the file may come from anyone): a
    :class:`BinsError` names the file and what is wrong: not an .npz archive (a text file, a
    pickle, an .npy), pickled (object) arrays, which are never loaded, a missing array, a shape
    that does not fit ``Q`` centres, values that are not finite, class weights that are not
    positive or over :data:`MAX_WEIGHT`, distributions that are negative or empty.

    Returns:
        float64 tensors ``centers (Q, 2)``, ``counts``, ``prior``, ``prior_smoothed`` and
        ``weights`` (each ``(Q,)``).
    """
    if path is None:
        source = _asset("default_prior").joinpath("bins.npz")
        name = "the default bins"
    else:
        source, name = Path(path), str(path)
        if source.exists() and not source.is_file() and not source.is_dir():
            raise BinsError(f"{name} is not a regular file (a FIFO or a device); give a bins.npz")
        if not source.is_file():
            raise FileNotFoundError(
                f"no bins file at {source}; "
                "make one with `zhangcolor build-bins DATA_DIR --out DIR`"
            )
    with source.open("rb") as f:
        head = f.read(8)
        f.seek(0)
        if not head.startswith(b"PK"):
            kind = next((k for magic, k in _NOT_NPZ if head.startswith(magic)), None)
            kind = kind or ("a text file" if _looks_like_text(head) else "not one")
            raise BinsError(f"{name} is not a bins.npz archive ({kind}); {_REMAKE}")
        arrays = _read_arrays(f, name)
    _check_arrays(arrays, name)
    return {key: torch.from_numpy(value.astype(np.float64)) for key, value in arrays.items()}


_REMAKE = "make one with `zhangcolor build-bins DATA_DIR --out DIR`"


def _looks_like_text(head: bytes) -> bool:
    return bool(head) and all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def _read_arrays(f, name: str) -> dict[str, np.ndarray]:
    """The arrays of an open .npz (allow_pickle stays off), each checked to be small before it
    is read."""
    try:
        with np.load(f) as npz:
            missing = set(BINS_ARRAYS) - set(npz.files)
            if missing:
                raise BinsError(f"{name} lacks {', '.join(sorted(missing))}; {_REMAKE}")
            for key in BINS_ARRAYS:
                size = npz.zip.getinfo(f"{key}.npy").file_size
                if size > _MAX_MEMBER_BYTES:
                    raise BinsError(
                        f"{name}: its {key} is {size:,} bytes uncompressed; a bins array is a "
                        "few KB"
                    )
            return {key: npz[key] for key in BINS_ARRAYS}
    except BinsError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise BinsError(
                f"{name} holds pickled (object) arrays, which are never loaded since loading "
                f"them could run code; {_REMAKE}"
            ) from None
        raise BinsError(f"{name} is a damaged .npz archive ({e}); {_REMAKE}") from None
    except Exception as e:  # zipfile and numpy raise their own kinds for a damaged archive
        raise BinsError(
            f"{name} is a damaged .npz archive ({type(e).__name__}); {_REMAKE}"
        ) from None


def _check_arrays(arrays: dict[str, np.ndarray], name: str) -> None:
    """Shapes, kinds and ranges of a bins file's arrays; BinsError naming the first problem."""
    centers = arrays["centers"]
    q = len(centers) if centers.ndim == 2 else 0
    if centers.ndim != 2 or centers.shape[1] != 2 or not 1 <= q <= MAX_BINS:
        raise BinsError(
            f"{name}: its centers are {tuple(centers.shape)}, not (Q, 2) with Q from 1 to "
            f"{MAX_BINS}; {_REMAKE}"
        )
    for key, value in arrays.items():
        if value.dtype.kind not in "iuf":
            raise BinsError(f"{name}: its {key} are {value.dtype}, not numbers; {_REMAKE}")
        if key != "centers" and value.shape != (q,):
            raise BinsError(
                f"{name}: its {key} are {tuple(value.shape)}, not ({q},) for its {q} bin "
                f"centres; {_REMAKE}"
            )
        if not np.isfinite(value).all():
            raise BinsError(f"{name}: its {key} hold NaN or infinite values; {_REMAKE}")
    if np.abs(centers).max() > MAX_CENTER:
        raise BinsError(f"{name}: its centers reach past ±{MAX_CENTER:g} ab units; {_REMAKE}")
    weights = arrays["weights"]
    if not (weights > 0).all() or weights.max() > MAX_WEIGHT:
        raise BinsError(
            f"{name}: its class weights must lie in (0, {MAX_WEIGHT:g}]; they run from "
            f"{weights.min():.3g} to {weights.max():.3g}; {_REMAKE}"
        )
    for key in ("counts", "prior", "prior_smoothed"):
        if (arrays[key] < 0).any() or not arrays[key].sum() > 0:
            raise BinsError(f"{name}: its {key} must be non-negative, and not all zero; {_REMAKE}")
