"""A model's identity apart from its training run: the versioned record, one reader for every
kind of model file, and models written by zhangcolor 0.1.0 still loading and colorizing as
they did then."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from zhangcolor.bins import ab_bins
from zhangcolor.checkpoint import FORMAT, LEGACY_FORMAT, read_checkpoint, save_model
from zhangcolor.colorize import Colorizer
from zhangcolor.model_file import ModelFile, load_model, read_model
from zhangcolor.model_record import (
    RECORD_VERSION,
    ModelRecord,
    ModelRecordError,
    make_record,
    record_from_json,
)
from zhangcolor.models import build_model
from zhangcolor.options import Head, ModelConfig, TrainConfig

LEGACY = Path(__file__).parent / "data" / "legacy-0.1.0"
TINY = ModelConfig(backbone="eccv16", width=0.03)


def ramp() -> np.ndarray:
    return np.asarray(Image.open(LEGACY / "ramp.png"))


def assert_same_image(got: Image.Image, expected_file: Path) -> None:
    """The pixels written then, but for a level at a rounding boundary on another CPU."""
    expected = np.asarray(Image.open(expected_file), dtype=int)
    diff = np.abs(np.asarray(got, dtype=int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def rewrite(source: Path, target: Path, **changes: str) -> Path:
    """``source``'s weights with its metadata changed."""
    with safe_open(str(source), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = {**f.metadata(), **changes}
    save_file(state, str(target), metadata=meta)
    return target


def bins() -> dict[str, torch.Tensor]:
    return {"centers": ab_bins(), "weights": torch.rand(313) + 0.5}


# ----------------------------------------------------------------------------- 0.1.0's files


@pytest.mark.parametrize(
    ("name", "head", "temperature"),
    [
        ("tiny-0.1.0.safetensors", Head.CLASSIFICATION, 0.5),
        ("tiny-regression-0.1.0.safetensors", Head.REGRESSION, 0.38),
    ],
)
def test_a_checkpoint_of_0_1_0_loads_and_colorizes_as_it_did(name, head, temperature):
    colorizer = Colorizer.load(LEGACY / name, precision="fp32", size=64)
    assert colorizer.kind is head and colorizer.temperature == temperature
    assert metadata(LEGACY / name)["format"] == LEGACY_FORMAT
    assert_same_image(
        colorizer.colorize(ramp()), LEGACY / name.replace(".safetensors", ".expected.png")
    )


def test_an_onnx_export_of_0_1_0_loads_and_colorizes_as_it_did():
    pytest.importorskip("onnxruntime")
    colorizer = Colorizer.load(LEGACY / "tiny-0.1.0.onnx", size=64, backend="onnx")
    assert colorizer.backend == "onnx" and colorizer.temperature == 0.5
    assert torch.equal(colorizer.record.centers, ab_bins())
    assert_same_image(colorizer.colorize(ramp()), LEGACY / "tiny-0.1.0.expected.png")


def test_a_0_1_0_checkpoint_with_an_unknown_training_option_loads(tmp_path):
    """Its training config is provenance: an option this version never had, or lost, is no
    reason to refuse the model."""
    source = LEGACY / "tiny-0.1.0.safetensors"
    config = json.loads(metadata(source)["config"])
    config.update(option_from_the_future=3, cache_max_gb="gone")
    del config["lr"]
    config["model"]["added_later"] = True  # a network field this version does not know
    changed = rewrite(source, tmp_path / "changed.safetensors", config=json.dumps(config))
    colorizer = Colorizer.load(changed, precision="fp32", size=64)
    assert_same_image(colorizer.colorize(ramp()), LEGACY / "tiny-0.1.0.expected.png")
    assert read_model(changed).provenance["training"]["option_from_the_future"] == 3


def test_the_shipped_model_reads_its_record():
    file = read_model("default")
    network = file.record.network
    assert (network.backbone, network.encoder, network.head) == (
        "unet",
        "efficientnet-lite0",
        Head.CLASSIFICATION,
    )
    assert file.record.temperature == 0.36 and file.record.centers.shape == (313, 2)
    assert not network.pretrained and file.name == "default"


# ----------------------------------------------------------------------------- this version


def test_a_new_checkpoint_stores_the_record_apart_from_its_provenance(tmp_path):
    config = TrainConfig(model=TINY, data="photos", lr=1e-3)
    model = build_model(config.model)
    path = tmp_path / "model.safetensors"
    save_model(path, model, config, bins(), step=7)
    meta = metadata(path)
    assert meta["format"] == FORMAT and set(meta) == {"format", "model", "provenance"}
    assert json.loads(meta["model"])["version"] == RECORD_VERSION
    provenance = json.loads(meta["provenance"])
    assert provenance["step"] == 7 and provenance["training"]["lr"] == 1e-3
    net, file = load_model(path)
    assert isinstance(file, ModelFile) and file.kind == "safetensors"
    for key, value in model.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_unknown_or_damaged_provenance_never_stops_loading(tmp_path):
    config = TrainConfig(model=TINY)
    path = tmp_path / "model.safetensors"
    save_model(path, build_model(config.model), config, bins(), step=1)
    provenance = json.loads(metadata(path)["provenance"])
    provenance["training"]["renamed_option"] = {"anything": [1, 2]}
    for text in (json.dumps(provenance), "not json {", "[1, 2]"):
        changed = rewrite(path, tmp_path / "changed.safetensors", provenance=text)
        assert read_checkpoint(changed)[0].network == read_checkpoint(path)[0].network
        Colorizer.load(changed, size=32)


def test_a_record_from_a_newer_zhangcolor_is_a_clear_error(tmp_path):
    config = TrainConfig(model=TINY)
    path = tmp_path / "model.safetensors"
    save_model(path, build_model(config.model), config, bins(), step=1)
    record = json.loads(metadata(path)["model"])
    record["version"] = RECORD_VERSION + 1
    newer = rewrite(path, tmp_path / "newer.safetensors", model=json.dumps(record))
    with pytest.raises(ValueError, match=rf"version {RECORD_VERSION + 1}.*newer zhangcolor"):
        Colorizer.load(newer)


def test_the_record_round_trips_through_json():
    record = make_record(TINY, bins(), temperature=0.42)
    again = record_from_json(record.to_json())
    assert again.network == record.network and again.temperature == 0.42
    assert torch.equal(again.centers, record.centers) and torch.equal(again.weights, record.weights)
    assert again.color_space == "lab"
    rgb = make_record(ModelConfig(backbone="eccv16", head="rgb-regression"), bins())
    assert record_from_json(rgb.to_json()).color_space == "rgb"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"centers": [[float("nan"), 0.0]] * 313}, "not a finite number"),
        ({"centers": [[5000.0, 0.0]] * 313}, "within ±200"),
        ({"centers": [["a", "b"]] * 313}, "'a' at 0, not a finite number"),
        ({"centers": "[[0, 0]]"}, "1 to 4096 pairs"),
        ({"weights": [-1.0] * 313}, "must lie in (0, 1e+06]"),
        ({"weights": [1.0] * 3}, "3 class weights for 313 bin centres"),
        ({"temperature": float("nan")}, "outside [0.001, 1]"),
        ({"temperature": 5}, "outside [0.001, 1]"),
        ({"temperature": "hot"}, "not a number"),
        ({"network": {"backbone": "eccv16", "head": "classification", "dropout": 1}}, "dropout"),
        ({"network": {"backbone": "eccv17"}}, "backbone='eccv17'"),
        ({"network": {"backbone": "eccv16", "width": 200}}, "width=200 (must be in (0, 8])"),
        ({"color_space": "rgb"}, "predicts in lab"),
        ({"extra": 1}, "unknown fields: extra"),
        ({"version": "two"}, "no valid version"),
        (  # decoding used to fail at the first photo
            {"centers": [[0.0, 0.0]] * 5, "weights": [1.0] * 5},
            "classification head has 313 classes, and its record 5 bin centres",
        ),
    ],
)
def test_damaged_records_are_refused_at_load_with_what_is_wrong(change, words):
    values = json.loads(make_record(TINY, bins()).to_json())
    values.update(change)
    with pytest.raises(ModelRecordError) as caught:
        record_from_json(json.dumps(values))
    assert words in str(caught.value)
    assert len(str(caught.value)) < 300  # no value is repeated at length


def test_every_kind_of_model_file_goes_through_the_one_reader(tmp_path):
    onnx = pytest.importorskip("onnxruntime") and tmp_path / "copy.onnx"
    shutil.copy(LEGACY / "tiny-0.1.0.onnx", onnx)
    kinds = {read_model(p).kind for p in (LEGACY / "tiny-0.1.0.safetensors", onnx)}
    assert kinds == {"safetensors", "onnx"}
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match="not a model file"):
        read_model(odd)
    with pytest.raises(FileNotFoundError):
        read_model(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a zhangcolor model"):
        read_model(foreign)


def test_a_record_knows_its_head_and_temperature():
    record = make_record(TINY, bins())
    assert isinstance(record, ModelRecord) and record.head is Head.CLASSIFICATION
    assert record.with_temperature(0.2).temperature == 0.2
    with pytest.raises(ModelRecordError, match="outside"):
        record.with_temperature(2.0)


# ----------------------------------------------------------------------------- damaged files


def _changed(tmp_path: Path, **changes: str | None) -> Path:
    """A good model file with metadata entries changed (None: removed)."""
    from test_colorize import make_checkpoint

    good = make_checkpoint(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = {**f.metadata(), **changes}
    target = tmp_path / "bad.safetensors"
    save_file(state, str(target), metadata={k: v for k, v in meta.items() if v is not None})
    return target


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model": "{not json"}, "not valid JSON"),
        ({"model": None}, "not text"),
        ({"model": "[1, 2]"}, "not a mapping"),
        ({"format": None}, "not a zhangcolor model"),
    ],
    ids=["bad-json", "no-record", "record-list", "no-format"],
)
def test_a_damaged_record_is_a_clear_error_not_a_traceback(tmp_path, changes, words):
    from click.testing import CliRunner
    from makers import noise

    from zhangcolor.cli import main

    bad = _changed(tmp_path, **changes)
    with pytest.raises(ValueError, match=rf"bad\.safetensors.*{words}"):
        read_model(bad)
    photo = noise(tmp_path / "in" / "photo.png")
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        main, ["colorize", str(photo), "-o", str(tmp_path / "out"), "--model", str(bad)]
    )
    assert result.exit_code == 1 and words in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback


@pytest.mark.parametrize(
    ("network", "words"),
    [({"backbone": "eccv16", "width": 8}, "width 8"), ({"head": "regression"}, "regression")],
)
def test_a_record_of_another_network_fails_fast_before_building_it(
    tmp_path, monkeypatch, network, words
):
    """The weights are for width 0.125; a record of width 8 (8.2 GB) must be refused from the
    file's header, without building the network it describes (width 200 is refused by the
    record's own check: at most 8)."""
    import time

    import zhangcolor.checkpoint as checkpoint

    real = checkpoint.build_model

    def guarded(config):
        if torch.get_default_device().type != "meta" and config.width > 1:
            raise AssertionError(f"built a network of width {config.width} before checking it")
        return real(config)

    monkeypatch.setattr(checkpoint, "build_model", guarded)
    good = _changed(tmp_path)
    record = json.loads(metadata(good)["model"])
    record["network"].update(network)
    bad = _changed(tmp_path, model=json.dumps(record))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"describes a network .*{words}.* do not fit"):
        load_model(bad)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("command", ["convert-weights", "colorize"])
def test_a_fifo_given_as_a_model_is_named_and_never_opened(tmp_path, command):
    """Convert-weights on a FIFO ended in a traceback that said "no model file"
    (opening it would block until something wrote into it). Both commands say what it is, in a
    fresh process that must end within the timeout."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "model.pth"
    os.mkfifo(fifo)
    args = {
        "convert-weights": [str(fifo), "-o", str(tmp_path / "out.safetensors")],
        "colorize": [str(tmp_path), "--model", str(fifo), "-o", str(tmp_path / "out")],
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", "zhangcolor", command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert done.returncode == 1, done.stderr
    assert "is a FIFO, not a model file" in done.stderr and "Traceback" not in done.stderr
