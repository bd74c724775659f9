"""A bounded load test on loopback: 200 requests, 8 at a time, against a real server running the
shipped model. Zero errors allowed; p50 and p95 latencies are printed.

It runs in the default suite (about 15 s on 2 cores). Alone, with its table shown:
``pytest tests/test_serve_load.py -s``.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from makers import photo_bytes

from zhangcolor.serve import ColorizeService, ServeConfig, background_server, create_app

REQUESTS = 200
CONCURRENCY = 8
PHOTOS = 40  # distinct uploads (the network runs); the other requests change T


def test_200_requests_8_at_a_time_without_an_error(capsys):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")

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

    with background_server(create_app(service=service)) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            one(0, client)  # warm up, and make sure some upload exists
            started = time.perf_counter()
            with ThreadPoolExecutor(CONCURRENCY) as pool:
                results = list(pool.map(lambda i: one(i, client), range(1, REQUESTS + 1)))
            wall = time.perf_counter() - started

    errors = [r for r in results if r[3]]
    lines = [
        f"load test: {REQUESTS} requests, {CONCURRENCY} at a time, {wall:.1f} s "
        f"({REQUESTS / wall:.1f} req/s), {len(errors)} errors, network runs overlapping at most "
        f"{overlap['most']}"
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
    assert overlap["most"] == 1
