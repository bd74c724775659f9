"""Colorizing files and folders: ``zhangcolor colorize INPUT... -o OUT``.

Inputs (files, folders, globs) become jobs whose outputs mirror their paths under OUT; each job
ends as an :class:`Outcome`: done, skipped (the output exists) or failed (with the reason), so a
bad file never stops the rest and no output is silently overwritten.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from zhangcolor.colorize import Colorizer
from zhangcolor.constants import COLORIZE_SUFFIXES
from zhangcolor.files import atomic_write
from zhangcolor.images import (
    ImageError,
    LoadedImage,
    find_images,
    finished_image,
    load_image,
    write_image,
)


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class Outcome:
    source: Path
    status: str  # done, skipped or failed
    detail: str = ""


def plan_jobs(inputs: Sequence[str], out_dir: Path, fmt: str) -> tuple[list[Job], list[Outcome]]:
    """Expand files, folders (recursively) and globs into jobs.

    Each output mirrors its input's path relative to the common root of the inputs given, so
    ``a/x.jpg`` and ``b/x.jpg`` become ``OUT/a/x.png`` and ``OUT/b/x.png``. The output folder
    is never walked, so a rerun does not colorize its own results. Inputs that match nothing,
    and an input whose output another input already claims (``x.jpg`` beside ``x.png``), are
    failed outcomes.
    """
    out_real = out_dir.resolve()
    found: list[tuple[Path, Path]] = []  # (file, the folder its output path is relative to)
    failed: list[Outcome] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = find_images(path, COLORIZE_SUFFIXES, exclude=out_dir)
            found += [(f, path) for f in files]
            if not files:
                failed.append(Outcome(path, "failed", "folder holds no images"))
        elif path.is_file():
            found.append((path, path.parent))
        else:
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            matches = [m for m in matches if m.is_file() and not _inside(m, out_real)]
            found += [(m, m.parent) for m in matches]
            if not matches:
                failed.append(Outcome(path, "failed", "no such file, folder or glob match"))
    if not found:
        return [], failed
    root = Path(os.path.commonpath([os.path.abspath(base) for _, base in found]))
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}  # output -> the input that has it
    seen: set[Path] = set()
    for source, _ in found:
        if source.resolve() in seen:  # the same file given twice
            continue
        seen.add(source.resolve())
        relative = Path(os.path.abspath(source)).relative_to(root)
        target = out_dir / relative.with_suffix(f".{fmt}")
        if target in claimed:
            failed.append(
                Outcome(
                    source,
                    "failed",
                    f"its output {target} is already that of {claimed[target]}; "
                    "rename one of them, or colorize them into different --out folders",
                )
            )
            continue
        claimed[target] = source
        jobs.append(Job(source, target))
    return jobs, failed


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (a resolved path)."""
    return path.resolve().is_relative_to(folder)


def save_result(
    color: Image.Image, image: LoadedImage, target: Path, fmt: str, side_by_side: bool
) -> None:
    """Write the color result (next to the gray input when ``side_by_side``), atomically."""
    result = finished_image(color, image.alpha, fmt, side_by_side)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: write_image(result, tmp, fmt))


def colorize_files(
    colorizer: Colorizer,
    jobs: Sequence[Job],
    *,
    temperature: float | None = None,
    fmt: str = "png",
    batch_size: int = 4,
    side_by_side: bool = False,
    overwrite: bool = False,
) -> Iterator[Outcome]:
    """Colorize each job's file; yields an :class:`Outcome` per file. A file that fails (cannot
    be read or written) is reported and the rest go on."""
    pending: list[tuple[Job, LoadedImage]] = []

    def flush():
        if not pending:
            return
        results = colorizer.colorize_batch([image for _, image in pending], temperature)
        for (job, image), color in zip(pending, results, strict=True):
            try:
                save_result(color, image, job.target, fmt, side_by_side)
                yield Outcome(job.source, "done", str(job.target))
            except OSError as e:
                yield Outcome(job.source, "failed", f"cannot write {job.target}: {e.strerror or e}")
        pending.clear()

    for job in jobs:
        if job.target.exists() and not overwrite:
            yield Outcome(job.source, "skipped", f"{job.target} exists (use --overwrite)")
            continue
        try:
            image = load_image(job.source)
        except ImageError as e:
            yield Outcome(job.source, "failed", str(e))
            continue
        if min(image.pixels.shape[:2]) < 2:
            h, w = image.pixels.shape[:2]
            yield Outcome(job.source, "failed", f"too small to colorize ({w}×{h} px)")
            continue
        pending.append((job, image))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
