"""The points' own vote of a guided classification network (models/hint_prior.py): its
geodesic fill against a float64 Dijkstra and Shepard's weights written here, and the vote's
product of experts."""

from __future__ import annotations

import heapq
import json
import math

import numpy as np
import pytest
import torch

from zhangcolor.constants import AB_NORM, STRIDE
from zhangcolor.models.hint_prior import (
    EDGE_COST,
    POWER,
    VOTE_SIGMA,
    HintPrior,
    geodesic_fill,
)


def dijkstra(light: np.ndarray, sources: list[tuple[int, int]]) -> np.ndarray:
    """Shortest paths on a grid of cells with 8 neighbours from the ``sources`` cells, a step
    from cell u to cell v costing |uv| (1 or √2) × (1 + EDGE_COST × |L(u) − L(v)|), ``light``
    being L / 100 per cell: each cell's distance (float64)."""
    h, w = light.shape
    distance = np.full((h, w), np.inf)
    heap = []
    for y, x in sources:
        distance[y, x] = 0.0
        heapq.heappush(heap, (0.0, y, x))
    while heap:
        d, y, x = heapq.heappop(heap)
        if d > distance[y, x]:
            continue
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                v = (y + dy, x + dx)
                if (dy, dx) == (0, 0) or not (0 <= v[0] < h and 0 <= v[1] < w):
                    continue
                cost = math.hypot(dy, dx) * (1 + EDGE_COST * abs(light[y, x] - light[v]))
                if d + cost < distance[v] - 1e-9:
                    distance[v] = d + cost
                    heapq.heappush(heap, (d + cost, *v))
    return distance


def shepard(light: np.ndarray, points: dict[tuple[int, int], tuple[float, float]]) -> tuple:
    """The geodesic fill in float64: each cell's distance to its nearest point, and the points'
    ab weighted by their distances to the power −POWER (a point's own cell: its ab)."""
    distances = np.stack([dijkstra(light, [cell]) for cell in points])  # (K, h, w)
    colours = np.array(list(points.values()))  # (K, 2)
    with np.errstate(divide="ignore"):
        weights = distances**-POWER
    own = distances == 0
    weights = np.where(own.any(0), own, weights)
    ab = np.einsum("khw,kc->hwc", weights, colours) / weights.sum(0)[..., None]
    return distances.min(0), ab


def grid_hints(h: int, w: int, points: dict, batch: int = 1, image: int = 0):
    """Hint channels ``(batch, 3, h·STRIDE, w·STRIDE)`` painting each point's ab on a 2×2 patch
    of its cell in ``image``."""
    hints = torch.zeros(batch, 3, h * STRIDE, w * STRIDE, dtype=torch.float64)
    for (y, x), ab in points.items():
        pixels = (slice(y * STRIDE, y * STRIDE + 2), slice(x * STRIDE + 1, x * STRIDE + 3))
        hints[image, 0][pixels], hints[image, 1][pixels] = ab[0] / AB_NORM, ab[1] / AB_NORM
        hints[image, 2][pixels] = 1.0
    return hints


def pixels_of(cells: np.ndarray) -> torch.Tensor:
    """L per pixel ``(N, 1, h·STRIDE, w·STRIDE)`` of cells' L ``(h, w)`` or ``(N, h, w)``."""
    cells = cells.reshape(-1, *cells.shape[-2:])
    return torch.from_numpy(np.kron(cells, np.ones((1, STRIDE, STRIDE))))[:, None]


def regions(h: int, w: int) -> np.ndarray:
    """L per cell: flat regions (so that paths are unique) separated by edges."""
    cells = np.where(np.arange(w)[None] < 5, 30.0, 70.0) * np.ones((h, 1))
    cells[6:, :] = 50.0
    return cells


def test_the_fill_weights_the_points_by_their_shortest_paths_as_a_float64_dijkstra():
    rng = np.random.default_rng(0)
    h, w = 9, 12
    cells = regions(h, w)
    lightness = pixels_of(cells)
    # two points in the left region, one in each of the others
    points = {cell: tuple(rng.uniform(-60, 60, 2)) for cell in ((1, 1), (1, 3), (2, 9), (8, 6))}
    ab, distance, reached = geodesic_fill(grid_hints(h, w, points), lightness, (h, w))
    expected_distance, expected_ab = shepard(cells / 100, points)
    np.testing.assert_allclose(
        distance[0, 0].numpy(), np.minimum(expected_distance / w, 1), rtol=1e-5
    )
    # within 0.02 ab units: the fill holds colours to a hundredth of a unit and adds a
    # thousandth of a cell to each distance
    np.testing.assert_allclose(ab[0].permute(1, 2, 0).numpy(), expected_ab, rtol=0, atol=0.02)
    assert reached.min() == 1
    # a point's cell takes its colour; a region's cells take its own points' colours, the
    # others lying across edges, and halfway between its two points, their mean
    for cell, colour in points.items():
        assert np.allclose(ab[0, :, cell[0], cell[1]].numpy(), colour, atol=0.006)
    assert np.allclose(ab[0, :, 8, 0].numpy(), points[(8, 6)], atol=0.1)
    middle = np.mean([points[(1, 1)], points[(1, 3)]], 0)
    assert np.allclose(ab[0, :, 1, 2].numpy(), middle, atol=0.1)
    assert not np.allclose(middle, points[(1, 1)], atol=5.0)


def test_each_image_of_a_batch_is_filled_from_its_own_points_and_edges():
    h, w = 9, 12
    first, second = regions(h, w), np.where(np.arange(w)[None] < 8, 20.0, 80.0) * np.ones((h, 1))
    cells = np.stack([first, second, second])
    lightness = pixels_of(cells)
    points = [
        {(1, 1): (40.0, 10.0), (8, 6): (-20.0, 30.0), (1, 4): (5.0, 5.0)},
        {(2, 9): (0.0, -50.0), (1, 1): (-20.0, 30.0), (7, 6): (60.0, 0.0)},  # shared colour, cell
    ]
    hints = grid_hints(h, w, points[0], batch=3) + grid_hints(h, w, points[1], batch=3, image=2)
    together = geodesic_fill(hints, lightness, (h, w))
    for i, ours in ((0, points[0]), (2, points[1])):
        alone = geodesic_fill(grid_hints(h, w, ours), lightness[i : i + 1], (h, w))
        for x, y in zip(together, alone, strict=True):
            torch.testing.assert_close(x[i : i + 1], y)
    assert not together[0][1].any() and (together[1][1] == 1).all()  # the image without points


def test_the_sweeps_and_the_onnx_form_find_the_same_paths_through_texture(monkeypatch):
    """The eager search (sweeps of running minima) and the one an ONNX trace unrolls
    (Bellman-Ford) agree with each other and with the float64 Dijkstra on a random grid, whose
    shortest paths turn at almost every cell."""
    from zhangcolor.models import hint_prior

    monkeypatch.setattr(hint_prior, "SWEEPS", 1000)  # to convergence
    rng = np.random.default_rng(1)
    light = rng.uniform(0, 1, (1, 1, 10, 13))
    start = np.full(light.shape, hint_prior._FAR)
    start[0, 0, 2, 3] = start[0, 0, 7, 11] = 0.0
    start, light = torch.from_numpy(start).float(), torch.from_numpy(light).float()
    expected = dijkstra(light[0, 0].double().numpy(), [(2, 3), (7, 11)])
    swept = hint_prior._shortest(start, light)
    np.testing.assert_allclose(swept[0, 0].numpy(), expected, rtol=1e-5)
    relaxed = hint_prior._relaxed(start, light)
    np.testing.assert_allclose(relaxed[0, 0].numpy(), expected, rtol=1e-5)
    # capped at a few rounds, the sweeps find paths, never shorter than the shortest
    monkeypatch.setattr(hint_prior, "SWEEPS", 2)
    capped = hint_prior._shortest(start, light)[0, 0].numpy()
    assert (capped >= expected * (1 - 1e-6)).all() and (capped > expected * 1.001).any()


def test_the_sweeps_take_the_points_a_few_at_a_time_with_the_same_result(monkeypatch):
    from zhangcolor.models import hint_prior

    h, w = 9, 12
    cells = regions(h, w)
    lightness = pixels_of(cells)
    rng = np.random.default_rng(2)
    points = {(y, x): tuple(rng.uniform(-60, 60, 2)) for y, x in ((0, 0), (3, 7), (8, 2), (5, 11))}
    hints = grid_hints(h, w, points)
    whole = geodesic_fill(hints, lightness, (h, w))
    monkeypatch.setattr(hint_prior, "_CHUNK", h * w)  # one point at a time
    for x, y in zip(geodesic_fill(hints, lightness, (h, w)), whole, strict=True):
        torch.testing.assert_close(x, y)


def test_the_fill_is_float32_under_autocast():
    """The blend's sums are matrix products, which autocast would run in bf16."""
    h, w = 9, 12
    lightness = pixels_of(regions(h, w))
    points = {(1, 1): (47.3, -21.9), (1, 3): (-13.1, 35.7), (8, 6): (5.5, 60.2)}
    hints = grid_hints(h, w, points).float()
    plain = geodesic_fill(hints, lightness.float(), (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = geodesic_fill(hints, lightness.float(), (h, w))
    for x, y in zip(autocast, plain, strict=True):
        assert x.dtype == torch.float32
        torch.testing.assert_close(x, y)


def test_without_points_nothing_is_reached():
    ab, distance, reached = geodesic_fill(
        torch.zeros(2, 3, 32, 40), torch.rand(2, 1, 32, 40) * 100, (8, 10)
    )
    assert not ab.any() and (distance == 1).all() and not reached.any()


def test_the_vote_is_a_gaussian_around_the_fill_weighted_by_the_confidence():
    """log N(q; fill, σ²) up to a constant, times c = GAIN × the confidence branch's output."""
    torch.manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [40.0, -20.0]])
    prior = HintPrior(centers, features=4)
    with torch.no_grad():
        prior.confidence[-1].bias.fill_(0.05)  # a constant confidence of 0.05 × GAIN
    hints = torch.zeros(1, 3, 16, 16)
    hints[0, 0, 4:8, 4:8], hints[0, 1, 4:8, 4:8], hints[0, 2, 4:8, 4:8] = 20 / AB_NORM, 0.0, 1.0
    lightness = torch.full((1, 1, 16, 16), 50.0)
    offsets = prior(hints, lightness, torch.zeros(1, 4, 4, 4))
    c = 0.05 * HintPrior.GAIN
    squared = ((torch.tensor([20.0, 0.0]) - centers) ** 2).sum(1)
    expected = -c * squared / (2 * VOTE_SIGMA**2)
    torch.testing.assert_close(offsets[0, :, 2, 3], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(
        prior(torch.zeros_like(hints), lightness, torch.zeros(1, 4, 4, 4)), torch.zeros(1, 3, 4, 4)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_search_runs_in_float32_for_a_half_precision_network(dtype):
    hints = torch.zeros(1, 3, 64, 64)
    hints[0, :, 2:4, 2:4] = torch.tensor([0.3, -0.2, 1.0])[:, None, None]
    lightness = torch.rand(1, 1, 64, 64) * 100
    full = geodesic_fill(hints, lightness, (16, 16))
    half = geodesic_fill(hints.to(dtype), lightness.to(dtype), (16, 16))
    assert all(x.dtype == torch.float32 for x in half)
    assert torch.allclose(full[2], half[2]) and (full[0] - half[0]).abs().max() < 1.0


def test_package_model_weights_the_vote_by_the_point_strength(tmp_path):
    """--point-strength multiplies the vote's confidence exactly (its last layer is linear), so
    the points' offsets to the logits scale by it, and nothing changes without points."""
    from test_guided_training import calibrated
    from test_train import invoke

    from zhangcolor.bins import ab_bins
    from zhangcolor.checkpoint import save_model
    from zhangcolor.model_file import load_model
    from zhangcolor.models import ModelConfig, build_model
    from zhangcolor.options import TrainConfig

    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125, hints=True))
    network = calibrated(build_model(config.model))
    with torch.no_grad():
        for p in network.hint_prior.confidence.parameters():
            p.normal_(0, 0.1)  # as if trained
    source = tmp_path / "guided.safetensors"
    save_model(source, network, config, {"centers": ab_bins(), "weights": torch.ones(313)}, 0)
    target = tmp_path / "shipped.safetensors"
    result = invoke("package-model", source, "-o", target, "--point-strength", 3)
    assert result.exit_code == 0, result.output
    assert json.loads(target.with_suffix(".json").read_text())["point_strength"] == 3
    before, after = load_model(source)[0].eval(), load_model(target)[0].eval()
    lightness = torch.rand(1, 1, 32, 32) * 100
    hints = torch.zeros(1, 3, 32, 32)
    hints[0, :, 12:16, 12:16] = torch.tensor([0.4, -0.2, 1.0])[:, None, None]
    features = torch.randn(1, before.backbone.out_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(before(lightness), after(lightness))
        torch.testing.assert_close(
            after.hint_prior(hints, lightness, features),
            3 * before.hint_prior(hints, lightness, features),
            rtol=1e-4,
            atol=1e-4,
        )

    automatic = tmp_path / "automatic.safetensors"
    plain_config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125))
    save_model(
        automatic,
        build_model(plain_config.model),
        plain_config,
        {"centers": ab_bins(), "weights": torch.ones(313)},
        0,
    )
    result = invoke(
        "package-model", automatic, "-o", tmp_path / "x.safetensors", "--point-strength", 3
    )
    assert result.exit_code == 1 and "only a guided" in result.output, result.output
    result = invoke(
        "package-model", source, "-o", tmp_path / "x.safetensors", "--point-strength", -1
    )
    assert result.exit_code == 2 and "--point-strength" in result.output, result.output
    # packaged again, the model's provenance says the scales compound
    again = tmp_path / "again.safetensors"
    assert invoke("package-model", target, "-o", again, "--point-strength", 2).exit_code == 0
    assert json.loads(again.with_suffix(".json").read_text())["point_strength"] == 6


def test_the_vote_is_float32_for_a_half_precision_network():
    torch.manual_seed(0)
    prior = HintPrior(torch.tensor([[0.0, 0.0], [60.0, 60.0]]), features=4).to(torch.bfloat16)
    with torch.no_grad():
        prior.confidence[-1].bias.fill_(10.0)  # offsets of hundreds of logits
    hints = torch.zeros(1, 3, 16, 16, dtype=torch.bfloat16)
    hints[0, :, 4:8, 4:8] = torch.tensor([0.5, 0.5, 1.0])[:, None, None]
    lightness = torch.full((1, 1, 16, 16), 50.0, dtype=torch.bfloat16)
    offsets = prior(hints, lightness, torch.zeros(1, 4, 4, 4, dtype=torch.bfloat16))
    assert offsets.dtype == torch.float32 and torch.isfinite(offsets).all()


def test_the_authors_siggraph17_runs_on_the_onnx_backend_at_any_size(tmp_path, monkeypatch):
    """siggraph17 takes points without our vote: its export has no fixed size, so a second
    working size does not meet the first one's export."""
    pytest.importorskip("onnxruntime")
    from test_authors_weights import siggraph17_state

    from zhangcolor.colorize import Colorizer

    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "siggraph17-df00044c.pth"
    torch.save(siggraph17_state(), path)
    photo = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (24, 1))
    points = {"points": [{"x": 15, "y": 12, "color": "#d02020"}]}
    for size in (32, 64):
        colorizer = Colorizer.load(path, size=size, backend="onnx")
        assert colorizer.takes_hints and colorizer.colorize(photo, hints=points).size == (30, 24)
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
