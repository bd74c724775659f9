"""The 8-bit color table and the grayscale test, against converting each color in float64."""

import numpy as np
import pytest
import torch

from zhangcolor.bins import ab_bins, nearest_bins
from zhangcolor.color import rgb_to_lab
from zhangcolor.color_table import COLORFUL, color_table, is_gray
from zhangcolor.images import LoadedImage


def image(rgb: np.ndarray, alpha: np.ndarray | None = None, gray_source=False) -> LoadedImage:
    size = (rgb.shape[1], rgb.shape[0])
    return LoadedImage(rgb.astype(np.uint8), alpha, gray_source, size)


def test_table_entries_equal_converting_each_color_in_float64():
    generator = np.random.default_rng(0)
    rgb = generator.integers(0, 256, (4096, 3))
    rgb = np.concatenate([rgb, [[0, 0, 0], [255, 255, 255], [128, 128, 128], [255, 0, 0]]])
    lab = rgb_to_lab(torch.from_numpy(rgb / 255.0).T.reshape(1, 3, 1, -1))  # float64
    ab = lab[:, 1:]
    _, index = nearest_bins(ab, ab_bins(torch.float64), 1)
    colorful = ab.abs().amax(1).flatten() > 5.0
    entries = color_table()[(rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]]
    np.testing.assert_array_equal(entries % COLORFUL, index.flatten().numpy())
    # Colors whose |a| or |b| lies within float32's reach of 5 could fall either way.
    clear = (ab.abs().amax(1).flatten() - 5.0).abs() > 1e-4
    np.testing.assert_array_equal((entries >= COLORFUL)[clear], colorful[clear].numpy())


@pytest.mark.parametrize(
    ("pixel", "alpha", "gray"),
    [
        ((128, 128, 128), 1.0, True),  # neutral
        ((144, 128, 128), 1.0, False),  # a ≈ 6.1 > 5: one pixel of color is enough
        ((140, 128, 128), 1.0, True),  # a ≈ 4.5: within the authors' 5
        ((255, 0, 0), 0.5, True),  # color under transparency carries no weight
    ],
)
def test_is_gray_follows_the_authors_test_on_opaque_pixels(pixel, alpha, gray):
    lab = rgb_to_lab(torch.tensor(pixel, dtype=torch.float64).view(1, 3, 1, 1) / 255).flatten()
    assert gray is not (alpha == 1.0 and float(lab[1:].abs().max()) > 5.0)  # the float64 truth
    rgb = np.full((6, 5, 3), 128)
    rgb[2, 3] = pixel
    opacity = np.ones((6, 5), np.float32)
    opacity[2, 3] = alpha
    assert is_gray(image(rgb, opacity)) is gray
    assert is_gray(image(rgb)) is (float(lab[1:].abs().max()) <= 5.0)  # no alpha: all count


def test_a_gray_source_is_gray_whatever_its_pixels():
    assert is_gray(image(np.full((2, 2, 3), 200), gray_source=True))


def test_a_corrupt_cached_color_table_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(tmp_path))
    color_table.cache_clear()
    first = color_table()
    (cached,) = tmp_path.glob("srgb8-bins-*.npy")
    cached.write_bytes(b"garbage")
    color_table.cache_clear()
    assert np.array_equal(color_table(), first)
    color_table.cache_clear()
