"""The server process: uvicorn with a TCP_NODELAY protocol, a deadline for each request's
headers and a cap on open connections, the Host allow-list in front of the app, one process or
``--workers N`` of them (each with its own model and cache), and a server in a thread of this
process for notebooks, tests and benchmarks.

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

import torch

from zhangcolor.options import ServeConfig
from zhangcolor.serve.app import create_app, server_log
from zhangcolor.serve.connections import Every, connection_cap, refusal_bytes
from zhangcolor.serve.guard import HostGuard
from zhangcolor.serve.service import ColorizeService

#: Environment variable through which ``serve --workers N`` hands its config to each worker.
CONFIG_ENV = "ZHANGCOLOR_SERVE_CONFIG"


def nodelay_http(
    *args, header_timeout_s: float = 15.0, max_connections: int | None = None, **kwargs
):
    """uvicorn's HTTP protocol with TCP_NODELAY set on each connection, a deadline for each
    request's headers, and at most ``max_connections`` connections open.

    asyncio sets TCP_NODELAY only on sockets whose protocol number says TCP, which the sockets
    uvicorn binds for ``--workers`` (and sockets passed in) lack; without it every answer on a
    kept-alive connection waits for a delayed ACK, about 40 ms.

    uvicorn times out only an idle kept-alive connection, and any byte received restarts that:
    a client that sends its headers a byte at a time would hold its connection forever. Here a
    connection is closed when a request's headers have not all arrived ``header_timeout_s``
    after it opened or after its last answer.

    A connection beyond ``max_connections`` is answered 503 and closed at once, so that the
    process never runs out of file descriptors (see :mod:`~zhangcolor.serve.connections`).
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
        over = max_connections is not None and len(protocol.connections) >= max_connections
        made(transport)
        if over:
            transport.write(refusal_bytes())
            transport.close()
            count = _over_cap.due()
            if count:
                server_log.warning(
                    "%d connection(s) refused: %d are open, the most allowed",
                    count,
                    max_connections,
                )
            return
        expect_headers()

    def on_response_complete() -> None:
        completed()
        expect_headers()

    protocol.connection_made = connection_made
    protocol.on_response_complete = on_response_complete
    return protocol


#: Connections refused over the cap, logged as one line at most every few seconds.
_over_cap = Every()


def http_for(config: ServeConfig):
    """The protocol factory :func:`nodelay_http` with ``config``'s timeout and connection cap."""
    return functools.partial(
        nodelay_http,
        header_timeout_s=config.read_timeout_s,
        max_connections=connection_cap(config),
    )


def guarded(app, config: ServeConfig):
    """``app`` behind the Host allow-list of ``config`` (see :mod:`~zhangcolor.serve.guard`)."""
    return HostGuard(app, config)


def worker_http(*args, **kwargs):
    """:func:`nodelay_http` for ``serve --workers N``, with the header timeout and connection
    cap of the config the parent hands its workers."""
    return http_for(_environment_config())(*args, **kwargs)


@contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a thread of this process (port 0: a free one) behind the Host
    allow-list of its service's config; yields its base URL.

    For notebooks, tests and benchmarks; ``zhangcolor serve`` is the way to deploy.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    service = getattr(getattr(app, "state", None), "service", None)
    serve_config = service.config if service else ServeConfig()
    config = uvicorn.Config(
        guarded(app, serve_config), log_level="warning", lifespan="on", http=http_for(serve_config)
    )
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


def app_from_environment() -> HostGuard:
    """The app of one ``serve --workers N`` worker process, configured by the parent."""
    config = _environment_config()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    return guarded(create_app(config), config)


def serve(config: ServeConfig) -> None:
    """Load the model and serve until interrupted."""
    import uvicorn

    from zhangcolor.config import config_dict

    if config.workers == 1:
        uvicorn.run(
            guarded(create_app(config), config),
            host=config.host,
            port=config.port,
            http=http_for(config),
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
