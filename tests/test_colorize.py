"""Colorize: full-size output with the input's own L, temperature, the Python API, the bad-input
corpus, and evaluate's metrics."""

from __future__ import annotations

import csv
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from makers import (
    HOSTILE_REASONS,
    bad_corpus,
    blank_png,
    guard_allocations,
    noise,
    solid,
    special_entries,
    text_bomb_png,
)
from PIL import Image
from skimage import color as skcolor
from skimage import data

from zhangcolor.bins import load_bins
from zhangcolor.checkpoint import portable, read_checkpoint, save_model
from zhangcolor.cli import main
from zhangcolor.colorize import Colorizer
from zhangcolor.evaluate import (
    GRAY,
    Accumulator,
    colorfulness,
    evaluate,
    row_key,
    write_report,
    write_tables,
)
from zhangcolor.metrics import AUC_MAX_THRESHOLD
from zhangcolor.models import ModelConfig, build_model
from zhangcolor.options import TrainConfig


def make_checkpoint(path: Path, head: str = "classification", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125, head=head))
    model = build_model(config.model)
    with torch.no_grad():  # sharpen the random logits so the temperature visibly matters
        model.head.weight.mul_(20)
    bins = {k: v.float() for k, v in load_bins().items()}
    save_model(path, model, config, bins, step=0)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def invoke(*args):
    return CliRunner(env={"COLUMNS": "400"}).invoke(
        main, [str(a) for a in args], catch_exceptions=False
    )


def lightness(image: Image.Image) -> np.ndarray:
    return skcolor.rgb2lab(np.asarray(image.convert("RGB")) / 255.0)[..., 0]


def test_output_keeps_the_input_size_and_its_lightness(checkpoint):
    colorizer = Colorizer.load(checkpoint, size=64)
    gray = Image.fromarray(data.camera()[:300, :420])  # 8-bit gray, not square
    out = colorizer.colorize(gray)
    assert out.size == gray.size and out.mode == "RGB"
    assert np.abs(lightness(out) - lightness(gray)).mean() <= 1.0
    photo = Image.fromarray(data.astronaut()[:200, :333])  # color input: its L is what counts
    assert np.abs(lightness(colorizer.colorize(photo)) - lightness(photo)).mean() <= 1.0


@pytest.mark.parametrize("size", [(37, 53), (256, 200), (300, 701)])  # 1, 2 and 3 bands
def test_join_is_bilinear_upsampling_then_lab_to_rgb(size):
    """join's banded matrix upsampling against F.interpolate and the float conversion."""
    from torch.nn import functional as F

    from zhangcolor.color import lab_to_rgb
    from zhangcolor.colorize import join_image

    torch.manual_seed(0)
    h, w = size
    light = torch.rand(1, 1, h, w) * 100
    ab = torch.randn(1, 2, 64, 48) * 40
    upsampled = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
    expected = (lab_to_rgb(torch.cat([light, upsampled], 1))[0] * 255).round()
    ours = torch.from_numpy(np.array(join_image(light, ab))).permute(2, 0, 1).float()
    diff = (ours - expected).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01


def test_lower_temperature_gives_more_colorful_results(checkpoint):
    colorizer = Colorizer.load(checkpoint, size=64)
    gray = Image.fromarray(data.camera()[::4, ::4])
    values = [
        colorfulness(
            torch.from_numpy(np.asarray(colorizer.colorize(gray, t)) / 255.0).permute(2, 0, 1)
        )
        for t in (1.0, 0.38, 0.05)
    ]
    assert values[0] < values[1] < values[2]


def test_python_api_single_batched_and_arrays(checkpoint):
    colorizer = Colorizer.load(checkpoint, size=64)
    images = [Image.fromarray(data.camera()[:100, :150]), np.asarray(data.coffee()[:90, :120])]
    batch = colorizer.colorize_batch(images, temperature=0.38)
    assert [b.size for b in batch] == [(150, 100), (120, 90)]
    assert np.array_equal(np.asarray(batch[0]), np.asarray(colorizer.colorize(images[0])))
    with pytest.raises(ValueError, match=r"\[0.001, 1\]"):
        colorizer.colorize(images[0], temperature=1.5)
    with pytest.raises(ValueError, match="positive"):
        colorizer.colorize(images[0], temperature=0)


def test_batch_in_photo_threads_equals_the_plain_steps_and_restores_torch_threads(
    checkpoint, monkeypatch
):
    """colorize_batch prepares, decodes and joins each photo in a pool of single-threaded
    workers (on a 2-core CPU): the result is the plain, one-thread-of-control pipeline's, each
    photo is decoded in a worker, and torch's thread count comes back."""
    colorizer = Colorizer.load(checkpoint, size=64)
    images = [data.camera()[::5, ::5], data.coffee()[::6, ::5], data.astronaut()[::7, ::7]]
    photos = [colorizer.prepare(image) for image in images]
    ab = colorizer.decode(colorizer.network_output(torch.cat([p.small for p in photos])), 0.3)
    plain = [colorizer.join(p.lightness, ab[i : i + 1]) for i, p in enumerate(photos)]
    threads, decode = [], colorizer.decode

    def spy(output, temperature=None):
        threads.append(torch.get_num_threads())
        return decode(output, temperature)

    monkeypatch.setattr(colorizer, "decode", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batch = colorizer.colorize_batch(images, temperature=0.3)
        assert threads == [1, 1, 1]  # each photo decoded apart, in a one-thread worker
        later = []  # a worker's set_num_threads is the default of threads started after it
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]
    finally:
        torch.set_num_threads(before)
    assert colorizer.colorize_batch([]) == []
    for got, want in zip(batch, plain, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_bad_input_corpus_each_gets_its_reason_and_the_rest_is_done(
    checkpoint, tmp_path, small_bomb
):
    inputs = tmp_path / "in put ☀"  # spaces and unicode in the path
    bad = bad_corpus(inputs)
    solid(inputs / "one.png", (10, 200, 30), size=(1, 1))
    solid(inputs / "bomb.png", (9, 9, 9), size=(100, 100))
    Image.fromarray((np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)).save(
        inputs / "deep.png"
    )
    solid(inputs / "cmyk.jpg", (0, 255, 255, 0), mode="CMYK")
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(inputs / "palette.png", transparency=0)
    solid(inputs / "rgba.png", (200, 10, 10, 128), mode="RGBA")
    solid(inputs / "la.png", (120, 255), mode="LA")
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20), mode="F").save(
        inputs / "float.tif"
    )
    noise(inputs / "sub dir" / "ünï.jpg")

    out = tmp_path / "out"
    result = invoke("colorize", inputs, "-o", out, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 1  # some inputs failed ...
    text = result.output
    for name, reason in [
        (bad["zero-byte"].name, "empty file"),
        (bad["text"].name, "not an image"),
        (bad["truncated"].name, "truncated"),
        ("bomb.png", "decompression bomb"),
    ]:
        assert name in text and reason in text, (name, reason)
    for name in ["one", "deep", "cmyk", "palette", "rgba", "la", "anim", "float", "sub dir/ünï"]:
        assert (out / f"{name}.png").is_file(), name  # ... and every other file is done
    rgba = Image.open(out / "rgba.png")
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0))[3] == 128  # alpha is kept
    deep = np.asarray(Image.open(out / "deep.png").convert("L"), dtype=float)
    assert deep[0].mean() < 30 and deep[-1].mean() > 220  # the 16-bit ramp (row by row) survives


def test_existing_outputs_are_kept_unless_overwrite(checkpoint, tmp_path):
    photo = noise(tmp_path / "a.png")
    out = tmp_path / "out"
    assert invoke("colorize", photo, "-o", out, "--model", checkpoint, "--size", 32).exit_code == 0
    before = (out / "a.png").stat().st_mtime_ns
    result = invoke("colorize", photo, "-o", out, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 0 and "skipped" in result.output
    assert (out / "a.png").stat().st_mtime_ns == before
    result = invoke(
        "colorize",
        photo,
        "-o",
        out,
        "--model",
        checkpoint,
        "--size",
        32,
        "--overwrite",
        "--format",
        "jpg",
        "--side-by-side",
    )
    side = Image.open(out / "a.jpg")
    assert result.exit_code == 0 and side.size == (96, 32)


def test_same_named_files_in_different_folders_get_their_own_outputs(checkpoint, tmp_path):
    """Outputs mirror each input's path from the inputs' common root, so nothing collides; an
    input whose output another one already claims is failed with the reason, never "done"."""
    a, b = noise(tmp_path / "a" / "x.jpg", seed=1), noise(tmp_path / "b" / "x.jpg", seed=2)
    out = tmp_path / "out"
    result = invoke("colorize", a, b, "-o", out, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 0, result.output
    first, second = Image.open(out / "a" / "x.png"), Image.open(out / "b" / "x.png")
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # both results kept
    assert not (out / "x.png").exists()

    out2 = tmp_path / "out2"  # two folders holding x.jpg, given as folders
    result = invoke("colorize", a.parent, b.parent, "-o", out2, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 0 and {
        p.relative_to(out2).as_posix() for p in out2.rglob("*.png")
    } == {
        "a/x.png",
        "b/x.png",
    }

    noise(tmp_path / "a" / "x.png", seed=3)  # x.jpg and x.png would both give x.png
    out3 = tmp_path / "out3"
    result = invoke("colorize", tmp_path / "a", "-o", out3, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 1
    assert "already that of" in result.output and "1 done" in result.output
    assert len(list(out3.rglob("*.png"))) == 1


def test_a_rerun_into_the_input_folder_does_not_colorize_its_own_outputs(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for i in range(2):
        noise(photos / f"p{i}.jpg", seed=i)
    out = photos / "colorized"  # the default --out, inside the folder being colorized
    for _ in range(2):
        result = invoke("colorize", photos, "-o", out, "--model", checkpoint, "--size", 32)
        assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["p0.png", "p1.png"]
    glob_run = invoke("colorize", f"{photos}/**/*", "-o", out, "--model", checkpoint, "--size", 32)
    assert glob_run.exit_code == 0 and "2 skipped" in glob_run.output  # not 4: outputs left out


def test_unwritable_output_missing_model_and_bad_temperature(checkpoint, tmp_path):
    photo = noise(tmp_path / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = invoke("colorize", photo, "-o", blocker / "out", "--model", checkpoint, "--size", 32)
    assert result.exit_code == 1 and "cannot write" in result.output
    result = invoke("colorize", photo, "--model", tmp_path / "missing.safetensors")
    assert result.exit_code == 1 and "no model file" in result.output
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    result = invoke("colorize", photo, "--model", corrupt)
    assert result.exit_code == 1 and "not a readable" in result.output
    result = invoke("colorize", photo, "--model", checkpoint, "--temperature", "1.5")
    assert result.exit_code == 2 and "[0.001, 1]" in result.output
    assert invoke("colorize", tmp_path / "nothing*.png", "--model", checkpoint).exit_code == 1


def test_regression_models_ignore_the_temperature_with_a_warning(tmp_path):
    model = make_checkpoint(tmp_path / "reg.safetensors", head="regression")
    photo = noise(tmp_path / "a.png")
    result = invoke(
        "colorize", photo, "-o", tmp_path / "o", "--model", model, "-t", "0.5", "--size", 32
    )
    assert result.exit_code == 0 and "ignored" in result.output


def test_auc_is_100_for_a_perfect_prediction_and_matches_numpy_for_gray():
    rng = np.random.default_rng(0)
    true_ab = torch.from_numpy(rng.uniform(-60, 60, (2, 16, 16))).float()
    lightness = torch.full((1, 16, 16), 60.0)
    weight = torch.from_numpy(rng.uniform(0.5, 2.0, (16, 16))).float()
    perfect, gray = Accumulator(), Accumulator()
    perfect.add(true_ab, lightness, true_ab, weight)
    gray.add(torch.zeros_like(true_ab), lightness, true_ab, weight)
    assert perfect.summary()["auc"] == pytest.approx(100.0)
    assert perfect.summary()["auc_rebalanced"] == pytest.approx(100.0)
    norms = np.linalg.norm(true_ab.numpy(), axis=0).ravel()
    expected = np.mean([(norms <= t).mean() for t in range(151)]) * 100
    w = weight.numpy().ravel()
    expected_rebalanced = np.mean([(w * (norms <= t)).sum() / w.sum() for t in range(151)]) * 100
    assert gray.summary()["auc"] == pytest.approx(expected)
    assert gray.summary()["auc_rebalanced"] == pytest.approx(expected_rebalanced)


def test_colorfulness_matches_hasler_suesstrunk_by_hand():
    rgb = np.random.default_rng(1).random((3, 8, 8))
    r, g, b = rgb * 255
    rg, yb = r - g, 0.5 * (r + g) - b
    expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert colorfulness(torch.from_numpy(rgb)) == pytest.approx(expected)
    assert colorfulness(torch.full((3, 4, 4), 0.5)) == pytest.approx(0.0)


def test_evaluate_end_to_end_reports_gray_and_each_model(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for i in range(3):
        noise(photos / f"{i}.png", size=(40, 40), seed=i)
    solid(photos / "gray.png", (80, 80, 80))
    out = tmp_path / "report"
    result = invoke(
        "evaluate",
        photos,
        "--model",
        checkpoint,
        "--temperatures",
        "1,0.38",
        "--out",
        out,
        "--size",
        32,
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 3 and report["skipped"][0]["reason"] == "grayscale"
    models = [(r["model"], r["temperature"]) for r in report["rows"]]
    assert models == [("Gray (ab = 0)", None), (str(checkpoint), 1.0), (str(checkpoint), 0.38)]
    for name in ["report.md", "auc_curves.png", "temperature_sweep.png", "metrics.json"]:
        assert (out / name).is_file()
    assert "Gray" in result.output and "AuC" in result.output
    direct = evaluate(photos, [str(checkpoint)], temperatures=(0.38,), size=32)
    write_report(direct, tmp_path / "again")
    assert direct["rows"][1]["auc"] == pytest.approx(report["rows"][2]["auc"])


def test_the_auc_curves_show_each_classification_model_at_the_papers_t_or_the_nearest(
    tmp_path, monkeypatch
):
    """The AuC-curve plot shows one curve per model: a classification model at the paper's T
    when it was evaluated, else at the evaluated T closest to it, and its label says which T
    (a sweep without 0.38 once dropped every classification model from the plot)."""
    import matplotlib.figure

    plotted = {}

    def savefig(fig, path, **kwargs):
        plotted[Path(path).name] = [line.get_label() for line in fig.axes[0].lines]

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    metrics = dict.fromkeys(("auc", "auc_rebalanced", "psnr", "ssim", "colorfulness"), 50.0)
    metrics.update(colorfulness_truth=50.0, colorfulness_ratio=1.0)
    curve = [50.0] * (AUC_MAX_THRESHOLD + 1)
    rows = [
        {"model": model, "label": model, "temperature": t, **metrics, "curve": curve}
        for model, t in [
            (GRAY, None),
            ("a", 1.0),
            ("a", 0.29),
            ("a", 0.14),
            ("b", 1.0),
            ("b", 0.38),
            ("regression", None),
        ]
    ]
    report = {"data": "photos", "split": "val", "size": 32, "images": 1, "rows": rows}
    write_report(report, tmp_path)
    assert plotted["auc_curves.png"] == [GRAY, "a (T = 0.29)", "b (T = 0.38)", "regression"]


def test_evaluate_skips_and_counts_hostile_files(checkpoint, tmp_path, monkeypatch):
    """A zTXt bomb (ValueError in Pillow), a 2×44,000,000 PNG, and a folder, a FIFO and a broken
    link named like images are skipped with their reasons; the photos are scored."""
    guard_allocations(monkeypatch)
    photos = tmp_path / "photos"
    for i in range(2):
        noise(photos / f"{i}.png", size=(40, 40), seed=i)
    text_bomb_png(photos / "text.png")
    blank_png(photos / "strip.png", 2, 44_000_000)
    special_entries(photos)
    out = tmp_path / "report"
    flags = ("--temperatures", "0.38", "--out", out, "--size", 32)
    result = invoke("evaluate", photos, "--model", checkpoint, *flags)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert report["images"] == 2 and len(reasons) == 5, reasons
    for name, reason in HOSTILE_REASONS.items():
        assert reason in reasons[name], name


def test_write_tables_gives_flat_metrics_and_the_curves_as_columns(tmp_path):
    curve = [float(t) for t in range(AUC_MAX_THRESHOLD + 1)]
    row = {"auc": 80.0, "auc_rebalanced": 60.0, "psnr": 20.0, "ssim": 0.8, "colorfulness": 30.0}
    row |= {"colorfulness_truth": 40.0, "colorfulness_ratio": 0.75}
    rows = [
        {"model": GRAY, "label": GRAY, "temperature": None, **row, "curve": curve},
        {"model": "runs/a/checkpoints/best.safetensors", "label": "a/best", "temperature": 1.0},
        {"model": "runs/a/checkpoints/best.safetensors", "label": "a/best", "temperature": 0.38},
        {"model": "reg.safetensors", "label": "reg", "temperature": None},
    ]
    for i, r in enumerate(rows[1:], 1):
        r |= {**row, "auc": 80.0 + i, "curve": [c + i for c in curve]}
    write_tables({"images": 5, "rows": rows}, tmp_path)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    keys = ["gray", "a/best T=1", "a/best T=0.38", "reg"]
    assert list(metrics) == ["images", "colorfulness_truth", *keys]
    assert [row_key(r) for r in rows] == keys
    assert metrics["a/best T=0.38"]["auc"] == 82.0 and metrics["colorfulness_truth"] == 40.0
    assert all(isinstance(v, float) for k in keys for v in metrics[k].values())
    with (tmp_path / "auc_curves.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == AUC_MAX_THRESHOLD + 1 and table[7]["threshold"] == "7"
    assert [float(table[7][k]) for k in keys] == [7.0, 8.0, 9.0, 10.0]
    with (tmp_path / "temperature_sweep.csv").open() as f:
        sweep = list(csv.DictReader(f))
    assert [(s["model"], float(s["temperature"]), float(s["auc"])) for s in sweep] == [
        ("a/best", 1.0, 81.0),
        ("a/best", 0.38, 82.0),
    ]


def test_package_model_half_keeps_predictions_and_writes_provenance(checkpoint, tmp_path):
    from safetensors.torch import load_file

    target = tmp_path / "weights" / "model.safetensors"
    result = invoke("package-model", checkpoint, "-o", target, "--half")
    assert result.exit_code == 0, result.output
    assert all(
        v.dtype == torch.float16
        for k, v in load_file(str(target)).items()
        if "num_batches" not in k
    )
    info = json.loads(target.with_suffix(".json").read_text())
    assert info["dtype"] == "float16" and len(info["sha256"]) == 64 and "config" in info
    # a relative path stays; an absolute one, of the training machine, is cut to its name
    trained = read_checkpoint(checkpoint)[1]["training"]
    assert info["config"]["out"] == trained["out"] == read_checkpoint(target)[1]["training"]["out"]
    shipped = portable({"training": {"out": "/home/me/runs/a", "bins": "bins/b.npz", "seed": 1}})
    assert shipped["training"] == {"out": "a", "bins": "bins/b.npz", "seed": 1}
    gray = Image.fromarray(data.camera()[::8, ::8])
    full = np.asarray(
        Colorizer.load(checkpoint, size=64, precision="fp32").colorize(gray), dtype=float
    )
    half = np.asarray(Colorizer.load(target, size=64, precision="fp32").colorize(gray), dtype=float)
    assert np.abs(full - half).mean() < 1.0  # fp16 weights: under one 8-bit level on average
    assert invoke("package-model", noise(tmp_path / "x.png"), "-o", tmp_path / "y").exit_code == 1


def test_package_model_never_writes_its_provenance_over_the_model(checkpoint, tmp_path):
    """`package-model X -o out.json` once wrote the model to out.json and then
    its provenance, out.json too, over it. The packaged model must be a .safetensors file (its
    provenance is TARGET.json beside it), so the two never share a name. (Refused since
    checkpoint.package_model required the suffix; this test holds it.)"""
    source = tmp_path / "source.safetensors"
    source.write_bytes(checkpoint.read_bytes())
    for target in (tmp_path / "out.json", tmp_path / "out", tmp_path / "out.safetensors.json"):
        result = invoke("package-model", source, "-o", target)
        assert result.exit_code == 1 and "must be a .safetensors file" in result.output
        assert not target.exists()
    assert source.read_bytes() == checkpoint.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.safetensors"]


def test_model_file_commands_never_write_over_an_existing_target(checkpoint, tmp_path):
    """package-model (the model and its provenance JSON) and export onnx refuse a target that
    exists, leaving it as it was, and replace it with --overwrite."""
    target = tmp_path / "model.safetensors"
    provenance = target.with_suffix(".json")
    assert invoke("package-model", checkpoint, "-o", target).exit_code == 0
    kept = {p: p.read_bytes() for p in (target, provenance)}
    result = invoke("package-model", checkpoint, "-o", target, "--half")
    assert result.exit_code == 1, result.output
    assert f"{target} exists: give --overwrite to replace it" in result.output
    assert {p: p.read_bytes() for p in kept} == kept
    target.unlink()  # the provenance alone is refused too
    result = invoke("package-model", checkpoint, "-o", target, "--half")
    assert result.exit_code == 1 and f"{provenance} exists" in result.output, result.output
    result = invoke("package-model", checkpoint, "-o", target, "--half", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads(target.with_suffix(".json").read_text())["dtype"] == "float16"

    pytest.importorskip("onnx")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"mine")
    result = invoke("export", "onnx", "--model", checkpoint, "-o", onnx, "--size", "32")
    assert result.exit_code == 1 and "exists" in result.output and onnx.read_bytes() == b"mine"
    result = invoke(
        "export", "onnx", "--model", checkpoint, "-o", onnx, "--size", "32", "--overwrite"
    )
    assert result.exit_code == 0 and onnx.read_bytes() != b"mine", result.output


def test_the_shipped_default_model_colorizes_offline():
    import zhangcolor

    colorizer = zhangcolor.Colorizer.load("default")  # the package-level API
    gray = Image.fromarray(data.camera()[:120, :160])
    out = colorizer.colorize(gray)
    assert out.size == gray.size
    assert np.abs(lightness(out) - lightness(gray)).mean() <= 1.0
    assert colorfulness(torch.from_numpy(np.asarray(out) / 255.0).permute(2, 0, 1)) > 1.0


def test_the_calibrated_temperature_matches_colorfulness_within_half_a_point_of_auc():
    from zhangcolor.calibrate import choose_temperature

    rows = [
        {"temperature": 0.2, "auc_rebalanced": 60.0, "colorfulness_ratio": 1.6},
        {"temperature": 0.38, "auc_rebalanced": 60.0, "colorfulness_ratio": 1.3},
        {"temperature": 0.5, "auc_rebalanced": 59.6, "colorfulness_ratio": 1.1},
        {"temperature": 0.7, "auc_rebalanced": 59.2, "colorfulness_ratio": 1.0},  # > 0.5 lost
        {"temperature": 1.0, "auc_rebalanced": 58.0, "colorfulness_ratio": 0.7},
    ]
    assert choose_temperature(rows)["temperature"] == 0.5
    rows[3]["auc_rebalanced"] = 59.8
    assert choose_temperature(rows)["temperature"] == 0.7


def test_calibrate_then_package_makes_the_models_own_t_the_default(checkpoint, tmp_path):
    photos = tmp_path / "photos"
    for i in range(3):
        noise(photos / f"{i}.png", size=(40, 40), seed=i)
    result = invoke("calibrate", photos, "--model", checkpoint, "--split", "all", "--size", 32)
    assert result.exit_code == 0, result.output
    found = re.search(r"Calibrated T = ([\d.]+)", result.output)
    assert found and "← chosen" in result.output
    t = float(found.group(1))
    packaged = tmp_path / "calibrated.safetensors"
    assert invoke("package-model", checkpoint, "-o", packaged, "--temperature", t).exit_code == 0
    colorizer = Colorizer.load(packaged, size=32)
    assert colorizer.temperature == t
    image = Image.open(photos / "0.png").convert("RGB")  # its L is what counts, as in the CLI
    by_default = np.asarray(colorizer.colorize(image))
    assert np.array_equal(by_default, np.asarray(colorizer.colorize(image, temperature=t)))
    if t != 0.38:
        assert not np.array_equal(by_default, np.asarray(colorizer.colorize(image, 0.38)))
    out = tmp_path / "o"
    assert (
        invoke("colorize", photos / "0.png", "-o", out, "--model", packaged, "--size", 32).exit_code
        == 0
    )
    assert np.array_equal(np.asarray(Image.open(out / "0.png")), by_default)  # the CLI too
