"""Training augmentation on the device against torchvision's transforms and exact identities."""

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from zhangcolor.augment import (
    PARAMS,
    centre_params,
    crop_flip_rotate,
    jitter_lightness,
    random_crop_params,
)


def photo(height=48, width=64, seed=0) -> torch.Tensor:
    """A smooth uint8 RGBA photo ``(4, H, W)`` (smooth, so resampling differences stay small)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (1, 3, 4, 5), generator=g).float()
    rgb = torch.nn.functional.interpolate(small, size=(height, width), mode="bicubic")
    rgb = rgb.clamp(0, 255).round().to(torch.uint8)[0]
    return torch.cat([rgb, torch.full((1, height, width), 255, dtype=torch.uint8)])


def params(x0, y0, w, h, flip=0.0, angle=0.0) -> torch.Tensor:
    return torch.tensor([[x0, y0, w, h, flip, angle]], dtype=torch.float64)


def test_a_crop_at_its_own_size_is_the_pixels_and_a_flip_mirrors_them():
    image = photo()
    out = crop_flip_rotate(image[None], params(8, 4, 32, 32), 32, supersample=1)
    torch.testing.assert_close(out[0], image[:, 4:36, 8:40].float() / 255)
    flipped = crop_flip_rotate(image[None], params(8, 4, 32, 32, flip=1), 32, supersample=1)
    torch.testing.assert_close(flipped[0], out[0].flip(-1))


def test_a_quarter_turn_is_rot90():
    image = photo(40, 40)
    turned = crop_flip_rotate(image[None], params(0, 0, 40, 40, angle=math.pi / 2), 40, 1)
    straight = image.float() / 255
    assert (
        min((turned[0] - torch.rot90(straight, k, dims=(1, 2))).abs().max() for k in (1, -1)) < 1e-5
    )


def test_the_resized_crop_matches_torchvisions_antialiased_one():
    image = photo(96, 128)
    out = crop_flip_rotate(image[None], params(20, 10, 60, 70), 32)  # shrinks about 2×
    ref = TF.resized_crop(image.float(), 10, 20, 70, 60, [32, 32], antialias=True) / 255
    assert (out[0] - ref).abs().mean() < 1.5 / 255 and (out[0] - ref).abs().max() < 8 / 255


def test_validation_takes_the_centred_square_and_padding_is_transparent():
    image = photo(48, 80)
    centre = centre_params(48, 80)
    assert centre.tolist() == [16.0, 0.0, 48.0, 48.0, 0.0, 0.0]
    padded = torch.zeros(1, 4, 60, 90, dtype=torch.uint8)
    padded[0, :, :48, :80] = image  # a batch pads each photo at the top left
    out = crop_flip_rotate(padded, centre[None], 48, supersample=1)
    torch.testing.assert_close(out[0], image[:, :, 16:64].float() / 255)
    rotated = crop_flip_rotate(padded, params(0, 0, 48, 48, angle=0.25), 48, 1)
    assert rotated[0, 3, 0, 0] < 1.0 and rotated[0, 3, 24, 24] == 1.0  # corners: transparent


@pytest.mark.parametrize("seed", range(20))
def test_random_crops_are_seeded_and_lie_inside_the_photo(seed):
    a = random_crop_params(torch.Generator().manual_seed(seed), 50, 70, (0.25, 1.0))
    b = random_crop_params(torch.Generator().manual_seed(seed), 50, 70, (0.25, 1.0))
    assert torch.equal(a, b) and a.shape == (PARAMS,)
    x0, y0, w, h, flip, angle = a.tolist()
    assert 0 <= x0 and x0 + w <= 70 and 0 <= y0 and y0 + h <= 50
    assert 0.25 * 3500 * 0.9 <= w * h <= 3500 and flip in (0, 1) and abs(angle) <= math.radians(15)


def test_lightness_jitter_is_seeded_bounded_and_off_at_zero():
    lightness = torch.rand(4, 1, 16, 16) * 100
    assert jitter_lightness(lightness, torch.Generator().manual_seed(0), 0.0) is lightness
    a = jitter_lightness(lightness, torch.Generator().manual_seed(1), 0.5)
    b = jitter_lightness(lightness, torch.Generator().manual_seed(1), 0.5)
    assert torch.equal(a, b) and not torch.equal(a, lightness)
    assert a.min() >= 0 and a.max() <= 100


@pytest.mark.parametrize("seed", range(12))
def test_cutting_the_needed_region_first_changes_no_pixel(seed):
    """What the dataset sends on is only the part of the photo a sample's transform reads."""
    from zhangcolor.augment import needed_region, shifted

    image = photo(60, 90, seed)
    p = random_crop_params(torch.Generator().manual_seed(seed), 60, 90, (0.1, 1.0))
    p[5] = (seed - 6) / 20  # rotate most of them, both ways
    top, left, bottom, right = needed_region(p, 60, 90)
    cut = image[:, top:bottom, left:right]
    whole = crop_flip_rotate(image[None], p[None], 24)
    part = crop_flip_rotate(cut[None], shifted(p, top, left)[None], 24)
    torch.testing.assert_close(part, whole, atol=1e-5, rtol=0)  # float rounding only
