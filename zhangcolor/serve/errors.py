"""What the server refuses: an :class:`ApiError` carries an HTTP status, a stable code, a message
that says what to do, and any headers the answer needs; every refusal reaches the client as JSON
``{"error": code, "detail": message}``."""

from __future__ import annotations

import re

#: An object's default repr (``<_io.BytesIO object at 0x7f…>``), which says nothing to a user
#: and shows the server's memory layout.
_OBJECT_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")


def plain(text: str) -> str:
    """``text`` without object reprs (each becomes "the upload"), for a message a client reads."""
    return _OBJECT_REPR.sub("the upload", text)


class ApiError(Exception):
    """A request the server refuses: HTTP status, a stable code, what to do about it, and any
    headers the answer carries (a 503's Retry-After, a 405's Allow)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        detail = plain(detail)
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}

    def about(self, name: str) -> ApiError:
        """The same refusal, its message prefixed with the file ``name`` it is about."""
        return ApiError(self.status, self.code, f"{name}: {self.detail}", self.headers)


def busy(detail: str, retry_after_s: int) -> ApiError:
    """A 503 that says when to try again."""
    return ApiError(503, "busy", detail, {"Retry-After": str(retry_after_s)})


def over_budget(detail: str, retry_after_s: int) -> ApiError:
    """A 429: this client has as much work in flight as it may; it says when to try again."""
    return ApiError(429, "too_much_work", detail, {"Retry-After": str(retry_after_s)})
