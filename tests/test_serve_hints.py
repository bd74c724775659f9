"""zhangcolor serve with colour points (Zhang et al., SIGGRAPH 2017): points with an upload and
for a cached upload, suggestions at a pixel, their refusals, and what they cost the cache.

A model that follows points deterministically stands in for a trained guided network: its
distribution is two colours (mostly BLUE, some RED) everywhere, except within a few pixels of a
point, where nearly all its mass is on the bins nearest the point's ab."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color as skcolor
from test_colorize import make_checkpoint
from torch.nn import functional as F

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.colorize import Colorizer
from zhangcolor.constants import AB_NORM
from zhangcolor.hints import hex_to_ab
from zhangcolor.serve import ColorizeService, ServeConfig, create_app
from zhangcolor.serve.cache import MAX_GUIDED

BLUE, RED = (-5.0, -45.0), (45.0, 35.0)
#: The model's working size in these tests: an output of 16 × 16 cells.
SIZE = 64


class HintFollower(torch.nn.Module):
    """Logits ``(B, Q, s/4, s/4)``: ``log(0.6 N(BLUE) + 0.4 N(RED))`` over the bins, except for
    the output cells within about 6 working pixels of a hinted pixel, where the logits peak at
    the mean hinted ab there."""

    takes_hints = True

    def __init__(self, centers: torch.Tensor):
        super().__init__()
        centers = centers.float()
        self.register_buffer("centers", centers)

        def blob(ab):
            return torch.exp(-((centers - torch.tensor(ab)) ** 2).sum(1) / (2 * 8.0**2))

        base = 0.6 * blob(BLUE) + 0.4 * blob(RED) + 1e-9
        self.register_buffer("base", (base / base.sum()).log())

    def forward(self, lightness: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        b, _, s, _ = lightness.shape
        logits = self.base.view(1, -1, 1, 1).expand(b, -1, s // 4, s // 4).clone()
        if hints is None:
            return logits
        mask = hints[:, 2:3].float()
        near = F.max_pool2d(mask, 12, stride=4, padding=4)  # (B, 1, s/4, s/4)
        weight = F.avg_pool2d(mask, 12, stride=4, padding=4).clamp_min(1e-6)
        ab = F.avg_pool2d(hints[:, :2].float() * mask, 12, stride=4, padding=4) / weight
        distance = ((self.centers.view(1, -1, 2, 1, 1) - AB_NORM * ab[:, None]) ** 2).sum(2)
        return torch.where(near > 0, -distance / (2 * 5.0**2), logits)  # (B, Q, s/4, s/4)


def guided_colorizer(tmp: Path, temperature: float | None = None) -> Colorizer:
    """A :class:`Colorizer` whose network is a :class:`HintFollower`, with a real model's bins
    (and its own ``temperature``, as a calibrated model has)."""
    record = Colorizer.load(make_checkpoint(tmp / "bins.safetensors"), size=SIZE).record
    if temperature is not None:
        record = dataclasses.replace(record, temperature=temperature)
    model = HintFollower(record.centers)
    return Colorizer(model, record, torch.device("cpu"), None, SIZE)


def guided_service(tmp: Path, temperature: float | None = None, **config) -> ColorizeService:
    settings = {"model": "guided.safetensors", "size": SIZE, "cache_mb": 64, **config}
    service = ColorizeService(guided_colorizer(tmp, temperature), ServeConfig(**settings))
    service.self_check()
    return service


@pytest.fixture(scope="module")
def guided(tmp_path_factory) -> ColorizeService:
    return guided_service(tmp_path_factory.mktemp("guided"))


@pytest.fixture
def client(guided):
    with TestClient(create_app(service=guided)) as client:
        yield client


def gray_photo(size=(160, 120)) -> bytes:
    """A gray PNG: a horizontal ramp of L, so every pixel keeps some chroma room."""
    ramp = np.tile(np.linspace(90, 170, size[0]).astype(np.uint8), (size[1], 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    return buffer.getvalue()


def ab_at(content: bytes, x: int, y: int, radius: int = 2) -> np.ndarray:
    """The mean ab around (x, y) of an encoded result."""
    rgb = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    patch = rgb[y - radius : y + radius + 1, x - radius : x + radius + 1] / 255.0
    return skcolor.rgb2lab(patch)[..., 1:].reshape(-1, 2).mean(0)


def points(*spec) -> dict:
    return {"points": [{"x": x, "y": y, "color": c} for x, y, c in spec]}


def runs(client) -> int:
    return client.get("/healthz").json()["network_runs"]


def upload(client, data: bytes, **fields):
    response = client.post(
        "/api/colorize",
        files={"image": ("photo.png", data)},
        data={k: v if isinstance(v, str) else str(v) for k, v in fields.items()},
    )
    assert response.status_code == 200, response.text
    return response


def test_a_point_sent_with_an_upload_moves_the_colour_near_it_and_nothing_far(client, guided):
    data = gray_photo()
    red = "#c03020"
    hinted = upload(client, data, hints=f'{{"points": [{{"x": 40, "y": 60, "color": "{red}"}}]}}')
    automatic = client.get(f"/api/colorize/{hinted.headers['x-upload-id']}")
    near, far = ab_at(hinted.content, 40, 60), ab_at(hinted.content, 140, 20)
    assert np.hypot(*(near - hex_to_ab(red))) < 12, near
    assert np.hypot(*(ab_at(automatic.content, 40, 60) - hex_to_ab(red))) > 40  # without: blue
    assert np.abs(far - ab_at(automatic.content, 140, 20)).max() < 1.5
    # Exactly what the library gives for the same photo, points and T.
    source = Image.open(io.BytesIO(data))
    expected = guided.colorizer.colorize(source, hints=points((40, 60, red)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(hinted.content))), np.asarray(expected))


def test_points_on_a_cached_upload_run_the_network_once_per_set_of_points(client):
    data = gray_photo((150, 110))
    upload_id = upload(client, data, temperature=0.38).headers["x-upload-id"]
    before = runs(client)
    first = points((30, 30, "#c03020"))

    def hinted(body, **query):
        return client.post(f"/api/colorize/{upload_id}", json=body, params=query)

    ran = hinted(first)
    assert ran.status_code == 200 and ran.headers["x-network"] == "ran"
    assert runs(client) == before + 1 and ran.headers["x-photo-size"] == "150x110"
    again = hinted(first, temperature=0.9)  # a T change with the same points: re-decoded only
    assert again.headers["x-network"] == "cached" and runs(client) == before + 1
    assert not np.array_equal(ab_at(again.content, 100, 80), ab_at(ran.content, 100, 80))
    second = points((30, 30, "#c03020"), (120, 90, "#20a040"))
    assert hinted(second).headers["x-network"] == "ran" and runs(client) == before + 2
    assert hinted(first).headers["x-network"] == "cached"  # undo finds its output again
    assert hinted({"points": []}).headers["x-network"] == "cached"  # no points: automatic
    assert client.get(f"/api/colorize/{upload_id}").headers["x-network"] == "cached"
    assert runs(client) == before + 2


def test_suggestions_come_from_the_distribution_after_the_points_so_far(client):
    upload_id = upload(client, gray_photo()).headers["x-upload-id"]
    url = f"/api/colorize/{upload_id}/suggestions"
    plain = client.post(url, params={"x": 80, "y": 60, "k": 6})
    assert plain.status_code == 200, plain.text
    found = plain.json()["suggestions"]
    probabilities = [s["probability"] for s in found]
    assert len(found) == 6 and probabilities == sorted(probabilities, reverse=True)
    assert np.hypot(*(np.array(found[0]["ab"]) - BLUE)) <= 10  # the larger mode first
    assert any(np.hypot(*(np.array(s["ab"]) - RED)) <= 10 for s in found)  # then the other
    # After a green point there, the distribution there peaks at green.
    green = "#20a040"
    after = client.post(url, params={"x": 80, "y": 60}, json=points((80, 60, green)))
    top = after.json()["suggestions"][0]
    assert np.hypot(*(np.array(top["ab"]) - hex_to_ab(green))) <= 10, top
    assert after.json()["network"] == "ran"
    assert (
        client.post(url, params={"x": 80, "y": 60}, json=points((80, 60, green))).json()["network"]
        == "cached"
    )


@pytest.mark.parametrize(
    "body,code,words",
    [
        (points((400, 10, "#ff0000")), "bad_hints", "point 0"),
        (points((10, 10, "#ff0000"), (10, 10, "red")), "bad_hints", "point 1"),
        ({"points": [{"x": 1, "y": 2}]}, "bad_hints", "point 0"),
        ({"dots": []}, "bad_hints", "points"),
        (b"{not json", "bad_hints", "not JSON"),
        (points(*[(1, 1, "#ffffff")] * 1001), "bad_hints", "1,001 points"),
        (b"[" * 100_000 + b"]" * 100_000, "bad_hints", "nested too deep"),
    ],
)
def test_bad_points_are_a_422_naming_the_point(client, body, code, words):
    upload_id = upload(client, gray_photo()).headers["x-upload-id"]
    if isinstance(body, bytes):
        response = client.post(f"/api/colorize/{upload_id}", content=body)
    else:
        response = client.post(f"/api/colorize/{upload_id}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == code and words in response.json()["detail"]
    form = client.post(
        "/api/colorize",
        files={"image": ("photo.png", gray_photo())},
        data={"hints": body if isinstance(body, bytes) else json.dumps(body)},
    )
    assert form.status_code == 422 and form.json()["error"] == code


def test_a_model_without_points_or_without_a_distribution_says_so(tmp_path):
    """Points for an automatic model are a 422 hints_not_supported; suggestions from a
    regression model (one colour per pixel) a 422 no_distribution."""
    for head, route, code in [
        ("classification", "", "hints_not_supported"),
        ("regression", "/suggestions", "no_distribution"),
    ]:
        model = make_checkpoint(tmp_path / f"{head}.safetensors", head=head)
        service = ColorizeService.load(ServeConfig(model=str(model), size=SIZE))
        with TestClient(create_app(service=service)) as plain:
            assert plain.get("/api/model").json()["takes_hints"] is False
            upload_id = upload(plain, gray_photo()).headers["x-upload-id"]
            response = plain.post(
                f"/api/colorize/{upload_id}{route}",
                params={"x": 5, "y": 5},
                json=points((5, 5, "#ff0000")),
            )
            assert response.status_code == 422 and response.json()["error"] == code, response.text


def test_a_guided_model_says_so_and_the_json_body_has_limits(client):
    info = client.get("/api/model").json()
    assert info["takes_hints"] is True and info["suggests"] is True
    upload_id = upload(client, gray_photo()).headers["x-upload-id"]
    url = f"/api/colorize/{upload_id}"
    too_big = client.post(url, content=b" " * (2 << 20), headers={"content-type": "text/plain"})
    assert too_big.status_code == 413
    form = client.post(url, files={"image": ("a.png", b"x")})
    assert form.status_code == 415 and form.json()["error"] == "not_json"
    missing = client.post("/api/colorize/0123456789abcdef0123456789abcdef", json=points())
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_upload"


def test_guided_outputs_are_bounded_per_upload_and_never_push_out_other_uploads(tmp_path):
    """Each set of points keeps a network output (0.3 MB here); a client that sends many sets
    for one upload keeps at most MAX_GUIDED of them, and within a budget (2 MB here) that its
    upload and three others fill, those others stay cached."""
    service = guided_service(tmp_path, cache_mb=18)  # 16 MB of it reserved (resampling weights)
    assert service.cache.max_bytes == 2 * 2**20
    with TestClient(create_app(service=service)) as client:
        others = [upload(client, gray_photo((64 + i, 48))).headers["x-upload-id"] for i in range(3)]
        mine = upload(client, gray_photo()).headers["x-upload-id"]
        for i in range(12):
            client.post(f"/api/colorize/{mine}", json=points((i, i, "#c03020")))
        cached = service.cache.get(mine)
        assert cached is not None and len(cached.guided) <= MAX_GUIDED
        assert all(service.cache.get(other) is not None for other in others)
        stats = service.cache.stats()
        assert stats["bytes"] <= service.cache.max_bytes


def test_the_same_points_asked_at_once_run_the_network_once(tmp_path):
    """With two work threads, identical requests in flight share one network run: the same
    upload twice, and the same points twice."""
    service = guided_service(tmp_path, max_concurrent=2)
    release = threading.Event()
    network_output = service.colorizer.network_output

    def held(*args):
        release.wait(10)
        return network_output(*args)

    service.colorizer.network_output = held
    data = gray_photo((120, 90))
    with TestClient(create_app(service=service)) as client, ThreadPoolExecutor(2) as pool:
        posts = [pool.submit(upload, client, data) for _ in range(2)]
        threading.Timer(0.5, release.set).start()
        assert [p.result().status_code for p in posts] == [200, 200]
        assert service.network_runs == 1
        upload_id = posts[0].result().headers["x-upload-id"]
        release.clear()
        body = points((60, 45, "#c03020"))
        hinted = [
            pool.submit(client.post, f"/api/colorize/{upload_id}", json=body) for _ in range(2)
        ]
        threading.Timer(0.5, release.set).start()
        assert [h.result().status_code for h in hinted] == [200, 200]
        assert service.network_runs == 2
        assert sorted(h.result().headers["x-network"] for h in hinted) == ["cached", "ran"]


def test_hint_requests_wait_in_the_queue_and_are_turned_away_when_it_is_full(tmp_path):
    service = guided_service(tmp_path, max_concurrent=1, max_queue=0)
    release = threading.Event()
    network_output = service.colorizer.network_output
    service.colorizer.network_output = lambda *a: release.wait(10) and network_output(*a)
    with TestClient(create_app(service=service)) as client:
        release.set()
        upload_id = upload(client, gray_photo()).headers["x-upload-id"]
        release.clear()
        with ThreadPoolExecutor(1) as pool:
            url = f"/api/colorize/{upload_id}"
            held = pool.submit(client.post, url, json=points((5, 5, "#f00")))
            while client.get("/healthz").json()["queue"]["in_flight"] < 1:
                time.sleep(0.01)
            refused = client.post(f"/api/colorize/{upload_id}", json=points((9, 9, "#0f0")))
            assert refused.status_code == 503 and refused.json()["error"] == "busy"
            assert int(refused.headers["retry-after"]) >= 1
            release.set()
            assert held.result().status_code == 200
