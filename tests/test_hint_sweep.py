"""``evaluate --hints``: the colour-point sweep of the SIGGRAPH 2017 paper (its Fig. 4), with
its points drawn as the authors' sweep draws them, checked against plain numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_guided_training import saved_guided
from test_train import invoke

from zhangcolor.constants import AB_NORM
from zhangcolor.evaluate import GRAY
from zhangcolor.hint_sweep import (
    FILL,
    PATCH,
    draw_points,
    nearest_point_fill,
    point_hints,
    sweep,
)


def test_points_are_fixed_by_the_photos_name_and_the_first_n_are_shared():
    a, again, other = draw_points(20, "a.jpg"), draw_points(20, "a.jpg"), draw_points(20, "b.jpg")
    assert a.shape == (20, 3) and torch.equal(a, again) and not torch.equal(a, other)
    assert torch.equal(draw_points(5, "a.jpg"), a[:5])  # n points are the sequence's first n
    assert (a[:, 0] == PATCH).all()


def test_the_corners_are_normal_around_the_centre_with_a_quarter_of_the_size():
    """The authors' sweep: a corner at floor(N(s / 2, (s / 4)²)), s = size − patch + 1,
    clipped so the patch fits."""
    size = 200
    draws = torch.cat([draw_points(50, f"{i}.jpg") for i in range(200)])  # 10,000 points
    _, centres = point_hints(torch.zeros(2, size, size), draws)
    corners = centres[:, :2] - (PATCH / 2 - 0.5)
    assert corners.min() >= 0 and corners.max() <= size - PATCH
    inside = corners[(corners > 0).all(1) & (corners < size - PATCH).all(1)]
    span = size - PATCH + 1
    assert abs(float(inside.mean()) - (span / 2 - 0.5)) < 1.5  # the floor takes half a pixel
    assert abs(float(corners.std(0).mean()) - span / 4) < 2  # clipping trims little at 2σ


def test_each_points_hint_is_the_true_mean_ab_over_its_patch():
    rng = np.random.default_rng(0)
    true_ab = torch.from_numpy(rng.uniform(-80, 80, (2, 40, 40)))
    points = draw_points(6, "photo.png")
    hints, centres = point_hints(true_ab.float(), points)
    mask = hints[0, 2].numpy()
    expected_mask = np.zeros((40, 40), bool)
    for y, x, a, b in centres.tolist():
        top, left = round(y - (PATCH / 2 - 0.5)), round(x - (PATCH / 2 - 0.5))
        patch = true_ab.numpy()[:, top : top + PATCH, left : left + PATCH]
        assert patch.shape == (2, PATCH, PATCH)
        np.testing.assert_allclose([a, b], patch.reshape(2, -1).mean(1), atol=1e-4)
        expected_mask[top : top + PATCH, left : left + PATCH] = True
    assert np.array_equal(mask == 1, expected_mask) and set(np.unique(mask)) <= {0.0, 1.0}
    # the channels carry each patch's mean, normalised as the network's ab
    y, x, a, b = centres[-1].tolist()
    assert hints[0, 0, round(y), round(x)] == pytest.approx(a / AB_NORM, abs=1e-5)
    assert hints[0, 1, round(y), round(x)] == pytest.approx(b / AB_NORM, abs=1e-5)


def test_nearest_point_fill_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(0, 30, (7, 2)), rng.uniform(-50, 50, (7, 2))])
    fill = nearest_point_fill(torch.from_numpy(points), 30, 20).numpy()
    for y in range(30):
        for x in range(20):
            d = np.hypot(points[:, 0] - y, points[:, 1] - x)
            np.testing.assert_allclose(fill[:, y, x], points[d.argmin(), 2:], rtol=1e-6)
    assert not nearest_point_fill(torch.zeros(0, 4, dtype=torch.float64), 5, 5).any()


def _photos(folder, n=3, size=64):
    """Photos of four flat colour quadrants: the nearest-point fill gets better with points."""
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        colours = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
        pixels = np.kron(colours, np.ones((size // 2, size // 2, 1), np.uint8))
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())


@pytest.fixture
def guided_model(tmp_path):
    return saved_guided(tmp_path / "guided.safetensors")


def test_the_sweep_scores_gray_the_fill_and_the_models_at_each_count(tmp_path, guided_model):
    paths = _photos(tmp_path / "photos")
    report = sweep([str(guided_model)], paths, counts=(0, 2, 50), size=64, precision="fp32")
    rows = {(r["model"], r["points"]): r for r in report["rows"]}
    assert report["images"] == 3 and len(rows) == 3 * 3
    gray = [rows[(GRAY, n)]["psnr"] for n in (0, 2, 50)]
    assert gray[0] == gray[1] == gray[2]
    fill = [rows[(FILL, n)]["psnr"] for n in (0, 2, 50)]
    assert fill[0] == gray[0] and fill[2] > fill[1] > fill[0]
    model = [rows[(str(guided_model), n)]["psnr"] for n in (0, 2, 50)]
    assert model[2] != model[0]  # the points reach the network


def test_evaluate_hints_writes_the_sweep_and_refuses_bad_counts(tmp_path, guided_model):
    _photos(tmp_path / "photos", n=2)
    out = tmp_path / "report"
    args = ["evaluate", tmp_path / "photos", "--model", guided_model, "--size", 64]
    result = invoke(*args, "--hints", "0,1,5", "--out", out, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "hint_sweep.json").read_text())
    assert report["counts"] == [0, 1, 5] and report["images"] == 2
    for name in ("hint_sweep.md", "hint_sweep.csv", "hint_sweep.png"):
        assert (out / name).stat().st_size > 0
    assert "Nearest-point fill" in result.output
    for bad in ("-1", "2,x", "1001", ""):
        result = invoke(*args, "--hints", bad, "--out", out)
        assert result.exit_code == 2 and "--hints" in result.output, result.output
    result = invoke(*args, "--hints", "1", "--temperatures", "0.3,0.5", "--out", out)
    assert result.exit_code == 2 and "one temperature" in result.output
