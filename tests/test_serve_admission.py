"""zhangcolor serve's work queue: requests priced in megapixels, lanes of cheap and large work,
a budget per client address, fair turns; and what previews and identical uploads cost the cache.

The hostile clients here are T-only GETs: one small upload of a large photo, then re-decodes at
full size, each costing far more than its request."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from makers import photo_bytes
from test_serve import make_service, other_addresses, png_of

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient

from zhangcolor.serve import (
    ApiError,
    ColorizeService,
    ServeConfig,
    WorkQueue,
    background_server,
    create_app,
)
from zhangcolor.serve.admission import CHEAP_MP
from zhangcolor.serve.cache import MAX_VIEWS
from zhangcolor.serve.prices import NETWORK_MP, cached_price, upload_price


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> ColorizeService:
    return make_service(tmp_path_factory, max_pixels=20_000_000, max_upload_mb=20)


def queue(**config) -> WorkQueue:
    return WorkQueue(ServeConfig(**{"max_concurrent": 1, "max_queue": 8, **config}))


def job(order: list, name: str, seconds: float = 0.05):
    def run():
        time.sleep(seconds)
        order.append(name)
        return name

    return run


def test_a_lane_turns_to_the_client_served_least():
    """Client a queues four costly jobs; b's one job, sent after a's first began, runs next,
    not after all of a's (first come, first served made b wait for the four)."""

    async def scenario():
        work, order = queue(), []
        a = [asyncio.create_task(work.run("a", 3.0, job(order, f"a{i}"))) for i in range(4)]
        await asyncio.sleep(0.02)  # a0 is running, a1..a3 wait
        b = asyncio.create_task(work.run("b", 1.0, job(order, "b")))
        await asyncio.gather(*a, b)
        work.close()
        return order

    assert asyncio.run(scenario()) == ["a0", "b", "a1", "a2", "a3"]


def test_a_client_over_its_budget_is_told_429_and_others_are_not():
    async def scenario():
        work, order = queue(max_client_mp=10), []
        first = asyncio.create_task(work.run("a", 6.0, job(order, "a0", 0.2)))
        await asyncio.sleep(0.02)
        with pytest.raises(ApiError) as refused:
            await work.run("a", 6.0, job(order, "a1"))
        other = await work.run("b", 6.0, job(order, "b"))
        # A request dearer than the whole budget is taken when its client has nothing in flight.
        await first
        alone = await work.run("a", 50.0, job(order, "big"))
        work.close()
        return refused.value, other, alone

    refused, other, alone = asyncio.run(scenario())
    assert refused.status == 429 and refused.code == "too_much_work"
    assert int(refused.headers["Retry-After"]) >= 1 and "megapixels" in refused.detail
    assert (other, alone) == ("b", "big")


def test_cheap_work_has_its_own_lane_and_a_full_lane_says_503():
    """A preview runs while full-size work holds the large lane's thread; a large lane with no
    place left turns large work away and still takes cheap work."""
    release = threading.Event()

    async def scenario():
        work, order = queue(max_queue=1), []
        held = [
            asyncio.create_task(work.run(f"big{i}", 40.0, lambda: release.wait(10) and "big"))
            for i in range(2)
        ]
        await asyncio.sleep(0.05)
        assert work.lanes["main"].full and work.full
        with pytest.raises(ApiError) as refused:
            await work.run("another", 40.0, job(order, "x"))
        preview = await work.run("page", CHEAP_MP, job(order, "preview"))
        release.set()
        await asyncio.gather(*held)
        work.close()
        return refused.value, preview

    refused, preview = asyncio.run(scenario())
    assert refused.status == 503 and refused.code == "busy" and preview == "preview"


def test_prices_follow_the_pixels_of_the_work(service):
    data = png_of(3000, 3000)
    price = upload_price(
        service.cache, 20_000_000, data, filename="a.png", max_side=None, hints=None, upload_id="x"
    )
    assert price == pytest.approx(9 + 9 + NETWORK_MP)  # read, network, full-size result
    upload_id = service.colorize(data, max_side=512).upload_id  # a 512 view is kept
    assert cached_price(service.cache, upload_id, None, None) == pytest.approx(9.0)
    assert cached_price(service.cache, upload_id, 512, None) <= 0.3  # the kept view: cheap
    assert cached_price(service.cache, upload_id, 700, None) > 9  # a new view scales all of L
    hints = {"points": [{"x": 1, "y": 1, "color": "#fff"}]}
    assert cached_price(service.cache, upload_id, 512, hints) == pytest.approx(
        cached_price(service.cache, upload_id, 512, None) + NETWORK_MP
    )
    assert cached_price(service.cache, "0" * 32, None, None) == 0  # unknown: refused at once


def test_previews_at_many_sides_keep_few_views_and_push_out_no_other_upload(service):
    """Each distinct max_side kept a view of L; 40 of them filled the cache and pushed other
    users' uploads out. Views are bounded per upload and displace only that upload's own."""
    config = dataclasses.replace(service.config, cache_mb=16 + 6)  # 16 MB reserved: 6 MB left
    small = ColorizeService(service.colorizer, config)
    with TestClient(create_app(service=small)) as client:
        others = [
            client.post("/api/colorize", files={"image": ("o.png", photo_bytes(s))})
            for s in range(4)
        ]
        ids = [o.headers["x-upload-id"] for o in others]
        big = client.post("/api/colorize", files={"image": ("b.png", png_of(1000, 800))})
        big_id = big.headers["x-upload-id"]
        for side in range(100, 900, 20):
            assert client.get(f"/api/colorize/{big_id}", params={"max_side": side}).status_code
        assert len(small.cache.get(big_id).views) <= MAX_VIEWS
        assert all(small.cache.get(i) is not None for i in ids), "an upload was pushed out"
        assert small.cache.stats()["bytes"] <= small.cache.max_bytes


def test_the_same_upload_sent_at_once_runs_the_network_once(service):
    """With two work threads, two requests of the same bytes each ran the network."""
    release = threading.Event()
    colorizer = copy.copy(service.colorizer)
    network_output = colorizer.network_output

    def held(*args):
        release.wait(10)
        return network_output(*args)

    colorizer.network_output = held
    twice = ColorizeService(colorizer, dataclasses.replace(service.config, max_concurrent=2))
    data = photo_bytes(42, size=(120, 90))
    with TestClient(create_app(service=twice)) as client, ThreadPoolExecutor(3) as pool:
        posts = [
            pool.submit(client.post, "/api/colorize", files={"image": (f"{i}.png", data)})
            for i in range(3)
        ]
        threading.Timer(0.5, release.set).start()
        answers = [p.result() for p in posts]
    assert [a.status_code for a in answers] == [200] * 3
    assert twice.network_runs == 1
    assert sorted(a.headers["x-network"] for a in answers) == ["cached", "cached", "ran"]
    assert {a.headers["content-disposition"] for a in answers} == {
        f'inline; filename="{i}-colorized-T0.38.png"' for i in range(3)
    }


def _flood(url: str, address: str, upload_id: str, stop: threading.Event, seen: list) -> None:
    """A client at ``address`` asking for full-size re-decodes of one upload, one at a time."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, transport=transport, timeout=60) as http:
        t = 0.05
        while not stop.is_set():
            t = 0.05 + (t * 7.3) % 0.9
            seen.append(
                http.get(f"/api/colorize/{upload_id}", params={"temperature": t}).status_code
            )


def test_t_only_gets_on_a_huge_upload_do_not_hold_up_other_clients(service):
    """One 4 KB PNG of 9 MP, then full-size re-decodes from four addresses: before, every
    other client's request waited behind all of them (and 34 such clients locked everyone
    out). Now they wait in the large lane, within their budgets, while a page's previews and a
    new small upload go by in the cheap lane: they take less than one such re-decode does."""
    flood_from = other_addresses(4)
    config = dataclasses.replace(service.config, max_queue=8, max_client_mp=40, cache_mb=256)
    with background_server(create_app(service=ColorizeService(service.colorizer, config))) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            big = http.post("/api/colorize", files={"image": ("big.png", png_of(3000, 3000))})
            assert big.status_code == 200, big.text
            big_id = big.headers["x-upload-id"]
            start = time.perf_counter()
            assert http.get(f"/api/colorize/{big_id}", params={"temperature": 0.5}).status_code
            one_redecode = time.perf_counter() - start
            page = http.post("/api/colorize", files={"image": ("p.png", photo_bytes(7))})
            page_id = page.headers["x-upload-id"]
            stop, seen = threading.Event(), []
            flooders = [
                threading.Thread(target=_flood, args=(url, address, big_id, stop, seen))
                for address in flood_from
            ]
            for thread in flooders:
                thread.start()
            time.sleep(1.0)
            honest = []
            try:
                for i in range(8):
                    start = time.perf_counter()
                    if i % 4 == 3:  # a new photo
                        answer = http.post(
                            "/api/colorize",
                            files={"image": ("n.png", photo_bytes(100 + i))},
                            data={"max_side": "512", "format": "jpg"},
                        )
                    else:  # the page's slider
                        answer = http.get(
                            f"/api/colorize/{page_id}",
                            params={"temperature": 0.1 * (i + 1), "max_side": 512, "format": "jpg"},
                        )
                    honest.append((answer.status_code, time.perf_counter() - start))
            finally:
                stop.set()
                for thread in flooders:
                    thread.join(120)
    assert all(status == 200 for status, _ in honest), honest
    assert set(seen) <= {200, 429, 503} and 200 in seen
    waited = statistics.median(seconds for _, seconds in honest)
    assert waited < one_redecode, (waited, one_redecode, honest)
