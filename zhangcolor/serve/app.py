"""The FastAPI app, assembled in one place: the API's router with its work queue, the web page
and its static files, the API docs, the headers every answer carries, and the error handlers
that make every refusal, and any failure, a JSON ``{"error": code, "detail": message}`` with a
4xx or 5xx status.

FastAPI is imported inside the functions, so that the service imports without the serve extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from zhangcolor.options import ServeConfig
from zhangcolor.serve.admission import WorkQueue
from zhangcolor.serve.connections import quiet_accept_errors
from zhangcolor.serve.errors import ApiError
from zhangcolor.serve.guard import SecurityHeaders
from zhangcolor.serve.routes import api_router
from zhangcolor.serve.service import ColorizeService
from zhangcolor.serve.uploads import Disconnected

if TYPE_CHECKING:
    from fastapi import FastAPI

#: The server's log (uvicorn's), where a line about a request belongs.
server_log = logging.getLogger("uvicorn.error")
#: A query parameter that FastAPI refuses, and the code of that refusal (as the service's own).
_PARAMETER_CODES = {
    "temperature": "bad_temperature",
    "format": "bad_format",
    "max_side": "bad_max_side",
    "name": "bad_name",
    "x": "bad_point",
    "y": "bad_point",
    "k": "bad_k",
}


def static_dir() -> Path:
    """The web page's HTML, CSS and JS, shipped inside the package."""
    return Path(str(resources.files("zhangcolor").joinpath("static")))


def create_app(
    config: ServeConfig | None = None, service: ColorizeService | None = None
) -> FastAPI:
    """The FastAPI app; loads the model unless a ready ``service`` is given."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    from zhangcolor import __version__

    config = config or (service.config if service else ServeConfig())
    service = service or ColorizeService.load(config)
    queue = WorkQueue(config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # The queue's threads outlive a stop of the lifespan (a test client may start the app
        # again); they end with the app, when its executors are collected.
        quiet_accept_errors(asyncio.get_running_loop(), server_log)
        yield

    app = FastAPI(
        title="zhangcolor",
        version=__version__,
        # FastAPI's own docs pages load their scripts from a CDN, blank offline; /docs is ours.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description="Colorization after Zhang, Isola & Efros (ECCV 2016), and with a user's "
        "colour points after Zhang et al. (SIGGRAPH 2017) where the model takes them. POST a "
        "photo to /api/colorize; change T with GET /api/colorize/{upload_id}, which re-decodes "
        "the cached network output without running the network again; add colour points with "
        "POST /api/colorize/{upload_id}. Every refusal is JSON {error, detail}.",
    )
    app.state.service = service
    app.state.queue = queue
    app.add_middleware(SecurityHeaders)
    _add_error_handlers(app)
    app.include_router(api_router(service, config, queue))

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(static_dir() / "index.html", headers={"Cache-Control": "no-cache"})

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs():
        """The API described from /openapi.json by a page of ours: no CDN, works offline."""
        return FileResponse(static_dir() / "api.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as JSON ``{"error": code, "detail": message}``, with its headers (a 405's
    Allow, a 503's Retry-After)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return JSONResponse(
            {"error": error.code, "detail": error.detail}, error.status, headers=error.headers
        )

    @app.exception_handler(Disconnected)
    async def disconnected(request, error: Disconnected):
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
        errors = error.errors()
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'][1:]) or 'request'}: {e['msg']}" for e in errors
        )
        codes = {_PARAMETER_CODES.get(str(e["loc"][-1]), "invalid_request") for e in errors}
        code = codes.pop() if len(codes) == 1 else "invalid_request"
        return JSONResponse({"error": code, "detail": problems}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse(
            {"error": code, "detail": str(error.detail)}, error.status_code, headers=error.headers
        )
