"""Serving colorization over HTTP: a REST API, and a web page with a live temperature slider.

The network is the costly step; the annealed-mean decoding at T (paper, section 2.3) is cheap.
So the server keeps each upload's network output, with the photo's L, in a cache bounded in
bytes (least recently used first out) and in time (a time-to-live); a new T only re-decodes.

Requests are bounded where they could hurt the machine: the upload's size (read in memory, never
spooled to disk), its pixel count (read from the header, before decoding), how many requests
are worked on at once (the network itself runs one batch at a time), and how many may wait.
Every refusal is a JSON ``{"error": code, "detail": message}`` with a 4xx (or 503) status.

Needs the ``serve`` extra: ``pip install 'zhangcolor[serve]'``.
"""

import asyncio
import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from zhangcolor.colorize import Colorizer, image_lightness, join, resize_lightness
from zhangcolor.constants import TEMPERATURE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.images import ImageError, finished_image, load_image, write_image
from zhangcolor.options import FORMATS, ServeConfig

#: Environment variable through which ``serve --workers N`` hands its config to each worker.
CONFIG_ENV = "ZHANGCOLOR_SERVE_CONFIG"
#: Multipart framing allowed on top of the image itself (boundaries, headers, form fields).
_FORM_OVERHEAD = 64 * 1024
_MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


class ApiError(Exception):
    """A request the server refuses: HTTP status, a stable code, and what to do about it."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


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
        self.cache = OutputCache(int(config.cache_mb * 2**20), config.cache_ttl_s)
        self.network_runs = 0
        self._network = threading.Lock()  # torch already spreads one batch over every core
        # Requests are worked on by these threads only, not by any of the server's pool: each
        # thread that runs torch gets its own OpenMP team, and an idle team spins a while,
        # taking cores from the next when requests hop between many threads.
        self.executor = ThreadPoolExecutor(config.max_concurrent, thread_name_prefix="zhangcolor")

    @classmethod
    def load(cls, config: ServeConfig) -> "ColorizeService":
        colorizer = Colorizer.load(
            config.model,
            device=config.device,
            precision=config.precision,
            size=config.size,
            backend=config.backend,
        )
        return cls(colorizer, config)

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
        try:
            image = load_image(data, max_pixels=self.config.max_pixels)
        except ImageError as e:
            if "too many pixels" in str(e):
                raise ApiError(413, "too_many_pixels", f"{filename}: {e}") from None
            raise ApiError(415, "not_an_image", f"{filename}: {e}") from None
        if min(image.pixels.shape[:2]) < 2:
            h, w = image.pixels.shape[:2]
            raise ApiError(422, "too_small", f"{filename}: too small to colorize ({w}×{h} px)")
        lightness = image_lightness(image)
        timings["read"] = _ms(start)
        start = time.perf_counter()
        with self._network:
            output = self.colorizer.network_output(lightness).cpu()
            self.network_runs += 1
        timings["network"] = _ms(start)
        return Upload(output, lightness, image.alpha)

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
        ab = self.colorizer.decode(upload.output, temperature).cpu()  # (1, 2, h, w)
        lightness, alpha = upload.view(rendering.max_side)
        self.cache.settle()
        color = join(lightness, ab)
        timings["decode"] = _ms(start)
        start = time.perf_counter()
        buffer = io.BytesIO()
        write_image(finished_image(color, alpha, fmt), buffer, fmt, png_compress=1)
        timings["encode"] = _ms(start)
        stem = Path(rendering.filename or "image").stem or "image"
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
    """Counts the requests in flight (reading, waiting for a work thread, or worked on) and
    turns away those beyond ``limit`` with a 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> None:
        if self.in_flight >= self.limit:
            raise ApiError(
                503,
                "busy",
                f"the server is busy ({self.in_flight} requests in flight); retry in a moment",
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1


def _too_large(max_image_bytes: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"the upload exceeds {max_image_bytes / 2**20:g} MB; "
        "downscale it, or start the server with a larger --max-upload-mb",
    )


async def _read_form(request, max_image_bytes: int) -> dict[str, tuple[str | None, bytes]]:
    """A multipart form read in memory (never spooled to disk), refused once it exceeds the
    limit: ``{field: (filename or None, bytes)}``."""
    from python_multipart.multipart import parse_options_header

    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(
            415,
            "not_multipart",
            "send a multipart/form-data form with the image in a field named 'image', "
            "e.g. curl -F image=@photo.jpg http://HOST/api/colorize",
        )
    limit = max_image_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_image_bytes)
    parts = await _multipart_parts(request, params[b"boundary"], limit, max_image_bytes)
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


async def _multipart_parts(request, boundary: bytes, limit: int, max_image_bytes: int) -> list:
    """The parts of a multipart body, ``{"headers": {name: value}, "data": bytes}`` each, read
    with python-multipart's streaming parser; a body past ``limit`` bytes is refused."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser

    parts: list[dict] = []
    header = {"field": bytearray(), "value": bytearray()}

    def on_header_end() -> None:
        name = bytes(header["field"]).decode("latin-1").lower()
        parts[-1]["headers"][name] = bytes(header["value"])
        header["field"].clear()
        header["value"].clear()

    callbacks = {
        "on_part_begin": lambda: parts.append({"headers": {}, "data": bytearray()}),
        "on_part_data": lambda data, start, end: parts[-1]["data"].extend(data[start:end]),
        "on_header_field": lambda data, start, end: header["field"].extend(data[start:end]),
        "on_header_value": lambda data, start, end: header["value"].extend(data[start:end]),
        "on_header_end": on_header_end,
    }
    parser = MultipartParser(boundary, callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(max_image_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        raise ApiError(400, "bad_form", f"malformed multipart body ({e})") from None
    return parts


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
        return JSONResponse({"error": error.code, "detail": error.detail}, error.status)

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


def _health(service: ColorizeService, config: ServeConfig) -> dict:
    """What /healthz answers: the model, where it runs, counters, the cache and the limits."""
    from zhangcolor import __version__

    colorizer = service.colorizer
    return {
        "status": "ok",
        "version": __version__,
        "model": config.model,
        "head": colorizer.kind.value,
        "temperature": colorizer.temperature,
        "backend": config.backend,
        "device": str(colorizer.device),
        "precision": str(colorizer.autocast or torch.float32).removeprefix("torch."),
        "network_runs": service.network_runs,
        "cache": service.cache.stats(),
        "limits": {
            "max_upload_mb": config.max_upload_mb,
            "max_pixels": config.max_pixels,
            "max_concurrent": config.max_concurrent,
        },
    }


def _add_api(app, service: ColorizeService, config: ServeConfig) -> None:
    """/healthz, POST /api/colorize and GET /api/colorize/{upload_id}.

    A little over 60 lines: the routes' signatures and Query descriptions are their OpenAPI
    documentation, and splitting the routes apart would only move them away from it."""
    from fastapi import Query, Request

    gate = _Gate(config.max_concurrent + config.max_queue)

    async def work(call):
        """Run ``call`` on one of the service's work threads (queued until one is free), with
        the request counted in flight meanwhile."""
        gate.enter()
        try:
            return await asyncio.get_running_loop().run_in_executor(service.executor, call)
        finally:
            gate.leave()

    @app.get("/healthz", summary="Liveness, the model, and counters")
    async def healthz() -> dict:
        return _health(service, config)

    @app.post("/api/colorize", summary="Colorize an image", openapi_extra=_POST_SCHEMA)
    async def colorize(request: Request):
        gate.enter()  # reading the upload counts too
        try:
            form = await _read_form(request, int(config.max_upload_mb * 2**20))
        finally:
            gate.leave()
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


def nodelay_http(*args, **kwargs):
    """uvicorn's HTTP protocol with TCP_NODELAY set on each connection.

    asyncio sets it only on sockets whose protocol number says TCP, which the sockets uvicorn
    binds for ``--workers`` (and sockets passed in) lack; without it every answer on a kept-alive
    connection waits about 40 ms for a delayed ACK (measured: 44 ms against 1 ms).
    """
    import socket

    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    protocol = AutoHTTPProtocol(*args, **kwargs)
    made = protocol.connection_made

    def connection_made(transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        made(transport)

    protocol.connection_made = connection_made
    return protocol


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
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http=nodelay_http)
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


def app_from_environment():
    """The app of one ``serve --workers N`` worker process, configured by the parent."""
    from zhangcolor.config import build_config

    config = build_config(ServeConfig, json.loads(os.environ[CONFIG_ENV]), f" in ${CONFIG_ENV}")
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
            http=nodelay_http,
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
        http="zhangcolor.serve:nodelay_http",
        log_level="info",
    )
