"""A bounded load test on loopback: 200 requests, 8 at a time, against a real server running the
shipped model, while hostile clients work against it: 40 uploads that arrive a byte at a time
(more than the queue's places, which they once took all of), 10 connections whose headers do,
a stream of bad requests (a 317,750-field form, a zTXt bomb, a NUL in a file name, a long
boundary, a disconnect mid-upload), and, from four other addresses, T-only GETs that re-decode
one 25 MP upload (a 6 KB PNG) at full size in a loop, and previews of it at ever new sizes.
Zero errors allowed for the honest clients, each hostile one must get its own refusal (a flood
of re-decodes: its work, or 429 and 503), and p50 and p95 latencies are printed.

It runs in the default suite (about 40 s on 2 cores). Alone, with its table shown:
``pytest tests/test_serve_load.py -s``.
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from makers import photo_bytes
from test_serve import other_addresses, png_of

from zhangcolor.serve import ColorizeService, ServeConfig, background_server, create_app

REQUESTS = 200
CONCURRENCY = 8
PHOTOS = 40  # distinct uploads (the network runs); the other requests change T
SLOW_UPLOADS = 40  # more than the 34 places of the queue (2 working, 32 waiting)
SLOW_HEADERS = 10
#: Clients flooding one large cached upload with T-only GETs, each from its own address: full-size
#: re-decodes, or previews at ever new sizes.
FLOODERS = ("full", "full", "full", "sides")


def _trickle(url: str, stop: threading.Event, opened: list[int]) -> None:
    """Keep SLOW_UPLOADS connections sending an upload and SLOW_HEADERS their headers, a byte
    each 0.5 s, opening new ones as the server closes them (as a slowloris does)."""
    from test_serve import multipart

    host, port = url.removeprefix("http://").split(":")
    body = multipart(photo_bytes(999))
    upload = (
        f"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
    ).encode() + body
    header = b"POST /api/colorize HTTP/1.1\r\nX-Slow: " + b"x" * 10_000
    begun = {upload: len(upload) - len(body) + 200, header: 20}  # bytes sent at once
    conns: dict[socket.socket, list] = {}  # what each sends, and how far it got
    while not stop.is_set():
        for message, want in ((upload, SLOW_UPLOADS), (header, SLOW_HEADERS)):
            while sum(m is message for m, _ in conns.values()) < want:
                sock = socket.create_connection((host, int(port)))
                sock.sendall(message[: begun[message]])
                conns[sock] = [message, begun[message]]
                opened[0] += 1
        for sock, sent in list(conns.items()):
            try:
                sock.send(sent[0][sent[1] : sent[1] + 1])
                sent[1] += 1
            except OSError:  # closed by the server: a timeout
                sock.close()
                del conns[sock]
        stop.wait(0.5)
    for sock in conns:
        sock.close()


def _hostile_requests(url: str) -> dict[str, tuple]:
    """Bad requests by name: how to send one, and the statuses it may get (None: the
    connection dropped, as when a refusal comes before the client has sent its whole body)."""
    from test_serve import many_fields, multipart, png_with_chunk

    ztxt = png_with_chunk(photo_bytes(998), b"zTXt", b"c\0\0" + zlib.compress(b"\0" * 2**21, 9))
    fields, good = many_fields(), photo_bytes(997)

    def form(body: bytes, boundary: str = "XyZ"):
        return lambda http: http.post(
            "/api/colorize",
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )

    def disconnect(http):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999\r\n"
                b"Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n" + multipart(good)[:500]
            )
        return None

    return {
        "317,750 fields": (form(fields, "b"), {413, None}),
        "zTXt bomb": (form(multipart(ztxt)), {415}),
        "NUL in the name": (form(multipart(good, b"a\0b.png")), {200}),
        "long boundary": (form(multipart(good, boundary=b"b" * 300), "b" * 300), {400}),
        "not an image": (form(multipart(b"hello")), {415}),
        "disconnect": (disconnect, {None}),
    }


def _flood(url: str, address: str, kind: str, upload_id: str, stop, seen: list) -> None:
    """T-only GETs of ``upload_id`` from ``address``, one at a time until ``stop``: full-size
    re-decodes at ever new T ("full"), or previews at ever new sizes ("sides")."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, timeout=120) as http:
        rng = np.random.default_rng(int(address.rsplit(".", 1)[1]))
        while not stop.is_set():
            params = {"temperature": f"{rng.uniform(0.05, 1):.3f}"}
            if kind == "sides":
                params |= {"max_side": str(int(rng.integers(16, 4000))), "format": "jpg"}
            seen.append(http.get(f"/api/colorize/{upload_id}", params=params).status_code)


def _attack(url: str, stop: threading.Event, outcomes: list[tuple[str, int | None]]) -> None:
    """Send the hostile requests in turn, each on a new connection, until ``stop``."""
    requests = _hostile_requests(url)
    while not stop.is_set():
        for name, (send, _) in requests.items():
            with httpx.Client(base_url=url, timeout=30) as http:
                try:
                    response = send(http)
                    outcomes.append((name, None if response is None else response.status_code))
                except httpx.TransportError:
                    outcomes.append((name, None))
            stop.wait(0.2)
    outcomes.append(("expected", requests))


def test_200_requests_8_at_a_time_without_an_error(capsys):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")

    flood_from = other_addresses(len(FLOODERS))
    # Two work threads, so that network runs could overlap if the lock did not hold them.
    service = ColorizeService.load(ServeConfig(max_concurrent=2, max_queue=32))
    # Count how many network runs ever overlap: the server promises one at a time.
    overlap = {"now": 0, "most": 0}
    lock = threading.Lock()
    network_output = service.colorizer.network_output

    def counted(lightness):
        with lock:
            overlap["now"] += 1
            overlap["most"] = max(overlap["most"], overlap["now"])
        try:
            return network_output(lightness)
        finally:
            with lock:
                overlap["now"] -= 1

    service.colorizer.network_output = counted
    photos = [photo_bytes(seed, size=(640, 480), fmt="JPEG") for seed in range(PHOTOS)]
    uploaded: dict[int, str] = {}
    ready = threading.Condition()

    def one(i: int, client: httpx.Client) -> tuple[str, float, int, str]:
        rng = np.random.default_rng(i)
        t = float(rng.uniform(0.05, 1.0))
        start = time.perf_counter()
        if i % 5 == 0 or not uploaded:  # a new photo, as the page's first request
            n = (i // 5) % PHOTOS
            response = client.post(
                "/api/colorize",
                files={"image": (f"p{n}.jpg", photos[n])},
                data={"temperature": f"{t:.2f}", "format": "jpg", "max_side": "512"},
            )
            kind = "upload"
            if response.status_code == 200:
                with ready:
                    uploaded[n] = response.headers["x-upload-id"]
        else:  # a T change on some photo already uploaded, as the page's slider
            upload_id = list(uploaded.values())[int(rng.integers(len(uploaded)))]
            response = client.get(
                f"/api/colorize/{upload_id}",
                params={"temperature": f"{t:.2f}", "format": "jpg", "max_side": "512"},
            )
            kind = "T change"
        took = time.perf_counter() - start
        ok = response.status_code == 200 and response.content[:2] == b"\xff\xd8"
        return kind, took, response.status_code, "" if ok else response.text[:200]

    stop, opened, outcomes = threading.Event(), [0], []
    with background_server(create_app(service=service)) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            one(0, client)  # warm up, and make sure some upload exists
            large = client.post("/api/colorize", files={"image": ("l.png", png_of(5000, 5000))})
            assert large.status_code == 200, large.text
            flooded: list[int] = []
            hostile = [
                threading.Thread(target=_trickle, args=(url, stop, opened)),
                threading.Thread(target=_attack, args=(url, stop, outcomes)),
            ] + [
                threading.Thread(
                    target=_flood,
                    args=(url, address, kind, large.headers["x-upload-id"], stop, flooded),
                )
                for address, kind in zip(flood_from, FLOODERS, strict=True)
            ]
            for thread in hostile:
                thread.start()
            time.sleep(1)  # the slow clients are all connected, as they were before the fix
            started = time.perf_counter()
            try:
                with ThreadPoolExecutor(CONCURRENCY) as pool:
                    results = list(pool.map(lambda i: one(i, client), range(1, REQUESTS + 1)))
                wall = time.perf_counter() - started
                arriving = client.get("/healthz").json().get("queue", {}).get("uploads_arriving")
            finally:
                stop.set()
                for thread in hostile:
                    thread.join(120)

    errors = [r for r in results if r[3]]
    _, expected = outcomes.pop()
    wrong = [(name, status) for name, status in outcomes if status not in expected[name][1]]
    lines = [
        f"load test: {REQUESTS} requests, {CONCURRENCY} at a time, {wall:.1f} s "
        f"({REQUESTS / wall:.1f} req/s), {len(errors)} errors, network runs overlapping at most "
        f"{overlap['most']}",
        f"  alongside {opened[0]} slow connections ({arriving} uploads arriving at "
        f"the end) and {len(outcomes)} hostile requests, "
        f"{len(wrong)} of them answered other than expected",
        f"  and {len(flooded)} T-only GETs of a 25 MP upload from {len(FLOODERS)} addresses: "
        + ", ".join(f"{flooded.count(s)} × {s}" for s in sorted(set(flooded))),
    ]
    for kind in ("upload", "T change", "all"):
        took = np.array([r[1] for r in results if kind in (r[0], "all")]) * 1e3
        lines.append(
            f"  {kind:9s} n={took.size:3d}  p50 {np.percentile(took, 50):6.0f} ms  "
            f"p95 {np.percentile(took, 95):6.0f} ms"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not errors, errors[:3]
    # Measured 0.26 s here (2 cores, with a training run beside it); 10 s leaves room for slower
    # machines, never for honest clients waiting out the slow ones' timeouts (15 s and more).
    assert np.percentile([r[1] for r in results], 95) < 10
    assert overlap["most"] == 1
    assert not wrong, wrong[:5]
    assert {name for name, _ in outcomes} == set(expected), "each hostile request was sent"
    assert arriving >= SLOW_UPLOADS // 2
    assert flooded and set(flooded) <= {200, 429, 503}, sorted(set(flooded))
