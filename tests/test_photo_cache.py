"""The decoded-photo cache: built once, reused, rebuilt when a file changes, same pixels."""

import os

import numpy as np
from makers import (
    HOSTILE_REASONS,
    bad_corpus,
    guard_allocations,
    noise,
    solid,
    special_entries,
    text_bomb_png,
)
from PIL import Image

from zhangcolor import photo_cache
from zhangcolor.data import PhotoDataset, collate
from zhangcolor.photo_cache import cache_key, open_cache


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
    """A thin strip, a zTXt bomb, and a folder, a FIFO and a broken link named like images."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (65535, 1), (200, 30, 30)).save(folder / "strip.png")
    return {"strip": folder / "strip.png", "text": text_bomb_png(folder / "text.png")} | (
        special_entries(folder)
    )


def test_trains_loader_skips_hostile_files_with_their_reasons(tmp_path, monkeypatch):
    guard_allocations(monkeypatch)
    bad = hostile(tmp_path / "bad")
    paths = [noise(tmp_path / "good.png", size=(40, 30)), *bad.values()]
    cache = open_cache(paths, 256)
    assert cache.image(0).shape == (256, 341, 4)
    for i, case in enumerate(bad, start=1):
        assert cache.image(i) is None and HOSTILE_REASONS[bad[case].name] in cache.reasons[i], case
    for dataset in (
        PhotoDataset(paths, train=True, load_size=256, cache=cache),
        PhotoDataset(paths, train=True, load_size=256),
    ):
        batch = collate([dataset[(i, 0)] for i in range(len(paths))])
        assert batch["rgba"].shape[0] == 1
        assert [reason for _, reason in batch["skipped"]] == list(cache.reasons[1:])


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
