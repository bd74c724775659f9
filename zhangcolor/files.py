"""Writing files so that a crash never leaves a half-written one behind, and telling what a path
that is not a regular file is."""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

#: The temporary files of :func:`atomic_write`: ``.NAME.XXXXXXXX.SUFFIX`` (mkstemp's 8
#: characters), where NAME is the file's name, or its start and ``~`` when the whole would be too
#: long a name for the folder.
_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]*)?")
#: What a temporary name adds to the file's: the dot before it, the dot and mkstemp's 8 random
#: characters after it.
_TEMP_EXTRA = 10
#: A cut name ends with this, so the stale-temporary sweep knows it lost its suffix.
_CUT = "~"


def cache_dir() -> Path:
    """Where zhangcolor caches derived files: $ZHANGCOLOR_CACHE, else ~/.cache/zhangcolor."""
    return Path(os.environ.get("ZHANGCOLOR_CACHE") or Path.home() / ".cache" / "zhangcolor")


def special_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file or a folder (``a FIFO``, ``a
    socket``, ...), read without opening it (opening a FIFO blocks); None otherwise."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


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


def fsync_file(path: Path) -> None:
    """Make a file's contents durable before it is renamed into place."""
    _fsync(path)


def _temp_name(path: Path) -> tuple[str, str]:
    """mkstemp's prefix and suffix for a temporary beside ``path``: ``.NAME.`` and its suffix,
    with NAME cut (and marked) so that the whole fits the folder's longest name, since the
    output's own name must never be shortened."""
    try:
        longest = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    name, suffix = os.fsencode(path.name), os.fsencode(path.suffix)
    if len(suffix) > longest // 2:  # a "suffix" that is most of the name: leave it out
        suffix = b""
    room = longest - _TEMP_EXTRA - len(suffix)
    if len(name) > room:
        name = _utf8_prefix(name, room - len(_CUT)) + _CUT.encode()
    return f".{os.fsdecode(name)}.", os.fsdecode(suffix)


def _utf8_prefix(name: bytes, size: int) -> bytes:
    """The first ``size`` bytes of ``name``, less a UTF-8 character cut in two at the end."""
    cut = name[:size]
    for back in range(1, min(4, len(cut)) + 1):
        lead = cut[-back]
        if lead & 0xC0 != 0x80:  # not a continuation byte: where the last character starts
            length = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
            return cut if back >= length else cut[:-back]
    return cut


def _write_temp(path: Path, write: Callable[[Path], None], durable: bool) -> Path:
    """``write`` into a new temporary file beside ``path``, with the usual mode; its path. An
    OSError names ``path``, not the temporary."""
    prefix, suffix = _temp_name(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as e:
        raise _about(e, path) from None
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
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _about(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _about(error: OSError, path: Path) -> OSError:
    """``error`` as an OSError about ``path`` (its errno and words kept), e.g. ``[Errno 28] No
    space left on device: 'run/checkpoints/last.safetensors'``."""
    code = error.errno or errno.EIO
    return OSError(code, error.strerror or os.strerror(code), str(path))


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
        if not found:
            continue
        cut = found["name"].endswith(_CUT)
        if (cut or Path(found["name"]).suffix == (found["suffix"] or "")) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def as_text(name: str) -> str:
    """A path as text that any UTF-8 file or terminal takes: the bytes of a name that is not
    UTF-8 (which Python holds as lone surrogates) as ``\\xNN`` escapes, e.g. ``caf\\xe9.png``;
    every other name as it is."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
