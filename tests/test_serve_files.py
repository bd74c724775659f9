"""zhangcolor serve and hostile or unusual files: any shape is colorized and max_pixels bounds
the work; decoders outside the allow-list are never reached; every decode error is a JSON 4xx
whose message names the file once and shows no object reprs; a failure breaks no cache entry."""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path

import pytest
from makers import photo_bytes
from PIL import Image
from test_colorize import invoke, make_checkpoint
from test_serve import decoded, make_service, png_of, png_with_chunk, post

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.config import load_config
from zhangcolor.serve import ColorizeService, ServeConfig, create_app, inputs
from zhangcolor.serve import service as service_module


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory)


@pytest.fixture
def client(service):
    with TestClient(create_app(service=service)) as client:
        yield client


def peak_growth(call) -> int:
    """Bytes by which this process's peak resident memory grew while ``call`` ran (Linux)."""

    def status(key: str) -> int:
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(key)).split()[1]) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current size
    before = status("VmRSS:")
    call()
    return status("VmHWM:") - before


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (1, 7), (5, 1)])
def test_the_smallest_images_are_colorized(client, size):
    """A 1 × 1 PNG was refused (too_small) though the schema allowed it."""
    for mode in ("L", "RGB", "RGBA"):
        result = decoded(post(client, png_of(*size, mode=mode), name=f"tiny-{mode}.png"))
        assert result.size == size and result.mode == ("RGBA" if mode == "RGBA" else "RGB")


def test_the_server_refuses_no_shape_from_the_header():
    """The header check takes any width and height under max_pixels: the shape of a photo is
    not a reason to refuse it (a thin strip costs its pixels, which max_pixels bounds)."""
    for size in [(1, 1), (3, 500), (1_000_000, 2), (2, 1_000_000)]:
        assert inputs.header_size(png_of(*size), max_pixels=2_000_000) == size
    with pytest.raises(service_module.ApiError) as refused:
        inputs.header_size(png_of(2_000_000, 2), max_pixels=2_000_000)
    assert refused.value.status == 413 and refused.value.code == "too_many_pixels"


def test_a_thin_strip_is_colorized(client):
    """A 3 × 500 strip was refused (bad_aspect_ratio)."""
    assert decoded(post(client, png_of(3, 500))).size == (3, 500)
    assert decoded(post(client, png_of(700, 2), max_side=100)).size == (100, 1)


def test_max_pixels_bounds_the_work_from_the_header_before_any_decoding(client, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(inputs, "load_image", never)
    for size in [(2_000_000, 2), (2, 2_000_000), (2000, 1001)]:  # all over 2 MP
        response = post(client, png_of(*size), name="big.png")
        assert response.status_code == 413, response.text
        body = response.json()
        assert body["error"] == "too_many_pixels" and body["detail"].startswith("big.png: ")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures Linux's VmHWM")
def test_memory_follows_the_pixels_whatever_the_shape(client):
    """Colorize joins in tiles of bounded size, so a strip costs about what a square of the
    same pixels does: at 2 MP, the 1,000,000 × 2 strip once took 364 MB."""
    square, thin = png_of(1414, 1414), png_of(1_000_000, 2)
    assert decoded(post(client, square)).size == (1414, 1414)  # warm up: code, pools, arenas
    # Each measured twice, in turn: what the allocator kept from earlier tests moves a single
    # peak by tens of MB either way, far less than the strip once cost.
    grown: dict[str, list[int]] = {"square": [], "thin": []}
    for _ in range(2):
        for name, data in {"square": square, "thin": thin}.items():
            grown[name].append(peak_growth(lambda data=data: decoded(post(client, data))))
    assert min(grown["thin"]) < 2 * max(grown["square"]) + 40e6, grown


def test_a_config_that_still_sets_max_aspect_loads_with_a_warning(tmp_path):
    """max_aspect is no longer used; configs written for earlier versions still load."""
    path = tmp_path / "serve.yaml"
    path.write_text("max_aspect: 20\nport: 8001\n")
    with pytest.warns(FutureWarning, match="max_aspect is no longer used"):
        config = load_config(ServeConfig, path)
    assert config.port == 8001 and config.max_aspect == 20
    with pytest.raises(ValueError, match="max_aspect"):
        ServeConfig(max_aspect=0)


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
