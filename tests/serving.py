"""Helpers of the server tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_bytes(seed: int, size=(96, 72), fmt="PNG", mode="RGB") -> bytes:
    """A smooth random colour picture's file bytes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    image = Image.fromarray(small, "RGBA").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()
