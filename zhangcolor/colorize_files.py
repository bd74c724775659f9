"""Colorizing files and folders: ``zhangcolor colorize INPUT... -o OUT``.

Inputs (files, folders, globs) become jobs whose outputs mirror their paths under OUT; each job
ends as an :class:`Outcome`: done, skipped (the output exists) or failed (with the reason), so a
bad file never stops the rest and no output is silently overwritten.

The files go through a pipeline: a pool of threads decodes them and computes their L, the
calling thread runs the network on batches of consecutive files, and the pool joins each result
and writes it (Pillow and torch release the GIL, so the threads use every core). A few batches'
worth of photos are in flight at most, counted in files and in pixels.

An input of any shape is colorized at its full size, with its very L; what bounds its cost is
its pixels: an input over ``max_pixels`` (:data:`~zhangcolor.images.MAX_DECODED_PIXELS` unless
raised) fails from its header, before any pixel is decoded. A network that fails on a batch (a
model file whose graph asks for more memory than there is) fails that batch's files, not the
run.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zhangcolor.colorize import Colorizer, Photo, photo_threads
from zhangcolor.constants import COLORIZE_SUFFIXES, PNG_COMPRESS
from zhangcolor.files import atomic_write
from zhangcolor.hints import HintError, load_hints
from zhangcolor.images import (
    MAX_DECODED_PIXELS,
    OUTPUT_KEY,
    OUTPUT_MARK,
    ImageError,
    file_size,
    find_images,
    finished_image,
    header_size,
    load_image,
    write_image,
)

#: Decoded pixels in flight at most (decoded, waiting for the network, being joined and
#: written). A waiting photo holds its float L (4 bytes a pixel), one being written about 10,
#: so this is a few hundred MB; a larger photo still goes through, alone.
PIXELS_IN_FLIGHT = 40_000_000
#: The most characters of an error's own words that a file's outcome shows.
_DETAIL = 300


@dataclass
class Job:
    """One input file, where its result goes, and the file of its colour points, if any."""

    source: Path
    target: Path
    relative: Path | None = None  # the input's path under the inputs' common root
    hints: Path | None = None


@dataclass
class Outcome:
    source: Path
    status: str  # done, skipped or failed
    detail: str = ""


def plan_jobs(
    inputs: Sequence[str],
    out_dir: Path,
    fmt: str,
    *,
    overwrite: bool = False,
    include_outputs: bool = False,
) -> tuple[list[Job], list[Outcome]]:
    """Expand files, folders (recursively) and globs into jobs.

    Each output mirrors its input's path relative to the common root of the inputs given, so
    ``a/x.jpg`` and ``b/x.jpg`` become ``OUT/a/x.png`` and ``OUT/b/x.png``. The output folder
    is never walked, so a rerun does not colorize its own results. Failed outcomes: inputs that
    match nothing, entries named like images that are not files (a FIFO, a broken link), an
    input whose output another input already claims (``x.jpg`` beside ``x.png``), and, with
    ``overwrite``, an input whose output would replace an input (``-o`` the input folder).
    Without ``overwrite`` that one is skipped, as any existing output is; a folder named like an
    image is skipped too (its images are colorized as any folder's). So is an earlier result of
    colorize (:func:`is_colorized`), unless ``include_outputs``.
    """
    found, outcomes = _expand(inputs, out_dir)
    if not found:
        return [], outcomes
    root = Path(os.path.commonpath([os.path.abspath(base) for _, base in found]))
    originals = {_identity(source) for source, _ in found} - {None}
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}  # output -> the input that has it
    seen: set[Path] = set()
    for source, _ in found:
        if source.resolve() in seen:  # the same file given twice
            continue
        seen.add(source.resolve())
        if not include_outputs and is_colorized(source):
            outcomes.append(Outcome(source, "skipped", _OURS))
            continue
        relative = Path(os.path.abspath(source)).relative_to(root)
        target = out_dir / relative.with_suffix(f".{fmt}")
        if target in claimed:
            outcomes.append(
                Outcome(
                    source,
                    "failed",
                    f"its output {target} is already that of {claimed[target]}; "
                    "rename one of them, or colorize them into different --out folders",
                )
            )
            continue
        claimed[target] = source
        if _identity(target) in originals:
            outcomes.append(_input_as_output(source, target, overwrite))
            continue
        jobs.append(Job(source, target, relative))
    return jobs, outcomes


def assign_hints(jobs: Sequence[Job], hints: Path) -> None:
    """Give each job its colour points: ``hints`` is a JSON file (for one photo), or a folder
    holding ``<stem>.json`` at each photo's path under the inputs' common root (a photo without
    one is colorized without points). ValueError for a missing path, or a file for several
    photos."""
    if hints.is_dir():
        for job in jobs:
            candidate = hints / (job.relative or Path(job.source.name)).with_suffix(".json")
            job.hints = candidate if candidate.is_file() else None
        return
    if not hints.is_file():
        raise ValueError(f"--hints {hints}: no such file or folder")
    if len(jobs) > 1:
        raise ValueError(
            f"--hints {hints} is one file, for one photo; for {len(jobs)} photos give a folder "
            "of <stem>.json files at the photos' paths"
        )
    for job in jobs:
        job.hints = hints


def _expand(inputs: Sequence[str], out_dir: Path) -> tuple[list[tuple[Path, Path]], list[Outcome]]:
    """The image files the inputs name, each with the folder its output path is relative to;
    and the outcomes of inputs that name nothing usable."""
    out_real = out_dir.resolve()
    found: list[tuple[Path, Path]] = []
    outcomes: list[Outcome] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = find_images(path, COLORIZE_SUFFIXES, exclude=out_dir)
            found += [(f, path) for f in files]
            if not files:
                outcomes.append(Outcome(path, "failed", "folder holds no images"))
        elif os.path.lexists(path):
            found.append((path, path.parent))
        else:
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            matches = [m for m in matches if not m.is_dir() and not _inside(m, out_real)]
            found += [(m, m.parent) for m in matches]
            if not matches:
                outcomes.append(Outcome(path, "failed", "no such file, folder or glob match"))
    files = []
    for source, base in found:
        try:
            file_size(source)  # before any claims an output: a FIFO must not take x.png's
        except ImageError as e:
            status = "skipped" if source.is_dir() else "failed"
            outcomes.append(Outcome(source, status, str(e)))
            continue
        files.append((source, base))
    return files, outcomes


_OURS = "colorized by zhangcolor already (--include-outputs colorizes it again)"


def is_colorized(path: Path) -> bool:
    """Whether an image file is a result zhangcolor wrote (its mark, :data:`OUTPUT_MARK`: a
    PNG text chunk or a JPEG comment), from its header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a header's problems are the decoder's to report
            with Image.open(path, formats=("PNG", "JPEG")) as image:
                info, fmt = image.info, image.format
    except Exception:  # not a PNG or JPEG, or a damaged one: not ours; decoding says why
        return False
    mark = info.get(OUTPUT_KEY) if fmt == "PNG" else info.get("comment")
    if isinstance(mark, bytes):
        mark = mark.decode("utf-8", "replace")
    return mark == OUTPUT_MARK


def _identity(path: Path) -> tuple[int, int] | None:
    """The (device, inode) of an existing file, so that a link or another spelling of an input
    is still known as it; None when there is none."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _input_as_output(source: Path, target: Path, overwrite: bool) -> Outcome:
    if overwrite:
        return Outcome(
            source,
            "failed",
            f"its output {target} is an input file, which --overwrite never replaces; "
            "colorize into another --out folder",
        )
    return Outcome(source, "skipped", f"{target} exists and is an input file")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (a resolved path)."""
    return path.resolve().is_relative_to(folder)


@dataclass(frozen=True)
class OutputOptions:
    """How results are written."""

    fmt: str = "png"  # png or jpg
    side_by_side: bool = False  # write gray | color
    png_compress: int = PNG_COMPRESS  # zlib level of PNG files, 0-9
    overwrite: bool = False  # replace existing outputs (otherwise they are skipped)


def save_result(
    color: Image.Image, alpha: np.ndarray | None, target: Path, output: OutputOptions
) -> None:
    """Write the color result (with the input's ``alpha``, or next to the gray input when
    ``side_by_side``), atomically."""
    result = finished_image(color, alpha, output.fmt, output.side_by_side)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        target, lambda tmp: write_image(result, tmp, output.fmt, png_compress=output.png_compress)
    )


def colorize_files(
    colorizer: Colorizer,
    jobs: Sequence[Job],
    *,
    temperature: float | None = None,
    output: OutputOptions | None = None,
    batch_size: int = 4,
    workers: int = 1,
    max_pixels: int = MAX_DECODED_PIXELS,
) -> Iterator[Outcome]:
    """Colorize each job's file; yields an :class:`Outcome` per file, in the order they finish.
    A file that fails (cannot be read or written, has more than ``max_pixels`` pixels, or the
    network fails on its batch) is reported and the rest go on.

    ``workers`` threads decode, join and write (the command line's default is one per core);
    the network runs in the calling thread, on batches of ``batch_size`` consecutive readable
    files: the batches of a one-file-at-a-time loop, so the results are the same (only the
    memory budget, :data:`PIXELS_IN_FLIGHT`, can cut a batch short, around huge photos).
    """
    if batch_size < 1 or workers < 1 or max_pixels < 1:
        raise ValueError(
            f"batch_size, workers and max_pixels must be ≥ 1, got {batch_size}, {workers} and "
            f"{max_pixels}"
        )
    t = colorizer.resolve_temperature(temperature)  # a bad T fails before any work
    with photo_threads(workers) as pool:
        options = output or OutputOptions()
        pipeline = _Pipeline(colorizer, pool, t, options, batch_size, workers, max_pixels)
        yield from pipeline.run(jobs)


@dataclass
class _Prepared:
    """A decoded file, reduced to what the rest needs: its :class:`~zhangcolor.colorize.Photo`."""

    job: Job
    photo: Photo


def _prepare(colorizer: Colorizer, job: Job, max_pixels: int) -> _Prepared | Outcome:
    """Decode a file and prepare it (in a worker thread); a failure is its Outcome."""
    try:
        image = load_image(job.source, max_pixels=max_pixels)
        points = None
        if job.hints is not None:
            height, width = image.pixels.shape[:2]
            points = load_hints(job.hints, width, height)
        photo = colorizer.prepare(image, points)
    except (ImageError, HintError) as e:
        return Outcome(job.source, "failed", str(e))
    except Exception as e:  # whatever one file raises is its outcome, never the run's end
        return Outcome(job.source, "failed", f"cannot prepare it ({_words(e)})")
    return _Prepared(job, photo)


def _words(error: BaseException) -> str:
    """An error's type and words for an outcome, cut to :data:`_DETAIL` characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _DETAIL else text[: _DETAIL - 1] + "…"


def _too_many_pixels(size: tuple[int, int], max_pixels: int) -> str:
    width, height = size
    return (
        f"too many pixels ({width}×{height} = {width * height:,}; colorize takes at most "
        f"{max_pixels:,}): raise --max-pixels (up to Pillow's limit of about 89 MP), or "
        "downscale the image first"
    )


def _finish(
    colorizer: Colorizer,
    prepared: _Prepared,
    output: torch.Tensor,
    temperature: float,
    options: OutputOptions,
) -> Outcome:
    """Finish a photo (:meth:`Colorizer.finish`) and write it (in a worker thread)."""
    job = prepared.job
    if not options.overwrite and job.target.exists():  # appeared since the job was planned
        return Outcome(job.source, "skipped", f"{job.target} exists (use --overwrite)")
    try:
        color = colorizer.finish(prepared.photo.lightness, output, temperature)
        save_result(color, prepared.photo.alpha, job.target, options)
    except OSError as e:
        return Outcome(job.source, "failed", f"cannot write {job.target}: {e.strerror or e}")
    except Exception as e:  # as in _prepare: this file fails, the others go on
        return Outcome(job.source, "failed", f"cannot finish it ({_words(e)})")
    return Outcome(job.source, "done", str(job.target))


class _Pipeline:
    """The state of one colorize_files run: files being decoded (in job order), the batch being
    gathered, and results being written, with what they hold of the in-flight budget."""

    def __init__(
        self,
        colorizer: Colorizer,
        pool: ThreadPoolExecutor,
        temperature: float,
        output: OutputOptions,
        batch_size: int,
        workers: int,
        max_pixels: int,
    ) -> None:
        self.colorizer, self.pool, self.output = colorizer, pool, output
        self.temperature, self.batch_size = temperature, batch_size
        self.max_pixels = max_pixels  # the most pixels an input may have
        # Enough to keep every worker and the network busy: a batch decoding, one gathered,
        # one being written, and a file per worker on either side.
        self.max_files = 3 * batch_size + 2 * workers
        self.loads: deque[tuple[Future, int]] = deque()  # (decoding, its pixels), in job order
        self.batch: list[tuple[_Prepared, int]] = []
        self.writes: dict[Future, int] = {}  # joining and writing -> its pixels
        self.files = self.pixels = 0  # in flight

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in jobs:
            if job.target.exists() and not self.output.overwrite:
                yield Outcome(job.source, "skipped", f"{job.target} exists (use --overwrite)")
                continue
            size = header_size(job.source)  # None: decoding says why
            pixels = 0 if size is None else size[0] * size[1]
            if pixels > self.max_pixels:
                yield Outcome(job.source, "failed", _too_many_pixels(size, self.max_pixels))
                continue
            while self.files and not self._room_for(pixels):
                yield from self._step(wait_for_one=True)
            prepare = self.pool.submit(_prepare, self.colorizer, job, self.max_pixels)
            self.loads.append((prepare, pixels))
            self.files, self.pixels = self.files + 1, self.pixels + pixels
            yield from self._step(wait_for_one=False)
        while self.files:
            yield from self._step(wait_for_one=True)

    def _room_for(self, pixels: int) -> bool:
        return self.files < self.max_files and self.pixels + pixels <= PIXELS_IN_FLIGHT

    def _step(self, wait_for_one: bool) -> Iterator[Outcome]:
        """Move everything that is ready along; with ``wait_for_one``, first wait until at least
        one thing can move (the next file decoded, else the gathered batch run, else a write)."""
        if wait_for_one:
            if self.loads:
                wait([self.loads[0][0]])
            elif self.batch:
                yield from self._run_batch()
            else:
                wait(self.writes, return_when=FIRST_COMPLETED)
        while self.loads and self.loads[0][0].done():
            future, pixels = self.loads.popleft()
            result = future.result()
            if isinstance(result, Outcome):
                self._release(pixels)
                yield result
                continue
            self.batch.append((result, pixels))
            if len(self.batch) == self.batch_size:
                yield from self._run_batch()
        for future in [f for f in self.writes if f.done()]:
            self._release(self.writes.pop(future))
            yield future.result()

    def _run_batch(self) -> list[Outcome]:
        """The network on the gathered batch (in this thread); finishing each photo (decoding
        and the join) and writing it go to the pool. When the network fails, every file of the
        batch fails with its reason (returned), and the run goes on."""
        batch, self.batch = self.batch, []
        try:
            outputs = self.colorizer.predict([prepared.photo for prepared, _ in batch])
        except Exception as e:  # onnxruntime and torch raise their own kinds
            for _, pixels in batch:
                self._release(pixels)
            reason = f"the network failed on its batch ({_words(e)})"
            return [Outcome(prepared.job.source, "failed", reason) for prepared, _ in batch]
        for (prepared, pixels), output in zip(batch, outputs, strict=True):
            args = (self.colorizer, prepared, output, self.temperature, self.output)
            self.writes[self.pool.submit(_finish, *args)] = pixels
        return []

    def _release(self, pixels: int) -> None:
        self.files, self.pixels = self.files - 1, self.pixels - pixels
