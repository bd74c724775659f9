"""Reading a request's body in memory, never spooled to disk, under limits: an upload's multipart
form (its size, its parts, each part's headers) or a JSON body of colour points; how long a body
may take to arrive, and how many bytes all bodies still arriving may hold. Every refusal is an
:class:`ApiError`.

Parsing runs on the event loop, chunk by chunk as the body arrives; the limits on parts and on a
part's headers bound what each chunk costs there, so a form of countless tiny parts (under the
size limit) is refused as soon as it has too many, and never holds the loop.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from zhangcolor.options import ServeConfig
from zhangcolor.serve.errors import ApiError, busy
from zhangcolor.serve.names import part_filename

#: Multipart framing allowed on top of the image itself (boundaries, headers, form fields).
FORM_OVERHEAD = 64 * 1024
#: A form has at most one part per field; each part costs parsing on the event loop.
_MAX_PARTS = 5
#: Header bytes of one form part (its name, file name and type need far less).
_MAX_PART_HEADER_BYTES = 8 * 1024
FORM_FIELDS = ("image", "temperature", "format", "max_side", "hints")


class UploadBudget:
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


class Disconnected(Exception):
    """The client went away before its body had arrived."""


def _too_large(max_image_bytes: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"the upload exceeds {max_image_bytes / 2**20:g} MB; "
        "downscale it, or start the server with a larger --max-upload-mb",
    )


async def read_form(
    request, config: ServeConfig, budget: UploadBudget
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
    limit = max_image_bytes + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_image_bytes)
    parser, parts = _multipart_parser(params[b"boundary"])
    with budget.body() as take:
        await _feed(parser, _body_chunks(request, config), take, limit, max_image_bytes)
    form: dict[str, tuple[str | None, bytes]] = {}
    for part in parts:
        header = part["headers"].get("content-disposition", b"")
        _, disposition = parse_options_header(header)
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        form[name] = (part_filename(header, disposition.get(b"filename")), bytes(part["data"]))
    _check_form(form, max_image_bytes)
    return form


async def read_json_body(request, config: ServeConfig, budget: UploadBudget, limit: int) -> bytes:
    """A request's body (possibly empty: no colour points) read in memory under ``limit`` bytes
    and the upload timeouts, to be read as JSON whatever its declared type (``curl --data``
    says form-urlencoded); a multipart form is a 415, as it means the wrong route."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("multipart/"):
        raise ApiError(
            415,
            "not_json",
            'send the colour points as JSON, {"points": [...]} (or no body); POST a new image '
            "to /api/colorize",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body exceeds {limit:,} bytes")
    body = bytearray()
    with budget.body() as take:
        async for chunk in _body_chunks(request, config):
            if len(body) + len(chunk) > limit:
                raise ApiError(413, "too_large", f"the body exceeds {limit:,} bytes")
            take(len(chunk))
            body += chunk
    return bytes(body)


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
            raise Disconnected() from None
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
                f"{', '.join(FORM_FIELDS)}",
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
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ApiError(
            422,
            "unknown_field",
            f"unknown form field(s): {names}; valid: {', '.join(FORM_FIELDS)}",
        )
    if "image" not in form or not form["image"][1]:
        raise ApiError(
            422, "missing_image", "the form has no file, or an empty one, in a field named 'image'"
        )
    if len(form["image"][1]) > max_image_bytes:
        raise _too_large(max_image_bytes)


def form_number(
    form: dict[str, tuple[str | None, bytes]],
    name: str,
    kind: type[int] | type[float],
    default: float | None,
) -> float | None:
    """The form field ``name`` as a number (``kind``), ``default`` when the form has no such
    field; a 422 when it is not a number."""
    if name not in form:
        return default
    text = form[name][1].decode("utf-8", "replace").strip()
    try:
        return kind(text)
    except ValueError:
        raise ApiError(422, f"bad_{name}", f"{name} must be a number, got {text[:40]!r}") from None
