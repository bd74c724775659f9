"""The training photos, decoded once: 8-bit RGBA at the load size, in one memory-mapped file.

Decoding a JPEG and resizing it costs far more than a training step's share of a photo, and a
run decodes every photo every epoch. So the first run on a folder decodes each photo once (on
threads: Pillow releases the GIL) into ``pixels.u8``, with an index of offsets and shapes and
the reason for every unusable file; later epochs and runs slice it, with no copy until collation.

The cache lives under ``$ZHANGCOLOR_CACHE/photos/<key>`` (else ``~/.cache/zhangcolor``). Its key
hashes the load size and, for every file, its path, size and modification time: change, add or
remove a photo and the next run builds a new cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zhangcolor.color_table import is_gray
from zhangcolor.files import cache_dir
from zhangcolor.images import ImageError, LoadedImage, load_image

#: Bump when what a cache holds changes (decoding, the gray test, the layout).
VERSION = 1
#: Files of a cache folder.
_PIXELS, _INDEX = "pixels.u8", "index.json"


def rgba(image: LoadedImage) -> np.ndarray:
    """A decoded photo as ``(H, W, 4)`` uint8 RGBA (alpha 255 where the file has none)."""
    pixels = image.pixels
    if pixels.dtype != np.uint8:  # deeper-than-8-bit sources
        pixels = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    if image.alpha is None:
        alpha = np.full(pixels.shape[:2], 255, np.uint8)
    else:
        alpha = np.round(image.alpha * 255).astype(np.uint8)
    return np.concatenate([pixels, alpha[..., None]], axis=2)


def decode(path: Path, load_size: int) -> np.ndarray | str:
    """A training photo as RGBA at short side ``load_size``, or the reason it cannot be used."""
    try:
        image = load_image(path, short_side=load_size)
    except ImageError as e:
        return str(e)
    if is_gray(image):
        return "grayscale"
    return rgba(image)


def cache_key(paths: Sequence[Path], load_size: int) -> str:
    """Hash of the load size and every file's resolved path, size and modification time."""
    digest = hashlib.sha256(f"zhangcolor-photos-{VERSION}:{load_size}".encode())
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # a broken link: decoding gives its reason; it joins the key as one
            stat = path.lstat()
        line = f"\n{path.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}"
        digest.update(line.encode("utf-8", "surrogateescape"))  # a name's bytes, UTF-8 or not
    return digest.hexdigest()[:24]


class PhotoCache:
    """A built cache: ``image(i)`` is the i-th photo's ``(H, W, 4)`` uint8 array (a view of the
    memory map), or ``None`` with ``reasons[i]`` saying why it is unusable."""

    def __init__(self, folder: Path) -> None:
        index = json.loads((folder / _INDEX).read_text())
        self.folder = folder
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.shapes = np.asarray(index["shapes"], dtype=np.int64).reshape(-1, 3)
        self.reasons: list[str] = index["reasons"]
        self._pixels: np.memmap | None = None  # opened lazily: in each DataLoader worker

    def __len__(self) -> int:
        return len(self.reasons)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}  # workers map the file themselves

    def image(self, i: int) -> np.ndarray | None:
        if self.reasons[i]:
            return None
        if self._pixels is None:
            size = (self.folder / _PIXELS).stat().st_size
            self._pixels = np.memmap(self.folder / _PIXELS, np.uint8, "r", shape=(max(size, 1),))
        h, w, c = self.shapes[i]
        start = self.offsets[i]
        return self._pixels[start : start + h * w * c].reshape(h, w, c)


def estimate_bytes(count: int, load_size: int) -> int:
    """About how large a cache of ``count`` photos gets (4:3 photos on average)."""
    return count * load_size * (load_size * 4 // 3) * 4


def cache_folder(paths: Sequence[Path], load_size: int) -> Path:
    return cache_dir() / "photos" / cache_key(paths, load_size)


def is_built(paths: Sequence[Path], load_size: int) -> bool:
    return (cache_folder(paths, load_size) / _INDEX).is_file()


def open_cache(
    paths: Sequence[Path],
    load_size: int,
    *,
    workers: int = 4,
    on_image: Callable[[Path], None] | None = None,
) -> PhotoCache:
    """The cache of ``paths`` at ``load_size``: opened if built before, else built now."""
    folder = cache_folder(paths, load_size)
    if not (folder / _INDEX).is_file():
        build(paths, load_size, folder, workers=workers, on_image=on_image)
    return PhotoCache(folder)


def build(
    paths: Sequence[Path],
    load_size: int,
    folder: Path,
    *,
    workers: int = 4,
    on_image: Callable[[Path], None] | None = None,
) -> None:
    """Decode ``paths`` into a new cache at ``folder``; written aside and renamed into place,
    so a crash or a second process never leaves a half cache that looks whole."""
    building = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    offsets, shapes, reasons, position = [], [], [], 0
    try:
        with (
            open(building / _PIXELS, "wb") as out,
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        ):
            for path, result in zip(
                paths, pool.map(lambda p: decode(p, load_size), paths), strict=True
            ):
                offsets.append(position)
                if isinstance(result, str):
                    shapes.append((0, 0, 0))
                    reasons.append(result)
                else:
                    out.write(np.ascontiguousarray(result).tobytes())
                    position += result.size
                    shapes.append(result.shape)
                    reasons.append("")
                if on_image is not None:
                    on_image(path)
        index = {"offsets": offsets, "shapes": [list(s) for s in shapes], "reasons": reasons}
        (building / _INDEX).write_text(json.dumps(index))
        try:
            os.replace(building, folder)
        except OSError:  # another process built it meanwhile: keep theirs
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
