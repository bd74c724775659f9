"""The server process: uvicorn with a TCP_NODELAY protocol and a deadline for each request's
headers, one process or ``--workers N`` of them (each with its own model and cache), and a
server in a thread of this process for notebooks, tests and benchmarks.

Needs the ``serve`` extra: ``pip install 'zhangcolor[serve]'``.
"""

import asyncio
import functools
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from zhangcolor.options import ServeConfig
from zhangcolor.serve.app import create_app
from zhangcolor.serve.service import ColorizeService

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Environment variable through which ``serve --workers N`` hands its config to each worker.
CONFIG_ENV = "ZHANGCOLOR_SERVE_CONFIG"


def nodelay_http(*args, header_timeout_s: float = 15.0, **kwargs):
    """uvicorn's HTTP protocol with TCP_NODELAY set on each connection, and a deadline for each
    request's headers.

    asyncio sets TCP_NODELAY only on sockets whose protocol number says TCP, which the sockets
    uvicorn binds for ``--workers`` (and sockets passed in) lack; without it every answer on a
    kept-alive connection waits for a delayed ACK, about 40 ms.

    uvicorn times out only an idle kept-alive connection, and any byte received restarts that:
    a client that sends its headers a byte at a time would hold its connection forever. Here a
    connection is closed when a request's headers have not all arrived ``header_timeout_s``
    after it opened or after its last answer.
    """
    import socket

    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    protocol = AutoHTTPProtocol(*args, **kwargs)
    made, completed = protocol.connection_made, protocol.on_response_complete
    timer: list[asyncio.TimerHandle] = []

    def expect_headers() -> None:
        if timer:
            timer.pop().cancel()
        cycle = protocol.cycle  # a new request (all its headers in) replaces the cycle
        timer.append(protocol.loop.call_later(header_timeout_s, expire, cycle))

    def expire(cycle) -> None:
        transport = getattr(protocol, "transport", None)
        if protocol.cycle is cycle and transport is not None and not transport.is_closing():
            transport.close()

    def connection_made(transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        made(transport)
        expect_headers()

    def on_response_complete() -> None:
        completed()
        expect_headers()

    protocol.connection_made = connection_made
    protocol.on_response_complete = on_response_complete
    return protocol


def worker_http(*args, **kwargs):
    """:func:`nodelay_http` for ``serve --workers N``, with the header timeout of the config
    the parent hands its workers."""
    return nodelay_http(*args, header_timeout_s=_environment_config().read_timeout_s, **kwargs)


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
    service = getattr(getattr(app, "state", None), "service", None)
    timeout_s = service.config.read_timeout_s if service else ServeConfig.read_timeout_s
    http = functools.partial(nodelay_http, header_timeout_s=timeout_s)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", http=http)
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


@functools.lru_cache(maxsize=1)
def _environment_config() -> ServeConfig:
    from zhangcolor.config import build_config

    return build_config(ServeConfig, json.loads(os.environ[CONFIG_ENV]), f" in ${CONFIG_ENV}")


def app_from_environment() -> "FastAPI":
    """The app of one ``serve --workers N`` worker process, configured by the parent."""
    config = _environment_config()
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
            http=functools.partial(nodelay_http, header_timeout_s=config.read_timeout_s),
            log_level="info",
        )
        return
    ColorizeService.load(config)  # fail here, once, rather than in every worker
    os.environ[CONFIG_ENV] = json.dumps(config_dict(config))
    uvicorn.run(
        "zhangcolor.serve.server:app_from_environment",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        http="zhangcolor.serve.server:worker_http",
        log_level="info",
    )
