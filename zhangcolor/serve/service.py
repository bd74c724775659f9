"""The colorize service: a :class:`Colorizer` with the upload cache, plain Python that the HTTP
routes call and that works without them::

    service = ColorizeService.load(ServeConfig(model="default"))
    result = service.colorize(Path("photo.jpg").read_bytes(), temperature=0.38)
    again = service.recolor(result.upload_id, temperature=0.8)  # the network does not run

What the service refuses (a file that is not an image, too many pixels, a bad T) is an
:class:`ApiError`: an HTTP status, a stable code and a message that says what to do. Uploads are
checked from their header, before any pixel is decoded.
"""

import hashlib
import io
import re
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zhangcolor import colorize as _colorize
from zhangcolor.colorize import Colorizer
from zhangcolor.constants import MIN_PREVIEW_SIDE, STRIDE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.images import DECODERS, ImageError, finished_image, load_image, write_image
from zhangcolor.options import FORMATS, ServeConfig
from zhangcolor.serve.cache import OutputCache, Upload

#: Results up to this side keep their resampling weights in colorize's cache (an LRU of matrices
#: ``side × size/4``); after a wider or taller one the service empties that cache, so what it
#: holds stays within a fixed reserve, counted against ``cache_mb``.
_CACHED_WEIGHTS_SIDE = 4096
#: Longest file name kept for a download (the stem, without the suffix).
_MAX_NAME = 100
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


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
        if max_side is not None and max_side < MIN_PREVIEW_SIDE:
            raise ApiError(
                422,
                "bad_max_side",
                f"max_side must be at least {MIN_PREVIEW_SIDE}, got {max_side}",
            )
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
        write_image(finished_image(color, alpha, fmt), buffer, fmt)
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
