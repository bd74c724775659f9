"""The REST API's routes: POST /api/colorize, GET /api/colorize/{upload_id} (a new T for a cached
upload) and /healthz, on one router that calls the :class:`ColorizeService`.

How many requests are worked on at once, and how many may wait, is the :class:`RequestQueue`'s
to say: only a request whose body has fully arrived takes a place in it, so slow clients cannot
take it from others, and one turned away gets a 503 that says when to retry.
"""

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE, TEMPERATURE
from zhangcolor.options import FORMATS, ServeConfig
from zhangcolor.serve.service import ColorizeService, Result, busy
from zhangcolor.serve.uploads import FORM_OVERHEAD, UploadBudget, form_number, read_form

if TYPE_CHECKING:
    from fastapi import APIRouter
    from fastapi.responses import Response

#: The form of POST /api/colorize, for the OpenAPI description: the route reads the form
#: itself, under limits, rather than through FastAPI's parameters.
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
                            "minimum": MIN_TEMPERATURE,
                            "maximum": MAX_TEMPERATURE,
                            "description": "Annealed-mean T: lower is more vivid, 1 the mean. "
                            f"The model's own T when left out (the paper's is {TEMPERATURE}).",
                        },
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "max_side": {
                            "type": "integer",
                            "minimum": MIN_PREVIEW_SIDE,
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


class RequestQueue:
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


def _response(result: Result) -> "Response":
    """The result as the image, with what the client needs to know in its headers."""
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


def _health(
    service: ColorizeService, config: ServeConfig, queue: RequestQueue, budget: UploadBudget
) -> dict:
    """What /healthz answers: "ok", or "busy" while an upload would be turned away (the queue
    is full); the queue, the model, where it runs, counters, the cache and the limits."""
    from zhangcolor import __version__

    colorizer = service.colorizer
    return {
        "status": "busy" if queue.full else "ok",
        "queue": {
            "in_flight": queue.in_flight,
            "limit": queue.limit,
            "retry_after_s": queue.retry_after_s() if queue.full else 0,
            "uploads_arriving": budget.bodies,
            "upload_bytes_arriving": budget.bytes,
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


def api_router(service: ColorizeService, config: ServeConfig) -> "APIRouter":
    """/healthz, POST /api/colorize and GET /api/colorize/{upload_id}, with the request queue
    and the upload byte budget they share.

    A little over 60 lines: the routes' signatures and Query descriptions are their OpenAPI
    documentation, and splitting the routes apart would only move them away from it."""
    from fastapi import APIRouter, Query, Request

    router = APIRouter()
    slots = config.max_concurrent + config.max_queue
    queue = RequestQueue(slots, config.max_concurrent)
    budget = UploadBudget(int(slots * (config.max_upload_mb * 2**20 + FORM_OVERHEAD)))

    async def work(call: Callable[[], Result]) -> Result:
        """Run ``call`` on one of the service's work threads (queued until one is free), with
        the request counted in flight meanwhile."""
        queue.enter()
        start = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(service.executor, call)
        finally:
            queue.leave(time.monotonic() - start)

    @router.get("/healthz", summary="Liveness, saturation, the model, and counters")
    async def healthz() -> dict:
        return _health(service, config, queue, budget)

    @router.post("/api/colorize", summary="Colorize an image", openapi_extra=_POST_SCHEMA)
    async def colorize(request: Request):
        # The body is read before the request takes a place in the queue, so that clients who
        # send slowly wait on their own, not in everyone's way.
        form = await read_form(request, config, budget)
        filename, data = form["image"]
        text_format = form.get("format", (None, b"png"))[1].decode("utf-8", "replace")
        result = await work(
            lambda: service.colorize(
                data,
                filename=filename or "image",
                temperature=form_number(form, "temperature", float, None),
                fmt=text_format.strip().lower(),
                max_side=form_number(form, "max_side", int, None),
            ),
        )
        return _response(result)

    @router.get(
        "/api/colorize/{upload_id}",
        summary="Re-decode a cached upload at another temperature",
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def recolor(
        upload_id: str,
        temperature: float | None = Query(
            None,
            description=f"Annealed-mean T, in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]; the "
            "model's own when left out.",
        ),
        format: str = Query("png", description="png or jpg."),
        max_side: int | None = Query(
            None, description=f"Longer side of a preview, ≥ {MIN_PREVIEW_SIDE}."
        ),
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

    return router
