"""Folders of photos as training data.

- A deterministic 90/10 train/val split keyed on each file's path, so adding files never moves
  the old ones between train and val.
- Training crops: random resized crop, horizontal flip, and rotation up to 15° with p = 0.3, on
  8-bit RGBA; alpha goes through the same transforms, so transparent pixels (and the corners a
  rotation brings in) carry no weight.
- Every sample's augmentation is seeded from (run seed, epoch, index), so a resumed run sees the
  very same crops.
- Lab conversion happens per batch on the training device (``lab_batch``), not per sample.
- Unusable files (corrupt, grayscale) are skipped and reported in the batch, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from zhangcolor.color import rgb_to_lab
from zhangcolor.images import ImageError, load_image
from zhangcolor.prior import is_gray


def train_transform(crop: int) -> v2.Transform:
    """The paper-style augmentation on a ``(4, H, W)`` uint8 RGBA tensor."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(crop, scale=(0.25, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.RandomRotation(15)], p=0.3),
        ]
    )


def val_transform(crop: int) -> v2.Transform:
    """Resize the short side to ``crop`` and take the centre."""
    return v2.Compose([v2.Resize(crop, antialias=True), v2.CenterCrop(crop)])


class PhotoDataset(Dataset):
    """Color photos as ``(4, crop, crop)`` uint8 RGBA tensors.

    Indexed by ``(index, sample_seed)`` pairs from :class:`EpochSampler` (or a plain index).
    Returns ``{"rgba": tensor}``, or ``{"skip": (file, reason)}`` for a file that cannot be used.
    """

    def __init__(self, paths: Sequence[Path], *, crop: int, train: bool, load_size: int = 256):
        self.paths = list(paths)
        self.crop = crop
        self.load_size = max(load_size, crop)
        self.transform = train_transform(crop) if train else val_transform(crop)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        path = self.paths[index]
        try:
            image = load_image(path, short_side=self.load_size)
        except ImageError as e:
            return {"skip": (str(path), str(e))}
        if is_gray(image):
            return {"skip": (str(path), "grayscale")}
        rgb = torch.from_numpy(image.pixels).permute(2, 0, 1)  # (3, H, W) uint8
        if image.alpha is None:
            alpha = torch.full_like(rgb[:1], 255)
        else:
            alpha = torch.from_numpy(np.round(image.alpha * 255).astype(np.uint8))[None]
        rgba = torch.cat([rgb, alpha])  # (4, H, W)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return {"rgba": self.transform(rgba)}


def collate(items: list[dict]) -> dict:
    """Stack the usable samples; list the skipped ones."""
    images = [item["rgba"] for item in items if "rgba" in item]
    return {
        "rgba": torch.stack(images) if images else None,
        "skipped": [item["skip"] for item in items if "skip" in item],
    }


class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded across ranks, yielding (index, sample seed).

    ``skip`` drops this rank's first samples of the epoch, so a resumed run goes on where it
    stopped. Every rank gets the same number of samples (the permutation wraps around).
    """

    def __init__(
        self, n: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0
    ) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.skip = rank, world, skip

    def _shard(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = -(-self.n // self.world)
        order = (order * (1 + self.world))[: per_rank * self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self._shard()[self.skip :]:
            yield i, (self.seed * 1_000_003 + self.epoch) * 1_000_033 + i

    def __len__(self) -> int:
        return max(0, len(self._shard()) - self.skip)


def lab_batch(rgba: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split a uint8 RGBA batch into Lab parts, on its device.

    Args:
        rgba: ``(B, 4, H, W)`` uint8.

    Returns:
        ``lightness (B, 1, H, W)`` in [0, 100], ``ab (B, 2, H, W)``, and ``mask (B, H, W)``
        True where alpha is 255.
    """
    lab = rgb_to_lab(rgba[:, :3].float() / 255.0)
    return lab[:, :1], lab[:, 1:], rgba[:, 3] == 255
