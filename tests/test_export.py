"""ONNX export: the network alone, dynamic batch, onnxruntime against torch on the ab output."""

import errno

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from makers import noise
from PIL import Image
from test_colorize import make_checkpoint

from zhangcolor.cli import main
from zhangcolor.colorize import Colorizer
from zhangcolor.export import OnnxNetwork
from zhangcolor.model_file import export_model_onnx


@pytest.mark.parametrize("head", ["classification", "regression"])
def test_onnxruntime_matches_torch_on_ab_within_1e_3_for_any_batch(tmp_path, head):
    checkpoint = make_checkpoint(tmp_path / "m.safetensors", head=head)
    path = export_model_onnx(checkpoint, tmp_path / "m.onnx", size=64)
    ours = Colorizer.load(checkpoint, size=64, precision="fp32")
    ort = Colorizer.load(path, size=64, backend="onnx")
    assert ort.kind == head and torch.equal(ort.centers, ours.centers)
    for batch in (1, 3):
        lightness = torch.rand(batch, 1, 64, 64) * 100
        a = ours.decode(ours.network_output(lightness), 0.38)
        b = ort.decode(ort.network_output(lightness), 0.38)
        assert a.shape == b.shape == (batch, 2, 16, 16)
        assert (a - b).abs().max() <= 1e-3


def test_colorize_cli_with_the_onnx_backend(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "m.safetensors")
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(
        main, ["export", "onnx", "--model", str(checkpoint), "-o", str(tmp_path / "m.onnx")]
    )
    assert result.exit_code == 0, result.output
    photo = noise(tmp_path / "in.png", size=(40, 30))
    for backend, model in (("onnx", tmp_path / "m.onnx"), ("torch", checkpoint)):
        args = ["colorize", str(photo), "-o", str(tmp_path / backend), "--backend", backend,
                "--model", str(model), "--size", "32", "--precision", "fp32"]  # fmt: skip
        assert runner.invoke(main, args).exit_code == 0
    a = np.asarray(Image.open(tmp_path / "onnx" / "in.png"), dtype=float)
    b = np.asarray(Image.open(tmp_path / "torch" / "in.png"), dtype=float)
    assert np.abs(a - b).max() <= 1.0  # at most one 8-bit level apart


def test_onnx_files_without_zhangcolor_metadata_are_refused(tmp_path):
    checkpoint = make_checkpoint(tmp_path / "m.safetensors")
    path = export_model_onnx(checkpoint, tmp_path / "m.onnx", size=32)
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not exported by zhangcolor"):
        OnnxNetwork(tmp_path / "plain.onnx")
    with pytest.raises(FileNotFoundError):
        OnnxNetwork(tmp_path / "missing.onnx")


@pytest.mark.parametrize(
    ("patched", "error", "words"),
    [
        ("onnx.save", errno.ENOSPC, "No space left on device"),  # after torch wrote the file
        ("zhangcolor.files.tempfile.mkstemp", errno.EACCES, "Permission denied"),  # read-only
    ],
)
def test_a_full_or_read_only_output_fails_clearly_and_leaves_no_file(
    tmp_path, monkeypatch, patched, error, words
):
    checkpoint = make_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "out"
    out.mkdir()

    def fail(*args, **kwargs):
        raise OSError(error, words)

    monkeypatch.setattr(patched, fail)
    target = out / "m.onnx"
    args = ["export", "onnx", "--model", str(checkpoint), "-o", str(target), "--size", "32"]
    result = CliRunner(env={"COLUMNS": "400"}).invoke(main, args)
    assert result.exit_code == 1 and f"cannot write {target}: {words}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(out.iterdir()) == []


def _graph(tmp_path, nodes, output_shape, record) -> str:
    """An .onnx file of ``nodes`` from ``lightness (B, 1, H, W)`` to ``output``, carrying
    ``record`` as a zhangcolor export does."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "hostile",
        [helper.make_tensor_value_info("lightness", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    entry = model.metadata_props.add()
    entry.key, entry.value = "zhangcolor.model", record.to_json()
    path = tmp_path / "hostile.onnx"
    onnx.save(model, str(path))
    return str(path)


def _tiny_record():
    from zhangcolor.bins import load_bins
    from zhangcolor.model_record import make_record
    from zhangcolor.models import ModelConfig

    bins = {k: v.float() for k, v in load_bins().items()}
    return make_record(ModelConfig(backbone="eccv16", width=0.125), bins)


def test_an_onnx_graph_that_asks_for_320_gb_fails_each_photo_not_the_run(tmp_path):
    """A graph whose output is 320 GB (zeros of a shape taken from its input,
    so nothing is known before it runs) ended a folder run with onnxruntime's traceback. Each
    photo of the batch fails with the reason; the run ends with status 1 and its table. (In a
    process whose address space is capped at 24 GB, so the allocation fails on any system.)"""
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["lightness"], ["shape"]),
        helper.make_node(
            "Constant",
            [],
            ["scale"],
            value=helper.make_tensor("scale", TensorProto.INT64, [4], [1, 313, 500, 500]),
        ),
        helper.make_node("Mul", ["shape", "scale"], ["huge"]),  # (B, 313, 500 H, 500 W)
        helper.make_node("ConstantOfShape", ["huge"], ["output"]),
    ]
    model = _graph(tmp_path, nodes, ["b", "c", "h", "w"], _tiny_record())
    inputs = tmp_path / "in"
    for i in range(3):
        noise(inputs / f"{i}.png", size=(40, 30), seed=i)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (24 << 30, 24 << 30))\n"
        "from zhangcolor.cli import main\n"
        f"main(['colorize', {str(inputs)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', "
        f"{model!r}, '--backend', 'onnx', '--size', '32', '--batch-size', '2'])\n"
    )
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "0 done, 0 skipped, 3 failed" in done.stdout and "Traceback" not in done.stderr
    assert done.stdout.count("the network failed on its batch") == 3, done.stdout


def test_an_onnx_graph_that_does_not_fit_its_record_is_refused_at_load(tmp_path):
    """Checked when the model loads, not at the first photo."""
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    def constant(name, dims, values):
        tensor = helper.make_tensor(name, TensorProto.FLOAT, dims, values)
        return helper.make_node("Constant", [], [name], value=tensor)

    five = [
        constant("w", [5, 1, 1, 1], [1.0] * 5),
        helper.make_node("Conv", ["lightness", "w"], ["output"]),
    ]
    path = _graph(tmp_path, five, ["b", 5, "h", "w"], _tiny_record())
    with pytest.raises(
        ValueError,
        match=r"its graph gives 5 channels, and its record's classification head needs 313",
    ):
        OnnxNetwork(path)
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        main, ["colorize", str(noise(tmp_path / "a.png")), "--model", path, "--backend", "onnx"]
    )
    assert result.exit_code == 1 and "cannot load the model" in result.output


def test_onnx_colorizes_without_a_writable_cache(tmp_path, monkeypatch):
    """With $ZHANGCOLOR_CACHE a file (or read-only), the export it needs goes
    into a temporary folder, with a warning, and colorize --backend onnx works."""
    pytest.importorskip("onnxruntime")
    checkpoint = make_checkpoint(tmp_path / "m.safetensors", seed=3)
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(blocker))
    photo = noise(tmp_path / "in.png", size=(40, 30))
    args = ["colorize", str(photo), "-o", str(tmp_path / "out"), "--backend", "onnx",
            "--model", str(checkpoint), "--size", "32"]  # fmt: skip
    with pytest.warns(UserWarning, match="made it in a temporary folder, deleted at exit"):
        result = CliRunner(env={"COLUMNS": "400"}).invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "in.png").is_file()
