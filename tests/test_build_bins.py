"""`zhangcolor build-bins` end to end on generated folders (CliRunner, isolated filesystem)."""

import errno
import json

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

from zhangcolor import __version__
from zhangcolor.bins import ab_bins, load_bins, nearest_bins
from zhangcolor.cli import main
from zhangcolor.color import rgb_to_lab
from zhangcolor.prior import PriorConfig, PriorError, estimate_prior
from zhangcolor.rebalance import class_weights, smooth_prior


def bin_of(rgb: tuple[int, int, int]) -> int:
    lab = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1) / 255)
    return int(nearest_bins(lab[:, 1:], ab_bins(torch.float64), 1)[1].flatten())


def run(*args):
    # A wide terminal keeps rich-click from wrapping messages inside its error box.
    return CliRunner(env={"COLUMNS": "400"}).invoke(
        main, [str(a) for a in args], catch_exceptions=False
    )


def test_version_and_help():
    assert __version__ in run("--version").output
    assert "build-bins" in run("--help").output
    assert "--max-images" in run("build-bins", "--help").output


def test_counts_land_in_the_right_bins_and_artifacts_are_written(tmp_path):
    data = tmp_path / "photos"
    red, blue = (200, 30, 30), (20, 40, 220)
    solid(data / "red.png", red, size=(16, 16))
    solid(data / "sub" / "blue.png", blue, size=(16, 32))  # twice the pixels at its native size
    solid(data / "gray.png", (128, 128, 128))
    out = tmp_path / "bins"
    result = run("build-bins", data, "--out", out, "--size", 16, "--workers", 1)
    assert result.exit_code == 0, result.output
    bins = load_bins(out / "bins.npz")
    counts = bins["counts"].numpy()
    # short side 16: red 16×16 = 256 px, blue 16×32 = 512 px
    assert counts[bin_of(red)] == 256 and counts[bin_of(blue)] == 512 and counts.sum() == 768
    assert np.isclose(bins["prior"].sum(), 1.0)
    assert torch.allclose(bins["weights"], class_weights(smooth_prior(bins["prior"])))
    meta = json.loads((out / "bins.json").read_text())
    assert meta["images_found"] == 3 and meta["images_used"] == 2 and meta["images_gray"] == 1
    assert {"file": "gray.png", "reason": "grayscale"} in meta["skipped"]
    assert meta["parameters"]["size"] == 16 and meta["zhangcolor_version"] == __version__
    assert (out / "prior.png").stat().st_size > 1000
    assert "grayscale" in result.output


def test_transparent_pixels_carry_no_weight(tmp_path):
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:, :8] = (200, 30, 30, 255)  # opaque red
    pixels[:, 8:] = (20, 40, 220, 254)  # nearly opaque blue: still not counted
    Image.fromarray(pixels, "RGBA").save(tmp_path / "cut.png")
    result = estimate_prior(tmp_path, PriorConfig(size=16, workers=1))
    assert result.counts[bin_of((200, 30, 30))] == 128 and result.counts.sum() == 128


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_counted(tmp_path, small_bomb):
    data = tmp_path / "photos"
    for i in range(3):
        noise(data / f"good{i}.jpg", seed=i)
    bad_corpus(data / "broken")
    solid(data / "bomb.png", (10, 200, 10), size=(100, 100))
    result = run("build-bins", data, "--out", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "bins.json").read_text())
    reasons = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert meta["images_used"] == 3 and meta["images_failed"] == 4
    assert "empty file" in reasons["broken/empty.jpg"]
    assert "not an image" in reasons["broken/notes.jpg"]
    assert "truncated" in reasons["broken/truncated.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]


def test_empty_folder_and_folder_without_usable_images_fail_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("build-bins", tmp_path / "empty", "--out", tmp_path / "o")
    assert result.exit_code == 1 and "no image files" in result.output
    solid(tmp_path / "grays" / "g.png", (90, 90, 90))
    bad_corpus(tmp_path / "grays")
    result = run("build-bins", tmp_path / "grays", "--out", tmp_path / "o")
    assert (
        result.exit_code == 1 and "could be used" in result.output and "grayscale" in result.output
    )
    assert not (tmp_path / "o" / "bins.npz").exists()


def test_bad_options_are_refused(tmp_path):
    noise(tmp_path / "a.png")
    assert run("build-bins", tmp_path, "--out", tmp_path / "o", "--lambda", 2).exit_code == 2
    assert run("build-bins", tmp_path / "missing", "--out", tmp_path / "o").exit_code == 2
    config = tmp_path / "c.yaml"
    config.write_text("sizee: 3\n")
    result = run("build-bins", tmp_path, "--out", tmp_path / "o", "--config", config)
    assert result.exit_code == 2 and "valid: size" in result.output


def test_yaml_config_gives_defaults_and_flags_override(tmp_path):
    noise(tmp_path / "data" / "a.png")
    config = tmp_path / "c.yaml"
    config.write_text("size: 12\nlam: 0.25\n")
    assert (
        run(
            "build-bins",
            tmp_path / "data",
            "-o",
            tmp_path / "o",
            "--config",
            config,
            "--lambda",
            0.75,
        ).exit_code
        == 0
    )
    params = json.loads((tmp_path / "o" / "bins.json").read_text())["parameters"]
    assert params["size"] == 12 and params["lam"] == 0.75


def test_max_images_draws_a_seeded_subset(tmp_path):
    for i in range(6):
        noise(tmp_path / f"{i}.png", seed=i)
    first = estimate_prior(tmp_path, PriorConfig(max_images=3, seed=1, workers=1))
    again = estimate_prior(tmp_path, PriorConfig(max_images=3, seed=1, workers=2))
    assert first.images_found == 3 and np.array_equal(first.counts, again.counts)


def test_estimate_prior_raises_for_a_missing_folder(tmp_path):
    with pytest.raises(PriorError, match="does not exist"):
        estimate_prior(tmp_path / "nothing")


def test_color_table_counts_equal_converting_every_pixel(tmp_path):
    from zhangcolor.images import load_image
    from zhangcolor.prior import count_image

    path = noise(tmp_path / "n.png", size=(64, 48), seed=5)
    counts, pixels = count_image(path, size=48)
    rgb = torch.from_numpy(load_image(path, short_side=48).rgb).permute(2, 0, 1)
    _, index = nearest_bins(rgb_to_lab(rgb)[None, 1:], ab_bins(), 1)
    assert pixels == 64 * 48
    np.testing.assert_array_equal(counts, np.bincount(index.flatten().numpy(), minlength=313))


def test_artifacts_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from zhangcolor.files import atomic_write

    def replace_file(path):  # like writers that unlink and recreate their target
        path.unlink()
        path.write_text("x")
        path.chmod(0o600)

    target = tmp_path / "a.txt"
    atomic_write(target, replace_file)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_split_train_leaves_out_the_validation_photos(tmp_path):
    from zhangcolor.split import split_files

    for i in range(30):
        noise(tmp_path / "data" / f"{i:02d}.png", seed=i)
    train, val = split_files(tmp_path / "data")
    assert val  # the seeded split holds some out
    assert (
        run("build-bins", tmp_path / "data", "-o", tmp_path / "o", "--split", "train").exit_code
        == 0
    )
    meta = json.loads((tmp_path / "o" / "bins.json").read_text())
    assert meta["images_found"] == len(train) and meta["parameters"]["split"] == "train"


def test_hostile_files_are_skipped_with_their_reasons_and_nothing_is_decoded_big(
    tmp_path, monkeypatch
):
    """A 274-byte 65535×1 PNG once became 16,776,960×256 px at the working size (the OOM
    killer), then was refused for its shape: it is counted at its own pixels, as build-bins
    never enlarges; a 86 KB 2×44,000,000 PNG is 88 MP to decode, over the
    limit; a 2 KB zTXt bomb raises ValueError in Pillow; an EPS named .jpg would reach
    Ghostscript; a FIFO would block. Each is skipped with its reason, the photos are counted."""
    guard_allocations(monkeypatch)
    data = tmp_path / "photos"
    for i in range(2):
        noise(data / f"good{i}.jpg", seed=i)
    Image.new("RGB", (65535, 1), (200, 30, 30)).save(data / "wide.png")
    blank_png(data / "strip.png", 2, 44_000_000)
    text_bomb_png(data / "text.png")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(data / "eps.jpg", format="EPS")
    special_entries(data)
    result = run("build-bins", data, "--out", tmp_path / "out", "--workers", 2)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "bins.json").read_text())
    reasons = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert meta["images_used"] == 3 and meta["images_failed"] == 6, reasons
    assert meta["pixels"] == 2 * 48 * 32 + 65535
    assert "not an image Pillow can read" in reasons["eps.jpg"]
    for name, reason in HOSTILE_REASONS.items():
        assert reason in reasons[name], name


def test_each_photo_weighs_its_own_pixels_up_to_the_working_size(tmp_path):
    """A 1×1 photo is one pixel of the prior, not a working size's worth (build-bins used to
    enlarge every photo to the working size); larger photos are still reduced to it."""
    red, blue, green = (200, 30, 30), (20, 40, 220), (30, 160, 40)
    solid(tmp_path / "dot.png", red, size=(1, 1))
    solid(tmp_path / "small.png", blue, size=(8, 4))
    solid(tmp_path / "large.png", green, size=(64, 32))
    result = estimate_prior(tmp_path, PriorConfig(size=16, workers=1))
    counts = result.counts
    assert counts[bin_of(red)] == 1 and counts[bin_of(blue)] == 32
    assert counts[bin_of(green)] == 32 * 16 and result.pixels == 1 + 32 + 512


def _fail(error: int, words: str):
    def fail(*args, **kwargs):
        raise OSError(error, words)

    return fail


@pytest.mark.parametrize(
    ("patched", "error", "words"),
    [
        ("zhangcolor.prior.plot_prior", errno.ENOSPC, "No space left on device"),  # the last file
        ("zhangcolor.files.tempfile.mkstemp", errno.EACCES, "Permission denied"),  # read-only
    ],
)
def test_a_full_or_read_only_output_fails_clearly_and_keeps_the_earlier_set(
    tmp_path, monkeypatch, patched, error, words
):
    data = tmp_path / "photos"
    solid(data / "red.png", (200, 30, 30), size=(16, 16))
    out = tmp_path / "bins"
    assert run("build-bins", data, "-o", out, "--size", 16, "--workers", 1).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    solid(data / "blue.png", (20, 40, 220), size=(16, 16))  # a new set would differ
    monkeypatch.setattr(patched, _fail(error, words))
    result = run("build-bins", data, "-o", out, "--size", 16, "--workers", 1)
    assert result.exit_code == 1 and f"cannot write into {out}: {words}" in result.output
    assert "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporaries either


@pytest.mark.parametrize(
    ("flags", "status", "words"),
    [
        (["--lambda", "0", "--sigma", "1"], 1, "cannot weigh the bins at λ = 0: lam = 0 needs"),
        (["--lambda", "0"], 1, "the class weights would reach"),
        (["--sigma", "1e-200"], 2, "sigma=1e-200 (must be in [0.1, 1000])"),
        (["--sigma", "1e300"], 2, "sigma=1e+300 (must be in [0.1, 1000])"),
    ],
    ids=["lambda0-sigma1", "lambda0-one-colour", "sigma-tiny", "sigma-huge"],
)
def test_extreme_lambda_and_sigma_are_refused_with_a_reason(tmp_path, flags, status, words):
    """--lambda 0 --sigma 1, --sigma 1e-200 and --sigma 1e300 ended in
    tracebacks, and --lambda 0 on photos of one colour wrote weights up to 7.7e227, which no
    model file can store. σ is bounded by its rule; weights beyond what a model stores are
    refused with the way out, and nothing is written."""
    data = tmp_path / "photos"
    solid(data / "red.png", (200, 30, 30), size=(16, 16))
    solid(data / "redder.png", (210, 20, 25), size=(16, 16))
    out = tmp_path / "bins"
    result = run("build-bins", data, "-o", out, "--size", 16, "--workers", 1, *flags)
    assert result.exit_code == status, result.output
    assert words in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output and not out.exists()
    if status == 1:
        assert "raise --lambda" in result.output
