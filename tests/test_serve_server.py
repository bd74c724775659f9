"""zhangcolor serve's process: the command line, ``--workers N``, TCP_NODELAY, the cap on open
connections below the process's file limit, and what it logs when file descriptors run out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from makers import photo_bytes
from test_colorize import invoke
from test_serve import decoded, make_service, post

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.serve import (
    ColorizeService,
    ServeConfig,
    background_server,
    connections,
    create_app,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory)


def test_cli_serve_reports_a_missing_model_and_bad_options(tmp_path):
    result = invoke("serve", "--model", tmp_path / "missing.safetensors", "--port", "0")
    assert result.exit_code == 1 and "no model file" in result.output
    result = invoke("serve", "--size", "66")
    assert result.exit_code == 2 and "multiple of 4" in result.output


def test_cli_serve_takes_host_names_and_connection_limits(tmp_path, monkeypatch):
    import zhangcolor.serve

    served: list[ServeConfig] = []
    monkeypatch.setattr(zhangcolor.serve, "serve", served.append)
    flags = ["--allowed-host", "photos.example", "--allowed-host", "x.example"]
    assert invoke("serve", *flags, "--max-connections", "50").exit_code == 0
    yaml = tmp_path / "serve.yaml"
    yaml.write_text("allowed_hosts: [from.yaml]\nmax_client_mp: 12\n")
    assert invoke("serve", "--config", yaml).exit_code == 0
    first, second = served
    assert first.allowed_hosts == ("photos.example", "x.example") and first.max_connections == 50
    assert second.allowed_hosts == ("from.yaml",) and second.max_client_mp == 12


def test_serve_with_workers_hands_uvicorn_import_strings_that_resolve(service, monkeypatch):
    """``--workers N`` hands uvicorn the app factory and the HTTP protocol as import strings,
    which each worker process resolves: they must name the package's functions, and the factory
    must build a working app, behind the Host allow-list, from the config the parent put in the
    environment."""
    import uvicorn
    from uvicorn.importer import import_from_string

    from zhangcolor.serve import server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setenv(server.CONFIG_ENV, "")  # serve() sets it; restored after the test
    threads = torch.get_num_threads()  # a worker's app sets torch's threads for its process
    server._environment_config.cache_clear()
    config = dataclasses.replace(
        service.config, workers=2, max_queue=5, allowed_hosts=("testserver",)
    )
    try:
        server.serve(config)
        [(factory, kwargs)] = calls
        assert kwargs["workers"] == 2 and kwargs["factory"] is True
        assert import_from_string(factory) is server.app_from_environment
        assert import_from_string(kwargs["http"]) is server.worker_http
        with TestClient(import_from_string(factory)()) as client:
            assert client.get("/healthz").json()["limits"]["max_queue"] == 5
            assert decoded(post(client, photo_bytes(18))).size == (96, 72)
            evil = client.get("/healthz", headers={"host": "evil.example"})
            assert evil.status_code == 400 and evil.json()["error"] == "bad_host"
    finally:
        server._environment_config.cache_clear()
        torch.set_num_threads(threads)


def test_connections_get_tcp_nodelay_which_uvicorns_worker_sockets_lack():
    """Without TCP_NODELAY a kept-alive connection waits ~40 ms per answer (delayed ACKs)."""
    import asyncio
    import socket

    import uvicorn
    from uvicorn.server import ServerState

    from zhangcolor.serve import nodelay_http

    async def app(scope, receive, send):
        pass

    config = uvicorn.Config(app)
    config.load()
    with socket.socket() as listener:  # no protocol number, as uvicorn binds for --workers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0

                class Transport:
                    def get_extra_info(self, name, default=None):
                        return {
                            "socket": accepted,
                            "sockname": accepted.getsockname(),
                            "peername": accepted.getpeername(),
                        }.get(name, default)

                    def is_closing(self):
                        return False

                loop = asyncio.new_event_loop()
                try:
                    protocol = nodelay_http(
                        config=config, server_state=ServerState(), app_state={}, _loop=loop
                    )
                    protocol.connection_made(Transport())
                finally:
                    loop.close()
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_the_connection_cap_stays_below_the_open_file_limit(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda kind: (256, 4096))
    assert connections.connection_cap(ServeConfig()) == 224  # an eighth kept for the rest
    assert connections.connection_cap(ServeConfig(max_connections=100)) == 100
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (20, 20))
    assert connections.connection_cap(ServeConfig()) == 1


def test_connections_over_the_cap_are_answered_503_and_closed_at_once(service):
    config = dataclasses.replace(service.config, max_connections=20)
    app = create_app(service=ColorizeService(service.colorizer, config))
    with background_server(app) as url:
        host, port = url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
        time.sleep(0.3)  # the server has taken them all
        extra = [socket.create_connection((host, int(port)), timeout=5) for _ in range(5)]
        answers = []
        for sock in extra:
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            answers.append(data)
        assert all(a.startswith(b"HTTP/1.1 503") and b'"busy"' in a for a in answers), answers
        for sock in held + extra:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_a_failing_accept_is_one_line_without_a_traceback_at_most_every_few_seconds():
    records: list[logging.LogRecord] = []
    log = logging.getLogger("test.accept")
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    loop = asyncio.new_event_loop()
    try:
        connections.quiet_accept_errors(loop, log)
        for _ in range(2000):
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )
    finally:
        loop.close()
        log.removeHandler(handler)
    assert len(records) == 1 and not records[0].exc_info
    assert "Too many open files" in records[0].getMessage()


SERVER = """
import resource, sys, time
from zhangcolor.serve import ColorizeService, ServeConfig, background_server, create_app
service = ColorizeService.load(ServeConfig(model=sys.argv[1], size=32))
with background_server(create_app(service=service)) as url:
    # Something else takes the descriptors the cap counted on: the process runs out.
    import os
    used, (_, hard) = len(os.listdir("/proc/self/fd")), resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 20, hard))
    print(url, flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts Linux's open files")
def test_a_server_out_of_file_descriptors_logs_a_line_not_a_traceback_per_accept(service):
    """Past the file limit every accept failed and asyncio logged a traceback for each, 12.9 MB
    of log in 15 s; the server must log a line and serve again once descriptors are free."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, service.config.model],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), process.stderr.read()
        host, port = url.removeprefix("http://").split(":")
        flood = []
        for _ in range(200):
            try:
                flood.append(socket.create_connection((host, int(port)), timeout=2))
            except OSError:
                break
        time.sleep(1.5)
        for sock in flood:
            sock.close()
        time.sleep(1.2)  # asyncio retries the accept after a second
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        process.stdin.close()
        process.wait(20)
    log = process.stderr.read()
    assert "Traceback" not in log, log[:3000]
    lines = [line for line in log.splitlines() if "accept" in line]
    assert 1 <= len(lines) <= 2 and "Too many open files" in lines[0], log[:3000]
