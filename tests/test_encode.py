"""Soft-encoding against the authors' sklearn NearestNeighbors encoder, and its properties."""

import numpy as np
import pytest
import torch
from skimage import data
from sklearn.neighbors import NearestNeighbors

from zhangcolor.bins import ab_bins
from zhangcolor.color import rgb_to_lab
from zhangcolor.encode import soft_encode, soft_encode_sparse


def sklearn_soft_encode(ab: np.ndarray, centers: np.ndarray, k=5, sigma=5.0) -> np.ndarray:
    """The authors' NNEncode.encode_points_mtx_nd, in float64: (B, 2, H, W) -> (B, Q, H, W)."""
    b, _, h, w = ab.shape
    points = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
    dists, inds = (
        NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(centers).kneighbors(points)
    )
    wts = np.exp(-(dists**2) / (2 * sigma**2))
    wts /= wts.sum(axis=1, keepdims=True)
    out = np.zeros((points.shape[0], len(centers)))
    out[np.arange(points.shape[0])[:, None], inds] = wts
    return out.reshape(b, h, w, -1).transpose(0, 3, 1, 2)


def real_ab(dtype=torch.float32) -> torch.Tensor:
    rgb = torch.from_numpy(data.coffee()[::4, ::4] / 255.0).permute(2, 0, 1)
    return rgb_to_lab(rgb.to(dtype))[None, 1:]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_soft_encode_matches_sklearn_on_random_and_real_ab(dtype):
    centers = ab_bins(torch.float64)
    rng = np.random.default_rng(0)
    for ab in [torch.from_numpy(rng.uniform(-110, 110, (2, 2, 24, 24))), real_ab(torch.float64)]:
        ours = soft_encode(ab.to(dtype), centers.to(dtype))
        expected = sklearn_soft_encode(ab.numpy(), centers.numpy())
        assert np.abs(ours.double().numpy() - expected).max() <= 1e-5


def test_targets_are_distributions_with_k_nonzeros_peaked_at_the_nearest_bin():
    z = soft_encode(real_ab(), ab_bins())
    assert z.shape == (1, 313, *real_ab().shape[-2:])
    assert torch.allclose(z.sum(1), torch.ones(1)) and bool((z >= 0).all())
    assert bool(((z > 0).sum(1) == 5).all())
    index, weight = soft_encode_sparse(real_ab(), ab_bins())
    assert torch.equal(z.argmax(1), index[:, 0])  # the nearest bin weighs most
    assert bool((weight[:, :-1] >= weight[:, 1:]).all())


def test_a_point_on_a_bin_centre_with_tiny_sigma_is_one_hot():
    centers = ab_bins()
    ab = centers[[0, 100, 312]].T.reshape(1, 2, 1, 3)
    z = soft_encode(ab, centers, sigma=0.1)
    assert torch.equal(z.argmax(1).flatten(), torch.tensor([0, 100, 312]))
    assert torch.allclose(z.amax(1), torch.ones(1, 1, 3))


def test_far_away_points_stay_finite():
    z = soft_encode(torch.full((1, 2, 2, 2), 1e4), ab_bins())
    assert torch.isfinite(z).all() and torch.allclose(z.sum(1), torch.ones(1))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigma"):
        soft_encode(torch.zeros(1, 2, 2, 2), ab_bins(), sigma=0)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        soft_encode(torch.zeros(1, 3, 2, 2), ab_bins())
