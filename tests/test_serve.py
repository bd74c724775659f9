"""zhangcolor serve: the REST API against the library, the cache, limits and JSON errors."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import re
import socket
import struct
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from makers import noise, photo_bytes
from PIL import Image
from skimage import color as skcolor
from test_colorize import invoke, make_checkpoint

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor import serve
from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE
from zhangcolor.serve import (
    ApiError,
    ColorizeService,
    OutputCache,
    RequestQueue,
    ServeConfig,
    Upload,
    background_server,
    create_app,
)
from zhangcolor.serve import service as service_module


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    model = make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    config = ServeConfig(
        model=str(model), size=64, max_upload_mb=2.5, max_pixels=2_000_000, cache_mb=64
    )
    return ColorizeService.load(config)


@pytest.fixture
def client(service):
    with TestClient(create_app(service=service)) as client:
        yield client


def post(client, data: bytes, name="photo.png", **fields):
    return client.post(
        "/api/colorize",
        files={"image": (name, data, "application/octet-stream")},
        data={k: str(v) for k, v in fields.items()},
    )


def multipart(data: bytes, name: bytes = b"photo.png", boundary: bytes = b"XyZ") -> bytes:
    """A form with ``data`` in its image field, its file name exactly ``name`` (clients such as
    httpx escape what a hostile one would not)."""
    return (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="image"; filename="'
        + name
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + data
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )


def raw_post(client, data: bytes, name: bytes = b"photo.png", boundary: bytes = b"XyZ"):
    return client.post(
        "/api/colorize",
        content=multipart(data, name, boundary),
        headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
    )


def decoded(response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def runs(client) -> int:
    return client.get("/healthz").json()["network_runs"]


# ----------------------------------------------------------------------------- the API


def test_post_gives_the_full_size_result_of_the_library_with_the_input_l(client, service):
    data = photo_bytes(1, size=(90, 70))
    response = post(client, data, temperature=0.38)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-network"] == "ran"
    assert "network;dur=" in response.headers["server-timing"]
    assert response.headers["content-disposition"] == 'inline; filename="photo-colorized-T0.38.png"'
    result = decoded(response)
    source = Image.open(io.BytesIO(data))
    assert result.size == source.size and result.mode == "RGB"
    # Exactly what the Python API gives for the same photo and T ...
    expected = service.colorizer.colorize(source, temperature=0.38)
    assert np.array_equal(np.asarray(result), np.asarray(expected))
    # ... whose L is the photo's own (skimage as the reference).
    ours = skcolor.rgb2lab(np.asarray(result))[..., 0]
    theirs = skcolor.rgb2lab(np.asarray(source.convert("RGB")))[..., 0]
    assert np.abs(ours - theirs).mean() < 1.0


def test_a_temperature_change_re_decodes_the_cached_output_without_the_network(client, service):
    data = photo_bytes(2)
    before = runs(client)
    first = post(client, data, temperature=0.38)
    upload_id = first.headers["x-upload-id"]
    assert runs(client) == before + 1

    again = client.get(f"/api/colorize/{upload_id}", params={"temperature": 1.0})
    assert (
        again.headers["x-network"] == "cached" and "network" not in again.headers["server-timing"]
    )
    assert runs(client) == before + 1
    source = Image.open(io.BytesIO(data))
    at_one = np.asarray(decoded(again))
    assert np.array_equal(at_one, np.asarray(service.colorizer.colorize(source, temperature=1.0)))
    assert not np.array_equal(at_one, np.asarray(decoded(first)))

    # Posting the same bytes again finds them in the cache too.
    same = post(client, data, temperature=0.5)
    assert same.headers["x-network"] == "cached" and same.headers["x-upload-id"] == upload_id
    assert runs(client) == before + 1


def test_previews_jpeg_and_alpha(client):
    data = photo_bytes(3, size=(200, 100))
    upload_id = post(client, data).headers["x-upload-id"]
    preview = client.get(
        f"/api/colorize/{upload_id}", params={"max_side": 50, "format": "jpg", "temperature": 0.2}
    )
    assert preview.headers["content-type"] == "image/jpeg"
    assert decoded(preview).size == (50, 25) and decoded(preview).format == "JPEG"
    # A max_side beyond the photo gives its full size.
    assert decoded(client.get(f"/api/colorize/{upload_id}?max_side=4000")).size == (200, 100)

    rgba = photo_bytes(4, mode="RGBA")
    alpha = np.asarray(Image.open(io.BytesIO(rgba)))[..., 3]
    result = decoded(post(client, rgba, name="cutout.png"))
    assert (
        result.mode == "RGBA" and np.abs(np.asarray(result)[..., 3] - alpha.astype(int)).max() <= 1
    )
    small = decoded(
        client.get(
            f"/api/colorize/{post(client, rgba).headers['x-upload-id']}", params={"max_side": 48}
        )
    )
    assert small.mode == "RGBA" and small.size == (48, 36)


def test_uploads_are_read_in_memory_never_spooled_to_disk(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a request wrote a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "SpooledTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    # Over 1 MB, where Starlette's own form parser rolls a file over to disk.
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG", compress_level=0)
    assert len(buffer.getvalue()) > 1.2e6
    assert decoded(post(client, buffer.getvalue(), max_side=64)).size == (64, 64)


@pytest.mark.parametrize(
    "case,status,code",
    [
        ("not an image", 415, "not_an_image"),
        ("truncated", 415, "not_an_image"),
        ("empty", 422, "missing_image"),
        ("no image field", 422, "missing_image"),
        ("wrong field", 422, "unknown_field"),
        ("too large", 413, "too_large"),
        ("too many pixels", 413, "too_many_pixels"),
        ("T zero", 422, "bad_temperature"),
        ("T above one", 422, "bad_temperature"),
        ("T nan", 422, "bad_temperature"),
        ("T text", 422, "bad_temperature"),
        ("format", 422, "bad_format"),
        ("max_side", 422, "bad_max_side"),
        ("not multipart", 415, "not_multipart"),
        ("broken multipart", 400, "bad_form"),
        ("boundary over 256 characters", 400, "bad_form"),
        ("a part's headers over 8 KB", 400, "bad_form"),
    ],
)
def test_bad_requests_get_a_json_4xx_that_says_why(client, case, status, code):
    good = photo_bytes(5)
    huge = np.random.default_rng(1).integers(0, 256, (1000, 1000, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(huge).save(buffer, format="BMP")  # 3 MB, over the 2.5 MB limit
    tall = io.BytesIO()
    Image.new("L", (2000, 1001)).save(tall, format="PNG")  # small file, 2,002,000 px
    requests = {
        "not an image": lambda: post(client, b"hello, I am text", name="notes.jpg"),
        "truncated": lambda: post(client, good[: len(good) // 2]),
        "empty": lambda: post(client, b""),
        "no image field": lambda: client.post(
            "/api/colorize", files={"temperature": (None, "0.4")}
        ),
        "wrong field": lambda: client.post("/api/colorize", files={"file": ("a.png", good)}),
        "too large": lambda: post(client, buffer.getvalue()),
        "too many pixels": lambda: post(client, tall.getvalue()),
        "T zero": lambda: post(client, good, temperature=0),
        "T above one": lambda: post(client, good, temperature=1.5),
        "T nan": lambda: post(client, good, temperature="nan"),
        "T text": lambda: post(client, good, temperature="warm"),
        "format": lambda: post(client, good, format="gif"),
        "max_side": lambda: post(client, good, max_side=4),
        "not multipart": lambda: client.post("/api/colorize", content=good),
        "broken multipart": lambda: client.post(
            "/api/colorize",
            content=b"--xyz\r\nContent-Disposition: form-data; name=image\r\n\r\nabc",
            headers={"content-type": "multipart/form-data; boundary=abc"},
        ),
        "boundary over 256 characters": lambda: raw_post(client, good, boundary=b"b" * 300),
        "a part's headers over 8 KB": lambda: raw_post(client, good, name=b"x" * 9000 + b".png"),
    }
    response = requests[case]()
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["detail"], str) and body["detail"]


def test_get_errors_are_json_too(client):
    upload_id = post(client, photo_bytes(6)).headers["x-upload-id"]
    cases = {
        "/api/colorize/0123456789abcdef": (404, "unknown_upload"),
        f"/api/colorize/{upload_id}?temperature=2": (422, "bad_temperature"),
        f"/api/colorize/{upload_id}?temperature=x": (422, "invalid_request"),
        f"/api/colorize/{upload_id}?format=tiff": (422, "bad_format"),
        "/no/such/page": (404, "not_found"),
    }
    for url, (status, code) in cases.items():
        response = client.get(url)
        assert (response.status_code, response.json()["error"]) == (status, code), url
    assert "POST the image" in client.get("/api/colorize/0123456789abcdef").json()["detail"]


def test_page_health_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="temperature"' in page.text
    assert client.get("/static/app.js").status_code == 200
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["head"] == "classification"
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/api/colorize"]["post"]["requestBody"]["content"]
    assert set(form["multipart/form-data"]["schema"]["properties"]) >= {"image", "temperature"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/api.js" in docs.text
    # Nothing on the docs page comes from another host (FastAPI's own pages use a CDN).
    for asset in ("/docs", "/static/api.js", "/static/style.css"):
        text = client.get(asset).text
        assert not re.search(r"""(src|href)=["']?(https?:)?//|https?://""", text), asset


def test_the_api_schema_states_the_bounds_the_server_keeps(client):
    """The OpenAPI form and the GET's query say the range of T and the smallest preview side
    that the server enforces: each bound is accepted, and just beyond it is a 422."""
    schema = client.get("/openapi.json").json()
    post_form = schema["paths"]["/api/colorize"]["post"]["requestBody"]["content"]
    fields = post_form["multipart/form-data"]["schema"]["properties"]
    t, side = fields["temperature"], fields["max_side"]
    assert (t["minimum"], t["maximum"], side["minimum"]) == (
        MIN_TEMPERATURE,
        MAX_TEMPERATURE,
        MIN_PREVIEW_SIDE,
    )
    query = schema["paths"]["/api/colorize/{upload_id}"]["get"]["parameters"]
    described = {p["name"]: p.get("description", "") for p in query}
    assert f"[{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]" in described["temperature"]
    assert f"≥ {MIN_PREVIEW_SIDE}" in described["max_side"]
    good = photo_bytes(3)
    for fields, status in [
        ({"temperature": MIN_TEMPERATURE}, 200),
        ({"temperature": MAX_TEMPERATURE}, 200),
        ({"temperature": MIN_TEMPERATURE / 2}, 422),
        ({"max_side": MIN_PREVIEW_SIDE}, 200),
        ({"max_side": MIN_PREVIEW_SIDE - 1}, 422),
    ]:
        assert post(client, good, **fields).status_code == status, fields


def test_download_names_come_from_the_request_never_from_an_earlier_uploader(client):
    """The cache is keyed by the bytes: a second user who sends the same photo must not see the
    first user's file name, on the POST or on a T change."""
    data = photo_bytes(7)
    alice = post(client, data, name="alice-private.png")
    assert 'filename="alice-private-colorized-T0.38.png"' in alice.headers["content-disposition"]
    bob = post(client, data, name="bob.png", temperature=0.5)
    assert bob.headers["x-network"] == "cached"
    assert 'filename="bob-colorized-T0.5.png"' in bob.headers["content-disposition"]
    upload_id = bob.headers["x-upload-id"]
    named = client.get(f"/api/colorize/{upload_id}", params={"temperature": 1, "name": "bob.png"})
    assert 'filename="bob-colorized-T1.png"' in named.headers["content-disposition"]
    anonymous = client.get(f"/api/colorize/{upload_id}", params={"temperature": 1})
    assert "alice" not in anonymous.headers["content-disposition"]
    assert 'filename="image-colorized-T1.png"' in anonymous.headers["content-disposition"]


# ----------------------------------------------------------------------------- the parts


def upload(nbytes: int) -> Upload:
    return Upload(torch.zeros(nbytes // 4), torch.zeros(0), None)


def test_cache_evicts_the_least_recently_used_beyond_its_bytes():
    cache = OutputCache(max_bytes=1000, ttl_s=60)
    for key in "abc":
        cache.put(key, upload(400))  # c pushes a out
    assert cache.get("a") is None and cache.get("b") is not None
    cache.put("d", upload(400))  # b was used last, so c goes
    assert cache.get("c") is None and cache.get("b") is not None and cache.get("d") is not None
    cache.put("huge", upload(4000))  # larger than the whole budget: not kept, nothing lost
    assert cache.get("huge") is None and cache.stats() == {"uploads": 2, "bytes": 800}


def test_cache_forgets_an_upload_its_ttl_after_its_last_use():
    now = [0.0]
    cache = OutputCache(max_bytes=10_000, ttl_s=10, clock=lambda: now[0])
    cache.put("a", upload(100))
    now[0] = 8.0
    assert cache.get("a") is not None  # used at 8 s: kept until 18 s
    now[0] = 17.0
    assert cache.get("a") is not None
    now[0] = 27.5
    assert cache.get("a") is None and cache.stats()["uploads"] == 0


def test_views_count_against_the_cache_budget(service):
    data = photo_bytes(7, size=(400, 300))
    result = service.colorize(data, max_side=100)
    cached = service.cache.get(result.upload_id)
    assert set(cached.views) == {100} and cached.views[100][0].shape[-2:] == (75, 100)
    assert cached.nbytes > cached.output.numel() * 4 + cached.lightness.numel() * 4


def test_the_request_queue_turns_requests_away_beyond_its_places():
    queue = RequestQueue(limit=2)
    queue.enter()
    queue.enter()
    with pytest.raises(ApiError) as refused:
        queue.enter()
    assert refused.value.status == 503 and "retry" in refused.value.detail
    queue.leave()
    queue.enter()


def test_serve_config_says_which_values_are_wrong():
    with pytest.raises(ValueError, match="max_concurrent=0"):
        ServeConfig(max_concurrent=0)
    with pytest.raises(ValueError, match="backend"):
        ServeConfig(backend="tensorrt")


def test_cli_serve_reports_a_missing_model_and_bad_options(tmp_path):
    result = invoke("serve", "--model", tmp_path / "missing.safetensors", "--port", "0")
    assert result.exit_code == 1 and "no model file" in result.output
    result = invoke("serve", "--size", "66")
    assert result.exit_code == 2 and "multiple of 4" in result.output


def test_serve_with_workers_hands_uvicorn_import_strings_that_resolve(service, monkeypatch):
    """``--workers N`` hands uvicorn the app factory and the HTTP protocol as import strings,
    which each worker process resolves: they must name the package's functions, and the factory
    must build a working app from the config the parent put in the environment."""
    import uvicorn
    from uvicorn.importer import import_from_string

    from zhangcolor.serve import server

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setenv(server.CONFIG_ENV, "")  # serve() sets it; restored after the test
    threads = torch.get_num_threads()  # a worker's app sets torch's threads for its process
    server._environment_config.cache_clear()
    try:
        server.serve(dataclasses.replace(service.config, workers=2, max_queue=5))
        [(factory, kwargs)] = calls
        assert kwargs["workers"] == 2 and kwargs["factory"] is True
        assert import_from_string(factory) is server.app_from_environment
        assert import_from_string(kwargs["http"]) is server.worker_http
        with TestClient(import_from_string(factory)()) as client:
            assert client.get("/healthz").json()["limits"]["max_queue"] == 5
            assert decoded(post(client, photo_bytes(18))).size == (96, 72)
    finally:
        server._environment_config.cache_clear()
        torch.set_num_threads(threads)


def test_temperature_one_is_the_mean_over_http_as_in_the_paper(client, service, tmp_path):
    """T = 1 decodes to the mean of the predicted distribution: with a sharply peaked model
    the result at small T is far more colorful than at T = 1 (the paper's figure 3)."""
    data = noise(tmp_path / "n.png", size=(64, 64)).read_bytes()
    upload_id = post(client, data).headers["x-upload-id"]

    def chroma(t):
        rgb = np.asarray(decoded(client.get(f"/api/colorize/{upload_id}?temperature={t}")))
        lab = skcolor.rgb2lab(rgb)
        return float(np.hypot(lab[..., 1], lab[..., 2]).mean())

    assert chroma(0.05) > chroma(1.0) and math.isfinite(chroma(0.38))


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


# ----------------------------------------------------------------------------- hostile files


def png_of(width: int, height: int, mode: str = "L") -> bytes:
    """A solid PNG: tiny on disk whatever its width × height."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk right after its header (IHDR)."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def peak_growth(call) -> int:
    """Bytes by which this process's peak resident memory grew while ``call`` ran (Linux)."""

    def status(key: str) -> int:
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(key)).split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current size
    before = status("VmRSS:")
    call()
    return status("VmHWM:") - before


def test_thin_strips_are_refused_from_the_header_before_any_decoding(client, monkeypatch):
    """A strip is resampled in proportion to its long side, whatever its pixel count: at the
    pixel limit, a 25,000,000 × 2 PNG wanted 12.8 GB and a 2,000,000 × 2 one held the work
    thread 39 s. These must be refused from the header, without decoding a pixel."""

    def never(*args, **kwargs):
        raise AssertionError("the strip was decoded")

    monkeypatch.setattr(service_module, "load_image", never)
    for width, height in [(1_000_000, 2), (2, 1_000_000), (10_000, 199)]:  # all ≤ 2 MP
        start = time.perf_counter()
        response = post(client, png_of(width, height))
        assert time.perf_counter() - start < 2
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "bad_aspect_ratio" and "20:1" in body["detail"], body
    assert post(client, png_of(2_000_000, 2)).json()["error"] == "too_many_pixels"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures Linux's VmHWM")
def test_memory_follows_the_pixels_and_the_limits_bound_the_long_side(client):
    """A request's memory grows with its pixels and with its long side (colorize joins in bands
    of 128 full-width rows), and max_pixels with max_aspect bound both: at 2 MP and 20:1 the
    worst admissible strip peaked near 90 MB here. A thinner strip costs nothing, where before
    the fix the 1,000,000 × 2 one took 364 MB (and 2 × 1,000,000 took 28 s)."""
    square, strip, thin = png_of(1414, 1414), png_of(6320, 316), png_of(1_000_000, 2)
    assert decoded(post(client, square)).size == (1414, 1414)  # warm up: code, pools, arenas
    grown = {
        name: peak_growth(lambda data=data: post(client, data))
        for name, data in {"strip": strip, "thin": thin}.items()
    }
    assert grown["strip"] < 160e6 and grown["thin"] < 20e6, grown


def test_large_results_leave_no_uncounted_resampling_weights(service, client):
    """colorize keeps resampling weights in a cache of its own (2,000,000 × 2: about 1.3 GB that
    --cache-mb did not count). After a result over 4096 px they are dropped, and the most that
    smaller ones keep is reserved out of the cache budget."""
    from zhangcolor import colorize

    assert service.cache.max_bytes + service.weights_reserve == 64 * 2**20
    health = client.get("/healthz").json()["cache"]
    assert health["weights_reserve_bytes"] == service.weights_reserve > 0
    colorize.clear_resampling_cache()
    assert decoded(post(client, png_of(4200, 300))).size == (4200, 300)
    assert colorize._cached_bilinear_weights.cache_info().currsize == 0
    post(client, photo_bytes(8, size=(300, 200)))
    assert colorize._cached_bilinear_weights.cache_info().currsize > 0  # small ones stay cached


def test_the_header_is_read_only_with_the_loaders_decoders(client, monkeypatch):
    """An EPS named .jpg is refused with a 415 before Pillow's EPS plugin (the one that runs
    Ghostscript) ever opens it, as the loaders refuse it."""
    from PIL import EpsImagePlugin

    opened = []
    real_open = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(
        EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(1) or real_open(self)
    )
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="EPS")
    response = post(client, buffer.getvalue(), name="photo.jpg")
    assert response.status_code == 415 and response.json()["error"] == "not_an_image"
    assert not opened


def test_any_decode_error_is_a_json_4xx_with_the_reason(client):
    """A 2 KB zTXt chunk that inflates past Pillow's text limit raised a ValueError that no one
    caught: a plain-text 500."""
    bomb = zlib.compress(b"\0" * 2_000_000, 9)
    data = png_with_chunk(photo_bytes(9), b"zTXt", b"comment\0\0" + bomb)
    response = post(client, data, name="ztxt.png")
    assert response.status_code == 415, response.text
    body = response.json()
    assert body["error"] == "not_an_image" and "ztxt.png" in body["detail"]
    assert "too large" in body["detail"].lower()


def test_an_unexpected_failure_is_json_and_leaves_the_shared_cache_entry_intact(
    service, monkeypatch
):
    """A failure while answering one request (here the encoder's) is a JSON 500, and later
    requests for the same image bytes, by POST and by GET, still work from the cache."""
    data = photo_bytes(10)
    broken = {"calls": 0}
    write = service_module.write_image

    def fail_once(*args, **kwargs):
        broken["calls"] += 1
        if broken["calls"] == 1:
            raise OSError("disk on fire")
        return write(*args, **kwargs)

    monkeypatch.setattr(service_module, "write_image", fail_once)
    with TestClient(create_app(service=service), raise_server_exceptions=False) as client:
        failed = post(client, data)
        assert failed.status_code == 500 and failed.json()["error"] == "internal_error"
        again = post(client, data)
        assert decoded(again) and again.headers["x-network"] == "cached"
        upload_id = again.headers["x-upload-id"]
        assert decoded(client.get(f"/api/colorize/{upload_id}", params={"temperature": 0.9}))


def test_safe_stem_keeps_a_readable_name_and_nothing_else():
    assert serve.safe_stem("holiday photo.jpg") == "holiday photo"
    assert serve.safe_stem("a\0b\r\nc\x7f\u202egpj.png") == "abcgpj"
    assert serve.safe_stem("../../etc/passwd") == "passwd"
    assert serve.safe_stem("C:\\Users\\me\\x.png") == "x"
    assert serve.safe_stem('say "cheese".png') == "say cheese"
    assert serve.safe_stem("..") == serve.safe_stem("\0") == serve.safe_stem(None) == "image"
    assert serve.safe_stem("é" * 500 + ".png") == "é" * 100


# ----------------------------------------------------------------------------- hostile clients


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


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the response on ``sock`` (read to its end)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"null")


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
        f"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
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
            f"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
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
    for opening in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):  # new, and kept alive
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


def many_fields(count: int = 317_750) -> bytes:
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n1\r\n'
    return part * count + b"--b--\r\n"


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
                b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
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


@pytest.mark.parametrize("corruption", ["centers of the wrong count", "NaN centers", "no network"])
def test_serve_refuses_to_start_with_corrupt_model_metadata(tmp_path, monkeypatch, corruption):
    """Such a model loaded, and the server said healthy while every request failed."""
    import uvicorn
    from safetensors.torch import load_file, save_file

    from zhangcolor.checkpoint import read_metadata

    path = make_checkpoint(tmp_path / "good.safetensors")
    metadata = read_metadata(path)
    record = json.loads(metadata["model"])
    if corruption == "centers of the wrong count":
        record["centers"] = record["centers"][:-5]
    elif corruption == "NaN centers":
        record["centers"] = [[float("nan"), b] for _, b in record["centers"]]
    else:
        del record["network"]
    metadata["model"] = json.dumps(record)
    corrupt = tmp_path / "corrupt.safetensors"
    save_file(load_file(str(path)), str(corrupt), metadata=metadata)

    def started(*args, **kwargs):
        raise AssertionError("the server started")

    monkeypatch.setattr(uvicorn, "run", started)
    result = invoke("serve", "--model", corrupt, "--port", "0", "--size", "64")
    assert result.exit_code == 1, result.output
    assert "cannot serve" in result.output and str(corrupt.name) in result.output
