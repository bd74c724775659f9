"""Serving colorization over HTTP: a REST API, and a web page with a live temperature slider.

The network is the costly step; the annealed-mean decoding at T (paper, section 2.3) is cheap.
So the server keeps each upload's network output, with the photo's L, in a cache bounded in
bytes (least recently used first out) and in time (a time-to-live); a new T only re-decodes.

Requests are bounded where they could hurt the machine: the upload's size (read in memory, never
spooled to disk), its pixel count and aspect ratio (read from the header, before decoding), the
form's parts, how long its headers and body may take to arrive, how many bytes bodies still
arriving may hold, how many requests are worked on at once (the network itself runs one batch at
a time), and how many may wait. Only a request whose body has fully arrived takes a place in that
queue, so slow clients cannot take it from others. Every refusal, and any failure, is a JSON
``{"error": code, "detail": message}`` with a 4xx or 5xx status; a 503 says when to retry.

Needs the ``serve`` extra: ``pip install 'zhangcolor[serve]'``.
"""

import asyncio
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from zhangcolor import colorize as _colorize
from zhangcolor.colorize import Colorizer, resize_lightness
from zhangcolor.constants import STRIDE, TEMPERATURE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.images import DECODERS, ImageError, finished_image, load_image, write_image
from zhangcolor.options import FORMATS, ServeConfig

#: Environment variable through which ``serve --workers N`` hands its config to each worker.
CONFIG_ENV = "ZHANGCOLOR_SERVE_CONFIG"
#: Multipart framing allowed on top of the image itself (boundaries, headers, form fields).
_FORM_OVERHEAD = 64 * 1024
#: A form has at most one part per field; a 317,750-part form once held the event loop 16.5 s.
_MAX_PARTS = 4
#: Header bytes of one form part (its name, file name and type need far less).
_MAX_PART_HEADER_BYTES = 8 * 1024
#: Results up to this side keep their resampling weights in colorize's cache (an LRU of matrices
#: ``side × size/4``); after a wider or taller one the server empties that cache, so what it
#: holds stays within a fixed reserve, counted against ``cache_mb``.
_CACHED_WEIGHTS_SIDE = 4096
#: Longest file name kept for a download (the stem, without the suffix).
_MAX_NAME = 100
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
#: The server's log (uvicorn's), where a line about a request belongs.
server_log = logging.getLogger("uvicorn.error")


class ApiError(Exception):
    """A request the server refuses: HTTP status, a stable code, what to do about it, and any
    headers the answer carries (a 503's Retry-After)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}


def busy(detail: str, retry_after_s: int) -> ApiError:
    """A 503 that says when to try again."""
    return ApiError(503, "busy", detail, {"Retry-After": str(retry_after_s)})


# ----------------------------------------------------------------------------- the cache


@dataclass
class Upload:
    """What a T change needs of an upload: the network output and the photo's L (and alpha)."""

    output: Tensor  # (1, Q, h, w) logits or (1, 2, h, w) ab, float32
    lightness: Tensor  # (1, 1, H, W) L in [0, 100]
    alpha: np.ndarray | None  # (H, W) opacity in [0, 1]
    views: dict[int, tuple[Tensor, np.ndarray | None]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        arrays = [self.output, self.lightness, self.alpha]
        for light, alpha in self.views.values():
            arrays += [light, alpha]
        return sum(_nbytes(a) for a in arrays if a is not None)

    def view(self, max_side: int | None) -> tuple[Tensor, np.ndarray | None]:
        """L and alpha scaled down (antialiased) so the longer side is at most ``max_side``."""
        h, w = self.lightness.shape[-2:]
        if max_side is None or max(h, w) <= max_side:
            return self.lightness, self.alpha
        if max_side not in self.views:
            scale = max_side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            light = resize_lightness(self.lightness, size)
            alpha = None
            if self.alpha is not None:
                small = Image.fromarray(self.alpha).resize(size[::-1], Image.Resampling.BILINEAR)
                alpha = np.asarray(small)
            self.views[max_side] = (light, alpha)
        return self.views[max_side]


def _nbytes(array: Tensor | np.ndarray) -> int:
    return array.nbytes if isinstance(array, np.ndarray) else array.numel() * array.element_size()


class OutputCache:
    """Uploads by id, least recently used first out beyond ``max_bytes``, and forgotten
    ``ttl_s`` seconds after their last use. Thread-safe."""

    def __init__(self, max_bytes: int, ttl_s: float, clock=time.monotonic):
        self.max_bytes, self.ttl_s, self.clock = max_bytes, ttl_s, clock
        self._items: OrderedDict[str, tuple[Upload, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Upload | None:
        with self._lock:
            self._expire()
            if key not in self._items:
                return None
            upload, _ = self._items.pop(key)
            self._items[key] = (upload, self.clock())
            return upload

    def put(self, key: str, upload: Upload) -> None:
        """Keep ``upload`` (unless it alone exceeds the budget), evicting the oldest to fit."""
        with self._lock:
            self._items.pop(key, None)
            if upload.nbytes <= self.max_bytes:
                self._items[key] = (upload, self.clock())
            self._shrink()

    def settle(self) -> None:
        """Re-count after an upload grew (a new view), evicting the oldest to fit."""
        with self._lock:
            self._shrink()

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._expire()
            return {"uploads": len(self._items), "bytes": self._bytes()}

    def _bytes(self) -> int:
        return sum(upload.nbytes for upload, _ in self._items.values())

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, used) in self._items.items() if now - used > self.ttl_s]:
            del self._items[key]

    def _shrink(self) -> None:
        self._expire()
        while self._items and self._bytes() > self.max_bytes:
            self._items.popitem(last=False)


# ----------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class Rendering:
    """How a request wants its result: T, format, longer side, and the download's name."""

    temperature: float
    fmt: str = "png"
    max_side: int | None = None
    filename: str | None = None


@dataclass
class Result:
    """One colorized image, encoded, with what it cost."""

    content: bytes
    media_type: str
    upload_id: str
    filename: str
    network_ran: bool
    timings: dict[str, float]  # milliseconds by step


class ColorizeService:
    """A :class:`Colorizer` with the upload cache: what the HTTP endpoints call, usable alone."""

    def __init__(self, colorizer: Colorizer, config: ServeConfig):
        self.colorizer, self.config = colorizer, config
        # colorize keeps resampling weights in an LRU of its own; the server bounds its entries
        # (see _CACHED_WEIGHTS_SIDE) and counts the most that can stay there first.
        entries = _colorize.RESAMPLING_CACHE_ENTRIES
        self.weights_reserve = entries * _CACHED_WEIGHTS_SIDE * (colorizer.size // STRIDE) * 4
        budget = max(0, int(config.cache_mb * 2**20) - self.weights_reserve)
        self.cache = OutputCache(budget, config.cache_ttl_s)
        self.network_runs = 0
        self._network = threading.Lock()  # torch already spreads one batch over every core
        # Requests are worked on by these threads only, not by any of the server's pool: each
        # thread that runs torch gets its own OpenMP team, and an idle team spins a while,
        # taking cores from the next when requests hop between many threads.
        self.executor = ThreadPoolExecutor(config.max_concurrent, thread_name_prefix="zhangcolor")

    @classmethod
    def load(cls, config: ServeConfig) -> "ColorizeService":
        """Load the model, and refuse it (ValueError or RuntimeError) unless it colorizes."""
        try:
            colorizer = Colorizer.load_as(config)
        except (FileNotFoundError, ValueError, RuntimeError):
            raise
        except Exception as e:  # corrupt metadata raises KeyError, TypeError, ...
            raise ValueError(
                f"cannot load the model {config.model} ({type(e).__name__}: {e})"
            ) from None
        service = cls(colorizer, config)
        service.self_check()
        return service

    def self_check(self) -> None:
        """Colorize a small gray ramp as a request would; a model that loads yet cannot (e.g.
        corrupt bins in its metadata) is a RuntimeError here, not a failure of every request
        behind a healthy /healthz."""
        ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))  # (48, 64)
        try:
            photo = self.colorizer.prepare(ramp)
            output = self.colorizer.predict([photo])[0]
            if not torch.isfinite(self.colorizer.decode(output)).all():
                raise ValueError("its colors are not finite")
            self.colorizer.finish(photo.lightness, output, self.colorizer.temperature)
        except Exception as e:
            raise RuntimeError(
                f"the model {self.config.model} loads but cannot colorize "
                f"({type(e).__name__}: {e}); is its metadata corrupt?"
            ) from None

    def colorize(
        self,
        data: bytes,
        *,
        filename: str = "image",
        temperature: float | None = None,
        fmt: str = "png",
        max_side: int | None = None,
    ) -> Result:
        """Colorize an uploaded file's bytes at T (the model's own when None); an upload seen
        before skips the network.

        The cache is keyed by the bytes alone and keeps no name: the download's name comes
        from ``filename``, this request's, never from whoever sent the same bytes first.
        """
        rendering = self._rendering(temperature, fmt, max_side, filename)
        timings: dict[str, float] = {}
        upload_id = hashlib.sha256(data).hexdigest()[:32]
        upload = self.cache.get(upload_id)
        cached = upload is not None
        if upload is None:
            upload = self._run_network(data, filename, timings)
            self.cache.put(upload_id, upload)
        return self._finish(upload_id, upload, rendering, cached, timings)

    def recolor(
        self,
        upload_id: str,
        *,
        filename: str | None = None,
        temperature: float | None = None,
        fmt: str = "png",
        max_side: int | None = None,
    ) -> Result:
        """The cached upload ``upload_id`` decoded at a new T; never runs the network. The
        download is named after ``filename`` (this request's), else generically."""
        rendering = self._rendering(temperature, fmt, max_side, filename)
        upload = self.cache.get(upload_id)
        if upload is None:
            raise ApiError(
                404,
                "unknown_upload",
                f"upload {upload_id!r} is not (or no longer) cached; POST the image to "
                "/api/colorize again",
            )
        return self._finish(upload_id, upload, rendering, True, {})

    def _run_network(self, data: bytes, filename: str, timings: dict[str, float]) -> Upload:
        start = time.perf_counter()
        self._check_header(data, filename)
        image = self._decode(data, filename)
        if min(image.pixels.shape[:2]) < 2:
            h, w = image.pixels.shape[:2]
            raise ApiError(422, "too_small", f"{filename}: too small to colorize ({w}×{h} px)")
        photo = self.colorizer.prepare(image)
        timings["read"] = _ms(start)
        start = time.perf_counter()
        with self._network:
            output = self.colorizer.predict([photo])[0].cpu()
            self.network_runs += 1
        timings["network"] = _ms(start)
        return Upload(output, photo.lightness, photo.alpha)

    def _check_header(self, data: bytes, filename: str) -> None:
        """Refuse from the header, before any pixel is decoded, what would cost more than the
        limits allow: every step's memory is bounded by the pixels and the longest side, which
        ``max_pixels`` and ``max_aspect`` bound together."""
        width, height = _header_size(data, filename)
        pixels, short, long = width * height, min(width, height), max(width, height)
        if pixels > self.config.max_pixels:
            raise ApiError(
                413,
                "too_many_pixels",
                f"{filename}: too many pixels ({width}×{height} = {pixels:,}; the limit is "
                f"{self.config.max_pixels:,}); downscale the image first",
            )
        if short < 2:
            raise ApiError(
                422, "too_small", f"{filename}: too small to colorize ({width}×{height} px)"
            )
        if long / short > self.config.max_aspect:
            raise ApiError(
                422,
                "bad_aspect_ratio",
                f"{filename}: {width}×{height} px is too thin to colorize (aspect ratio "
                f"{long / short:,.0f}:1; the limit is {self.config.max_aspect:g}:1); crop it",
            )

    def _decode(self, data: bytes, filename: str):
        """The upload decoded; any failure to decode, of any kind, is a 4xx that says why."""
        try:
            return load_image(data, max_pixels=self.config.max_pixels)
        except ImageError as e:
            if "too many pixels" in str(e):
                raise ApiError(413, "too_many_pixels", f"{filename}: {e}") from None
            raise ApiError(415, "not_an_image", f"{filename}: {e}") from None
        except MemoryError:
            raise
        except Exception as e:  # decoders raise ValueError, SyntaxError, struct.error, ...
            raise ApiError(
                415,
                "not_an_image",
                f"{filename}: cannot decode the image ({type(e).__name__}: {e})",
            ) from None

    def _rendering(
        self, temperature: float | None, fmt: str, max_side: int | None, filename: str | None
    ) -> Rendering:
        """A request's wishes, checked; T None is the model's own."""
        t = self.colorizer.temperature if temperature is None else temperature
        try:
            t = check_colorize_temperature(t)
        except ValueError as e:
            raise ApiError(422, "bad_temperature", str(e)) from None
        if fmt not in FORMATS:
            raise ApiError(
                422, "bad_format", f"format must be one of {', '.join(FORMATS)}, got {fmt!r}"
            )
        if max_side is not None and max_side < 16:
            raise ApiError(422, "bad_max_side", f"max_side must be at least 16, got {max_side}")
        return Rendering(t, fmt, max_side, filename)

    def _finish(
        self,
        upload_id: str,
        upload: Upload,
        rendering: Rendering,
        cached: bool,
        timings: dict[str, float],
    ) -> Result:
        start = time.perf_counter()
        temperature, fmt = rendering.temperature, rendering.fmt
        lightness, alpha = upload.view(rendering.max_side)
        self.cache.settle()
        color = self.colorizer.finish(lightness, upload.output, temperature)
        timings["decode"] = _ms(start)
        start = time.perf_counter()
        buffer = io.BytesIO()
        write_image(finished_image(color, alpha, fmt), buffer, fmt, png_compress=1)
        timings["encode"] = _ms(start)
        if max(upload.lightness.shape[-2:]) > _CACHED_WEIGHTS_SIDE:
            _colorize.clear_resampling_cache()
        stem = safe_stem(rendering.filename)
        return Result(
            content=buffer.getvalue(),
            media_type=_MEDIA_TYPES[fmt],
            upload_id=upload_id,
            filename=f"{stem}-colorized-T{temperature:g}.{fmt}",
            network_ran=not cached,
            timings=timings,
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _header_size(data: bytes, filename: str) -> tuple[int, int]:
    """Width and height from the file's header alone; a 415 when Pillow cannot read it."""
    try:
        # lazy: reads the header only, and only with the decoders the loaders allow (an EPS
        # named .jpg never reaches its plugin)
        with Image.open(io.BytesIO(data), formats=DECODERS) as image:
            return image.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, "too_many_pixels", f"{filename}: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # UnidentifiedImageError, or a bad chunk's ValueError, ...
        raise ApiError(
            415,
            "not_an_image",
            f"{filename}: not an image Pillow can read ({type(e).__name__}: {e})",
        ) from None


def safe_stem(name: str | None) -> str:
    """A client's file name as the stem of a download's name: its last path part, without
    control or format characters (NUL, CR, LF, right-to-left overrides), quotes or suffix; at
    most 100 characters; "image" when nothing is left."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c not in '"')
    stem = Path(name.strip(" .")).stem.strip(" .")
    return stem[:_MAX_NAME] or "image"


# ----------------------------------------------------------------------------- HTTP

_FORM_FIELDS = ("image", "temperature", "format", "max_side")
_POST_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "temperature": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "maximum": 1,
                            "description": "Annealed-mean T: lower is more vivid, 1 the mean. "
                            f"The model's own T when left out (the paper's is {TEMPERATURE}).",
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "max_side": {
                            "type": "integer",
                            "minimum": 16,
                            "description": "Scale the result down to this longer side "
                            "(previews); the full size when left out.",
                        },
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "The colorized image. X-Upload-Id names the cached network output "
            "for GET /api/colorize/{upload_id}; X-Network says whether the network ran.",
            "content": {"image/png": {}, "image/jpeg": {}},
        }
    },
}


class _Gate:
    """Counts the requests whose body has arrived and that wait for a work thread or are worked
    on, and turns away those beyond ``limit`` with a 503 whose Retry-After comes from how long
    a request has lately held its place."""

    def __init__(self, limit: int, concurrent: int = 1):
        self.limit, self.concurrent = limit, concurrent
        self.in_flight = 0
        self.mean_s = 1.0  # moving average of the time a request holds its place

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    def retry_after_s(self) -> int:
        ahead = max(1, self.in_flight - self.concurrent + 1)
        return min(60, max(1, math.ceil(self.mean_s * ahead / self.concurrent)))

    def enter(self) -> None:
        if self.full:
            raise busy(
                f"the server is busy ({self.in_flight} requests in flight); retry in a moment",
                self.retry_after_s(),
            )
        self.in_flight += 1

    def leave(self, held_s: float | None = None) -> None:
        self.in_flight -= 1
        if held_s is not None:
            self.mean_s += 0.2 * (held_s - self.mean_s)


class _Reading:
    """The bytes held by request bodies still arriving, bounded: as many as the queue may hold
    once they have arrived. A client that sends slowly holds only what it has sent."""

    def __init__(self, limit: int):
        self.limit, self.bytes, self.bodies = limit, 0, 0

    @contextmanager
    def body(self) -> Iterator[Callable[[int], None]]:
        """Count one body while it arrives: yields ``take(nbytes)``, a 503 past the limit; what
        it took is given back when the body has been parsed (or refused)."""
        taken = 0

        def take(nbytes: int) -> None:
            nonlocal taken
            if self.bytes + nbytes > self.limit:
                raise busy(
                    f"the server is receiving {self.bytes / 2**20:.0f} MB of uploads at once; "
                    "retry in a moment",
                    5,
                )
            self.bytes += nbytes
            taken += nbytes

        self.bodies += 1
        try:
            yield take
        finally:
            self.bodies -= 1
            self.bytes -= taken


class _Disconnected(Exception):
    """The client went away before its body had arrived."""


def _too_large(max_image_bytes: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"the upload exceeds {max_image_bytes / 2**20:g} MB; "
        "downscale it, or start the server with a larger --max-upload-mb",
    )


async def _read_form(
    request, config: ServeConfig, reading: _Reading
) -> dict[str, tuple[str | None, bytes]]:
    """A multipart form read in memory (never spooled to disk), refused once it exceeds the
    limits (size, parts, time): ``{field: (filename or None, bytes)}``."""
    from python_multipart.multipart import parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(
            415,
            "not_multipart",
            "send a multipart/form-data form with the image in a field named 'image', "
            "e.g. curl -F image=@photo.jpg http://HOST/api/colorize",
        )
    max_image_bytes = int(config.max_upload_mb * 2**20)
    limit = max_image_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_image_bytes)
    parser, parts = _multipart_parser(params[b"boundary"])
    with reading.body() as take:
        await _feed(parser, _body_chunks(request, config), take, limit, max_image_bytes)
    form: dict[str, tuple[str | None, bytes]] = {}
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        form[name] = (
            None if filename is None else filename.decode("utf-8", "replace"),
            bytes(part["data"]),
        )
    _check_form(form, max_image_bytes)
    return form


async def _body_chunks(request, config: ServeConfig):
    """The request's body, chunk by chunk: each within ``read_timeout_s`` of the one before,
    all of it within ``upload_timeout_s``, else a 408."""
    from starlette.requests import ClientDisconnect

    stream = request.stream()
    deadline = time.monotonic() + config.upload_timeout_s
    while True:
        wait = min(config.read_timeout_s, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(anext(stream), max(0.0, wait))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                "upload_timeout",
                f"the upload did not arrive in time (at most {config.read_timeout_s:g} s "
                f"between packets, {config.upload_timeout_s:g} s in all)",
            ) from None
        except ClientDisconnect:
            raise _Disconnected() from None
        yield chunk


def _multipart_parser(boundary: bytes):
    """python-multipart's streaming parser, and the list it fills with the form's parts,
    ``{"headers": {name: value}, "data": bytearray, "header_bytes": n}`` each; more than
    ``_MAX_PARTS`` parts, or a part's headers over ``_MAX_PART_HEADER_BYTES``, is refused."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser

    parts: list[dict] = []
    header = {"field": bytearray(), "value": bytearray()}

    def on_part_begin() -> None:
        if len(parts) >= _MAX_PARTS:
            raise ApiError(
                413,
                "too_many_fields",
                f"the form has more than {_MAX_PARTS} parts; valid fields: "
                f"{', '.join(_FORM_FIELDS)}",
            )
        parts.append({"headers": {}, "data": bytearray(), "header_bytes": 0})

    def on_header(kind: str):
        def add(data, start, end) -> None:
            parts[-1]["header_bytes"] += end - start
            if parts[-1]["header_bytes"] > _MAX_PART_HEADER_BYTES:
                raise ApiError(
                    400, "bad_form", f"a form part's headers exceed {_MAX_PART_HEADER_BYTES} bytes"
                )
            header[kind].extend(data[start:end])

        return add

    def on_header_end() -> None:
        name = bytes(header["field"]).decode("latin-1").lower()
        parts[-1]["headers"][name] = bytes(header["value"])
        header["field"].clear()
        header["value"].clear()

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": lambda data, start, end: parts[-1]["data"].extend(data[start:end]),
        "on_header_field": on_header("field"),
        "on_header_value": on_header("value"),
        "on_header_end": on_header_end,
    }
    try:
        return MultipartParser(boundary, callbacks), parts
    except FormParserError as e:  # e.g. a boundary over 256 characters
        raise ApiError(400, "bad_form", f"malformed multipart header ({e})") from None


async def _feed(parser, chunks, take, limit: int, max_image_bytes: int) -> None:
    """Feed the body's chunks to ``parser``, counting each with ``take``; a body past
    ``limit`` bytes is refused. Each chunk's parsing is bounded by the part limits, so the event
    loop is never held long."""
    from python_multipart.exceptions import MultipartParseError

    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise _too_large(max_image_bytes)
            take(len(chunk))
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(400, "bad_form", f"malformed multipart body ({e})") from None


def _check_form(form: dict[str, tuple[str | None, bytes]], max_image_bytes: int) -> None:
    unknown = sorted(set(form) - set(_FORM_FIELDS))
    if unknown:
        raise ApiError(
            422,
            "unknown_field",
            f"unknown form field(s): {', '.join(unknown)}; valid: {', '.join(_FORM_FIELDS)}",
        )
    if "image" not in form or not form["image"][1]:
        raise ApiError(
            422, "missing_image", "the form has no file, or an empty one, in a field named 'image'"
        )
    if len(form["image"][1]) > max_image_bytes:
        raise _too_large(max_image_bytes)


def _number(form: dict, name: str, kind, default):
    if name not in form:
        return default
    text = form[name][1].decode("utf-8", "replace").strip()
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, f"bad_{name}", f"{name} must be a number, got {text!r}") from None


def _response(result: Result):
    from fastapi.responses import Response

    ascii_name = result.filename.encode("ascii", "replace").decode().replace('"', "_")
    timing = ", ".join(f"{step};dur={ms:.1f}" for step, ms in result.timings.items())
    return Response(
        result.content,
        media_type=result.media_type,
        headers={
            "X-Upload-Id": result.upload_id,
            "X-Network": "ran" if result.network_ran else "cached",
            "Server-Timing": timing,
            "Content-Disposition": f'inline; filename="{ascii_name}"',
            "Cache-Control": "no-store",
        },
    )


def static_dir() -> Path:
    """The web page's HTML, CSS and JS, shipped inside the package."""
    return Path(str(resources.files("zhangcolor").joinpath("static")))


def create_app(config: ServeConfig | None = None, service: ColorizeService | None = None):
    """The FastAPI app; loads the model unless a ready ``service`` is given."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from zhangcolor import __version__

    config = config or (service.config if service else ServeConfig())
    service = service or ColorizeService.load(config)
    app = FastAPI(
        title="zhangcolor",
        version=__version__,
        # FastAPI's own docs pages load their scripts from a CDN, blank offline; /docs is ours.
        docs_url=None,
        redoc_url=None,
        description="Automatic colorization after Zhang, Isola & Efros (ECCV 2016). POST a photo "
        "to /api/colorize; change T with GET /api/colorize/{upload_id}, which re-decodes the "
        "cached network output without running the network again.",
    )
    app.state.service = service
    _add_error_handlers(app)
    _add_api(app, service, config)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs():
        """The API described from /openapi.json by a page of ours: no CDN, works offline."""
        return FileResponse(static_dir() / "api.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


def _add_error_handlers(app) -> None:
    """Every refusal as JSON ``{"error": code, "detail": message}``."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return JSONResponse(
            {"error": error.code, "detail": error.detail}, error.status, headers=error.headers
        )

    @app.exception_handler(_Disconnected)
    async def disconnected(request, error: _Disconnected):
        # One line, no traceback: nobody is left to answer (uvicorn drops the response).
        client = request.client.host if request.client else "a client"
        server_log.info("%s disconnected before its upload had arrived", client)
        return JSONResponse({"error": "disconnected", "detail": "the client went away"}, 400)

    @app.exception_handler(Exception)
    async def failed(request, error: Exception):
        # A bug, not a refusal: still JSON for the client; Starlette logs the traceback.
        return JSONResponse(
            {"error": "internal_error", "detail": f"the server failed ({type(error).__name__})"},
            500,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in error.errors()
        )
        return JSONResponse({"error": "invalid_request", "detail": problems}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(error.detail)}, error.status_code)


def _health(service: ColorizeService, config: ServeConfig, gate: _Gate, reading: _Reading) -> dict:
    """What /healthz answers: "ok", or "busy" while an upload would be turned away (the queue
    is full); the queue, the model, where it runs, counters, the cache and the limits."""
    from zhangcolor import __version__

    colorizer = service.colorizer
    return {
        "status": "busy" if gate.full else "ok",
        "queue": {
            "in_flight": gate.in_flight,
            "limit": gate.limit,
            "retry_after_s": gate.retry_after_s() if gate.full else 0,
            "uploads_arriving": reading.bodies,
            "upload_bytes_arriving": reading.bytes,
        },
        "version": __version__,
        "model": config.model,
        "head": colorizer.kind.value,
        "temperature": colorizer.temperature,
        "backend": config.backend,
        "device": str(colorizer.device),
        "precision": str(colorizer.autocast or torch.float32).removeprefix("torch."),
        "network_runs": service.network_runs,
        "cache": {**service.cache.stats(), "weights_reserve_bytes": service.weights_reserve},
        "limits": {
            "max_upload_mb": config.max_upload_mb,
            "max_pixels": config.max_pixels,
            "max_aspect": config.max_aspect,
            "max_concurrent": config.max_concurrent,
            "max_queue": config.max_queue,
            "read_timeout_s": config.read_timeout_s,
            "upload_timeout_s": config.upload_timeout_s,
        },
    }


def _add_api(app, service: ColorizeService, config: ServeConfig) -> None:
    """/healthz, POST /api/colorize and GET /api/colorize/{upload_id}.

    A little over 60 lines: the routes' signatures and Query descriptions are their OpenAPI
    documentation, and splitting the routes apart would only move them away from it."""
    from fastapi import Query, Request

    slots = config.max_concurrent + config.max_queue
    gate = _Gate(slots, config.max_concurrent)
    reading = _Reading(int(slots * (config.max_upload_mb * 2**20 + _FORM_OVERHEAD)))

    async def work(call):
        """Run ``call`` on one of the service's work threads (queued until one is free), with
        the request counted in flight meanwhile."""
        gate.enter()
        start = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(service.executor, call)
        finally:
            gate.leave(time.monotonic() - start)

    @app.get("/healthz", summary="Liveness, saturation, the model, and counters")
    async def healthz() -> dict:
        return _health(service, config, gate, reading)

    @app.post("/api/colorize", summary="Colorize an image", openapi_extra=_POST_SCHEMA)
    async def colorize(request: Request):
        # The body is read before the request takes a place in the queue, so that clients who
        # send slowly wait on their own, not in everyone's way.
        form = await _read_form(request, config, reading)
        filename, data = form["image"]
        text_format = form.get("format", (None, b"png"))[1].decode("utf-8", "replace")
        result = await work(
            lambda: service.colorize(
                data,
                filename=filename or "image",
                temperature=_number(form, "temperature", float, None),
                fmt=text_format.strip().lower(),
                max_side=_number(form, "max_side", int, None),
            ),
        )
        return _response(result)

    @app.get(
        "/api/colorize/{upload_id}",
        summary="Re-decode a cached upload at another temperature",
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def recolor(
        upload_id: str,
        temperature: float | None = Query(
            None, description="Annealed-mean T, in [0.001, 1]; the model's own when left out."
        ),
        format: str = Query("png", description="png or jpg."),
        max_side: int | None = Query(None, description="Longer side of a preview, ≥ 16."),
        name: str | None = Query(
            None, description="The photo's file name, for the download's Content-Disposition."
        ),
    ):
        result = await work(
            lambda: service.recolor(
                upload_id,
                filename=name,
                temperature=temperature,
                fmt=format.lower(),
                max_side=max_side,
            ),
        )
        return _response(result)


def nodelay_http(*args, header_timeout_s: float = 15.0, **kwargs):
    """uvicorn's HTTP protocol with TCP_NODELAY set on each connection, and a deadline for each
    request's headers.

    asyncio sets TCP_NODELAY only on sockets whose protocol number says TCP, which the sockets
    uvicorn binds for ``--workers`` (and sockets passed in) lack; without it every answer on a
    kept-alive connection waits about 40 ms for a delayed ACK (measured: 44 ms against 1 ms).

    uvicorn times out only an idle kept-alive connection, and any byte received restarts that:
    a client that sends its headers a byte at a time would hold its connection forever. Here a
    connection is closed when a request's headers have not all arrived ``header_timeout_s``
    after it opened or after its last answer.
    """
    import socket

    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    protocol = AutoHTTPProtocol(*args, **kwargs)
    made, completed = protocol.connection_made, protocol.on_response_complete
    timer: list[asyncio.TimerHandle] = []

    def expect_headers() -> None:
        if timer:
            timer.pop().cancel()
        cycle = protocol.cycle  # a new request (all its headers in) replaces the cycle
        timer.append(protocol.loop.call_later(header_timeout_s, expire, cycle))

    def expire(cycle) -> None:
        transport = getattr(protocol, "transport", None)
        if protocol.cycle is cycle and transport is not None and not transport.is_closing():
            transport.close()

    def connection_made(transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        made(transport)
        expect_headers()

    def on_response_complete() -> None:
        completed()
        expect_headers()

    protocol.connection_made = connection_made
    protocol.on_response_complete = on_response_complete
    return protocol


def worker_http(*args, **kwargs):
    """:func:`nodelay_http` for ``serve --workers N``, with the header timeout of the config
    the parent hands its workers."""
    return nodelay_http(*args, header_timeout_s=_environment_config().read_timeout_s, **kwargs)


@contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (port 0: a free one); yields its base URL.

    For notebooks, tests and benchmarks; ``zhangcolor serve`` is the way to deploy.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    service = getattr(getattr(app, "state", None), "service", None)
    timeout_s = service.config.read_timeout_s if service else ServeConfig.read_timeout_s
    http = functools.partial(nodelay_http, header_timeout_s=timeout_s)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the server did not start; see its log above")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@functools.lru_cache(maxsize=1)
def _environment_config() -> ServeConfig:
    from zhangcolor.config import build_config

    return build_config(ServeConfig, json.loads(os.environ[CONFIG_ENV]), f" in ${CONFIG_ENV}")


def app_from_environment():
    """The app of one ``serve --workers N`` worker process, configured by the parent."""
    config = _environment_config()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    return create_app(config)


def serve(config: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    from zhangcolor.config import config_dict

    if config.workers == 1:
        uvicorn.run(
            create_app(config),
            host=config.host,
            port=config.port,
            http=functools.partial(nodelay_http, header_timeout_s=config.read_timeout_s),
            log_level="info",
        )
        return
    ColorizeService.load(config)  # fail here, once, rather than in every worker
    os.environ[CONFIG_ENV] = json.dumps(config_dict(config))
    uvicorn.run(
        "zhangcolor.serve:app_from_environment",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        http="zhangcolor.serve:worker_http",
        log_level="info",
    )
