"""zhangcolor serve and hostile clients, on a real server (uvicorn, sockets): slow or silent
uploads and headers, a full queue, forms of countless fields, disconnects, hostile file names."""

from __future__ import annotations

import copy
import dataclasses
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from makers import photo_bytes
from test_serve import answer, connect, make_service, many_fields, multipart

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.serve import ColorizeService, background_server, create_app


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory)


@pytest.fixture(scope="module")
def live(service):
    """A real server (uvicorn, sockets) with short timeouts and a short queue: 1 + 2 places."""
    config = dataclasses.replace(
        service.config,
        max_concurrent=1,
        max_queue=2,
        read_timeout_s=1.0,
        upload_timeout_s=3.0,
        max_upload_mb=20,
    )
    with background_server(create_app(service=ColorizeService(service.colorizer, config))) as url:
        yield url


def closed_within(sock: socket.socket, seconds: float, trickle: bytes) -> float | None:
    """Send ``trickle`` a byte each 0.2 s until the server closes the connection; how long
    that took, or None if it held on for ``seconds``."""
    start = time.monotonic()
    sock.settimeout(0.2)
    for byte in trickle:
        if time.monotonic() - start > seconds:
            return None
        try:
            sock.send(bytes([byte]))
            if sock.recv(1024) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


def test_a_nul_in_a_file_name_is_sanitised_and_poisons_nothing(live):
    """A NUL in the name once made the answer's header illegal: the connection dropped, and
    so did every later POST or GET of the same image."""
    data = photo_bytes(11)
    for name in [b"a\0b.png", b"x\r\ny.png", b"../../a\x01b.png"]:
        with httpx.Client(base_url=live) as http:
            response = http.post(
                "/api/colorize",
                content=multipart(data, name),
                headers={"content-type": "multipart/form-data; boundary=XyZ"},
            )
        if name.startswith(b"x\r\n"):  # a raw CR LF ends the part's header: a malformed form
            assert response.status_code == 400 and response.json()["error"] == "bad_form"
            continue
        assert response.status_code == 200, response.text
        disposition = response.headers["content-disposition"]
        assert disposition == 'inline; filename="ab-colorized-T0.38.png"', disposition
    with httpx.Client(base_url=live) as http:
        again = http.post("/api/colorize", files={"image": ("fine.png", data)})
        assert again.status_code == 200 and again.headers["x-network"] == "cached"
        got = http.get(f"/api/colorize/{again.headers['x-upload-id']}", params={"name": "a\0b"})
        assert got.status_code == 200
        assert got.headers["content-disposition"] == 'inline; filename="ab-colorized-T0.38.png"'


def test_slow_uploads_take_no_place_in_the_queue_and_time_out(live):
    """Six clients that send their bodies a byte at a time, more than the queue's three places:
    an honest upload is still served, /healthz counts them as arriving, and each gets a 408
    once the upload timeout has passed."""
    data = photo_bytes(12)
    body = multipart(data)
    head = (
        f"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
    ).encode()
    slow = [connect(live) for _ in range(6)]
    for sock in slow:
        sock.sendall(head + body[:200])
    start = time.monotonic()
    with httpx.Client(base_url=live, timeout=10) as http:
        time.sleep(0.3)
        honest = http.post("/api/colorize", files={"image": ("honest.png", data)})
        assert honest.status_code == 200, honest.text
        arriving = []  # the server may not have read every slow head yet on a loaded machine
        while time.monotonic() - start < 2.5 and not (arriving and arriving[-1] >= 6):
            health = http.get("/healthz").json()
            assert health["status"] == "ok"
            arriving.append(health["queue"]["uploads_arriving"])
        assert arriving[-1] >= 6, arriving
        for i in range(200, 220):  # a byte every 0.2 s: never silent for a whole read timeout
            for sock in slow:
                sock.send(body[i : i + 1])
            time.sleep(0.2)
            if time.monotonic() - start > 3.5:
                break
    for sock in slow:
        status, refusal = answer(sock)
        assert status == 408 and refusal["error"] == "upload_timeout", refusal
        sock.close()


def test_a_silent_upload_times_out_after_the_read_timeout(live):
    data = multipart(photo_bytes(13))
    with connect(live) as sock:
        sock.sendall(
            f"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n".encode()
            + data[:100]
        )
        start = time.monotonic()
        status, refusal = answer(sock)
        assert status == 408 and refusal["error"] == "upload_timeout"
        assert 0.9 < time.monotonic() - start < 2.5


def test_slow_headers_are_timed_out(live):
    """uvicorn times out only idle kept-alive connections, and any byte restarts that: headers
    sent a byte at a time held a connection forever."""
    for opening in (
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ):  # new, and kept alive
        with connect(live) as sock:
            if opening:
                sock.sendall(opening)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            took = closed_within(sock, 4, b"POST /api/colorize HTTP/1.1\r\nX-Slow: " + b"a" * 50)
            assert took is not None and took < 2.5, took


def test_a_full_queue_says_busy_on_healthz_and_503_with_retry_after(service):
    """Before, /healthz said ok while every upload got a 503, which had no Retry-After."""
    release = threading.Event()
    colorizer = copy.copy(service.colorizer)
    network_output = colorizer.network_output

    def held(lightness):
        release.wait(20)
        return network_output(lightness)

    colorizer.network_output = held
    config = dataclasses.replace(service.config, max_concurrent=1, max_queue=1)
    app = create_app(service=ColorizeService(colorizer, config))
    with background_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with ThreadPoolExecutor(2) as pool:
            held_posts = [
                pool.submit(http.post, "/api/colorize", files={"image": ("p.png", photo_bytes(s))})
                for s in (14, 15)
            ]
            deadline = time.monotonic() + 10
            while http.get("/healthz").json()["queue"]["in_flight"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            health = http.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "busy"
            assert health.json()["queue"]["retry_after_s"] >= 1
            refused = http.post("/api/colorize", files={"image": ("p.png", photo_bytes(16))})
            assert refused.status_code == 503 and refused.json()["error"] == "busy"
            assert int(refused.headers["retry-after"]) >= 1
            release.set()
            assert [f.result().status_code for f in held_posts] == [200, 200]
        assert http.get("/healthz").json()["status"] == "ok"


def test_a_form_of_317750_fields_is_refused_at_once(service):
    """Such a form (16 MB, under the upload limit) was parsed on the event loop for 16.5 s."""
    config = dataclasses.replace(service.config, max_upload_mb=20)
    body = many_fields()
    with TestClient(create_app(service=ColorizeService(service.colorizer, config))) as client:
        start = time.perf_counter()
        response = client.post(
            "/api/colorize",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert time.perf_counter() - start < 2
    assert response.status_code == 413 and response.json()["error"] == "too_many_fields"


def test_healthz_stays_fast_while_four_such_forms_arrive(live):
    """Four at once held /healthz up to 9 s. The refusal comes while the client is still
    sending, so the client may see the connection reset rather than the 413."""
    body = many_fields()

    def send() -> int | None:
        try:
            response = httpx.post(
                f"{live}/api/colorize",
                content=body,
                headers={"content-type": "multipart/form-data; boundary=b"},
                timeout=20,
            )
            return response.status_code
        except httpx.TransportError:
            return None

    with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=live, timeout=10) as http:
        forms = [pool.submit(send) for _ in range(4)]
        slowest = 0.0
        while not all(f.done() for f in forms):
            start = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.02)
    assert {f.result() for f in forms} <= {413, None}
    assert slowest < 1.0, slowest


def test_a_client_that_disconnects_mid_upload_leaves_one_line_and_no_traceback(live):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn", "zhangcolor")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with connect(live) as sock:
            sock.sendall(
                b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
                + multipart(photo_bytes(17))[:1000]
            )
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert len(records) <= 1, [r.getMessage() for r in records]
    assert not any(r.exc_info for r in records), [r.getMessage() for r in records]
