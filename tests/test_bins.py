"""The shipped 313 bins against the authors' list, their sRGB coverage, and nearest-bin search."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from zhangcolor.bins import ab_bins, grid_index, load_bins, nearest_bins
from zhangcolor.color import rgb_to_lab

FIXTURE = Path(__file__).parent / "data" / "zhang2016_ab_bins.txt"


def test_shipped_bins_match_the_authors_list_value_for_value_in_order():
    reference = np.loadtxt(FIXTURE, comments="#")
    centers = ab_bins(dtype=torch.float64).numpy()
    assert centers.shape == (313, 2)
    np.testing.assert_array_equal(centers, reference)


def test_bins_lie_on_a_grid_of_10_without_duplicates():
    centers = ab_bins()
    assert torch.equal(centers, torch.round(centers / 10) * 10)
    assert len({tuple(c) for c in centers.tolist()}) == 313
    rows, cols, n = grid_index(centers)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 313 and n == 23


def test_every_in_gamut_srgb_colour_has_a_bin_within_5_sqrt2():
    levels = torch.linspace(0, 1, 65, dtype=torch.float64)
    r, g, b = torch.meshgrid(levels, levels, levels, indexing="ij")
    rgb = torch.stack([r, g, b]).reshape(3, 1, -1)  # every sRGB colour on a 65³ lattice
    ab = rgb_to_lab(rgb)[1:].unsqueeze(0)  # (1, 2, 1, N)
    dist2, _ = nearest_bins(ab, ab_bins(torch.float64), k=1)
    assert dist2.max().sqrt() <= 5 * 2**0.5 + 1e-9


@pytest.mark.parametrize("k", [1, 5, 10])
def test_nearest_bins_match_sklearn(k):
    rng = np.random.default_rng(k)
    points = np.concatenate(
        [
            rng.uniform(-130, 130, (4000, 2)),  # the whole Lab range
            rng.normal(0, 20, (4000, 2)),  # where real pixels are
            rng.uniform(-1000, 1000, (50, 2)),  # far outside any colour
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
