"""Atomic writes: long names, and what a failed write says."""

from __future__ import annotations

import errno
import os

import pytest

from zhangcolor.files import atomic_write, remove_stale_temps, special_file


@pytest.mark.parametrize("stem", ["a" * 251, "é" * 125 + "a", "caf\udce9" * 62 + "ab"])
def test_an_output_name_at_the_longest_the_folder_takes_is_written_under_that_name(tmp_path, stem):
    """The temporary name added 14 bytes to the output's (".NAME.XXXXXXXX.png"),
    so a name of 242 bytes or more failed with "File name too long". The temporary's name is
    cut instead, never the output's."""
    target = tmp_path / f"{stem}.png"
    assert len(os.fsencode(target.name)) >= 252
    atomic_write(target, lambda tmp: tmp.write_bytes(b"data"), durable=True)
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_cut_temporary_is_still_swept_as_stale(tmp_path):
    target = tmp_path / ("b" * 250 + ".png")

    def killed(tmp):
        tmp.write_bytes(b"half")
        stale.append(tmp.name)
        os.link(tmp, tmp_path / "kept")  # survives the cleanup

    stale: list[str] = []
    with pytest.raises(ZeroDivisionError):
        atomic_write(target, lambda tmp: (killed(tmp), 1 / 0))
    (tmp_path / "kept").rename(tmp_path / stale[0])  # what a kill mid-write leaves
    assert len(os.fsencode(stale[0])) <= 255 and stale[0].endswith("~." + stale[0][-12:-4] + ".png")
    assert remove_stale_temps(tmp_path) == [tmp_path / stale[0]]


def test_a_failed_write_names_the_file_not_its_temporary(tmp_path):
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "out.png", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_special_files_are_told_apart_without_opening_them(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert special_file(fifo) == "a FIFO"
    (tmp_path / "file").write_bytes(b"")
    for path in (tmp_path / "file", tmp_path, tmp_path / "missing"):
        assert special_file(path) is None
