"""The training photos, decoded once: 8-bit RGBA at the load size, in one memory-mapped file.

Decoding a JPEG and resizing it costs far more than a training step's share of a photo, and a
run decodes every photo every epoch. So the first run on a folder decodes each photo once (on
threads: Pillow releases the GIL) into ``pixels.u8``, with an index of offsets and shapes and
the reason for every unusable file; later epochs and runs slice it, with no copy until collation.

The cache lives under ``$ZHANGCOLOR_CACHE/photos/<key>`` (else ``~/.cache/zhangcolor``). Its key
hashes the load size and, for every file, its path, size and modification time: change, add or
remove a photo and the next run builds a new cache. A cache is checked against its index when
opened (every photo's bytes where the index says, ``pixels.u8`` exactly that long), and a
damaged one (a disk that filled, a copy cut short) is built again, with a warning that names it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zhangcolor.color_table import is_gray
from zhangcolor.files import cache_dir, fsync_file
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


class DamagedCache(Exception):
    """A cache folder whose files do not agree with its index; the message says how."""


class PhotoCache:
    """A built cache: ``image(i)`` is the i-th photo's ``(H, W, 4)`` uint8 array (a view of the
    memory map), or ``None`` with ``reasons[i]`` saying why it is unusable.

    Opening checks the folder against its index (:class:`DamagedCache` when they disagree), and
    that it holds ``count`` photos when given."""

    def __init__(self, folder: Path, count: int | None = None) -> None:
        self.folder = folder
        self.offsets, self.shapes, self.reasons = _read_index(folder, count)
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


def _read_index(folder: Path, count: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The offsets ``(N,)``, shapes ``(N, 3)`` and reasons of a cache's index, checked: N
    entries (``count`` when given), each photo RGBA and laid out right after the one before,
    and ``pixels.u8`` exactly as long as they all; else :class:`DamagedCache`."""
    try:
        index = json.loads((folder / _INDEX).read_text(encoding="utf-8"))
        offsets = np.asarray(index["offsets"], dtype=np.int64).reshape(-1)
        shapes = np.asarray(index["shapes"], dtype=np.int64).reshape(-1, 3)
        reasons = index["reasons"]
        stored = (folder / _PIXELS).stat().st_size
    except FileNotFoundError as e:
        raise DamagedCache(f"{Path(e.filename).name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as e:  # json's errors are ValueErrors
        raise DamagedCache(f"its index is unreadable ({type(e).__name__})") from None
    if not (isinstance(reasons, list) and len(reasons) == len(offsets) == len(shapes)):
        raise DamagedCache("its index's lists differ in length")
    if count is not None and len(reasons) != count:
        raise DamagedCache(f"its index lists {len(reasons)} photos, not {count}")
    usable = np.array([reason == "" for reason in reasons], dtype=bool)
    sizes = shapes.prod(axis=1)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    rgba = np.where(usable, (shapes >= 1).all(axis=1) & (shapes[:, 2] == 4), sizes == 0)
    if not (rgba.all() and np.array_equal(offsets, starts)):
        raise DamagedCache("its index's offsets and shapes do not fit together")
    expected = int(ends[-1]) if len(ends) else 0
    if stored != expected:
        raise DamagedCache(f"{_PIXELS} holds {stored:,} bytes, its index {expected:,}")
    return offsets, shapes, reasons


def estimate_bytes(count: int, load_size: int) -> int:
    """About how large a cache of ``count`` photos gets (4:3 photos on average)."""
    return count * load_size * (load_size * 4 // 3) * 4


def cache_folder(paths: Sequence[Path], load_size: int) -> Path:
    return cache_dir() / "photos" / cache_key(paths, load_size)


def is_built(paths: Sequence[Path], load_size: int) -> bool:
    """Whether the cache of ``paths`` is built and whole (a damaged one is not)."""
    try:
        PhotoCache(cache_folder(paths, load_size), len(paths))
    except DamagedCache:
        return False
    return True


def open_cache(
    paths: Sequence[Path],
    load_size: int,
    *,
    workers: int = 4,
    on_image: Callable[[Path], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> PhotoCache:
    """The cache of ``paths`` at ``load_size``: opened if built before and whole, else built
    now. A damaged one is deleted and built again, after ``warn`` (default: a UserWarning)
    says which and why. An OSError when the cache folder cannot be written."""
    folder = cache_folder(paths, load_size)
    try:
        return PhotoCache(folder, len(paths))
    except DamagedCache as e:
        if folder.exists():
            message = f"the photo cache {folder} is damaged ({e}); building it again"
            (warn or (lambda text: warnings.warn(text, stacklevel=3)))(message)
            _remove(folder)
    build(paths, load_size, folder, workers=workers, on_image=on_image)
    try:
        return PhotoCache(folder, len(paths))
    except DamagedCache as e:  # the damaged one could not be deleted (a read-only folder)
        raise OSError(f"cannot replace the damaged photo cache {folder} ({e})") from None


def try_cache(
    paths: Sequence[Path],
    load_size: int,
    *,
    required: bool,
    workers: int = 4,
    on_image: Callable[[Path], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Build (or check) the cache of ``paths``, as :func:`open_cache` does. Where the cache
    folder cannot be written (a file, a read-only or full disk), an OSError that says what to do
    when the cache is ``required``; else ``warn`` says the photos go without it."""
    try:
        open_cache(paths, load_size, workers=workers, on_image=on_image, warn=warn)
    except OSError as e:
        problem = f"cannot build the photo cache in {cache_dir()}: {e.strerror or e}"
        if required:
            raise OSError(
                f"{problem}; set $ZHANGCOLOR_CACHE to a writable folder, or pass --cache off"
            ) from None
        (warn or (lambda text: warnings.warn(text, stacklevel=2)))(
            f"training without the photo cache: {problem} (set $ZHANGCOLOR_CACHE to a writable "
            "folder to use one)"
        )


def _remove(folder: Path) -> None:
    """Delete a cache folder: first renamed aside, so that no process meanwhile opens half of
    it, and a build's rename into its place cannot fail on what is left."""
    aside = folder.with_name(f".{folder.name}.damaged.{os.getpid()}")
    try:
        os.replace(folder, aside)
    except OSError:
        aside = folder
    shutil.rmtree(aside, ignore_errors=True)


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
            out.flush()
            os.fsync(out.fileno())  # the pixels reach the disk before the index says they did
        index = {"offsets": offsets, "shapes": [list(s) for s in shapes], "reasons": reasons}
        (building / _INDEX).write_text(json.dumps(index), encoding="utf-8")
        fsync_file(building / _INDEX)
        try:
            os.replace(building, folder)
        except OSError:  # another process built it meanwhile: keep theirs
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
