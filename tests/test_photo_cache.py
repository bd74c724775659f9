"""The decoded-photo cache: built once, reused, rebuilt when a file changes, same pixels."""

import os

import numpy as np
from makers import bad_corpus, noise, solid

from zhangcolor import photo_cache
from zhangcolor.data import PhotoDataset
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
