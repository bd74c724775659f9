"""rgb_to_lab / lab_to_rgb against skimage, round trips, gradients and bad input."""

import warnings

import numpy as np
import pytest
import torch
from skimage import color, data

from zhangcolor.color import (
    lab_to_rgb,
    lab_to_srgb8,
    rgb_to_lab,
    srgb8_to_lightness,
)


def to_torch(hwc: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc)).to(dtype).movedim(-1, -3)


def to_numpy(chw: torch.Tensor) -> np.ndarray:
    return chw.movedim(-3, -1).double().numpy()


def real_images() -> list[np.ndarray]:
    return [data.astronaut() / 255.0, data.coffee() / 255.0, data.chelsea() / 255.0]


def random_lab(rng, shape=(32, 32)) -> np.ndarray:
    return np.stack(
        [rng.uniform(0, 100, shape), rng.uniform(-128, 127, shape), rng.uniform(-128, 127, shape)],
        axis=-1,
    )


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_rgb_to_lab_matches_skimage_on_random_and_real_images(dtype, tol):
    rng = np.random.default_rng(0)
    images = [rng.random((40, 50, 3)), *real_images()]
    for image in images:
        ours = to_numpy(rgb_to_lab(to_torch(image, dtype)))
        assert np.abs(ours - color.rgb2lab(image)).max() <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-3)])
def test_lab_to_rgb_matches_skimage_including_out_of_gamut(dtype, tol):
    rng = np.random.default_rng(1)
    labs = [random_lab(rng)] + [color.rgb2lab(image) for image in real_images()]
    for lab in labs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns when it clips negative Z, as we do
            expected = color.lab2rgb(lab)
        assert np.abs(to_numpy(lab_to_rgb(to_torch(lab, dtype))) - expected).max() <= tol


def test_round_trip_rgb_lab_rgb():
    rgb = torch.rand(2, 3, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-10)


def test_batched_equals_one_at_a_time_and_keeps_dtype():
    rgb = torch.rand(4, 3, 8, 9)
    lab = rgb_to_lab(rgb)
    assert lab.shape == rgb.shape and lab.dtype == torch.float32
    for i in range(4):
        assert torch.allclose(rgb_to_lab(rgb[i]), lab[i], atol=1e-4)


def test_known_values():
    white = torch.ones(3, 1, 1, dtype=torch.float64)
    black = torch.zeros(3, 1, 1, dtype=torch.float64)
    assert torch.allclose(
        rgb_to_lab(white).flatten(), torch.tensor([100.0, 0, 0]).double(), atol=1e-2
    )
    assert torch.allclose(rgb_to_lab(black).flatten(), torch.zeros(3).double(), atol=1e-9)


def test_lab_to_rgb_clips_to_gamut():
    lab = torch.tensor([[[[60.0]], [[120.0]], [[-120.0]]]])  # far outside sRGB
    rgb = lab_to_rgb(lab)
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_gradcheck_float64():
    rgb = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(rgb_to_lab, (rgb,))
    lab = torch.tensor([[50.0, 70.0, 20.0], [10.0, -20.0, 30.0], [40.0, 5.0, -30.0]])
    lab = lab.double().T.reshape(1, 3, 3, 1).requires_grad_()
    assert torch.autograd.gradcheck(lab_to_rgb, (lab,))


def test_gradients_are_finite_at_black_and_thresholds():
    rgb = torch.tensor([0.0, 0.04045, 1.0]).view(3, 1, 1).repeat(1, 2, 2).requires_grad_()
    rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()


@pytest.mark.parametrize("bad", [torch.rand(3, 4), torch.rand(2, 4, 4, 4), torch.rand(1, 2, 4, 4)])
def test_wrong_shape_raises_value_error_naming_the_shape(bad):
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        rgb_to_lab(bad)
    with pytest.raises(ValueError, match="got"):
        lab_to_rgb(bad)


def test_integer_or_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="255"):
        rgb_to_lab(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        rgb_to_lab(np.zeros((3, 2, 2)))


# --- 8-bit paths ----------------------------------------------------------------------------------


def test_srgb8_to_lightness_matches_skimage_l_for_every_8bit_grey_and_real_photos():
    rng = np.random.default_rng(2)
    grey = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, 3)
    images = [grey, rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), data.astronaut()]
    for image in images:
        ours = srgb8_to_lightness(torch.from_numpy(image).movedim(-1, -3))
        assert ours.shape == (1, *image.shape[:2]) and ours.dtype == torch.float32
        expected = color.rgb2lab(image)[..., 0]
        assert np.abs(ours[0].numpy() - expected).max() <= 1e-3


def test_lab_to_srgb8_is_rounded_lab_to_rgb_within_one_level_at_rounding_boundaries():
    rng = np.random.default_rng(3)
    lab = np.concatenate([random_lab(rng, (64, 64)), color.rgb2lab(data.coffee())[:64, :64]], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.round(color.lab2rgb(lab) * 255.0)  # float64 reference, (128, 64, 3)
    ours = lab_to_srgb8(to_torch(lab, torch.float32))
    assert ours.dtype == torch.uint8
    diff = np.abs(ours.movedim(-3, -1).numpy().astype(int) - expected)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01  # only at rounding boundaries
    # Round trip of every 8-bit grey, black and white included: exact.
    grey = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    back = lab_to_srgb8(rgb_to_lab(grey.double() / 255.0))
    assert torch.equal(back, grey)


def test_8bit_paths_reject_the_wrong_dtype_or_shape():
    with pytest.raises(ValueError, match="uint8"):
        srgb8_to_lightness(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        srgb8_to_lightness(torch.zeros(4, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="got"):
        lab_to_srgb8(torch.rand(2, 4, 4))


def test_the_fast_elementwise_forms_equal_their_plain_ones():
    """_power (exp2 of a log2) and _select (lerp by a 0/1 weight) are there for speed only:
    each equals pow and torch.where."""
    from zhangcolor.color import _power, _select

    x = torch.rand(3, 64, 64, dtype=torch.float64) + 1e-4
    torch.testing.assert_close(_power(x, 2.4), x.pow(2.4), rtol=1e-13, atol=0)
    torch.testing.assert_close(
        _power(x.float(), 1 / 2.4), x.float().pow(1 / 2.4), rtol=1e-6, atol=0
    )
    cond = x > 0.5
    assert torch.equal(_select(cond, x * 3, -x), torch.where(cond, x * 3, -x))
