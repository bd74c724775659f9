"""The 8-bit sRGB color table, and the grayscale test it answers (``is_gray``).

Converting every pixel of a photo to Lab to find its nearest bin, or to tell whether it has any
color, costs far more than reading a table: there are only 2²⁴ 8-bit sRGB colors, so each is
converted once, and a photo's pixels index the table. Training's photo cache and ``evaluate``
skip grayscale photos with :func:`is_gray`; ``build-bins`` (:mod:`zhangcolor.prior`) counts the
pixels per bin with :func:`opaque_entries`.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from zhangcolor.bins import ab_bins, nearest_bins
from zhangcolor.color import rgb_to_lab
from zhangcolor.constants import GRAY_AB_THRESHOLD
from zhangcolor.files import atomic_write, cache_dir
from zhangcolor.images import LoadedImage

#: Bump when the Lab conversion or the gray test changes, so cached color tables are rebuilt.
_COLOR_TABLE_VERSION = 1
#: A color table entry is its bin index plus this when the color counts as colorful.
COLORFUL = 512


@functools.lru_cache(maxsize=1)
def color_table() -> np.ndarray:
    """For every 8-bit sRGB color (index r·2¹⁶ + g·2⁸ + b): its nearest of the paper's 313
    bins, plus :data:`COLORFUL` when |a| or |b| is above 5. ``(2²⁴,)`` int16, exactly what
    converting each pixel would give.

    Built once (about 2 s) and cached on disk under $ZHANGCOLOR_CACHE or ~/.cache/zhangcolor.
    """
    centers = ab_bins()
    key = centers.double().numpy().tobytes()
    digest = hashlib.sha1(key + bytes([_COLOR_TABLE_VERSION])).hexdigest()[:16]
    path = cache_dir() / f"srgb8-bins-{digest}.npy"
    try:
        table = np.load(path)
        if table.shape == (1 << 24,) and table.dtype == np.int16:
            return table
    except (OSError, ValueError):
        pass
    table = np.empty(1 << 24, dtype=np.int16)
    levels = torch.arange(256, dtype=torch.float32) * np.float32(1.0 / 255.0)
    gb = torch.cartesian_prod(levels, levels).T  # (2, 65536): g, b
    for r in range(0, 256, 16):  # 16 values of r, about 1 M colors, at a time
        red = levels[r : r + 16].repeat_interleave(gb.shape[1])
        rgb = torch.stack([red, gb[0].repeat(16), gb[1].repeat(16)]).view(1, 3, 1, -1)
        ab = rgb_to_lab(rgb)[:, 1:]  # (1, 2, 1, N)
        _, index = nearest_bins(ab, centers, k=1)
        colorful = ab.abs().amax(1) > GRAY_AB_THRESHOLD  # (1, 1, N)
        entry = index.flatten() + COLORFUL * colorful.flatten()
        table[r << 16 : (r + 16) << 16] = entry.numpy().astype(np.int16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.save(tmp, table))
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return table


def opaque_entries(image: LoadedImage) -> np.ndarray:
    """Color-table entries of the opaque pixels of an 8-bit color image: ``(N,)`` int16 (or
    ``(H, W)`` when the image has no alpha)."""
    rgb = image.pixels.astype(np.int32)  # (H, W, 3); only gray sources are deeper than 8 bits
    entries = color_table()[(rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]]
    # Pixels with alpha < 255 carry no weight.
    return entries if image.alpha is None else entries[image.alpha >= 1.0]


def is_gray(image: LoadedImage) -> bool:
    """True when no opaque pixel of ``image`` has |a| or |b| above 5 (the authors' test)."""
    if image.gray_source:
        return True
    return not bool((opaque_entries(image) >= COLORFUL).any())
