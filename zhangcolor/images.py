"""Finding and decoding image files, robustly.

Every failure to read a file becomes an :class:`ImageError` whose message says what is wrong with
that file, so a caller can skip it, report it, and go on with the rest.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zhangcolor.constants import IMAGE_SUFFIXES

#: Pillow modes that hold one gray channel (with or without alpha).
ORIENTATION_TAG = 0x0112
#: warnings.catch_warnings swaps a process-wide list, so two threads opening files at once
#: could each restore the other's filters: opening takes this lock (images are decoded in
#: threads by colorize and build-bins).
_WARNING_FILTERS = threading.Lock()
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageError(Exception):
    """A file could not be used as an image; the message says why."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image, EXIF orientation applied.

    Attributes:
        pixels: ``(H, W, 3)`` sRGB, uint8 for 8-bit files and float32 in [0, 1] for deeper ones
            (gray sources are repeated over 3 channels).
        alpha: ``(H, W)`` float32 opacity in [0, 1], or None when the file has no alpha.
        gray_source: True when the file itself stores one channel (L, LA, I;16, F, ...).
        original_size: ``(width, height)`` before any resizing.
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    gray_source: bool
    original_size: tuple[int, int]

    @property
    def rgb(self) -> np.ndarray:
        """``(H, W, 3)`` float32 sRGB in [0, 1]."""
        if self.pixels.dtype == np.uint8:
            return self.pixels.astype(np.float32) * np.float32(1.0 / 255.0)
        return self.pixels


def find_images(
    root: str | Path,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
    *,
    exclude: str | Path | None = None,
) -> list[Path]:
    """All image files under ``root``, recursively, sorted; a file is returned as itself.

    The folder ``exclude`` (e.g. colorize's output folder inside the input folder) is not
    entered.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    seen = {root.resolve()} | (set() if exclude is None else {Path(exclude).resolve()})
    found = []
    # Symlinked folders are followed (datasets are often assembled from links), each real
    # folder once, so a link loop ends.
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = (Path(folder) / d).resolve()
            if real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes]
    return sorted(p for p in found if p.is_file())


def _open(source: Path | bytes, max_pixels: int | None) -> Image.Image:
    if isinstance(source, bytes):
        size, opened = len(source), io.BytesIO(source)
    else:
        opened = source
        try:
            size = source.stat().st_size
        except OSError as e:
            raise ImageError(f"cannot read the file: {e.strerror or e}") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with _WARNING_FILTERS, warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; refuse all of that range.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"too many pixels (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}), "
            "a possible decompression bomb; downscale the image first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (unknown or corrupt format)") from None
    except OSError as e:
        raise ImageError(f"cannot read the file: {e.strerror or e}") from None
    width, height = image.size  # known from the header, before any pixel is decoded
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageError(
            f"too many pixels ({width}×{height} = {width * height:,}; the limit is "
            f"{max_pixels:,}); downscale the image first"
        )
    return image


def header_pixels(path: str | Path) -> int:
    """Width × height from a file's header, without decoding the pixels (cheap); 0 when Pillow
    cannot open it (:func:`load_image` then says why)."""
    try:
        image = _open(Path(path), None)
    except ImageError:
        return 0
    with image:
        return image.width * image.height


def _high_bit_gray(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer or float gray as float32 in [0, 1]."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode == "F":
        peak = float(np.nanmax(values)) if values.size else 0.0
        # Float files are [0, 1] by convention; some hold 8- or 16-bit ranges instead.
        scale = next((s for s in (1.0, 255.0, 65535.0) if peak <= s), peak)
    else:
        scale = (
            65535.0
            if image.mode.startswith("I;16") or values.max(initial=0) <= 65535
            else (float(values.max()))
        )
    return np.clip(np.nan_to_num(values / scale), 0.0, 1.0)


def load_image(
    source: str | Path | bytes,
    *,
    short_side: int | None = None,
    max_pixels: int | None = None,
) -> LoadedImage:
    """Decode an image file (a path, or its bytes) to sRGB, optionally resized so its short side
    is ``short_side``.

    Handles EXIF orientation, CMYK, palette with transparency, 16-bit and float gray, and the
    first frame of animations. Raises :class:`ImageError` with the reason for anything else,
    including more than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    image = _open(source if isinstance(source, bytes) else Path(source), max_pixels)
    try:
        with image:
            width, height = image.size
            # EXIF orientations 5 to 8 turn the picture by 90°.
            if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):
                width, height = height, width
            if short_side is not None and image.format == "JPEG":
                # Decode at the smallest DCT scale that still covers the working size.
                image.draft(image.mode, (short_side, short_side))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_arrays(image, short_side, (width, height))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too many pixels, a possible decompression bomb") from None
    except OSError as e:
        raise ImageError(f"truncated or corrupt image data ({e})") from None
    except (ValueError, TypeError, SyntaxError, EOFError) as e:
        raise ImageError(f"cannot decode the image ({e})") from None


def _to_arrays(
    image: Image.Image, short_side: int | None, original_size: tuple[int, int]
) -> LoadedImage:
    if min(image.size) < 1:
        raise ImageError(f"image has no pixels ({image.size[0]}×{image.size[1]})")
    mode = image.mode
    gray_source = mode in _GRAY_MODES
    has_alpha = mode in ("RGBA", "LA", "La", "PA", "RGBa") or (
        mode == "P" and "transparency" in image.info
    )
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = Image.fromarray(_high_bit_gray(image), mode="F")
    elif has_alpha:
        image = image.convert("RGBA")
    elif mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageError(f"unsupported pixel mode {mode!r} ({e})") from None

    if short_side is not None and min(image.size) != short_side:
        w, h = image.size
        scale = short_side / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)

    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32).clip(0.0, 1.0)
        pixels, alpha = np.repeat(gray[..., None], 3, axis=2), None
    else:
        values = np.array(image)  # a writable copy, so torch can wrap it
        pixels = values[..., :3]
        alpha = values[..., 3] * np.float32(1.0 / 255.0) if image.mode == "RGBA" else None
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels),
        alpha=alpha,
        gray_source=gray_source,
        original_size=original_size,
    )


# ----------------------------------------------------------------------------- writing


def finished_image(
    color: Image.Image, alpha: np.ndarray | None, fmt: str, side_by_side: bool = False
) -> Image.Image:
    """The image to write: the color result with the input's alpha (PNG only), or gray | color
    when ``side_by_side``. ``alpha`` is ``(H, W)`` float opacity in [0, 1]."""
    if side_by_side:
        gray = Image.fromarray(np.asarray(color.convert("L")), "L").convert("RGB")
        both = Image.new("RGB", (color.width * 2, color.height), "white")
        both.paste(gray, (0, 0))
        both.paste(color, (color.width, 0))
        return both
    if alpha is not None and fmt == "png":
        color = color.copy()
        color.putalpha(Image.fromarray((alpha * 255 + 0.5).astype(np.uint8), "L"))
    return color


def write_image(image: Image.Image, target, fmt: str, *, png_compress: int = 6) -> None:
    """Save as ``png`` (zlib level ``png_compress``, 0-9; 6 is zlib's default, 1 is several
    times faster for slightly larger files) or ``jpg`` (quality 95) to a path or file object."""
    if fmt == "jpg":
        image.save(target, format="JPEG", quality=95)
    else:
        image.save(target, format="PNG", compress_level=png_compress)
