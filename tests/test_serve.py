"""zhangcolor serve: the REST API against the library, the cache and its parts, and the helpers the
other serve tests share (test_serve_files: hostile files and shapes; test_serve_clients: hostile
clients; test_serve_admission: the work queue; test_serve_http: headers, hosts, names,
connections; test_serve_schema: the OpenAPI description; test_serve_hints: colour points)."""

from __future__ import annotations

import io
import json
import math
import re
import socket
import struct
import tempfile
import zlib

import numpy as np
import pytest
import torch
from makers import noise, photo_bytes
from PIL import Image
from skimage import color as skcolor
from test_colorize import make_checkpoint

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.constants import MAX_TEMPERATURE, MIN_PREVIEW_SIDE, MIN_TEMPERATURE
from zhangcolor.serve import ColorizeService, OutputCache, ServeConfig, Upload, create_app


def make_service(tmp_path_factory, **config) -> ColorizeService:
    """A tiny eccv16 served at working size 64, with small limits (and ``config``)."""
    model = make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    settings = {"max_upload_mb": 2.5, "max_pixels": 2_000_000, "cache_mb": 64, **config}
    return ColorizeService.load(ServeConfig(model=str(model), size=64, **settings))


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory)


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


def png_of(width: int, height: int, mode: str = "L") -> bytes:
    """A solid PNG: tiny on disk whatever its width × height."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk right after its header (IHDR)."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def many_fields(count: int = 317_750) -> bytes:
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n1\r\n'
    return part * count + b"--b--\r\n"


def other_addresses(count: int) -> list[str]:
    """Loopback addresses besides 127.0.0.1, for clients the server must tell apart (Linux
    answers all of 127.0.0.0/8); the test is skipped where the system has no such address."""
    addresses = [f"127.0.0.{i}" for i in range(2, 2 + count)]
    for address in addresses:
        try:
            with socket.socket() as probe:
                probe.bind((address, 0))
        except OSError:
            pytest.skip(f"no loopback address {address} here to send from")
    return addresses


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
        f"/api/colorize/{upload_id}?temperature=x": (422, "bad_temperature"),
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
    return Upload(torch.zeros(nbytes // 4), torch.zeros(1, 1, 0, 0), torch.zeros(0), None)


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


def test_serve_config_says_which_values_are_wrong():
    with pytest.raises(ValueError, match="max_concurrent=0"):
        ServeConfig(max_concurrent=0)
    with pytest.raises(ValueError, match="backend"):
        ServeConfig(backend="tensorrt")


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
