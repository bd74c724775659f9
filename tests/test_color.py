"""rgb_to_lab / lab_to_rgb against skimage, round trips, gradients and bad input."""

import warnings

import numpy as np
import pytest
import torch
from skimage import color, data

from zhangcolor.color import LabToRgb, RgbToLab, lab_to_rgb, rgb_to_lab


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


def test_modules_equal_functions():
    rgb = torch.rand(2, 3, 5, 5)
    assert torch.equal(RgbToLab()(rgb), rgb_to_lab(rgb))
    lab = rgb_to_lab(rgb)
    assert torch.equal(LabToRgb()(lab), lab_to_rgb(lab))


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
