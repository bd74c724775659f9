"""The API's OpenAPI description, true to the server: every status a route answers, each
refusal with the body the server sends (``{"error": code, "detail": message}``), and the bounds
it keeps (T's range, the smallest preview side, the formats, the upload's limits).

Plain dicts, so that this module imports without FastAPI; the routes hand them to it.
"""

from __future__ import annotations

from typing import Any

from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE
from zhangcolor.hints import MAX_POINTS
from zhangcolor.images import DECODERS
from zhangcolor.options import FORMATS, ServeConfig

#: Every refusal's body.
ERROR = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. not_an_image."},
        "detail": {"type": "string", "description": "What went wrong, and what to do."},
    },
}

_RETRY = {
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
}
#: What each refusal status means, with the codes it carries.
_WHY = {
    400: "A malformed form or body, or a Host this server does not answer to (bad_form, "
    "bad_host, disconnected).",
    404: "The upload is not (or no longer) cached: POST the image again (unknown_upload).",
    408: "The body did not arrive in time (upload_timeout).",
    413: "Too large: the file, its pixels, or the form (too_large, too_many_pixels, "
    "too_many_fields).",
    415: "Not an image, or not the body this route reads (not_an_image, not_multipart, not_json).",
    422: "A value the server cannot use: T, format, max_side, the colour points or the form's "
    "fields (bad_temperature, bad_format, bad_max_side, bad_hints, hints_not_supported, "
    "bad_point, bad_k, no_distribution, missing_image, unknown_field, invalid_request).",
    429: "This client has as much work in flight as it may (too_much_work); see Retry-After.",
    500: "A failure of the server (internal_error); its log has the details.",
    503: "Busy: no place left in the queue, or no connection left (busy); see Retry-After.",
}
#: Statuses any route may answer: a bad Host, a busy server, a failure.
_ALWAYS = (400, 500, 503)


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these refusal statuses (and those any route may answer)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *_ALWAYS}):
        response: dict[str, Any] = {
            "description": _WHY[status],
            "content": {"application/json": {"schema": ERROR}},
        }
        if status in (429, 503):
            response["headers"] = _RETRY
        out[status] = response
    return out


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string", **schema}}


#: The 200 of every route that answers with the colorized image.
IMAGE = {
    "description": "The colorized image (the photo's own size, or scaled down to max_side).",
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    },
    "headers": {
        "X-Upload-Id": _header(
            "The cached upload, for GET and POST /api/colorize/{upload_id}.",
            pattern="^[0-9a-f]{32}$",
        ),
        "X-Network": _header("Whether the network ran for this request.", enum=["ran", "cached"]),
        "X-Photo-Size": _header(
            "The photo's width×height in pixels, whatever the result's: the frame of colour "
            "points.",
            pattern="^[0-9]+x[0-9]+$",
        ),
        "X-Temperature": _header("The T the result was decoded at."),
        "Content-Disposition": _header(
            "inline, with the download's name (filename, and filename* when not ASCII)."
        ),
        "Server-Timing": _header("Milliseconds by step: read, network, decode, encode."),
    },
}

#: A user's colour points: the CLI's hint file.
POINTS = {
    "title": "Points",
    "type": "object",
    "required": ["points"],
    "additionalProperties": False,
    "description": "Colour points in the photo's pixel coordinates (origin top-left), each with "
    "a CSS hex sRGB colour whose ab is used (the photo's L is kept), and optionally the side of "
    "its square patch in the photo's pixels: the JSON of `zhangcolor colorize --hints`.",
    "properties": {
        "points": {
            "type": "array",
            "maxItems": MAX_POINTS,
            "items": {
                "type": "object",
                "required": ["x", "y", "color"],
                "additionalProperties": False,
                "properties": {
                    "x": {"type": "number", "minimum": 0, "description": "< the photo's width"},
                    "y": {"type": "number", "minimum": 0, "description": "< its height"},
                    "color": {
                        "type": "string",
                        "pattern": "^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$",
                        "example": "#c03020",
                    },
                    "size": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        }
    },
}

_TEMPERATURE = {
    "type": "number",
    "minimum": MIN_TEMPERATURE,
    "maximum": MAX_TEMPERATURE,
    "description": f"Annealed-mean T in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]: lower is "
    "more vivid, 1 the mean. The model's own T when left out (GET /api/model says it).",
}


def upload_form(config: ServeConfig) -> dict[str, Any]:
    """The request body of POST /api/colorize, with this server's limits: the route reads the
    form itself, under those limits, rather than through FastAPI's parameters."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": False,
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The photo ({', '.join(DECODERS)}), any shape, "
                            f"at most {config.max_upload_mb:g} MB and {config.max_pixels:,} "
                            "pixels. A file name given as filename* (RFC 5987) is read.",
                        },
                        "temperature": _TEMPERATURE,
                        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                        "max_side": {
                            "type": "integer",
                            "minimum": MIN_PREVIEW_SIDE,
                            "description": "Scale the result down to this longer side "
                            "(previews); the full size when left out.",
                        },
                        "hints": POINTS,
                    },
                },
                "encoding": {"hints": {"contentType": "application/json"}},
            }
        },
    }


def points_body(description: str) -> dict[str, Any]:
    """An optional JSON body of colour points."""
    return {
        "required": False,
        "description": description,
        "content": {"application/json": {"schema": POINTS}},
    }


MODEL = {
    "description": "The model, and what it takes.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": [
                    "model",
                    "head",
                    "temperature",
                    "uses_temperature",
                    "min_temperature",
                    "max_temperature",
                    "takes_hints",
                    "suggests",
                    "max_points",
                ],
                "properties": {
                    "model": {"type": "string", "description": "default, or the file's name."},
                    "head": {"type": "string"},
                    "temperature": {"type": "number", "description": "The model's own T."},
                    "uses_temperature": {"type": "boolean"},
                    "min_temperature": {"type": "number"},
                    "max_temperature": {"type": "number"},
                    "takes_hints": {
                        "type": "boolean",
                        "description": "Whether the model takes colour points.",
                    },
                    "suggests": {
                        "type": "boolean",
                        "description": "Whether it suggests colours (a distribution).",
                    },
                    "max_points": {"type": "integer"},
                },
            }
        }
    },
}

SUGGESTIONS = {
    "description": "The k most probable colours at the pixel, most probable first.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["x", "y", "network", "suggestions"],
                "properties": {
                    "x": {"type": "number"},
                    "y": {"type": "number"},
                    "network": {"type": "string", "enum": ["ran", "cached"]},
                    "suggestions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["color", "ab", "probability"],
                            "properties": {
                                "color": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
                                "ab": {
                                    "type": "array",
                                    "items": {"type": "number"},
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                                "probability": {"type": "number", "minimum": 0, "maximum": 1},
                            },
                        },
                    },
                },
            }
        }
    },
}

HEALTH = {
    "description": "ok, or busy while a request would be turned away (still 200: a busy "
    "server is not an unhealthy one); the queue, the model, counters, the cache, the limits.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["status", "queue", "model", "network_runs", "cache", "limits"],
                "properties": {"status": {"type": "string", "enum": ["ok", "busy"]}},
            }
        }
    },
}
