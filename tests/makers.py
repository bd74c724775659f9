"""Image files made by the tests themselves: tests never read ../shared or the network."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def solid(path: Path, rgb: tuple[int, int, int], size=(40, 30), mode="RGB", **save) -> Path:
    """A one-color image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, rgb).save(path, **save)
    return path


def noise(path: Path, size=(48, 32), seed=0) -> Path:
    """A colorful random image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def bad_corpus(folder: Path) -> dict[str, Path]:
    """Files that must be skipped with a reason, by name of the case."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = {}
    cases["zero-byte"] = folder / "empty.jpg"
    cases["zero-byte"].write_bytes(b"")
    cases["text"] = folder / "notes.jpg"
    cases["text"].write_text("this is not a picture\n")
    good = noise(folder / "_full.jpg", size=(64, 64))
    data = good.read_bytes()
    cases["truncated"] = folder / "truncated.jpg"
    cases["truncated"].write_bytes(data[: len(data) // 2])
    good.unlink()
    return cases


def photo_bytes(seed: int, size=(96, 72), fmt="PNG", mode="RGB") -> bytes:
    """A smooth random color picture's file bytes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    image = Image.fromarray(small, "RGBA").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()
