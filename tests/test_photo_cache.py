"""The decoded-photo cache: built once, reused, rebuilt when a file changes, same pixels."""

import json
import os

import numpy as np
import pytest
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

from zhangcolor import photo_cache
from zhangcolor.data import PhotoDataset, collate
from zhangcolor.photo_cache import cache_folder, cache_key, is_built, open_cache


def folder(tmp_path):
    paths = [noise(tmp_path / f"p{i}.png", size=(40 + 8 * i, 30), seed=i) for i in range(4)]
    paths.append(solid(tmp_path / "gray.png", (90, 90, 90)))
    paths += sorted(bad_corpus(tmp_path / "bad").values())
    return paths


def test_the_cache_holds_each_photos_pixels_and_each_bad_files_reason(tmp_path):
    paths = folder(tmp_path)
    cache = open_cache(paths, 32)
    for i, path in enumerate(paths):
        direct = photo_cache.decode(path, 32)
        if isinstance(direct, str):
            assert cache.image(i) is None and cache.reasons[i] == direct
        else:
            assert np.array_equal(cache.image(i), direct)
    assert cache.reasons[4] == "grayscale" and "empty file" in " ".join(cache.reasons)
    cached = PhotoDataset(paths, train=True, load_size=32, cache=cache)
    plain = PhotoDataset(paths, train=True, load_size=32)
    for i in range(len(paths)):
        a, b = cached[(i, 7)], plain[(i, 7)]
        assert a.keys() == b.keys()
        if "rgba" in a:
            assert np.array_equal(a["rgba"], b["rgba"]) and np.array_equal(a["params"], b["params"])


def test_a_second_open_reuses_the_cache_and_a_changed_file_rebuilds_it(tmp_path, monkeypatch):
    paths = folder(tmp_path)
    first = open_cache(paths, 32)
    calls = []
    real = photo_cache.decode
    monkeypatch.setattr(photo_cache, "decode", lambda *a: calls.append(a) or real(*a))
    again = open_cache(paths, 32)
    assert again.folder == first.folder and calls == []  # nothing decoded again
    os.utime(paths[0], ns=(1, 1))  # a new modification time
    assert cache_key(paths, 32) != first.folder.name
    rebuilt = open_cache(paths, 32)
    assert rebuilt.folder != first.folder and len(calls) == len(paths)
    assert cache_key(paths, 48) != cache_key(paths, 32)  # another load size, another cache
    assert cache_key(paths[:-1], 32) != cache_key(paths, 32)  # a file fewer


def hostile(folder):
    """A 2×44,000,000 PNG (88 MP to decode), a zTXt bomb, and a folder, a FIFO and a broken link
    named like images."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"strip": blank_png(folder / "strip.png", 2, 44_000_000)} | (
        {"text": text_bomb_png(folder / "text.png")} | special_entries(folder)
    )


def test_trains_loader_skips_hostile_files_with_their_reasons(tmp_path, monkeypatch):
    """A 65535×1 PNG, once refused for its shape, is cached at a short side that keeps it
    within the resize budget; the others are skipped with their reasons,
    and nothing is decoded or resized big."""
    guard_allocations(monkeypatch)
    bad = hostile(tmp_path / "bad")
    wide = tmp_path / "wide.png"
    Image.new("RGB", (65535, 1), (200, 30, 30)).save(wide)
    paths = [noise(tmp_path / "good.png", size=(40, 30)), wide, *bad.values()]
    cache = open_cache(paths, 256)
    assert cache.image(0).shape == (256, 341, 4)
    assert cache.image(1).shape == (7, 458_745, 4)
    for i, case in enumerate(bad, start=2):
        assert cache.image(i) is None and HOSTILE_REASONS[bad[case].name] in cache.reasons[i], case
    for dataset in (
        PhotoDataset(paths, train=True, load_size=256, cache=cache),
        PhotoDataset(paths, train=True, load_size=256),
    ):
        batch = collate([dataset[(i, 0)] for i in range(len(paths))])
        assert batch["rgba"].shape[0] == 2
        assert [reason for _, reason in batch["skipped"]] == list(cache.reasons[2:])


def test_train_runs_past_hostile_files_and_counts_them(tmp_path, monkeypatch):
    import json

    from test_train import invoke, tiny_config

    guard_allocations(monkeypatch)
    config = tiny_config(tmp_path, epochs=1)
    hostile(tmp_path / "photos")
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(m.get("skipped_files", 0) for m in metrics) >= 1


def _damage(folder, case):
    """What a full disk, a copy cut short or a killed writer leaves in a cache folder."""
    pixels, index = folder / "pixels.u8", folder / "index.json"
    if case == "truncated pixels":
        pixels.write_bytes(pixels.read_bytes()[:-1000])
    elif case == "empty pixels":
        pixels.write_bytes(b"")
    elif case == "no pixels":
        pixels.unlink()
    elif case == "truncated index":
        index.write_text(index.read_text()[:-20])
    elif case == "short index":
        values = json.loads(index.read_text())
        index.write_text(json.dumps({k: v[:-1] for k, v in values.items()}))
    elif case == "moved offsets":
        values = json.loads(index.read_text())
        values["offsets"][1] += 4
        index.write_text(json.dumps(values))


DAMAGE = [
    "truncated pixels",
    "empty pixels",
    "no pixels",
    "truncated index",
    "short index",
    "moved offsets",
]


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_cache_is_found_on_open_and_built_again_with_a_warning(tmp_path, case):
    """A truncated or empty pixels.u8, or a truncated or short index.json, broke
    every later run on the folder with a traceback that never named the cache."""
    paths = folder(tmp_path)
    first = open_cache(paths, 32)
    expected = [first.image(i) for i in range(len(paths))]
    expected = [None if e is None else e.copy() for e in expected]
    del first
    _damage(cache_folder(paths, 32), case)
    assert not is_built(paths, 32)
    with pytest.warns(UserWarning, match=rf"the photo cache {cache_folder(paths, 32)} is damaged"):
        again = open_cache(paths, 32)
    for i, image in enumerate(expected):
        assert (again.image(i) is None) if image is None else np.array_equal(again.image(i), image)
    assert is_built(paths, 32)


def test_the_pixels_reach_the_disk_before_the_cache_is_renamed_into_place(tmp_path, monkeypatch):
    synced, renamed = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        photo_cache.os, "fsync", lambda fd: synced.append(os.fstat(fd)) or real_fsync(fd)
    )
    monkeypatch.setattr(
        photo_cache.os, "replace", lambda a, b: renamed.append(len(synced)) or real_replace(a, b)
    )
    paths = folder(tmp_path)
    open_cache(paths, 32)
    pixels = (cache_folder(paths, 32) / "pixels.u8").stat()
    assert renamed and any(s.st_ino == pixels.st_ino for s in synced[: renamed[0]])


def test_train_goes_on_past_a_damaged_cache_and_without_an_unwritable_one(tmp_path, monkeypatch):
    """Train on a folder whose cache is damaged builds it again and trains;
    with $ZHANGCOLOR_CACHE a file (or read-only), cache: auto trains without the photo cache
    and says so, and cache: on stops with the reason."""
    from test_train import invoke, tiny_config

    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(tmp_path / "cache"))
    config = tiny_config(tmp_path, epochs=1, cache="on")
    assert invoke("train", "--config", config).exit_code == 0
    for built in (tmp_path / "cache" / "photos").iterdir():
        _damage(built, "truncated pixels")
    result = invoke("train", "--config", config, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "is damaged" in result.output and "building it again" in result.output

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZHANGCOLOR_CACHE", str(blocker))
    result = invoke("train", "--config", config, "--overwrite", "--cache", "auto")
    assert result.exit_code == 0, result.output
    assert "training without the photo cache" in " ".join(result.output.split())
    result = invoke("train", "--config", config, "--overwrite", "--cache", "on")
    assert result.exit_code == 1
    assert "cannot build the photo cache" in " ".join(result.output.split())
    assert "Traceback" not in result.output
