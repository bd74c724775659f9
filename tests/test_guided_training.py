"""Training a guided network (Zhang et al. 2017): simulated users' points reach the network
and its validation, the run resumes exactly (tests/test_train.py), and a guided network can
start from an automatic one's weights, colorizing as it did until its hint layers learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train import invoke, tiny_config

from zhangcolor.checkpoint import copy_matching, save_model
from zhangcolor.colorize import Colorizer
from zhangcolor.model_file import load_model, read_model
from zhangcolor.models import ModelConfig, build_model
from zhangcolor.options import TrainConfig

GUIDED = {"backbone": "eccv16", "width": 0.125, "hints": True}


def test_a_guided_network_trains_with_simulated_points_and_is_scored_with_them(tmp_path):
    result = invoke("train", "--config", tiny_config(tmp_path, model=GUIDED, epochs=2))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in lines if "val_loss" in m]
    for name in ("val_loss", "val_auc", "val_auc_rebalanced"):
        assert all(np.isfinite(m[name]) and np.isfinite(m[f"{name}_hints"]) for m in epochs)
    path = tmp_path / "run" / "checkpoints" / "last.safetensors"
    assert read_model(path).record.network.hints
    colorizer = Colorizer.load(path, size=32, precision="fp32")
    hints = {"points": [{"x": 15, "y": 12, "color": "#d02020", "size": 8}]}
    out = colorizer.colorize(np.full((24, 30), 120, np.uint8), hints=hints)
    assert colorizer.takes_hints and out.size == (30, 24)


@torch.no_grad()
def calibrated(network: torch.nn.Module) -> torch.nn.Module:
    """A random network whose BatchNorm statistics are those of random inputs with points: at
    its initial running statistics, an untrained network's output hardly depends on its input."""
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average of the batches seen
    network.train()
    for _ in range(4):
        hints = torch.zeros(8, 3, 32, 32)
        hints[:, :2], hints[:, 2, 8:16, 8:16] = torch.randn(8, 2, 32, 32) * 0.3, 1.0
        network(torch.rand(8, 1, 32, 32) * 100, hints)
    return network.eval()


def test_points_reach_the_network_through_the_colorizer(tmp_path):
    from zhangcolor.bins import ab_bins

    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(**GUIDED))
    network = calibrated(build_model(config.model))
    path = tmp_path / "guided.safetensors"
    bins = {"centers": ab_bins(), "weights": torch.ones(313)}
    save_model(path, network, config, bins, step=0)
    colorizer = Colorizer.load(path, size=32, precision="fp32")
    photo = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (24, 1))
    points = {"points": [{"x": 15, "y": 12, "color": "#d02020", "size": 8}]}
    plain = colorizer.predict([colorizer.prepare(photo)])[0]
    guided = colorizer.predict([colorizer.prepare(photo, points)])[0]
    near, far = (guided - plain).abs()[0].amax(0)[2:5, 2:5], (guided - plain).abs()[0].amax(0)
    assert near.max() > 1e-3 and far.max() == near.max()  # the change is largest near the point


def test_an_automatic_model_refuses_points_with_a_clear_message(tmp_path):
    from zhangcolor.bins import ab_bins

    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125))
    path = tmp_path / "auto.safetensors"
    bins = {"centers": ab_bins(), "weights": torch.ones(313)}
    save_model(path, build_model(config.model), config, bins, step=0)
    colorizer = Colorizer.load(path, size=32)
    with pytest.raises(ValueError, match="takes no colour points"):
        colorizer.colorize(np.zeros((8, 8), np.uint8), hints=[{"x": 1, "y": 1, "color": "#fff"}])


@pytest.mark.parametrize("backbone", [{"backbone": "eccv16", "width": 0.125}, {"backbone": "unet"}])
def test_a_guided_network_started_from_an_automatic_one_colorizes_as_it_did(backbone):
    """copy_matching gives the guided network every weight of the automatic one, and zeros for
    the hint inputs: without points, and even with them before training, the same output."""
    torch.manual_seed(0)
    automatic = build_model(ModelConfig(**backbone)).eval()
    guided = build_model(ModelConfig(**backbone, hints=True)).eval()
    left = copy_matching(guided, automatic.state_dict())
    assert all("hint" in name for name in left)  # only the U-Net's new layers take nothing
    lightness = torch.rand(2, 1, 32, 32) * 100
    hints = torch.zeros(2, 3, 32, 32)
    hints[:, :2, 8:12, 8:12], hints[:, 2, 8:12, 8:12] = 0.4, 1.0
    with torch.no_grad():
        expected = automatic(lightness)
        assert torch.equal(guided(lightness), expected)
        torch.testing.assert_close(guided(lightness, hints), expected, rtol=0, atol=0)


def test_copy_matching_refuses_a_weight_of_another_shape():
    small = build_model(ModelConfig(backbone="eccv16", width=0.125))
    wide = build_model(ModelConfig(backbone="eccv16", width=0.25))
    with pytest.raises(ValueError, match="in the model to start from"):
        copy_matching(wide, small.state_dict())


def test_train_starts_from_a_model_file(tmp_path):
    first = invoke("train", "--config", tiny_config(tmp_path, epochs=1))
    assert first.exit_code == 0, first.output
    automatic = tmp_path / "run" / "checkpoints" / "last.safetensors"
    (tmp_path / "second").mkdir()
    config = tiny_config(
        tmp_path / "second", model=GUIDED, epochs=1, init_from=str(automatic), lr=1e-12
    )
    config.write_text(config.read_text().replace(str(tmp_path / "second" / "photos"),
                                                 str(tmp_path / "photos")))  # fmt: skip
    second = invoke("train", "--config", config)
    assert second.exit_code == 0, second.output
    before = Colorizer.load(automatic, size=32, precision="fp32")
    after = Colorizer.load(tmp_path / "second" / "run" / "checkpoints" / "last.safetensors",
                           size=32, precision="fp32")  # fmt: skip
    gray = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (20, 1))
    diff = np.abs(np.asarray(before.colorize(gray), int) - np.asarray(after.colorize(gray), int))
    assert diff.max() <= 2  # lr 1e-12: the weights it started from, BatchNorm statistics aside
    missing = tmp_path / "missing.safetensors"
    third = invoke("train", "--config", tiny_config(tmp_path / "second", init_from=str(missing),
                                                    out=str(tmp_path / "third")))  # fmt: skip
    assert third.exit_code == 1 and "cannot start from" in third.output


def saved_guided(path):
    """A small guided eccv16 (:func:`calibrated`, its points' vote as if trained) saved at
    ``path``."""
    from zhangcolor.bins import ab_bins

    torch.manual_seed(0)
    config = TrainConfig(model=ModelConfig(**GUIDED))
    bins = {"centers": ab_bins(), "weights": torch.ones(313)}
    network = calibrated(build_model(config.model))
    with torch.no_grad():
        for p in network.hint_prior.confidence.parameters():
            p.normal_(0, 0.03)
    save_model(path, network, config, bins, step=0)
    return path


def assert_same_colours(ours: Colorizer, other: Colorizer, photo) -> None:
    """The two colorizers' ab agree within 0.01 (of ab units ±110), without points, with one and
    with two. The points' vote makes logits of hundreds, whose float32 rounding (a few 1e-4)
    moves the annealed mean by a few thousandths."""
    red = {"x": 15, "y": 12, "color": "#d02020", "size": 8}
    blue = {"x": 4, "y": 20, "color": "#2040d0", "size": 3}
    for hints in (None, {"points": [red]}, {"points": [red, blue]}):
        a = ours.decode(ours.predict([ours.prepare(photo, hints)])[0])
        b = other.decode(other.predict([other.prepare(photo, hints)])[0])
        assert (a - b).abs().max() <= 0.01, hints


def test_a_guided_network_exports_to_onnx_with_its_hint_input(tmp_path):
    pytest.importorskip("onnxruntime")
    from zhangcolor.model_file import export_model_onnx

    path = saved_guided(tmp_path / "guided.safetensors")
    onnx = export_model_onnx(path, tmp_path / "guided.onnx", size=32)
    ours = Colorizer.load(path, size=32, precision="fp32")
    ort = Colorizer.load(onnx, size=32, backend="onnx")
    assert ort.takes_hints
    photo = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (24, 1))
    assert_same_colours(ours, ort, photo)
    # The points' geodesic search is traced at the export's size: another size is refused.
    with pytest.raises(ValueError, match="runs at 32×32 only"):
        Colorizer.load(onnx, size=64, backend="onnx").colorize(photo)


def test_a_guided_model_on_the_onnx_backend_runs_photos_without_points_in_onnxruntime(
    tmp_path, monkeypatch
):
    """backend onnx (and auto, where it picks onnx) exports a guided torch model's graph
    without points, quick to export and to run; photos with points run its torch network."""
    pytest.importorskip("onnxruntime")
    from zhangcolor.model_file import GuidedOnnx

    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(tmp_path / "cache"))
    path = saved_guided(tmp_path / "guided.safetensors")
    ours = Colorizer.load(path, size=32, precision="fp32")
    ort = Colorizer.load(path, size=32, backend="onnx")
    assert isinstance(ort.model, GuidedOnnx) and ort.takes_hints and ort.backend == "onnx"
    [export] = (tmp_path / "cache").glob("*.onnx")
    assert export.name.endswith("-automatic.onnx")
    photo = np.tile(np.arange(0, 240, 8, dtype=np.uint8), (24, 1))
    assert_same_colours(ours, ort, photo)
    assert ort.model._torch is not None  # the photo with points ran in torch


def test_freeze_automatic_trains_the_hint_branches_only(tmp_path):
    """Started from an automatic U-Net with hints.freeze_automatic, the guided one colorizes
    without points exactly as the automatic one, whatever its branches learnt."""
    unet = {"backbone": "unet", "encoder": "efficientnet-lite0"}
    first = invoke("train", "--config", tiny_config(tmp_path, model=unet, epochs=1))
    assert first.exit_code == 0, first.output
    automatic = tmp_path / "run" / "checkpoints" / "last.safetensors"
    (tmp_path / "second").mkdir()
    config = tiny_config(
        tmp_path / "second",
        model={**unet, "hints": True},
        epochs=1,
        init_from=str(automatic),
        hints={"freeze_automatic": True},
        select_on="val_auc_rebalanced_hints",
    )
    config.write_text(config.read_text().replace(str(tmp_path / "second" / "photos"),
                                                 str(tmp_path / "photos")))  # fmt: skip
    second = invoke("train", "--config", config)
    assert second.exit_code == 0, second.output
    guided = tmp_path / "second" / "run" / "checkpoints" / "last.safetensors"
    before, _ = load_model(automatic)
    after, _ = load_model(guided)
    branches = {k: v for k, v in after.state_dict().items() if "hint_" in k}
    assert branches and any(v.abs().max() > 0 for v in branches.values())  # they learnt
    for name, value in before.state_dict().items():
        assert torch.equal(after.state_dict()[name], value), name  # the rest did not move
    lightness = torch.rand(2, 1, 32, 32) * 100
    with torch.no_grad():
        assert torch.equal(after(lightness), before(lightness))
        assert torch.equal(after(lightness, torch.zeros(2, 3, 32, 32)), before(lightness))


def test_freeze_automatic_needs_a_guided_unet_started_from_a_model():
    with pytest.raises(ValueError, match="freeze_automatic"):
        TrainConfig(
            model=ModelConfig(backbone="unet", hints=True), hints={"freeze_automatic": True}
        )
    with pytest.raises(ValueError, match=r"needs model\.hints"):
        TrainConfig(select_on="val_auc_rebalanced_hints")


def test_a_trained_guided_unet_without_points_is_its_automatic_network():
    """The hint branches are bias-free, so all-zero hint channels add exactly nothing, whatever
    they learnt: without points a guided U-Net skips them, and gives the same output."""
    torch.manual_seed(0)
    guided = build_model(
        ModelConfig(backbone="unet", pretrained=False, hints=True, head="classification")
    )
    with torch.no_grad():
        for name, weight in guided.named_parameters():
            if "hint" in name:
                weight.normal_(0, 0.5)  # as if trained
        guided.eval()
        lightness = torch.rand(2, 1, 32, 32) * 100
        no_points = guided(lightness, torch.zeros(2, 3, 32, 32))
        assert torch.equal(guided(lightness), no_points)
        hints = torch.zeros(2, 3, 32, 32)
        hints[:, :2, 8:12, 8:12], hints[:, 2, 8:12, 8:12] = 0.4, 1.0
        assert not torch.equal(guided(lightness, hints), no_points)  # the branches do work
