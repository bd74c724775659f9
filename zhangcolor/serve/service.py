"""The colorize service: a :class:`Colorizer` with the upload cache, plain Python that the HTTP
routes call and that works without them::

    service = ColorizeService.load(ServeConfig(model="default"))
    result = service.colorize(Path("photo.jpg").read_bytes(), temperature=0.38)
    again = service.recolor(result.upload_id, temperature=0.8)  # the network does not run
    # a guided model: the network runs again on the cached L, with the user's colour points
    points = {"points": [{"x": 120, "y": 45, "color": "#c03020"}]}
    guided = service.recolor(result.upload_id, hints=points)
    palette = service.suggest(result.upload_id, 120, 45, hints=points)

What the service refuses (a file that is not an image, too many pixels, a bad T, a point outside
the photo) is an :class:`ApiError`: an HTTP status, a stable code and a message that says what
to do. Uploads are checked from their header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhangcolor import colorize as _colorize
from zhangcolor.colorize import Colorizer, Photo, Suggestion
from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE, STRIDE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.hints import MAX_POINTS, rasterize
from zhangcolor.images import finished_image, write_image
from zhangcolor.options import FORMATS, ServeConfig
from zhangcolor.serve.cache import OutputCache, SingleFlight, Upload
from zhangcolor.serve.errors import ApiError, busy
from zhangcolor.serve.inputs import decode, header_size, points, points_key
from zhangcolor.serve.names import DownloadName, safe_stem

__all__ = ["ApiError", "ColorizeService", "Palette", "Result", "busy", "safe_stem"]

#: Results up to this side keep their resampling weights in colorize's cache (an LRU of matrices
#: ``side × size/4``); after a wider or taller one the service empties that cache, so what it
#: holds stays within a fixed reserve, counted against ``cache_mb``.
_CACHED_WEIGHTS_SIDE = 4096
#: The most colours a suggestion request may ask for.
MAX_SUGGESTIONS = 32
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


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
    download: DownloadName
    network_ran: bool
    timings: dict[str, float]  # milliseconds by step
    size: tuple[int, int]  # the photo's (width, height), whatever the result's
    temperature: float

    @property
    def filename(self) -> str:
        return self.download.name


@dataclass
class Palette:
    """The colours the network finds likely at a pixel, given the colour points so far."""

    upload_id: str
    x: float
    y: float
    suggestions: list[Suggestion]
    network_ran: bool
    timings: dict[str, float]


def model_name(model: str) -> str:
    """A model as clients may see it: "default", or its file's name, never where it lives."""
    return Path(model).name if model != "default" else model


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
        self._flights = SingleFlight()  # the same work asked for at once is done once

    @classmethod
    def load(cls, config: ServeConfig) -> ColorizeService:
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

    def model_info(self) -> dict[str, Any]:
        """What a client needs to know of the model: its T and range, and what it takes."""
        colorizer = self.colorizer
        return {
            "model": model_name(self.config.model),
            "head": colorizer.kind.value,
            "temperature": colorizer.temperature,
            "uses_temperature": colorizer.uses_temperature,
            "min_temperature": MIN_TEMPERATURE,
            "max_temperature": MAX_TEMPERATURE,
            "takes_hints": colorizer.takes_hints,
            "suggests": colorizer.uses_temperature,
            "max_points": MAX_POINTS,
        }

    # ------------------------------------------------------------------------ requests

    @staticmethod
    def upload_id(data: bytes) -> str:
        """The cache's name for an upload: its bytes' SHA-256, never its file name."""
        return hashlib.sha256(data).hexdigest()[:32]

    def colorize(
        self,
        data: bytes,
        *,
        filename: str = "image",
        temperature: float | None = None,
        fmt: str = "png",
        max_side: int | None = None,
        hints: Any = None,
        upload_id: str | None = None,
    ) -> Result:
        """Colorize an uploaded file's bytes at T (the model's own when None), with the user's
        colour points ``hints`` (``{"points": [...]}``; a guided model only); an upload seen
        before skips the network (and points seen before for it, too).

        The cache is keyed by the bytes alone and keeps no name: the download's name, and the
        file's name in a refusal, come from ``filename``, this request's, never from whoever
        sent the same bytes first.
        """
        rendering = self.rendering(temperature, fmt, max_side, filename)
        timings: dict[str, float] = {}
        upload_id = upload_id or self.upload_id(data)
        try:
            upload, ran = self._upload(upload_id, data, timings)
        except ApiError as e:
            raise e.about(filename or "image") from None
        output, guided = self._output(upload_id, upload, hints, timings)
        return self._finish(upload_id, upload, output, rendering, ran or guided, timings)

    def recolor(
        self,
        upload_id: str,
        *,
        filename: str | None = None,
        temperature: float | None = None,
        fmt: str = "png",
        max_side: int | None = None,
        hints: Any = None,
    ) -> Result:
        """The cached upload ``upload_id`` decoded at a new T: without colour points the network
        does not run; with new ones it runs on the cached L. The download is named after
        ``filename`` (this request's), else generically."""
        rendering = self.rendering(temperature, fmt, max_side, filename)
        upload = self._cached(upload_id)
        timings: dict[str, float] = {}
        output, ran = self._output(upload_id, upload, hints, timings)
        return self._finish(upload_id, upload, output, rendering, ran, timings)

    def suggest(
        self, upload_id: str, x: float, y: float, *, k: int = 8, hints: Any = None
    ) -> Palette:
        """The ``k`` most probable colours at pixel ``(x, y)`` of the cached upload (origin
        top-left), given the colour points so far (``hints``), as :meth:`Colorizer.suggest`."""
        if not self.colorizer.uses_temperature:
            raise ApiError(
                422,
                "no_distribution",
                "this model predicts one colour per pixel (a regression head), not a "
                "distribution: it has no suggestions; pick a colour instead",
            )
        if not 1 <= k <= MAX_SUGGESTIONS:
            raise ApiError(422, "bad_k", f"k must be in [1, {MAX_SUGGESTIONS}], got {k}")
        upload = self._cached(upload_id)
        width, height = upload.size
        if not (0 <= x < width and 0 <= y < height):
            raise ApiError(
                422, "bad_point", f"({x:g}, {y:g}) is outside the {width}×{height} photo"
            )
        timings: dict[str, float] = {}
        output, ran = self._output(upload_id, upload, hints, timings)
        palette = self.colorizer.suggestions(upload.lightness, output, x, y, k=k)
        return Palette(upload_id, x, y, palette, ran, timings)

    # ------------------------------------------------------------------------ the steps

    def _cached(self, upload_id: str) -> Upload:
        upload = self.cache.get(upload_id)
        if upload is None:
            raise ApiError(
                404,
                "unknown_upload",
                f"upload {upload_id[:64]!r} is not (or no longer) cached; POST the image to "
                "/api/colorize again",
            )
        return upload

    def _upload(self, upload_id: str, data: bytes, timings: dict) -> tuple[Upload, bool]:
        """The upload from the cache, else read and run through the network once, however many
        requests bring the same bytes at once; and whether this request ran the network."""
        upload = self.cache.get(upload_id)
        if upload is not None:
            return upload, False

        def compute() -> Upload:
            cached = self.cache.get(upload_id)  # a request just before may have made it
            if cached is not None:
                return cached
            upload = self._read(data, timings)
            self.cache.put(upload_id, upload)
            return upload

        upload, owner = self._flights.run(("upload", upload_id), compute)
        return upload, owner and "network" in timings

    def _read(self, data: bytes, timings: dict[str, float]) -> Upload:
        start = time.perf_counter()
        header_size(data, self.config.max_pixels)
        photo = self.colorizer.prepare(decode(data, self.config.max_pixels))
        timings["read"] = _ms(start)
        output = self._network_output(photo, timings)
        return Upload(output, photo.lightness, photo.small, photo.alpha)

    def _network_output(self, photo: Photo, timings: dict[str, float]) -> torch.Tensor:
        start = time.perf_counter()
        with self._network:
            output = self.colorizer.predict([photo])[0].cpu()
            self.network_runs += 1
        timings["network"] = timings.get("network", 0.0) + _ms(start)
        return output

    def _output(
        self, upload_id: str, upload: Upload, hints: Any, timings: dict[str, float]
    ) -> tuple[torch.Tensor, bool]:
        """The network output for the colour points ``hints`` (checked against the photo): the
        upload's own without points, else kept or computed (once) on its cached L; and whether
        this request ran the network."""
        hinted = points(hints, upload.size)
        if not hinted:
            return upload.output, False
        if not self.colorizer.takes_hints:
            raise ApiError(
                422,
                "hints_not_supported",
                "this model takes no colour points (it was trained without them); serve a "
                "guided model to use them",
            )
        key = points_key(hinted)
        output = self.cache.guided(upload, key)
        if output is not None:
            return output, False

        def compute() -> torch.Tensor:
            kept = self.cache.guided(upload, key)
            if kept is not None:
                return kept
            channels = rasterize(hinted, *upload.size, self.colorizer.size)
            photo = Photo(upload.lightness, upload.small, upload.alpha, channels)
            output = self._network_output(photo, timings)
            self.cache.keep_guided(upload_id, upload, key, output)
            return output

        output, owner = self._flights.run(("points", upload_id, key), compute)
        return output, owner and "network" in timings

    def rendering(
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
                422, "bad_format", f"format must be one of {', '.join(FORMATS)}, got {fmt!r:.40}"
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
        output: torch.Tensor,
        rendering: Rendering,
        ran: bool,
        timings: dict[str, float],
    ) -> Result:
        start = time.perf_counter()
        temperature, fmt = rendering.temperature, rendering.fmt
        lightness, alpha = self.cache.view(upload_id, upload, rendering.max_side)
        color = self.colorizer.finish(lightness, output, temperature)
        timings["decode"] = _ms(start)
        start = time.perf_counter()
        buffer = io.BytesIO()
        write_image(finished_image(color, alpha, fmt), buffer, fmt)
        timings["encode"] = _ms(start)
        if max(upload.size) > _CACHED_WEIGHTS_SIDE:
            _colorize.clear_resampling_cache()
        return Result(
            content=buffer.getvalue(),
            media_type=_MEDIA_TYPES[fmt],
            upload_id=upload_id,
            download=DownloadName.of(rendering.filename, f"-colorized-T{temperature:g}.{fmt}"),
            network_ran=ran,
            timings=timings,
            size=upload.size,
            temperature=temperature,
        )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3
