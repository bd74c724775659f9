"""The web page in a real browser: Debian's headless Chromium, driven by Playwright.

No browser is ever downloaded: Playwright drives /usr/bin/chromium, which `.ci/run` installs with
apt-get. Where it is missing the test is skipped with the command to install it, unless
ZHANGCOLOR_REQUIRE_BROWSER=1 (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data
from test_colorize import make_checkpoint

from zhangcolor.serve import ColorizeService, ServeConfig, background_server, create_app

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _need(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("ZHANGCOLOR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ZHANGCOLOR_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")

    model = make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    service = ColorizeService.load(ServeConfig(model=str(model), size=64))
    with background_server(create_app(service=service)) as url:
        yield url


@contextmanager
def chromium_page(tmp_path: Path) -> Iterator:
    """A page of a new headless Chromium (an empty profile) that fails the test on any
    JavaScript error or Content-Security-Policy violation of the page."""
    _need(CHROMIUM.is_file(), f"no {CHROMIUM}; install it with: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed: pip install playwright (no browser download)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a new, empty user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1000, "height": 900},
            accept_downloads=True,
        )
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            yield page
            assert not errors, f"JavaScript errors or CSP violations on the page: {errors}"
        finally:
            context.close()


@pytest.fixture
def page(tmp_path):
    with chromium_page(tmp_path) as page:
        yield page


def accessibility_violations(page) -> list[str]:
    """What axe-core (the copy axe-playwright-python ships) finds against WCAG 2.0 and 2.1, A
    and AA, on the page as it is now."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:
        _need(False, "axe-playwright-python is not installed: pip install axe-playwright-python")
    tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": tags}})
    return [
        f"{v['id']}: {v['help']} ({', '.join(str(n['target']) for n in v['nodes'][:3])})"
        for v in results.response["violations"]
    ]


def displayed_pixels(page) -> np.ndarray:
    """The result image as the browser decoded it, read back through a canvas."""
    url = page.evaluate(
        """() => {
            const img = document.getElementById('result');
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            canvas.getContext('2d').drawImage(img, 0, 0);
            return canvas.toDataURL('image/png');
        }"""
    )
    png = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)


def runs(url: str) -> int:
    return httpx.get(f"{url}/healthz").json()["network_runs"]


def test_upload_compare_move_t_and_download_in_chromium(server, page, tmp_path):
    photo = tmp_path / "vieille photo d’été.jpg"
    Image.fromarray(data.astronaut()).convert("L").resize((320, 320)).save(photo)
    before_runs = runs(server)

    api_calls: list[str] = []
    page.on(
        "request",
        lambda r: api_calls.append(f"{r.method} {r.url}") if "/api/colorize" in r.url else None,
    )
    page.goto(server)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    assert page.get_attribute("#status", "data-network") == "ran"
    assert [call.split()[0] for call in api_calls] == ["POST"]
    assert runs(server) == before_runs + 1
    first = displayed_pixels(page)
    chroma = np.abs(first.astype(int) - first.mean(axis=1, keepdims=True)).mean()
    assert chroma > 1.0, "the result should have color"

    # Move the temperature slider: the result changes, and the network does not run again.
    page.locator("#temperature").fill("1")
    page.wait_for_function(
        "() => document.getElementById('result').dataset.t === '1'"
        " && document.body.dataset.state === 'ready'",
        timeout=30_000,
    )
    assert page.inner_text("#t-value") == "1.00"
    assert page.get_attribute("#status", "data-network") == "cached"
    assert "did not run again" in page.inner_text("#status")
    assert not np.array_equal(displayed_pixels(page), first)
    assert runs(server) == before_runs + 1
    # The photo was not sent again: the page asked for a re-decode of the cached output.
    assert all(call.startswith("GET ") for call in api_calls[1:]) and len(api_calls) >= 2
    assert "temperature=1" in api_calls[-1]

    # The before/after split moves the clip of the result.
    page.locator("#split").fill("20")
    assert "20%" in page.get_attribute("#compare", "style")
    # An automatic model: no colour points are offered, and nothing axe-core finds.
    assert page.locator("#point-tools").is_hidden() and page.locator("#points").is_hidden()
    assert accessibility_violations(page) == []

    # Download: the full-size PNG at the slider's T.
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "download.png"
    info.value.save_as(saved)
    # Its name, accents kept (filename*).
    assert info.value.suggested_filename == "vieille photo d’été-colorized-T1.png"
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.size == (320, 320)
    assert runs(server) == before_runs + 1


def test_a_file_that_is_not_an_image_shows_the_servers_reason(server, page, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not a picture")
    page.goto(server)
    page.set_input_files("#file", str(bogus))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    message = page.inner_text("#error")
    assert "not an image" in message and message.count("notes.png") == 1, message
    assert " at 0x" not in message and "<" not in message, message


def test_the_page_recovers_when_the_server_forgot_the_upload(server, page, tmp_path):
    """A T change after the cache dropped the upload (its TTL, or another worker) sends the
    photo again instead of failing."""
    photo = tmp_path / "p.png"
    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).resize((200, 150)).save(buffer, format="PNG")
    photo.write_bytes(buffer.getvalue())
    page.goto(server)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    page.evaluate("() => { state.uploadId = 'forgotten00000000000000000000000'; }")
    page.locator("#temperature").fill("0.7")
    page.wait_for_function(
        "() => document.getElementById('result').dataset.t === '0.7'"
        " && document.body.dataset.state === 'ready'",
        timeout=30_000,
    )
    assert page.locator("#error").is_hidden()


def test_a_photo_dropped_on_the_page_is_colorized(server, page):
    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).convert("L").resize((160, 120)).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    page.goto(server)
    transfer = page.evaluate_handle(
        """async (encoded) => {
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            return transfer;
        }""",
        encoded,
    )
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    assert "over" in page.get_attribute("#drop", "class")
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    assert page.get_attribute("#status", "data-network") in ("ran", "cached")
    assert displayed_pixels(page).shape == (160 * 120, 3)


def test_after_a_failed_upload_the_page_goes_back_to_the_photo_before(server, page, tmp_path):
    """A new photo the server refuses leaves a clear message, the previous photo and result on
    screen, and the slider and the download working on them."""
    photo = tmp_path / "good.png"
    Image.fromarray(data.chelsea()).convert("L").resize((160, 120)).save(photo)
    bogus = tmp_path / "broken.png"
    bogus.write_text("not a picture")
    page.goto(server)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    before_src = page.get_attribute("#before", "src")
    result_src = page.get_attribute("#result", "src")
    shown = displayed_pixels(page)

    page.set_input_files("#file", str(bogus))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert "broken.png" in page.inner_text("#error")
    assert "not an image" in page.inner_text("#error")
    status = page.inner_text("#status")
    assert "Colorizing" not in status and "Still showing good.png" in status
    assert page.get_attribute("#before", "src") == before_src
    assert page.get_attribute("#result", "src") == result_src
    assert np.array_equal(displayed_pixels(page), shown)
    assert page.is_enabled("#download")

    runs_before = runs(server)
    page.locator("#temperature").fill("0.9")  # the slider re-decodes the previous photo
    page.wait_for_function(
        "() => document.getElementById('result').dataset.t === '0.9'"
        " && document.body.dataset.state === 'ready'",
        timeout=30_000,
    )
    assert not np.array_equal(displayed_pixels(page), shown)
    assert runs(server) == runs_before
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename == "good-colorized-T0.9.png"


def test_a_failed_first_upload_leaves_an_empty_page_ready_for_another(server, page, tmp_path):
    bogus = tmp_path / "broken.png"
    bogus.write_text("not a picture")
    page.goto(server)
    page.set_input_files("#file", str(bogus))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert page.get_attribute("body", "data-state") == "empty"
    assert page.locator("#viewer").is_hidden()
    assert "Colorizing" not in page.inner_text("#status")
    photo = tmp_path / "good.png"
    Image.fromarray(data.coffee()).resize((120, 90)).save(photo)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    assert page.locator("#error").is_hidden()


def test_the_api_docs_page_works_with_no_other_host(server, page):
    """/docs renders the OpenAPI description with the server's own files only: offline, it must
    not stay blank (FastAPI's default docs page loads its scripts from a CDN)."""
    hosts: list[str] = []
    page.on("request", lambda r: hosts.append(r.url) if not r.url.startswith(server) else None)
    page.goto(server)
    page.click("text=API docs")
    page.wait_for_selector("section.operation", timeout=30_000)
    text = page.inner_text("#api")
    assert "POST /api/colorize" in text and "GET /api/colorize/{upload_id}" in text
    assert "temperature" in text and "max_side" in text
    assert "POST /api/colorize/{upload_id}/suggestions" in text and "GET /api/model" in text
    assert "number (≥ 0.001, ≤ 1)" in text and "integer (≥ 16)" in text  # T's one range
    assert not hosts, f"the docs page asked other hosts: {hosts}"
