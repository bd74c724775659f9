"""Folders of photos as training data.

- Photos are read from the decoded cache (:mod:`zhangcolor.photo_cache`) when there is one,
  else decoded per sample; either way as 8-bit RGBA at the load size (short side).
- Each sample comes with its augmentation's parameters, drawn from a generator seeded by (run
  seed, epoch, index), so a resumed run sees the very same crops; the pixels are cropped,
  flipped and rotated per batch on the training device (:mod:`zhangcolor.augment`). Alpha goes
  through the same transforms, so transparent pixels carry no weight.
- A batch is its photos padded to a common size (transparent beyond each photo).
- On the device, one call (``device_batch``) takes a loader batch to what a step needs: it
  moves the pixels there, crops, flips and rotates them, and converts them to Lab, per batch
  rather than per sample.
- Unusable files (corrupt, grayscale) are skipped and reported in the batch, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from zhangcolor.augment import (
    PARAMS,
    centre_params,
    crop_flip_rotate,
    needed_region,
    random_crop_params,
    shifted,
)
from zhangcolor.color import rgb_to_lab
from zhangcolor.options import HintConfig
from zhangcolor.photo_cache import PhotoCache, decode
from zhangcolor.simulated_users import draw_points, paint_points

#: A pixel counts when its alpha is this close to opaque (after resampling, in [0, 1]).
_OPAQUE = 254.5 / 255


class PhotoDataset(Dataset):
    """Color photos as ``(H, W, 4)`` uint8 RGBA arrays at the load size, with augmentation
    parameters (random crops for training, the centre for validation).

    Indexed by ``(index, sample_seed)`` pairs from :class:`EpochSampler` (or a plain index).
    Returns ``{"rgba": array, "params": (PARAMS,)}``, or ``{"skip": (file, reason)}`` for a
    file that cannot be used. With ``hints`` (a guided network's simulated users), also
    ``"points"``: the sample's colour points (:func:`~zhangcolor.simulated_users.draw_points`),
    drawn after its crop from the same generator (validation: from one seeded by its index, so
    every epoch scores the same points).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        train: bool,
        load_size: int,
        scale: tuple[float, float] = (0.25, 1.0),
        cache: PhotoCache | None = None,
        hints: HintConfig | None = None,
    ) -> None:
        self.paths = list(paths)
        self.train, self.load_size, self.scale, self.cache = train, load_size, scale, cache
        self.hints = hints

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> np.ndarray | str:
        """The photo as RGBA, or why it cannot be used."""
        if self.cache is None:
            return decode(self.paths[index], self.load_size)
        image = self.cache.image(index)
        return self.cache.reasons[index] if image is None else image

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, key)
        image = self.image(index)
        if isinstance(image, str):
            return {"skip": (str(self.paths[index]), image)}
        height, width = image.shape[:2]
        generator = torch.Generator().manual_seed(seed)
        if self.train:
            params = random_crop_params(generator, height, width, self.scale)
        else:
            params = centre_params(height, width)
        # Only the part the crop reads travels on (a view here; collate copies it once).
        top, left, bottom, right = needed_region(params, height, width)
        item = {"rgba": image[top:bottom, left:right], "params": shifted(params, top, left)}
        if self.hints is not None:
            item["points"] = draw_points(generator, self.hints)
        return item


def collate(items: list[dict]) -> dict:
    """Pad the usable samples into one ``(B, 4, H, W)`` uint8 batch (transparent beyond each
    photo; channels last in memory) with their ``(B, PARAMS)`` parameters; list the skipped."""
    images = [item["rgba"] for item in items if "rgba" in item]
    skipped = [item["skip"] for item in items if "skip" in item]
    if not images:
        return {"rgba": None, "params": torch.zeros(0, PARAMS), "skipped": skipped}
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    batch = np.zeros((len(images), height, width, 4), dtype=np.uint8)
    for out, image in zip(batch, images, strict=True):
        out[: image.shape[0], : image.shape[1]] = image
    usable = [item for item in items if "rgba" in item]
    params = torch.stack([item["params"] for item in usable])
    points = torch.stack([item["points"] for item in usable]) if "points" in usable[0] else None
    return {
        "rgba": torch.from_numpy(batch).permute(0, 3, 1, 2),
        "params": params,
        "points": points,
        "skipped": skipped,
    }


class EpochSampler(Sampler):
    """A seeded permutation per epoch, sharded across ranks, yielding (index, sample seed).

    ``skip`` drops this rank's first samples of the epoch, so a resumed run goes on where it
    stopped. Every rank gets the same number of samples (the permutation wraps around).
    :meth:`set_epoch` moves it on, so one DataLoader (and its workers) serves every epoch.
    """

    def __init__(
        self, n: int, *, seed: int, epoch: int = 0, rank: int = 0, world: int = 1, skip: int = 0
    ) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch
        self.rank, self.world, self.skip = rank, world, skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

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


class Batch(NamedTuple):
    """A batch of crops on the training device: the network's input and the truth."""

    lightness: Tensor  # (B, 1, H, W) L in [0, 100], the network's input
    ab: Tensor  # (B, 2, H, W) the true ab
    mask: Tensor  # (B, H, W) bool, True where the pixel counts (opaque)
    hints: Tensor | None = None  # (B, 3, H, W) simulated users' points, for a guided network

    def micro_batch(self, i: int, n: int) -> Batch:
        """The ``i``-th of ``n`` micro-batches, interleaved (samples i, i + n, ...) as ranks
        shard a global batch, so that micro-batches group samples as processes do."""
        return Batch(*(None if t is None else t[i::n] for t in self))


def device_batch(
    batch: dict, crop: int, device: torch.device, hints: HintConfig | None = None
) -> Batch:
    """A loader batch (:func:`collate`) as the step needs it on ``device``: each photo
    cropped, flipped and rotated as its parameters say (:mod:`zhangcolor.augment`), then split
    into Lab (:func:`lab_batch`); every part ``crop × crop``. With ``hints`` and drawn points,
    also the simulated users' hint channels, painted from the truth
    (:func:`~zhangcolor.simulated_users.paint_points`)."""
    rgba = batch["rgba"].to(device, non_blocking=True)  # (B, 4, H, W) uint8
    lightness, ab, mask = lab_batch(crop_flip_rotate(rgba, batch["params"], crop))
    points = batch.get("points")
    if hints is None or points is None:
        return Batch(lightness, ab, mask)
    return Batch(lightness, ab, mask, paint_points(ab, mask, points, hints.location))


def lab_batch(rgba: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split an RGBA batch into Lab parts, on its device.

    Args:
        rgba: ``(B, 4, H, W)`` uint8, or float in [0, 1] (resampled by the augmentation).

    Returns:
        ``lightness (B, 1, H, W)`` in [0, 100], ``ab (B, 2, H, W)``, and ``mask (B, H, W)``
        True where the pixel is opaque.
    """
    if rgba.dtype == torch.uint8:
        return (*_lab(rgba[:, :3].float() / 255.0), rgba[:, 3] == 255)
    return (*_lab(rgba[:, :3].clamp(0, 1)), rgba[:, 3] >= _OPAQUE)


def _lab(rgb: Tensor) -> tuple[Tensor, Tensor]:
    lab = rgb_to_lab(rgb)
    return lab[:, :1], lab[:, 1:]
