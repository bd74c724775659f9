"""The shipped 313 bins against the authors' list, their sRGB coverage, nearest-bin search, and
the 529-node grid of the authors' SIGGRAPH 2017 network against their encoding."""

import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.neighbors import NearestNeighbors
from torch import Tensor

from zhangcolor.bins import BinsError, ab_bins, grid_bins, grid_index, load_bins, nearest_bins
from zhangcolor.cli import main
from zhangcolor.color import rgb_to_lab


def nearest_bins_plain(ab: Tensor, centers: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """What :func:`nearest_bins` computes, plainly: all distances, then the k smallest.

    Returns ``dist2 (B, k, H, W)`` and ``index (B, k, H, W)``, nearest first.
    """
    b, _, h, w = ab.shape
    points = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (N, 2)
    dist2 = torch.cdist(points, centers.to(points)).square()  # (N, Q)
    dist2, index = dist2.topk(k, dim=1, largest=False)  # (N, k), sorted

    def back(x: Tensor) -> Tensor:
        return x.view(b, h, w, k).permute(0, 3, 1, 2).contiguous()

    return back(dist2), back(index)


#: SHA-256 of the authors' pts_in_hull.npy values, as the int16 pairs (a, b) in their order,
#: computed from a copy of the authors' file (it cannot be downloaded where the tests run).
AUTHORS_DIGEST = "e74b520cf1929e90ad9f051db10931e8ac5d1534c6cedabd7bfeba7a78a96c89"


def test_shipped_bins_are_the_authors_list_in_its_order():
    centers = ab_bins(dtype=torch.float64).numpy()
    assert centers.shape == (313, 2)
    pairs = centers.astype(np.int16)
    assert hashlib.sha256(pairs.tobytes()).hexdigest() == AUTHORS_DIGEST
    # The authors' order is by a, then by b.
    assert np.array_equal(pairs, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])


def test_the_313_bins_are_the_grid_nodes_that_srgb_reaches_by_an_independent_derivation():
    """From skimage's Lab alone: every corner of a grid-10 cell that some sRGB color's ab lies
    in is a bin (307 nodes), and every bin lies within 15 ab units of some sRGB color's ab
    (323 nodes qualify). The authors' 313 sit between the two."""
    from scipy.spatial import cKDTree
    from skimage import color

    levels = np.linspace(0, 1, 129)
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 1, 3)
    ab = color.rgb2lab(rgb)[:, 0, 1:]
    cell = np.floor(ab / 10).astype(int)
    corners = np.concatenate([cell + offset for offset in ([0, 0], [0, 1], [1, 0], [1, 1])])
    touched = {tuple(n) for n in np.unique(corners, axis=0)}
    grid = np.array([(a, b) for a in range(-15, 16) for b in range(-15, 16)])
    distance, _ = cKDTree(ab).query(grid * 10)
    near = {tuple(n) for n in grid[distance <= 15]}
    bins = {tuple(n) for n in (ab_bins().numpy() / 10).round().astype(int)}
    assert len(touched) == 307 and touched <= bins
    assert len(near) == 323 and bins <= near


def test_bins_lie_on_a_grid_of_10_without_duplicates():
    centers = ab_bins()
    assert torch.equal(centers, torch.round(centers / 10) * 10)
    assert len({tuple(c) for c in centers.tolist()}) == 313
    rows, cols, n = grid_index(centers)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 313 and n == 23


def encode_ab_ind(data_ab: Tensor) -> Tensor:
    """colorization-pytorch's class of each ab (``util/util.py``, ``encode_ab_ind``), with its
    options ab_norm 110, ab_max 110, ab_quant 10 and A = 2 · 110 / 10 + 1 = 23: ``data_ab (N,
    2)``, ab / 110 as their networks see it -> ``(N,)`` long."""
    ab_norm, ab_max, ab_quant = 110.0, 110.0, 10.0
    a_count = 2 * ab_max / ab_quant + 1
    steps = torch.round((data_ab * ab_norm + ab_max) / ab_quant)  # (N, 2) bin per axis
    return (steps[:, 0] * a_count + steps[:, 1]).long()


def test_grid_bins_are_the_siggraph17_classes_in_the_authors_order():
    centers = grid_bins()
    assert centers.shape == (529, 2) and centers.dtype == torch.float32
    assert torch.equal(encode_ab_ind(centers.double() / 110), torch.arange(529))
    assert centers.min() == -110 and centers.max() == 110
    assert torch.equal(centers[0], torch.tensor([-110.0, -110.0]))
    assert torch.equal(centers[1], torch.tensor([-110.0, -100.0]))  # b is the fast index
    assert torch.equal(centers[23], torch.tensor([-100.0, -110.0]))
    # The paper's 313 in-gamut bins are nodes of that grid.
    paper = encode_ab_ind(ab_bins(dtype=torch.float64) / 110)
    assert len(set(paper.tolist())) == 313
    assert torch.equal(centers[paper], ab_bins())
    assert grid_bins(torch.float64).dtype == torch.float64


def test_every_in_gamut_srgb_color_has_a_bin_within_5_sqrt2():
    levels = torch.linspace(0, 1, 65, dtype=torch.float64)
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    rgb = torch.stack([r, g, b]).reshape(3, 1, -1)  # every sRGB color on a 65³ lattice
    ab = rgb_to_lab(rgb)[1:].unsqueeze(0)  # (1, 2, 1, N)
    dist2, _ = nearest_bins(ab, ab_bins(torch.float64), k=1)
    assert dist2.max().sqrt() <= 5 * 2**0.5 + 1e-9


@pytest.mark.parametrize("k", [1, 5, 6, 10])
def test_the_fast_search_equals_the_plain_cdist_topk_one(k):
    """nearest_bins's grid arithmetic and candidate tables against all 313 distances, on float32
    photos' ab, the whole Lab range and points far outside it, in several batch shapes."""
    torch.manual_seed(k)
    ab = torch.cat([torch.rand(2, 2, 16, 24) * 260 - 130, torch.randn(2, 2, 16, 24) * 20], 0)
    ab[0, :, 0, :4] = torch.tensor([[900.0, -700, 0.3, 131.7], [0.1, 40.2, -990, -131.4]])
    fast = nearest_bins(ab.double(), ab_bins(torch.float64), k)
    plain = nearest_bins_plain(ab.double(), ab_bins(torch.float64), k)
    assert fast[1].shape == plain[1].shape == (4, k, 16, 24)
    assert torch.equal(fast[1], plain[1])
    torch.testing.assert_close(fast[0], plain[0])


@pytest.mark.parametrize("k", [1, 5, 10])
def test_nearest_bins_match_sklearn(k):
    rng = np.random.default_rng(k)
    points = np.concatenate(
        [
            rng.uniform(-130, 130, (4000, 2)),  # the whole Lab range
            rng.normal(0, 20, (4000, 2)),  # where real pixels are
            rng.uniform(-1000, 1000, (50, 2)),  # far outside any color
        ]
    )
    ab = torch.from_numpy(points.T.reshape(1, 2, 1, -1))  # float64, so no float32 near-ties
    centers = ab_bins(torch.float64)
    dist2, index = nearest_bins(ab, centers, k)
    ref_dist, ref_index = NearestNeighbors(n_neighbors=k).fit(centers.numpy()).kneighbors(points)
    np.testing.assert_array_equal(index[0, :, 0].T.numpy(), ref_index)
    np.testing.assert_allclose(dist2[0, :, 0].T.numpy(), ref_dist**2, rtol=1e-9, atol=1e-9)


def test_nearest_bins_rejects_bad_shapes_and_k():
    centers = ab_bins()
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        nearest_bins(torch.zeros(2, 4, 4), centers)
    with pytest.raises(ValueError, match="k must be"):
        nearest_bins(torch.zeros(1, 2, 4, 4), centers, k=0)


def test_shipped_default_prior_loads_and_is_consistent():
    bins = load_bins()
    assert set(bins) >= {"centers", "counts", "prior", "prior_smoothed", "weights"}
    assert torch.equal(bins["centers"], ab_bins(torch.float64))
    assert torch.isclose(bins["prior"].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(
        (bins["prior_smoothed"] * bins["weights"]).sum(), torch.tensor(1.0).double()
    )


def test_load_bins_explains_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-bins"):
        load_bins(tmp_path / "nope.npz")


def _bins_file(path, **changes):
    """The shipped bins.npz with arrays changed (None: left out), saved as ``path``."""
    arrays = {k: v.numpy() for k, v in load_bins().items()}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _bad_bins(tmp_path):
    """Each kind of bins file that cannot be used, with the words that say why."""
    q = 313
    text = tmp_path / "notes.npz"
    text.write_text("centers: 313 bins\n")
    npy = tmp_path / "array.npz"
    np.save(npy.open("wb"), np.zeros(3))
    bomb = tmp_path / "bomb.npz"
    arrays = {k: v.numpy() for k, v in load_bins().items()}
    with open(bomb, "wb") as f:
        np.savez_compressed(f, **{**arrays, "counts": np.zeros(4_000_000)})
    return {
        "text": (text, "not a bins.npz archive (a text file)"),
        "npy": (npy, "not a bins.npz archive (a single .npy array)"),
        "pickled": (
            _bins_file(tmp_path / "pickled.npz", weights=np.array([{"code": 1}] * q, dtype=object)),
            "holds pickled (object) arrays, which are never loaded",
        ),
        "missing": (_bins_file(tmp_path / "missing.npz", prior=None), "lacks prior"),
        "centers": (_bins_file(tmp_path / "c.npz", centers=np.zeros((q, 3))), "not (Q, 2)"),
        "short": (_bins_file(tmp_path / "s.npz", weights=np.ones(5)), "are (5,), not (313,)"),
        "nan": (
            _bins_file(tmp_path / "nan.npz", weights=np.full(q, np.nan)),
            "its weights hold NaN or infinite values",
        ),
        "zero": (
            _bins_file(tmp_path / "zero.npz", weights=np.zeros(q)),
            "class weights must lie in (0, 1e+06]",
        ),
        "huge": (
            _bins_file(tmp_path / "huge.npz", weights=np.full(q, 7.7e227)),
            "class weights must lie in (0, 1e+06]",
        ),
        "bomb": (bomb, "its counts is 32,000,128 bytes uncompressed"),
    }


def test_a_bins_file_is_checked_on_load_with_a_reason_for_each_fault(tmp_path):
    """Pickled arrays, text files and wrong shapes raised numpy's own errors, or
    none until training; NaN weights trained to a NaN loss that advised "a lower --lr"."""
    for case, (path, words) in _bad_bins(tmp_path).items():
        with pytest.raises(BinsError) as caught:
            load_bins(path)
        assert words in str(caught.value) and str(path) in str(caught.value), case
        assert len(str(caught.value)) < 300, case


def test_train_names_the_fault_of_its_bins_and_never_blames_the_lr(tmp_path):
    from test_train import invoke, tiny_config

    config = tiny_config(tmp_path, epochs=1)
    bad = _bad_bins(tmp_path)
    for case in ("text", "pickled", "nan"):
        path, words = bad[case]
        result = CliRunner(env={"COLUMNS": "400"}).invoke(
            main, ["train", "--config", str(config), "--bins", str(path), "--overwrite"]
        )
        assert result.exit_code == 1, (case, result.output)
        assert words in " ".join(result.output.split()) and "--lr" not in result.output, case
    assert invoke("train", "--config", config, "--overwrite").exit_code == 0


def test_the_bins_limits_are_the_model_records(tmp_path):
    """bins may import only constants: the limits are typed twice, and held equal here."""
    from zhangcolor import bins, model_record

    assert bins.MAX_BINS == model_record.MAX_BINS
    assert bins.MAX_CENTER == model_record.MAX_CENTER
    assert bins.MAX_WEIGHT == model_record.MAX_WEIGHT
