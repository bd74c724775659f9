"""Finding and decoding image files, robustly.

Every failure to read a file becomes an :class:`ImageError` whose message says what is wrong with
that file, so a caller can skip it, report it, and go on with the rest: whatever Pillow raises
while decoding, and what the file shows before decoding (not a regular file, a format outside
:data:`DECODERS`, a PNG of too many small chunks, more pixels to decode than the caller allows).
Embedded ICC profiles other than sRGB are converted to sRGB.

No image is refused for its shape. What a file costs is bounded by the pixels it decodes to (at
most ``max_pixels``, :data:`MAX_DECODED_PIXELS` unless the caller says otherwise; a JPEG that is
resized is decoded at the smallest DCT scale that covers the size it is resized to), and by the
pixels a resize makes: a resize to a short side s makes at most :data:`RESIZE_ASPECT` · s²
pixels (and never more than :data:`~zhangcolor.constants.MAX_RESIZED_PIXELS`), so a thin strip
gets a shorter side than s instead of growing to gigapixels.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from zhangcolor.constants import IMAGE_SUFFIXES, MAX_RESIZED_PIXELS, PNG_COMPRESS

#: The Pillow decoders a file may reach. Pillow picks the decoder from the content, not the name:
#: without this list an EPS file named .jpg would run Ghostscript where it is installed. (JPEG
#: also opens phones' multi-picture JPEGs, which Pillow calls MPO.)
DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

#: The most pixels a file is decoded at unless the caller says otherwise (``max_pixels``): a 50 MP
#: photo costs colorize about 1.4 GB at its peak, and a 1 KB JPEG whose header says 9000×9000
#: (81 MP, about 1.95 GB to decode) is refused before any pixel is decoded.
MAX_DECODED_PIXELS = 50_000_000
#: A resize to a short side s makes at most this many s² pixels: a 50:1 panorama keeps its shape,
#: and a thinner strip gets a shorter side than s (a 274-byte 65535×1 PNG at s = 256 becomes
#: 458,745×7, 3.2 MP, where it would have been 16,776,960×256, 4.3 G).
RESIZE_ASPECT = 50
#: The most PNG chunks of under :data:`SMALL_PNG_CHUNK` bytes a file may hold: real files have a
#: few dozen (and image data in large chunks), while Pillow spends about 6 µs on each, so 1.6 M
#: empty chunks (19 MB) cost 9 s of CPU per decode. Larger chunks cost in proportion to their
#: bytes, which the file's size bounds.
MAX_SMALL_PNG_CHUNKS = 4096
SMALL_PNG_CHUNK = 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The EXIF tag of a picture's orientation.
ORIENTATION_TAG = 0x0112
#: warnings.catch_warnings swaps a process-wide list, so two threads opening files at once
#: could each restore the other's filters: opening takes this lock (images are decoded in
#: threads by colorize and build-bins).
_WARNING_FILTERS = threading.Lock()
#: Pillow modes that hold one gray channel (with or without alpha).
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
    """Everything named like an image under ``root``, recursively, sorted; a file is returned as
    itself.

    Not only regular files are listed: a FIFO, a broken link or a folder named ``x.jpg`` is
    there too, so that :func:`load_image` gives it a reason instead of it vanishing from a run.
    Folders are walked whatever their names. The folder ``exclude`` (e.g. colorize's output
    folder inside the input folder) is neither entered nor listed.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    excluded = set() if exclude is None else {Path(exclude).resolve()}
    seen = {root.resolve()} | excluded
    found = []
    # Symlinked folders are followed (datasets are often assembled from links), each real
    # folder once, so a link loop ends.
    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = (Path(folder) / d).resolve()
            if Path(d).suffix.lower() in suffixes and real not in excluded:
                found.append(Path(folder) / d)
            if real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes]
    return sorted(found)


def file_size(path: Path) -> int:
    """The size of a regular file; anything else (a folder, a FIFO, a broken link) is an
    :class:`ImageError` that says what it is, before Pillow could block on opening it."""
    try:
        info = path.stat()
    except OSError as e:
        if path.is_symlink():
            raise ImageError(f"broken symbolic link ({e.strerror or e})") from None
        raise ImageError(f"cannot read the file: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError("a folder named like an image, not an image file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "special file")
        raise ImageError(f"not a regular file (a {kind})")
    return info.st_size


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def _open(source: Path | bytes) -> Image.Image:
    """Open ``source`` with one of :data:`DECODERS`, reading only its header (and, for a PNG, its
    chunks' headers: :func:`check_png_chunks`)."""
    if isinstance(source, bytes):
        size, opened = len(source), io.BytesIO(source)
    else:
        size, opened = file_size(source), source
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        if isinstance(opened, io.BytesIO):
            check_png_chunks(opened)
        else:
            with open(opened, "rb") as stream:
                check_png_chunks(stream)
        with _WARNING_FILTERS, warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; refuse all of that range.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(opened, formats=DECODERS)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"too many pixels (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}), "
            "a possible decompression bomb; downscale the image first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"not an image Pillow can read (unknown or corrupt format; read are {_FORMATS})"
        ) from None
    except OSError as e:
        raise ImageError(f"cannot read the file: {e.strerror or e}") from None
    except Exception as e:  # a malformed header raises anything (ValueError, struct.error, ...)
        raise ImageError(f"cannot read the image header ({type(e).__name__}: {e})") from None


_FORMATS = ", ".join(DECODERS)


def check_png_chunks(stream) -> None:
    """Refuse, from its chunks' headers alone, a PNG of more than :data:`MAX_SMALL_PNG_CHUNKS`
    chunks of under :data:`SMALL_PNG_CHUNK` bytes (``stream``: a binary file at its start,
    left there; anything but a PNG passes). The walk stops at the limit, so it is cheap."""
    start = stream.tell()
    try:
        if stream.read(8) != _PNG_SIGNATURE:
            return
        small = 0
        while True:
            header = stream.read(8)
            if len(header) < 8:
                return
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                return
            if length < SMALL_PNG_CHUNK:
                small += 1
                if small > MAX_SMALL_PNG_CHUNKS:
                    raise ImageError(
                        f"a PNG of too many small chunks (over {MAX_SMALL_PNG_CHUNKS:,} of under "
                        f"{SMALL_PNG_CHUNK:,} bytes; real files have a few dozen), a possible "
                        "denial of service; save it again with any image editor"
                    )
            stream.seek(length + 4, io.SEEK_CUR)  # its data and CRC
    finally:
        stream.seek(start)


def resized_size(
    size: tuple[int, int], short_side: int | None, enlarge: bool = True
) -> tuple[int, int] | None:
    """``(width, height)`` with the short side at ``short_side``, keeping the aspect; None when
    the image stays as it is (no ``short_side``, it is already that, or smaller and not
    ``enlarge``).

    The result never has more than :data:`RESIZE_ASPECT` · ``short_side``² pixels (nor
    :data:`~zhangcolor.constants.MAX_RESIZED_PIXELS`): a thinner strip than RESIZE_ASPECT:1 gets
    the short side that fits, and one too long for even a short side of 1 px keeps 1 px and has
    its long side cut to the budget (the only case where the aspect changes)."""
    w, h = size
    short, long = min(w, h), max(w, h)
    if short_side is None or short < 1:
        return None
    budget = min(MAX_RESIZED_PIXELS, RESIZE_ASPECT * short_side * short_side)
    side = short_side if enlarge else min(short_side, short)
    if side * round(long * side / short) > budget:
        side = max(1, math.isqrt(budget * short // long))
        while side > 1 and side * round(long * side / short) > budget:
            side -= 1
    if side == short and long * side <= budget:
        return None
    along = max(1, min(round(long * side / short), budget // side))
    return (along, side) if w >= h else (side, along)


def header_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """Width and height from a file's header (a path, or its bytes), without decoding the
    pixels, after the checks every loader makes before decoding (a regular file, one of
    :data:`DECODERS`, not a PNG of too many small chunks); None when those refuse it
    (:func:`load_image` then says why)."""
    try:
        image = _open(source if isinstance(source, bytes) else Path(source))
    except ImageError:
        return None
    with image:
        return image.size


def header_pixels(path: str | Path) -> int:
    """Width × height from a file's header (:func:`header_size`); 0 when it is refused."""
    size = header_size(path)
    return 0 if size is None else size[0] * size[1]


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
    enlarge: bool = True,
) -> LoadedImage:
    """Decode an image file (a path, or its bytes) to sRGB, optionally resized so its short side
    is ``short_side`` (only ever down when ``enlarge`` is False), within the resize budget of
    :func:`resized_size`.

    Handles EXIF orientation, ICC profiles (converted to sRGB), CMYK, palette with transparency,
    16-bit and float gray, and the first frame of animations. Raises :class:`ImageError` with
    the reason for anything else: before any pixel is decoded, a file that is not a regular
    file, a format outside :data:`DECODERS`, a PNG of too many small chunks, and more than
    ``max_pixels`` pixels to decode (:data:`MAX_DECODED_PIXELS` when None; a JPEG that is
    resized counts at the DCT scale it is decoded at); then any error while decoding.
    """
    limit = MAX_DECODED_PIXELS if max_pixels is None else max_pixels
    image = _open(source if isinstance(source, bytes) else Path(source))
    try:
        with image:
            return _decode(image, short_side, enlarge, limit)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too many pixels, a possible decompression bomb") from None
    except OSError as e:
        raise ImageError(f"truncated or corrupt image data ({e})") from None
    except Exception as e:  # Pillow's decoders raise many kinds; each is this file's reason
        raise ImageError(f"cannot decode the image ({type(e).__name__}: {e})") from None


def _decode(
    image: Image.Image, short_side: int | None, enlarge: bool, max_pixels: int
) -> LoadedImage:
    width, height = image.size
    if image.format != "JPEG":  # before getexif, which decodes a PNG whole
        _check_pixels(width, height, width * height, max_pixels)
    # EXIF orientations 5 to 8 turn the picture by 90°.
    if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):
        width, height = height, width
    target = resized_size((width, height), short_side, enlarge)
    if target is not None and image.format == "JPEG":
        # Decode at the smallest DCT scale that still covers the size it is resized to.
        side = min(target)
        image.draft(image.mode, (side, side))
    _check_pixels(width, height, image.size[0] * image.size[1], max_pixels)
    image.load()
    profile = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    if profile:
        image = to_srgb(image, profile)
    return _to_arrays(image, target, (width, height))


def _check_pixels(width: int, height: int, decoded: int, max_pixels: int) -> None:
    """Refuse a ``width × height`` file whose decoding makes ``decoded`` pixels (its own, or a
    JPEG's draft) when that is over ``max_pixels``."""
    if decoded > max_pixels:
        raise ImageError(
            f"too many pixels ({width}×{height} = {width * height:,}; the limit is "
            f"{max_pixels:,}); downscale the image first"
        )


def to_srgb(image: Image.Image, profile: bytes) -> Image.Image:
    """``image`` (RGB, RGBA or CMYK) converted from its embedded ICC ``profile`` to sRGB, as RGB
    or RGBA; returned as it is when the profile is already sRGB (by its description), is not for
    the image's colour space (gray images keep their values), or cannot be read (the pixels are
    then taken as sRGB, as a browser does)."""
    if image.mode not in _ICC_MODES:
        return image
    space, out_mode = _ICC_MODES[image.mode]
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        description = source.profile.profile_description or ""
        if source.profile.xcolor_space.strip() != space or "srgb" in description.lower():
            return image
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
#: Pillow mode -> (the ICC colour space its profile must have, the mode it becomes).
_ICC_MODES = {"RGB": ("RGB", "RGB"), "RGBA": ("RGB", "RGBA"), "CMYK": ("CMYK", "RGB")}


def _to_arrays(
    image: Image.Image, target: tuple[int, int] | None, original_size: tuple[int, int]
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

    if target is not None and image.size != target:  # the header's size turned, or a draft
        image = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)

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


#: What every written result carries, so that colorize knows its own outputs when they come
#: back as inputs: a PNG text chunk ``Software`` (:data:`OUTPUT_KEY`), or a JPEG comment.
OUTPUT_MARK = "colorized by zhangcolor"
OUTPUT_KEY = "Software"


def write_image(image: Image.Image, target, fmt: str, *, png_compress: int = PNG_COMPRESS) -> None:
    """Save as ``png`` (zlib level ``png_compress``, 0-9; :data:`PNG_COMPRESS` says why 1) or
    ``jpg`` (quality 95) to a path or file object, marked with :data:`OUTPUT_MARK`."""
    if fmt == "jpg":
        image.save(target, format="JPEG", quality=95, comment=OUTPUT_MARK.encode())
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text(OUTPUT_KEY, OUTPUT_MARK)
        image.save(target, format="PNG", compress_level=png_compress, pnginfo=info)
