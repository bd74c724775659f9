"""The REST API's routes, on one router that calls the :class:`ColorizeService`:

- ``POST /api/colorize``: an image (and colour points), colorized;
- ``GET /api/colorize/{upload_id}``: the cached upload at another T, without the network;
- ``POST /api/colorize/{upload_id}``: the same with colour points (the network runs on the
  cached L, once per set of points);
- ``POST /api/colorize/{upload_id}/suggestions``: the likely colours at a pixel;
- ``GET /api/model`` and ``/healthz``.

Each request is priced and waits its turn in the :class:`~zhangcolor.serve.admission.WorkQueue`
once its body has arrived; an upload is first priced from its header, on a work thread.
"""

import functools
from typing import TYPE_CHECKING, Any, Literal

import zhangcolor.serve.schema as schema
from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE
from zhangcolor.hints import MAX_FILE_BYTES
from zhangcolor.options import ServeConfig
from zhangcolor.serve.admission import Reprice, WorkQueue
from zhangcolor.serve.inputs import hints_json
from zhangcolor.serve.prices import NETWORK_MP, cached_price, upload_price
from zhangcolor.serve.service import ColorizeService, Result, model_name
from zhangcolor.serve.uploads import (
    FORM_OVERHEAD,
    UploadBudget,
    form_number,
    read_form,
    read_json_body,
)

if TYPE_CHECKING:
    from fastapi import APIRouter, Request
    from fastapi.responses import Response

_T_WORDS = f"Annealed-mean T, in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]; the model's own when "
_T_WORDS += "left out."
_IMAGE_ANSWERS = {200: schema.IMAGE, **schema.refusals(404, 408, 413, 415, 422, 429)}


def client_of(request: "Request") -> str:
    """The client's address: whose budget a request counts against."""
    return request.client.host if request.client else "unknown"


def _response(result: Result) -> "Response":
    """The result as the image, with what the client needs to know in its headers."""
    from fastapi.responses import Response

    timing = ", ".join(f"{step};dur={ms:.1f}" for step, ms in result.timings.items())
    width, height = result.size
    return Response(
        result.content,
        media_type=result.media_type,
        headers={
            "X-Upload-Id": result.upload_id,
            "X-Network": "ran" if result.network_ran else "cached",
            "X-Photo-Size": f"{width}x{height}",
            "X-Temperature": f"{result.temperature:g}",
            "Server-Timing": timing,
            "Content-Disposition": result.download.content_disposition(),
            "Cache-Control": "no-store",
        },
    )


def _health(
    service: ColorizeService, config: ServeConfig, queue: WorkQueue, budget: UploadBudget
) -> dict:
    """What /healthz answers: "ok", or "busy" while a request would be turned away (a lane is
    full); the queue, the model, where it runs, counters, the cache and the limits."""
    import torch

    from zhangcolor import __version__

    colorizer = service.colorizer
    return {
        "status": "busy" if queue.full else "ok",
        "queue": {
            "in_flight": queue.in_flight,
            "limit": config.max_concurrent + config.max_queue,
            "retry_after_s": queue.retry_after_s() if queue.full else 0,
            "uploads_arriving": budget.bodies,
            "upload_bytes_arriving": budget.bytes,
            **queue.health(),
        },
        "version": __version__,
        "model": model_name(config.model),
        "head": colorizer.kind.value,
        "temperature": colorizer.temperature,
        "takes_hints": colorizer.takes_hints,
        "backend": config.backend,
        "device": str(colorizer.device),
        "precision": str(colorizer.autocast or torch.float32).removeprefix("torch."),
        "network_runs": service.network_runs,
        "cache": {**service.cache.stats(), "weights_reserve_bytes": service.weights_reserve},
        "limits": {
            "max_upload_mb": config.max_upload_mb,
            "max_pixels": config.max_pixels,
            "max_concurrent": config.max_concurrent,
            "max_queue": config.max_queue,
            "max_client_mp": config.max_client_mp,
            "max_connections": config.max_connections,
            "read_timeout_s": config.read_timeout_s,
            "upload_timeout_s": config.upload_timeout_s,
        },
    }


def _form_text(form: dict, name: str, default: str) -> str:
    return form[name][1].decode("utf-8", "replace") if name in form else default


def _form_hints(form: dict) -> Any:
    return hints_json(form["hints"][1]) if "hints" in form else None


def api_router(service: ColorizeService, config: ServeConfig, queue: WorkQueue) -> "APIRouter":
    """The API's routes, with the upload byte budget they share and the ``queue`` they wait in.

    Over 60 lines: the routes' signatures and Query descriptions are their OpenAPI
    documentation, and splitting the routes apart would only move them away from it."""
    from fastapi import APIRouter, Query, Request

    router = APIRouter()
    slots = config.max_concurrent + config.max_queue
    budget = UploadBudget(int(2 * slots * (config.max_upload_mb * 2**20 + FORM_OVERHEAD)))
    temperature_query = Query(None, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description=_T_WORDS)
    format_query = Query("png", description="png or jpg.")
    side_query = Query(
        None, ge=MIN_PREVIEW_SIDE, description=f"Longer side of a preview, ≥ {MIN_PREVIEW_SIDE}."
    )
    name_query = Query(
        None,
        max_length=1000,
        description="The photo's file name, for the download's Content-Disposition.",
    )

    @router.get(
        "/healthz",
        summary="Liveness, saturation, the model, and counters",
        responses={200: schema.HEALTH, **schema.refusals()},
        response_model=None,
    )
    async def healthz():
        return _health(service, config, queue, budget)

    @router.get(
        "/api/model",
        summary="The model: its T, and whether it takes colour points",
        responses={200: schema.MODEL, **schema.refusals()},
        response_model=None,
    )
    async def model():
        return service.model_info()

    @router.post(
        "/api/colorize",
        summary="Colorize an image, optionally with colour points",
        openapi_extra={"requestBody": schema.upload_form(config)},
        responses=_IMAGE_ANSWERS,
    )
    async def colorize(request: Request):
        # The body is read before the request takes a place in the queue, so that clients who
        # send slowly wait on their own, not in everyone's way.
        form = await read_form(request, config, budget)
        filename, data = form["image"]
        options = {
            "temperature": form_number(form, "temperature", float, None),
            "fmt": _form_text(form, "format", "png"),
            "max_side": form_number(form, "max_side", int, None),
            "hints": _form_hints(form),
        }
        service.rendering(options["temperature"], options["fmt"], options["max_side"], None)

        def priced() -> Result | Reprice:
            # On a work thread: the header read and the hash cost little, yet a hostile file
            # can make them cost more than the event loop should carry.
            upload_id = service.upload_id(data)
            price = upload_price(
                service.cache,
                config.max_pixels,
                data,
                filename=filename or "image",
                max_side=options["max_side"],
                hints=options["hints"],
                upload_id=upload_id,
            )
            job = functools.partial(
                service.colorize, data, filename=filename or "image", upload_id=upload_id, **options
            )
            return job() if queue.cheap(price) else Reprice(price, job)

        return _response(await queue.run(client_of(request), NETWORK_MP, priced))

    async def recolor(request: Request, upload_id: str, hints: Any, **options) -> "Response":
        service.rendering(options["temperature"], options["fmt"], options["max_side"], None)
        price = cached_price(service.cache, upload_id, options["max_side"], hints)
        job = functools.partial(service.recolor, upload_id, hints=hints, **options)
        return _response(await queue.run(client_of(request), price, job))

    @router.get(
        "/api/colorize/{upload_id}",
        summary="Re-decode a cached upload at another temperature (the network does not run)",
        responses=_IMAGE_ANSWERS,
    )
    async def recolor_get(
        request: Request,
        upload_id: str,
        temperature: float | None = temperature_query,
        format: Literal["png", "jpg"] = format_query,
        max_side: int | None = side_query,
        name: str | None = name_query,
    ):
        return await recolor(
            request, upload_id, None, temperature=temperature, fmt=format, max_side=max_side,
            filename=name,
        )  # fmt: skip

    @router.post(
        "/api/colorize/{upload_id}",
        summary="A cached upload with colour points (the network runs on its cached L, once "
        "per set of points), at any temperature",
        openapi_extra={"requestBody": schema.points_body("The colour points; none: automatic.")},
        responses=_IMAGE_ANSWERS,
    )
    async def recolor_points(
        request: Request,
        upload_id: str,
        temperature: float | None = temperature_query,
        format: Literal["png", "jpg"] = format_query,
        max_side: int | None = side_query,
        name: str | None = name_query,
    ):
        hints = hints_json(await read_json_body(request, config, budget, MAX_FILE_BYTES))
        return await recolor(
            request, upload_id, hints, temperature=temperature, fmt=format, max_side=max_side,
            filename=name,
        )  # fmt: skip

    @router.post(
        "/api/colorize/{upload_id}/suggestions",
        summary="The colours the network finds likely at a pixel, given the colour points",
        openapi_extra={"requestBody": schema.points_body("The colour points so far.")},
        responses={200: schema.SUGGESTIONS, **schema.refusals(404, 408, 413, 415, 422, 429)},
        response_model=None,
    )
    async def suggestions(
        request: Request,
        upload_id: str,
        x: float = Query(..., ge=0, description="Column, in the photo's pixels (< its width)."),
        y: float = Query(..., ge=0, description="Row, in the photo's pixels (< its height)."),
        k: int = Query(8, ge=1, le=32, description="How many colours, most probable first."),
    ):
        hints = hints_json(await read_json_body(request, config, budget, MAX_FILE_BYTES))
        price = cached_price(service.cache, upload_id, None, hints, image=False)
        job = functools.partial(service.suggest, upload_id, x, y, k=k, hints=hints)
        palette = await queue.run(client_of(request), price, job)
        return {
            "x": palette.x,
            "y": palette.y,
            "network": "ran" if palette.network_ran else "cached",
            "suggestions": [
                {
                    "color": s.color,
                    "ab": list(s.ab),
                    "probability": min(1.0, max(0.0, s.probability)),
                }
                for s in palette.suggestions
            ],
        }

    return router
