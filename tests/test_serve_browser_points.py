"""Colour points on the web page, in Debian's headless Chromium (see test_serve_browser): a model
that follows points (test_serve_hints.HintFollower) behind a real server. A point added with the
mouse and given a suggested colour moves the colour near it toward that colour, and removing it
moves the colour back; the keyboard alone places, moves, colours and removes a point; points are
saved and loaded as the CLI's JSON and the full-size download uses them; the slider starts at
the model's own T; axe-core finds no WCAG 2 A/AA violation with the new controls shown."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor
from test_serve_browser import accessibility_violations, chromium_page
from test_serve_hints import gray_photo, guided_service

from zhangcolor.hints import hex_to_ab
from zhangcolor.serve import background_server, create_app

#: The guided model's own T, as a calibrated model would have it (not the paper's 0.38).
OWN_T = 0.7
#: The photo's pixel the points go to (the photo is shown at its own size, 320 × 240).
SPOT = (80, 120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    service = guided_service(tmp_path_factory.mktemp("guided"), temperature=OWN_T)
    with background_server(create_app(service=service)) as url:
        yield url


@pytest.fixture
def page(tmp_path):
    with chromium_page(tmp_path) as page:
        yield page


def ab_near(page, x: int, y: int, radius: int = 3) -> np.ndarray:
    """The mean ab around the photo's pixel (x, y) of the result the browser shows."""
    url = page.evaluate(
        """() => {
            const img = document.getElementById('result');
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            canvas.getContext('2d').drawImage(img, 0, 0);
            return canvas.toDataURL('image/png');
        }"""
    )
    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
    assert rgb.shape[:2] == (240, 320), "the preview should be the photo's own size"
    patch = rgb[y - radius : y + radius + 1, x - radius : x + radius + 1] / 255.0
    return skcolor.rgb2lab(patch)[..., 1:].reshape(-1, 2).mean(0)


def rendered(page, points: int) -> None:
    """Wait until the result on screen has ``points`` colour points (0: none)."""
    words = f"with {points} colour point" if points else "at T ="
    page.wait_for_function(
        """(words) => {
            const status = document.getElementById('status').textContent;
            return document.body.dataset.state === 'ready' && status.includes(words)
                && (words !== 'at T =' || !status.includes('point'));
        }""",
        arg=words,
        timeout=30_000,
    )


def click_photo(page, x: int, y: int) -> None:
    """Click the centre of the photo's pixel (x, y) on the points layer."""
    box = page.locator("#points").bounding_box()
    page.mouse.click(
        box["x"] + (x + 0.5) / 320 * box["width"], box["y"] + (y + 0.5) / 240 * box["height"]
    )


def open_photo(page, server, tmp_path):
    photo = tmp_path / "ramp.png"
    photo.write_bytes(gray_photo((320, 240)))
    page.goto(server)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    return photo


def test_a_point_with_a_suggested_colour_moves_the_colour_near_it_and_back(server, page, tmp_path):
    open_photo(page, server, tmp_path)
    # The slider starts at the model's own T, within the one range of T.
    assert page.input_value("#temperature") == str(OWN_T) and page.inner_text("#t-value") == "0.70"
    assert (
        page.get_attribute("#temperature", "min"),
        page.get_attribute("#temperature", "max"),
    ) == (
        "0.001",
        "1",
    )
    assert page.is_visible("#point-tools")
    before = ab_near(page, *SPOT)

    click_photo(page, *SPOT)
    page.wait_for_selector("#swatches .swatch", timeout=30_000)
    assert accessibility_violations(page) == []  # with the marker and the palette shown
    swatches = page.locator("#swatches .swatch")
    colours = [swatches.nth(i).get_attribute("data-color") for i in range(swatches.count())]
    assert len(colours) == 8
    # The suggested colour farthest from what the model shows there now.
    target = max(colours, key=lambda c: np.hypot(*(np.array(hex_to_ab(c)) - before)))
    page.click(f"#swatches .swatch[data-color='{target}']")
    rendered(page, 1)
    after = ab_near(page, *SPOT)
    goal = np.array(hex_to_ab(target))
    assert np.hypot(*(after - goal)) < np.hypot(*(before - goal)) - 15, (before, after, goal)
    label = page.get_attribute("#points .point", "aria-label")
    assert label == f"Colour point 1 at {SPOT[0]}, {SPOT[1]}: {target}"

    page.locator("#points .point").click(button="right")  # a right-click removes it
    rendered(page, 0)
    assert page.locator("#points .point").count() == 0
    assert np.hypot(*(ab_near(page, *SPOT) - before)) < 2


def test_the_keyboard_alone_places_moves_colours_and_removes_a_point(server, page, tmp_path):
    open_photo(page, server, tmp_path)
    page.focus("#add-point")
    page.keyboard.press("Enter")
    marker = page.locator("#points .point")
    assert page.evaluate("document.activeElement.classList.contains('point')")
    assert "at 160, 120" in marker.get_attribute("aria-label")  # the photo's centre
    for _ in range(3):
        page.keyboard.press("ArrowLeft")  # a hundredth of the longer side: 3 px
    page.keyboard.press("Shift+ArrowDown")  # one pixel
    assert "at 151, 121" in marker.get_attribute("aria-label")
    # Its colours are reachable by Tab, with a visible focus.
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('swatch')"):
            break
    else:
        pytest.fail("no suggested colour was reachable by Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    page.keyboard.press("Enter")
    rendered(page, 1)
    assert "no colour yet" not in marker.get_attribute("aria-label")
    marker.focus()
    page.keyboard.press("ArrowRight")  # a coloured point moved: the result follows
    rendered(page, 1)
    assert "at 154, 121" in marker.get_attribute("aria-label")
    page.keyboard.press("Delete")
    rendered(page, 0)
    assert marker.count() == 0
    page.keyboard.press("Control+z")  # undo brings it back
    rendered(page, 1)
    assert marker.count() == 1


def test_points_save_and_load_as_the_cli_json_and_the_download_uses_them(server, page, tmp_path):
    open_photo(page, server, tmp_path)
    click_photo(page, *SPOT)
    page.wait_for_selector("#swatches .swatch", timeout=30_000)
    page.locator("#picker").fill("#20a040")  # any colour, from the colour picker
    page.locator("#picker").dispatch_event("change")
    rendered(page, 1)
    with page.expect_download() as info:
        page.click("#save-points")
    saved = tmp_path / "points.json"
    info.value.save_as(saved)
    assert info.value.suggested_filename == "ramp.json"  # as colorize --hints DIR finds it
    points = json.loads(saved.read_text())
    assert points == {"points": [{"x": 80, "y": 120, "color": "#20a040"}]}

    page.click("#clear-points")
    rendered(page, 0)
    page.set_input_files("#load-points", str(saved))
    rendered(page, 1)
    with page.expect_download() as info:
        page.click("#download")
    full = tmp_path / "full.png"
    info.value.save_as(full)
    with Image.open(full) as image:
        rgb = np.asarray(image.convert("RGB"))
    lab = skcolor.rgb2lab(rgb[117:124, 77:84] / 255.0)[..., 1:].reshape(-1, 2).mean(0)
    assert np.hypot(*(lab - hex_to_ab("#20a040"))) < 12, lab


def test_points_outside_the_photo_in_a_loaded_file_are_refused_and_undone(server, page, tmp_path):
    open_photo(page, server, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"points": [{"x": 999, "y": 5, "color": "#ff0000"}]}))
    page.set_input_files("#load-points", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "point 0" in page.inner_text("#error") and "outside" in page.inner_text("#error")
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert page.locator("#points .point").count() == 0
