"""What a request will cost, in megapixels of work, priced before it takes a place in the work
queue (:mod:`~zhangcolor.serve.admission`): the pixels it decodes, scales, colorizes and
encodes, and :data:`NETWORK_MP` for each network run."""

from __future__ import annotations

from typing import Any

from zhangcolor.serve.cache import OutputCache, Upload
from zhangcolor.serve.errors import ApiError
from zhangcolor.serve.inputs import header_size

#: What one network run costs, priced as megapixels: at the working size it takes about as long
#: as converting and encoding a megapixel.
NETWORK_MP = 1.0


def has_points(hints: Any) -> bool:
    """Whether a request's colour points (as JSON) hold any point, before they are checked."""
    value = hints.get("points") if isinstance(hints, dict) else hints
    return isinstance(value, list | tuple) and len(value) > 0


def result_pixels(size: tuple[int, int], max_side: int | None) -> int:
    """The pixels of a result of a photo of ``size`` (width, height) at ``max_side``."""
    width, height = size
    if max_side is None or max(size) <= max_side:
        return width * height
    scale = max_side / max(size)
    return max(1, round(width * scale)) * max(1, round(height * scale))


def upload_price(
    cache: OutputCache,
    max_pixels: int,
    data: bytes,
    *,
    filename: str,
    max_side: int | None,
    hints: Any,
    upload_id: str,
) -> float:
    """What colorizing the upload ``data`` will cost: reading it and the network unless it is
    cached, scaling L down for a preview, the result, and a run for colour points. Reads the
    header only; a file refused from it is an :class:`ApiError` (named ``filename``) here."""
    upload = cache.get(upload_id)
    if upload is not None:
        return _cached_price(upload, max_side, hints)
    try:
        size = header_size(data, max_pixels)
    except ApiError as e:
        raise e.about(filename) from None
    pixels = size[0] * size[1] + result_pixels(size, max_side)
    return pixels / 1e6 + NETWORK_MP + (NETWORK_MP if has_points(hints) else 0.0)


def cached_price(
    cache: OutputCache, upload_id: str, max_side: int | None, hints: Any, image: bool = True
) -> float:
    """What a request on the cached upload ``upload_id`` will cost (0 when it is not cached:
    it is refused at once); ``image`` False for one that makes no image (suggestions)."""
    upload = cache.get(upload_id)
    if upload is None:
        return 0.0
    if not image:
        return NETWORK_MP if has_points(hints) else 0.0
    return _cached_price(upload, max_side, hints)


def _cached_price(upload: Upload, max_side: int | None, hints: Any) -> float:
    pixels = result_pixels(upload.size, max_side)
    if upload.needs_view(max_side):
        pixels += upload.size[0] * upload.size[1]
    return pixels / 1e6 + (NETWORK_MP if has_points(hints) else 0.0)
