"""Helpers of the server tests: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
from PIL import Image


@contextmanager
def live_server(app):
    """Serve ``app`` on 127.0.0.1 at a free port; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def photo_bytes(seed: int, size=(96, 72), fmt="PNG", mode="RGB") -> bytes:
    """A smooth random colour picture's file bytes (distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    image = Image.fromarray(small, "RGBA").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()
