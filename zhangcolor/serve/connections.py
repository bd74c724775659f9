"""Connections: how many the server keeps open, and what it logs when the process runs out of
file descriptors.

Each connection holds a file descriptor. Past the process's open-file limit, ``accept`` fails
with "Too many open files", and asyncio logs a traceback for every failed accept (thousands a
second under a flood). So the server closes connections beyond a cap below that limit at once,
with a 503, and logs a failing accept as one line at most every few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from zhangcolor.options import ServeConfig

#: How often a repeated connection problem is logged, at most (seconds).
LOG_EVERY_S = 10.0
#: asyncio's message for an accept that failed for want of file descriptors or memory.
_ACCEPT_FAILED = "socket.accept() out of system resource"


def connection_cap(config: ServeConfig) -> int:
    """``max_connections``, kept below the process's open-file limit with a reserve for what
    else it opens (the model, logs, its own sockets)."""
    try:
        import resource
    except ImportError:  # not a Unix: no limit to read
        return config.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return config.max_connections
    return max(1, min(config.max_connections, soft - max(32, soft // 8)))


def refusal_bytes() -> bytes:
    """The answer of a connection over the cap, written before its request is read."""
    body = json.dumps(
        {"error": "busy", "detail": "the server has as many connections open as it may; retry"}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nx-content-type-options: nosniff\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class Every:
    """Counts an event, and says when to log it: the first time, then at most every
    ``every_s`` seconds, with how many happened since."""

    def __init__(self, every_s: float = LOG_EVERY_S):
        self.every_s, self.count, self.last = every_s, 0, -float("inf")

    def due(self) -> int:
        """How many to report now (this one included), or 0 to stay silent."""
        self.count += 1
        now = time.monotonic()
        if now - self.last < self.every_s:
            return 0
        count, self.count, self.last = self.count, 0, now
        return count


def _retry_after_close(context: dict) -> bool:
    """Whether ``context`` is a retry of a failed accept that found the server's socket closed:
    asyncio schedules one retry per failed accept, and those still pending when the server
    stops fail on the closed socket, with nothing left to do."""
    callback = getattr(context.get("handle"), "_callback", None)
    closed = isinstance(context.get("exception"), ValueError | OSError)
    return closed and getattr(callback, "__name__", "") == "_start_serving"


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, log: logging.Logger) -> None:
    """Make ``loop`` log a failing accept as one line (no traceback), at most every
    :data:`LOG_EVERY_S`; every other problem goes to the handler it had."""
    previous = loop.get_exception_handler()
    every = Every()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if context.get("message") == _ACCEPT_FAILED:
            count = every.due()
            if count:
                error = context.get("exception")
                reason = getattr(error, "strerror", None) or str(error)
                log.warning(
                    "cannot accept connections: %s (%d time(s) in the last %.0f s); they wait "
                    "until connections close",
                    reason,
                    count,
                    every.every_s,
                )
            return
        if _retry_after_close(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
