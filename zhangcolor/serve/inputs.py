"""What a request brings, checked where it enters: an upload's header (before any pixel is
decoded), its pixels, and a user's colour points. Each refusal is an :class:`ApiError` whose
message says why, without the file's name: the caller adds the name of its own request (the
same bytes may come from several users at once, and only one decodes them)."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from PIL import Image, UnidentifiedImageError

from zhangcolor.hints import MAX_FILE_BYTES, Hint, HintError, parse_hints
from zhangcolor.images import DECODERS, ImageError, LoadedImage, load_image
from zhangcolor.serve.errors import ApiError


def too_many_pixels(width: int, height: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "too_many_pixels",
        f"too many pixels ({width}×{height} = {width * height:,}; the limit is {limit:,}); "
        "downscale the image first",
    )


def header_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the file's header alone (a 415 when Pillow cannot read it), over
    ``max_pixels`` a 413. Any shape is taken: a 1 × 1 image or a thin strip is colorized, and
    its cost follows its pixels."""
    try:
        # lazy: reads the header only, and only with the decoders the loaders allow (an EPS
        # named .jpg never reaches its plugin)
        with Image.open(io.BytesIO(data), formats=DECODERS) as image:
            width, height = image.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, "too_many_pixels", str(e)) from None
    except MemoryError:
        raise
    except Exception as e:  # UnidentifiedImageError, or a bad chunk's ValueError, ...
        reason = (
            "unknown or corrupt format"
            if isinstance(e, UnidentifiedImageError)
            else f"{type(e).__name__}: {e}"
        )
        raise ApiError(
            415,
            "not_an_image",
            f"not an image Pillow can read ({reason}; read are {', '.join(DECODERS)})",
        ) from None
    if width * height > max_pixels:
        raise too_many_pixels(width, height, max_pixels)
    return width, height


def decode(data: bytes, max_pixels: int) -> LoadedImage:
    """The upload decoded; any failure to decode, of any kind, is a 4xx that says why."""
    try:
        return load_image(data, max_pixels=max_pixels)
    except ImageError as e:
        status, code = (413, "too_many_pixels") if "too many pixels" in str(e) else (415, "")
        raise ApiError(status, code or "not_an_image", str(e)) from None
    except MemoryError:
        raise
    except Exception as e:  # decoders raise ValueError, SyntaxError, struct.error, ...
        raise ApiError(
            415, "not_an_image", f"cannot decode the image ({type(e).__name__}: {e})"
        ) from None


def hints_json(data: bytes, where: str = "hints") -> Any:
    """A request's colour points as JSON (``{"points": [...]}``), not yet checked against a
    photo; a 422 ``bad_hints`` when the bytes are not UTF-8 JSON or over the hint file limit."""
    if len(data) > MAX_FILE_BYTES:
        raise ApiError(
            413, "too_large", f"{where}: {len(data):,} bytes; at most {MAX_FILE_BYTES:,}"
        )
    try:
        return json.loads(data.decode("utf-8")) if data.strip() else None
    except UnicodeDecodeError:
        raise ApiError(422, "bad_hints", f"{where}: not UTF-8 text") from None
    except ValueError as e:
        raise ApiError(
            422, "bad_hints", f'{where}: not JSON ({e}); send {{"points": [...]}}'
        ) from None
    except RecursionError:  # arrays nested thousands deep
        raise ApiError(422, "bad_hints", f"{where}: JSON nested too deep") from None


def points(value: Any, size: tuple[int, int], where: str = "hints") -> list[Hint]:
    """Colour points checked against a photo of ``size`` (width, height): a 422 ``bad_hints``
    naming the point when one is outside the photo or otherwise bad. None or no points: []."""
    if value is None:
        return []
    try:
        return parse_hints(value, *size, where=where)
    except HintError as e:
        raise ApiError(422, "bad_hints", str(e)) from None


def points_key(hints: list[Hint]) -> str:
    """A stable name for a set of points: equal points, in the same order, give equal keys
    (later points win where patches overlap, so order matters)."""
    canonical = [[h.x, h.y, h.color.lower(), h.size] for h in hints]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:32]
