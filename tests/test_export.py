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
