"""The train/validation split of a photo folder, keyed on each file's path.

A file goes to validation when a seeded hash of its path relative to the folder, as a fraction
of 2^64, is below the validation share. Adding or removing files therefore never moves the
others between train and val, and ``evaluate --split val`` finds exactly what ``train`` held out.
The hash is of the path's bytes on disk, so a name that is not valid UTF-8 (``caf\xe9.png``) has
one too, and every other name the UTF-8 it always had.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from zhangcolor.constants import VAL_FRACTION
from zhangcolor.images import find_images


def is_validation(relative: str, val_fraction: float = VAL_FRACTION, seed: int = 0) -> bool:
    """Whether the file at ``relative`` (a POSIX path inside the folder) is held out."""
    key = f"{seed}:{relative}".encode("utf-8", "surrogateescape")
    share = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
    return share < val_fraction


def split_files(
    root: str | Path, val_fraction: float = VAL_FRACTION, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """All images under ``root``, split into (train, val)."""
    root = Path(root)
    train, val = [], []
    for path in find_images(root):
        held_out = is_validation(path.relative_to(root).as_posix(), val_fraction, seed)
        (val if held_out else train).append(path)
    return train, val
