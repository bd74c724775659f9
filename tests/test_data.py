"""A loader batch on the device: cropped, flipped, rotated and in Lab in one call."""

import numpy as np
import torch
from skimage.color import rgb2lab

from zhangcolor.augment import centre_params
from zhangcolor.data import Batch, collate, device_batch


def item(rgb: tuple[int, int, int], height: int, width: int, transparent_left: int = 0) -> dict:
    """A validation sample: one color, the left columns transparent, the centre square."""
    image = np.zeros((height, width, 4), np.uint8)
    image[..., :3] = rgb
    image[:, transparent_left:, 3] = 255
    return {"rgba": image, "params": centre_params(height, width)}


def test_device_batch_gives_the_crops_lab_and_where_they_count():
    red, teal = (200, 40, 30), (20, 150, 160)
    # Two sizes pad into one batch; the first photo's 10 left columns are transparent.
    batch = collate([item(red, 32, 42, transparent_left=10), item(teal, 40, 40)])
    lightness, ab, mask, hints = crops = device_batch(batch, 16, torch.device("cpu"))
    assert isinstance(crops, Batch) and hints is None  # an automatic network's batch
    assert lightness.shape == (2, 1, 16, 16) and ab.shape == (2, 2, 16, 16)
    assert mask.shape == (2, 16, 16) and mask.dtype == torch.bool
    # The centre square of the 42-wide photo starts at column 5: its first 5 columns (2.5 of
    # the 16) are transparent, and pixels half over the edge do not count.
    assert not mask[0, :, :3].any() and mask[0, :, 3:].all() and mask[1].all()
    for i, rgb in enumerate((red, teal)):
        expected = rgb2lab(np.array(rgb, np.float64).reshape(1, 1, 3) / 255).ravel()
        got = torch.cat([lightness[i], ab[i]])[:, mask[i]]  # (3, N) opaque pixels
        np.testing.assert_allclose(
            got.double().numpy(), expected[:, None].repeat(got.shape[1], 1), atol=2e-3
        )


def test_micro_batches_interleave_the_samples_as_ranks_shard():
    values = torch.arange(5.0).view(5, 1, 1, 1)
    batch = Batch(values, values.expand(5, 2, 1, 1), values[:, 0] > 1)
    parts = [batch.micro_batch(i, 2) for i in range(2)]
    assert parts[0].lightness.flatten().tolist() == [0.0, 2.0, 4.0]
    assert parts[1].ab[:, 0].flatten().tolist() == [1.0, 3.0]
    assert parts[1].mask.flatten().tolist() == [False, True]
