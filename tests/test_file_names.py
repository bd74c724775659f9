"""File and folder names that are not valid UTF-8 (``caf\\xe9.png``) work in every command that
walks a folder: Python holds their bytes as lone surrogates, which ``str.encode()`` and UTF-8
files refuse."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml
from makers import noise, solid
from test_colorize import invoke, make_checkpoint

from zhangcolor.photo_cache import VERSION, cache_key
from zhangcolor.split import is_validation, split_files

CAFE = os.fsdecode(b"caf\xe9.png")  # Latin-1 "café.png": its é is not UTF-8
FOLDER = os.fsdecode(b"f\xf6lder")


def test_the_split_of_ordinary_names_stays_where_it_was():
    """The split hashes a path's bytes on disk: for a UTF-8 name, the bytes it always hashed,
    so no photo moves between train and validation (these are main's answers)."""
    names = ["00.png", "01.png", "02.png", "03.png", "a/b.jpg", "photo 1.jpg", "ünïcode/☀.png"]
    names.append("deep/er/x.webp")
    assert [is_validation(n, 0.5) for n in names] == [0, 1, 1, 0, 0, 1, 1, 0]
    assert [is_validation(n, 0.5, seed=3) for n in names] == [1, 0, 0, 0, 1, 0, 0, 0]
    held = [is_validation(f"{FOLDER}/{CAFE}", 0.5, seed=s) for s in range(40)]
    assert 0 < sum(held) < 40  # a name that is not UTF-8 has a split like any other


def test_the_cache_key_of_ordinary_names_is_unchanged(tmp_path):
    paths = [noise(tmp_path / name) for name in ("a.png", "ünï.png")]
    old = hashlib.sha256(f"zhangcolor-photos-{VERSION}:32".encode())
    for path in paths:
        info = path.stat()
        old.update(f"\n{path.resolve()}\t{info.st_size}\t{info.st_mtime_ns}".encode())
    assert cache_key(paths, 32) == old.hexdigest()[:24]  # earlier caches are still found
    odd = noise(tmp_path / FOLDER / CAFE)
    assert cache_key([*paths, odd], 32) != cache_key(paths, 32)


@pytest.fixture
def odd_photos(tmp_path) -> Path:
    """Colour photos, two named caf\\xe9.png (one held out for validation, one in the folder
    f\\xf6lder, trained on), 02.png held out too, and a gray photo named so."""
    folder = tmp_path / "photos"
    for i in range(6):
        noise(folder / f"{i:02d}.png", size=(40, 40), seed=i)
    noise(folder / CAFE, size=(40, 40), seed=10)
    noise(folder / FOLDER / CAFE, size=(40, 40), seed=11)
    solid(folder / FOLDER / os.fsdecode(b"gr\xe9y.png"), (90, 90, 90))
    return folder


@pytest.mark.parametrize("split", ["all", "train"])
def test_build_bins_counts_them_and_names_them_in_bins_json(odd_photos, tmp_path, split):
    """build-bins crashed writing bins.json, after counting everything; --split train at once."""
    out = tmp_path / "bins"
    result = invoke("build-bins", odd_photos, "-o", out, "--size", 16, "--split", split)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "bins.json").read_text(encoding="utf-8"))
    assert meta["skipped"] == [{"file": "f\\xf6lder/gr\\xe9y.png", "reason": "grayscale"}]
    found = 9 if split == "all" else 7  # train leaves out 02.png and caf\xe9.png
    assert (meta["images_found"], meta["images_used"]) == (found, found - 1)


def test_evaluate_and_calibrate_take_them(odd_photos, tmp_path):
    """evaluate --split val and calibrate crashed in the split."""
    checkpoint = make_checkpoint(tmp_path / "tiny.safetensors")
    assert split_files(odd_photos)[1] == [odd_photos / "02.png", odd_photos / CAFE]
    for split, images in (("all", 8), ("val", 2)):
        out = tmp_path / f"report-{split}"
        flags = ("--temperatures", "0.38", "--out", out, "--size", 32, "--split", split)
        result = invoke("evaluate", odd_photos, "--model", checkpoint, *flags)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "report.json").read_text())["images"] == images
    result = invoke("calibrate", odd_photos, "--model", checkpoint, "--size", 32)
    assert result.exit_code == 0, result.output


def test_train_takes_them(odd_photos, tmp_path):
    """train crashed in the split, and its photo cache's key after it."""
    config = {
        "data": str(odd_photos),
        "out": str(tmp_path / "run"),
        "model": {"backbone": "eccv16", "width": 0.125},
        "crop": 32,
        "load_size": 32,
        "batch_size": 4,
        "epochs": 1,
        "workers": 0,
        "precision": "fp32",
        "cache": "on",
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    result = invoke("train", "--config", path)
    assert result.exit_code == 0, result.output
