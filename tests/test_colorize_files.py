"""The folder pipeline: decoding and writing in threads around the network gives the files of a
one-at-a-time loop, one outcome per input in any order, within a bounded memory; the device
join; PNG levels; the auto backend."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from makers import (
    HOSTILE_REASONS,
    bad_corpus,
    blank_png,
    guard_allocations,
    noise,
    photo_bytes,
    special_entries,
    text_bomb_png,
)
from PIL import Image
from skimage import color as skcolor
from test_colorize import invoke, make_checkpoint

import zhangcolor.colorize as colorize_module
import zhangcolor.colorize_files as colorize_files_module
from zhangcolor.colorize import Colorizer, join_image, resolve_backend
from zhangcolor.colorize_files import OutputOptions, colorize_files, plan_jobs
from zhangcolor.device import resolve_precision
from zhangcolor.images import finished_image, load_image, write_image

SIZES = [(48, 32), (40, 56), (33, 33), (64, 20), (30, 45), (50, 50), (21, 70), (44, 36)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def colorizer(checkpoint) -> Colorizer:
    return Colorizer.load(checkpoint, size=32, precision="fp32")


def photos(folder: Path, n: int = len(SIZES)) -> Path:
    """Smooth color photos of different sizes and formats, some with alpha."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        fmt, mode = [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "RGBA")][i % 3]
        name = f"{i:02d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        (folder / name).write_bytes(photo_bytes(i, size=SIZES[i % len(SIZES)], fmt=fmt, mode=mode))
    return folder


def sequential(colorizer: Colorizer, jobs, output: OutputOptions, batch_size: int) -> None:
    """The one-at-a-time loop colorize_files replaced: decode, batch, join and write in turn."""
    batch = []

    def flush():
        results = colorizer.colorize_batch([image for _, image in batch])
        for (job, image), color in zip(batch, results, strict=True):
            job.target.parent.mkdir(parents=True, exist_ok=True)
            result = finished_image(color, image.alpha, output.fmt, output.side_by_side)
            write_image(result, job.target, output.fmt, png_compress=output.png_compress)
        batch.clear()

    for job in jobs:
        batch.append((job, load_image(job.source)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in folder.rglob("*")}


@pytest.mark.parametrize(("workers", "batch_size"), [(1, 1), (3, 4), (4, 3)])
def test_the_pipeline_writes_the_files_of_the_one_at_a_time_loop(
    colorizer, tmp_path, workers, batch_size
):
    inputs = photos(tmp_path / "in")
    output = OutputOptions(png_compress=1)
    jobs, failed = plan_jobs([str(inputs)], tmp_path / "seq", "png")
    assert not failed
    sequential(colorizer, jobs, output, batch_size)
    jobs, _ = plan_jobs([str(inputs)], tmp_path / "pipe", "png")
    outcomes = list(
        colorize_files(colorizer, jobs, output=output, batch_size=batch_size, workers=workers)
    )
    assert sorted(o.status for o in outcomes) == ["done"] * len(SIZES)
    expected, ours = pixels(tmp_path / "seq"), pixels(tmp_path / "pipe")
    assert sorted(ours) == sorted(expected) and len(ours) == len(SIZES)
    for name, values in expected.items():
        assert np.array_equal(ours[name], values), name
    assert Image.open(tmp_path / "pipe" / "02.png").mode == "RGBA"  # alpha kept


def test_ten_files_three_broken_give_seven_done_and_three_failed_each_once(
    colorizer, checkpoint, tmp_path
):
    inputs = photos(tmp_path / "in", n=7)
    bad = bad_corpus(inputs)  # empty, text and truncated .jpg files
    jobs, failed = plan_jobs([str(inputs)], tmp_path / "out", "png")
    assert len(jobs) == 10 and not failed
    outcomes = list(colorize_files(colorizer, jobs, batch_size=2, workers=3))
    assert Counter(o.source for o in outcomes) == Counter(job.source for job in jobs)
    statuses = {o.source.name: o.status for o in outcomes}
    assert Counter(statuses.values()) == {"done": 7, "failed": 3}
    assert {name for name, s in statuses.items() if s == "failed"} == {p.name for p in bad.values()}
    assert len(list((tmp_path / "out").rglob("*.png"))) == 7

    result = invoke("colorize", inputs, "-o", tmp_path / "cli", "--model", checkpoint, "--size", 32)
    assert result.exit_code == 1 and "7 done, 0 skipped, 3 failed" in result.output
    for path in bad.values():
        assert result.output.count(path.name) == 1


def test_outcomes_come_as_files_finish_and_the_results_do_not_depend_on_it(
    colorizer, tmp_path, monkeypatch
):
    """The first file's write is held back until every other file's outcome has come: its
    outcome comes last, and every file is still the one-at-a-time loop's."""
    inputs = photos(tmp_path / "in")
    jobs, _ = plan_jobs([str(inputs)], tmp_path / "seq", "png")
    sequential(colorizer, jobs, OutputOptions(), batch_size=2)
    first, others_reported = jobs[0].source, threading.Event()
    real_save = colorize_files_module.save_result

    def save_result(color, alpha, target, output):
        if target.stem == first.stem:
            assert others_reported.wait(10)
        real_save(color, alpha, target, output)

    monkeypatch.setattr(colorize_files_module, "save_result", save_result)
    jobs, _ = plan_jobs([str(inputs)], tmp_path / "pipe", "png")
    outcomes = []
    for outcome in colorize_files(colorizer, jobs, batch_size=2, workers=3):
        outcomes.append(outcome)
        if len(outcomes) == len(jobs) - 1:
            others_reported.set()
    assert [o.source for o in outcomes][-1] == first
    assert [o.source for o in outcomes] != [job.source for job in jobs]
    expected, ours = pixels(tmp_path / "seq"), pixels(tmp_path / "pipe")
    assert all(np.array_equal(ours[name], values) for name, values in expected.items())


@pytest.mark.parametrize(("budget", "most"), [(1, 1), (10**9, 3 * 2 + 2 * 2)])
def test_photos_in_flight_are_bounded_in_pixels_and_in_files(
    colorizer, tmp_path, monkeypatch, budget, most
):
    """With a budget of 1 pixel each photo goes through alone (a partial batch runs rather than
    wait); otherwise at most 3 batches and 2 files per worker are decoded and not yet written."""
    monkeypatch.setattr(colorize_files_module, "PIXELS_IN_FLIGHT", budget)
    in_flight, peak, lock = [0], [0], threading.Lock()
    real_load, real_save = colorize_files_module.load_image, colorize_files_module.save_result

    def load_image(path, **limits):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.01)  # decoding outpaces nothing otherwise
        return real_load(path, **limits)

    def save_result(*args):
        real_save(*args)
        with lock:
            in_flight[0] -= 1

    monkeypatch.setattr(colorize_files_module, "load_image", load_image)
    monkeypatch.setattr(colorize_files_module, "save_result", save_result)
    jobs, _ = plan_jobs([str(photos(tmp_path / "in", n=16))], tmp_path / "out", "png")
    outcomes = list(colorize_files(colorizer, jobs, batch_size=2, workers=2))
    assert [o.status for o in outcomes] == ["done"] * 16
    assert 1 <= peak[0] <= most


def test_stopping_early_leaves_no_thread_running(colorizer, tmp_path):
    jobs, _ = plan_jobs([str(photos(tmp_path / "in"))], tmp_path / "out", "png")
    before = threading.active_count()
    outcomes = colorize_files(colorizer, jobs, batch_size=1, workers=3)
    next(outcomes)
    outcomes.close()
    assert threading.active_count() == before


def test_workers_share_the_torch_threads_and_the_default_comes_back(
    colorizer, tmp_path, monkeypatch
):
    seen, real_prepare = [], colorize_files_module._prepare

    def prepare(*args):
        seen.append(torch.get_num_threads())
        return real_prepare(*args)

    monkeypatch.setattr(colorize_files_module, "_prepare", prepare)
    jobs, _ = plan_jobs([str(photos(tmp_path / "in", n=4))], tmp_path / "out", "png")
    before = torch.get_num_threads()
    list(colorize_files(colorizer, jobs, workers=before + 1))
    assert set(seen) == {1} and torch.get_num_threads() == before
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [before]  # threads started afterwards get the usual default


def test_png_compress_changes_the_size_not_the_pixels_and_one_worker_works(checkpoint, tmp_path):
    photo = tmp_path / "a.png"
    photo.write_bytes(photo_bytes(0, size=(96, 64)))  # smooth, so zlib has something to do
    sizes, values = {}, {}
    for level in (0, 9):
        out = tmp_path / f"out{level}"
        result = invoke(
            "colorize", photo, "-o", out, "--model", checkpoint, "--size", 32,
            "--png-compress", level, "--workers", 1,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        sizes[level] = (out / "a.png").stat().st_size
        values[level] = np.asarray(Image.open(out / "a.png"))
    assert sizes[0] > 1.2 * sizes[9]
    assert np.array_equal(values[0], values[9])
    for flag, value, words in [
        ("--png-compress", 10, "integer in [0, 9]"),
        ("--workers", 0, "integer in [1, 64]"),
    ]:
        result = invoke("colorize", photo, "--model", checkpoint, flag, value)
        assert result.exit_code == 2 and words in result.output


def test_the_cli_the_python_api_and_the_server_write_pngs_at_one_level():
    """The PNG level is PNG_COMPRESS wherever a default applies (it was 1 on the command line
    and 6 from colorize_files and write_image)."""
    import inspect

    from zhangcolor.constants import PNG_COMPRESS
    from zhangcolor.options import ColorizeConfig

    write_default = inspect.signature(write_image).parameters["png_compress"].default
    assert ColorizeConfig().png_compress == OutputOptions().png_compress == write_default
    assert write_default == PNG_COMPRESS


@pytest.mark.parametrize("size", [(37, 53), (300, 701), (1100, 40)])  # 1, 1 and 2 device bands
def test_the_device_join_gives_the_cpu_joins_pixels(size):
    """The device join, run here with the CPU standing in for the GPU (tests/test_cuda.py runs
    it on CUDA): the same pixels as the CPU's tiled join, but for rounding-boundary values."""
    torch.manual_seed(0)
    light = torch.rand(1, 1, *size) * 100
    ab = torch.randn(1, 2, 64, 48) * 40
    ours = np.asarray(join_image(light, ab, torch.device("cpu")), dtype=int)
    expected = np.asarray(join_image(light, ab), dtype=int)
    diff = np.abs(ours - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_auto_backend_is_onnx_on_the_cpu_within_one_ab_level_and_exports_once(
    checkpoint, monkeypatch
):
    pytest.importorskip("onnxruntime")
    import zhangcolor.export as export

    torch_colorizer = Colorizer.load(checkpoint, size=32, precision="fp32")
    auto = Colorizer.load(checkpoint, size=32, precision="fp32", backend="auto")
    assert auto.backend == "onnx" and torch_colorizer.backend == "torch"
    light = torch.rand(3, 1, 32, 32) * 100
    error = (
        auto.decode(auto.network_output(light))
        - torch_colorizer.decode(torch_colorizer.network_output(light))
    ).norm(dim=1)
    assert error.max() <= 1.0

    def fail(*args, **kwargs):
        raise RuntimeError("the exporter cannot do this model")

    monkeypatch.setattr(export, "export_onnx", fail)
    fp32 = {"size": 32, "precision": "fp32", "backend": "auto"}
    assert Colorizer.load(checkpoint, **fp32).backend == "onnx"  # cached: no export
    other = make_checkpoint(checkpoint.parent / "other.safetensors", seed=1)
    assert Colorizer.load(other, **fp32).backend == "torch"  # the export fails: torch
    assert Colorizer.load(checkpoint, size=32, backend="auto", precision="bf16").backend == "torch"
    native_bf16 = resolve_precision("auto", torch.device("cpu")) is not None
    assert resolve_backend(checkpoint, "cpu", "auto") == ("torch" if native_bf16 else "onnx")
    with pytest.raises(FileNotFoundError):
        Colorizer.load(checkpoint.parent / "missing.safetensors", backend="auto")


# ----------------------------------------------------------------------------- hostile inputs


def cli(inputs, out, checkpoint, *extra):
    return invoke(*inputs, "-o", out, "--model", checkpoint, "--size", 32, *extra)


def test_a_bad_file_in_a_batch_loses_none_of_the_good_ones(checkpoint, tmp_path, monkeypatch):
    """A 2 KB zTXt bomb (Pillow raises ValueError at its header), a 86 KB 2×44,000,000 PNG
    (88 MP, whose join once asked for 22.5 GB: over --max-pixels, refused from its header) and
    an EPS named .jpg, sorted among good photos
    in the same batches: each is failed with its reason, every good photo is written, and none
    of them is decoded big."""
    guard_allocations(monkeypatch)
    inputs = photos(tmp_path / "in", n=5)
    text_bomb_png(inputs / "01a text.png")
    blank_png(inputs / "02a strip.png", 2, 44_000_000)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(inputs / "03a eps.jpg", format="EPS")
    out = tmp_path / "out"
    result = cli(["colorize", inputs], out, checkpoint, "--batch-size", 4, "--workers", 2)
    assert result.exit_code == 1, result.output
    assert "5 done, 0 skipped, 3 failed" in result.output
    strip = "too many pixels (2×44000000 = 88,000,000; colorize takes at most 50,000,000)"
    for reason in ("ValueError: Decompressed data too large", strip, "not an image"):
        assert reason in result.output, reason
    assert sorted(p.name for p in out.iterdir()) == [f"{i:02d}.png" for i in range(5)]


def test_an_image_of_any_shape_is_colorized_at_its_size_with_its_l(checkpoint, tmp_path):
    """No valid image is refused for its shape. A 3×500 or 65535×1 strip was
    refused ("over 50 times its short side"); it is colorized like any photo, and so are 1×1
    and 2×2 images (the network sees them resized up to its working size)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shapes = {"dot": (1, 1), "two": (2, 2), "thin": (3, 500), "tall": (500, 3), "wide": (65535, 1)}
    rng = np.random.default_rng(0)
    for name, (width, height) in shapes.items():
        gray = rng.integers(40, 220, (height, width), dtype=np.uint8)
        Image.fromarray(gray, "L").save(inputs / f"{name}.png")
    out = tmp_path / "out"
    result = cli(["colorize", inputs], out, checkpoint, "--workers", 2)
    assert result.exit_code == 0, result.output
    for name, shape in shapes.items():
        colored = Image.open(out / f"{name}.png")
        assert colored.size == shape, name
        truth = skcolor.rgb2lab(np.asarray(Image.open(inputs / f"{name}.png").convert("RGB")) / 255)
        got = skcolor.rgb2lab(np.asarray(colored.convert("RGB")) / 255)
        assert np.abs(got[..., 0] - truth[..., 0]).mean() <= 1.0, name


def test_an_input_over_max_pixels_fails_from_its_header_and_the_limit_can_be_raised(
    checkpoint, tmp_path, monkeypatch
):
    inputs = tmp_path / "in"
    noise(inputs / "a.png", size=(100, 60))
    noise(inputs / "b.png", size=(10, 6))
    guard_allocations(monkeypatch, max_pixels=5000)  # a.png must not be decoded
    result = cli(["colorize", inputs], tmp_path / "out", checkpoint, "--max-pixels", 5000)
    assert result.exit_code == 1 and "1 done, 0 skipped, 1 failed" in result.output
    words = " ".join(result.output.replace("│", " ").split())
    assert "too many pixels (100×60 = 6,000; colorize takes at most 5,000): raise --max-pixels" in (
        words
    )
    monkeypatch.undo()
    result = cli(["colorize", inputs], tmp_path / "out", checkpoint, "--max-pixels", 6000)
    assert result.exit_code == 0 and (tmp_path / "out" / "a.png").is_file()


def tiny_jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG of an 8×8 picture whose frame header (SOF0) says ``width × height``: about 700
    bytes that Pillow opens as that size, and decodes at that size before it finds the data
    cut short."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, format="JPEG", quality=50)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_tiny_jpeg_claiming_81_megapixels_costs_nothing_to_refuse(checkpoint, tmp_path):
    """A 1 KB JPEG whose SOF says 9000×9000 decoded in the CLI to 81 MP (1.95 GB
    of RSS). colorize refuses it from its header, over --max-pixels (50 MP): its peak RSS is
    that of colorizing an 8×8 photo, within 100 MB (measured in fresh processes)."""
    inputs = {"bomb": tmp_path / "bomb.jpg", "small": tmp_path / "small.jpg"}
    inputs["bomb"].write_bytes(tiny_jpeg_claiming(9000, 9000))
    assert inputs["bomb"].stat().st_size < 1024 and Image.open(inputs["bomb"]).size == (9000, 9000)
    noise(inputs["small"], size=(8, 8))
    peaks = {}
    for name, path in inputs.items():
        code = (
            "import resource, sys; from zhangcolor.cli import main\n"
            "try:\n"
            f"    main(['colorize', {str(path)!r}, '-o', {str(tmp_path / name)!r}, '--model', "
            f"{str(checkpoint)!r}, '--size', '32'], standalone_mode=False)\n"
            "except SystemExit as e:\n"
            "    print('status', e.code)\n"
            "print('peak', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
        )
        env = {**os.environ, "COLUMNS": "400"}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
        )
        assert "peak" in done.stdout, done.stderr[-2000:]
        peaks[name] = int(done.stdout.rsplit(maxsplit=1)[-1])
        if name == "bomb":
            assert "status 1" in done.stdout and "9000×9000 = 81,000,000" in done.stdout
    assert peaks["bomb"] < peaks["small"] + 100, peaks


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 2), (3, 500), (700, 2), (2, 5000)])
def test_the_python_api_colorizes_any_shape(colorizer, shape):
    gray = (96 + np.arange(shape[0] * shape[1]).reshape(shape) % 64).astype(np.uint8)
    out = colorizer.colorize(gray)
    assert out.size == shape[::-1]
    lightness = skcolor.rgb2lab(np.asarray(out) / 255.0)[..., 0]
    truth = skcolor.rgb2lab(gray[..., None].repeat(3, 2) / 255.0)[..., 0]
    assert np.abs(lightness - truth).mean() <= 1.0


def test_the_join_in_column_tiles_gives_the_row_bands_pixels(monkeypatch):
    """A strip too long for its ab to be widened at once is joined in tiles of rows and
    columns: the same pixels as the row bands, but for rounding-boundary values."""
    torch.manual_seed(0)
    light = torch.rand(1, 1, 37, 3001) * 100
    ab = torch.randn(1, 2, 16, 16) * 40
    bands = np.asarray(join_image(light, ab), dtype=int)
    monkeypatch.setattr(colorize_module, "_WIDE_AB_BYTES", 0)
    monkeypatch.setattr(colorize_module, "_CPU_PIXELS_PER_TILE", 1000)  # 1000-px pieces of rows
    tiled = np.asarray(join_image(light, ab), dtype=int)
    diff = np.abs(tiled - bands)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_a_long_strip_costs_the_memory_of_its_pixels_not_of_its_long_side(checkpoint):
    """2 × 10,000,000 px: widening its ab at once would take 5 GB, and the resampling matrix
    of its long side 2.5 GB. In tiles, the photo's own arrays dominate."""
    code = (
        "import resource, sys, numpy as np; "
        "from zhangcolor.colorize import Colorizer; "
        f"c = Colorizer.load({str(checkpoint)!r}, size=32, precision='fp32'); "
        "gray = np.zeros((2, 10_000_000), np.uint8); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "out = c.colorize(gray); "
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before; "
        "print(out.size, grown // 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, grown_mb = done.stdout.rsplit(maxsplit=1)
    assert size == "(10000000, 2)"
    assert int(grown_mb) < 800, f"grew by {grown_mb} MB"


def test_same_stem_inputs_in_one_folder_fail_the_second_and_lose_no_output(checkpoint, tmp_path):
    """a.jpg and a.png (and anim.gif and anim.webp) would both give a.png: the second is failed
    with the reason and exit status 1, the first's output is its own, also with --overwrite."""
    inputs = tmp_path / "in"
    noise(inputs / "a.jpg", seed=1)
    noise(inputs / "a.png", seed=2)
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(inputs / "anim.gif", save_all=True, append_images=frames[1:])
    frames[1].save(inputs / "anim.webp", save_all=True, append_images=frames[:1])
    alone = tmp_path / "alone"
    firsts = [inputs / "a.jpg", inputs / "anim.gif"]
    assert cli(["colorize", *firsts], alone, checkpoint).exit_code == 0
    out = tmp_path / "out"
    for extra in ((), ("--overwrite",)):
        result = cli(["colorize", inputs], out, checkpoint, *extra)
        assert result.exit_code == 1, result.output
        assert result.output.count("is already that of") == 2
        for name in ("a.png", "anim.webp"):
            assert str(inputs / name) in result.output
        assert sorted(p.name for p in out.iterdir()) == ["a.png", "anim.png"]
        for name in ("a.png", "anim.png"):
            assert np.array_equal(
                np.asarray(Image.open(out / name)), np.asarray(Image.open(alone / name))
            ), name


def test_overwrite_into_the_input_folder_never_replaces_an_input(checkpoint, tmp_path):
    inputs = tmp_path / "in"
    originals = {
        p.name: p.read_bytes()
        for p in (noise(inputs / "a.jpg", seed=1), noise(inputs / "a.png", seed=2))
    }
    noise(inputs / "c.jpg", seed=3)  # its output, c.png, replaces nothing
    result = cli(["colorize", inputs], inputs, checkpoint, "--overwrite")
    assert result.exit_code == 1
    assert "is an input file, which --overwrite never replaces" in result.output
    assert {n: (inputs / n).read_bytes() for n in originals} == originals
    assert (inputs / "c.png").is_file()
    again = cli(["colorize", inputs], inputs, checkpoint)  # without --overwrite: skipped
    assert {n: (inputs / n).read_bytes() for n in originals} == originals
    assert "exists and is an input file" in again.output


def test_entries_named_like_images_that_are_not_files_are_reported(checkpoint, tmp_path):
    """A folder named album.jpg is skipped (the photos in it are colorized as any folder's); a
    FIFO and a broken link fail with their reasons, and the FIFO, sorted first, takes no real
    photo's output."""
    inputs = tmp_path / "in"
    special_entries(inputs)
    noise(inputs / "album.jpg" / "inside.png", seed=1)
    noise(inputs / "pipe.png", seed=2)  # pipe.jpg, the FIFO, would claim pipe.png
    out = tmp_path / "out"
    result = cli(["colorize", inputs], out, checkpoint)
    assert result.exit_code == 1
    assert "2 done, 1 skipped, 2 failed" in result.output, result.output
    for name in ("album.jpg", "pipe.jpg", "gone.png"):
        assert name in result.output and HOSTILE_REASONS[name] in result.output, name
    assert (out / "pipe.png").is_file() and (out / "album.jpg" / "inside.png").is_file()
    glob_run = cli(["colorize", f"{inputs}/*.jpg"], tmp_path / "glob", checkpoint)
    assert "not a regular file (a FIFO)" in glob_run.output and glob_run.exit_code == 1
