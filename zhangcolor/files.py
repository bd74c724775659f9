"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

#: The temporary files of :func:`atomic_write`: ``.NAME.XXXXXXXX.SUFFIX`` (mkstemp's 8 characters).
_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?")


def cache_dir() -> Path:
    """Where zhangcolor caches derived files: $ZHANGCOLOR_CACHE, else ~/.cache/zhangcolor."""
    return Path(os.environ.get("ZHANGCOLOR_CACHE") or Path.home() / ".cache" / "zhangcolor")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; some file systems cannot sync a folder, and then
    the rename is as durable as they make it."""
    try:
        _fsync(folder)
    except OSError:
        pass


def _write_temp(path: Path, write: Callable[[Path], None], durable: bool) -> Path:
    """``write`` into a new temporary file beside ``path``, with the usual mode; its path."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600, and some writers replace the file: set the usual mode last.
        os.chmod(tmp, 0o666 & ~umask)
        if durable:
            _fsync(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[Path], None], *, durable: bool = False) -> None:
    """Call ``write`` on a temporary file in the same folder, then rename it over ``path``.

    ``durable``: also fsync the file before the rename and the folder after it, so that a power
    cut cannot leave the new name on a file whose contents never reached the disk.
    """
    atomic_write_all({path: write}, durable=durable)


def atomic_write_all(
    writes: Mapping[str | Path, Callable[[Path], None]], *, durable: bool = False
) -> None:
    """:func:`atomic_write` for a set of files that belong together: every file is written to
    its temporary first, and only when all are written are they renamed into place, so a
    failure (a full disk, a read-only folder) leaves the old set, or none, never a mix."""
    done: dict[Path, Path] = {}
    try:
        for path, write in writes.items():
            path = Path(path)
            done[path] = _write_temp(path, write, durable)
    except BaseException:
        for tmp in done.values():
            tmp.unlink(missing_ok=True)
        raise
    try:
        for path, tmp in done.items():
            os.replace(tmp, path)
    finally:  # a rename that failed leaves no temporary behind
        for tmp in done.values():
            tmp.unlink(missing_ok=True)
    if durable:
        for folder in {path.parent for path in done}:
            _fsync_folder(folder)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left in ``folder`` when it was
    killed mid-write (not recursive); returns them. Only for folders no other process writes
    into at the same time."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        found = _TEMP.fullmatch(path.name)
        if found and Path(found["name"]).suffix == (found["suffix"] or "") and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
