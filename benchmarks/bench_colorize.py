"""Colorize speed and memory, against references measured in the same run.

    python benchmarks/bench_colorize.py [--model default] [--device auto|cpu|cuda] [--files 32]

Folder (0.3 MP JPEGs made from skimage's sample photos, colorized to PNG, end to end):
- ``colorize_files`` (the pipeline, as ``zhangcolor colorize`` runs it) img/s, against
  (a) the one-at-a-time loop it replaced (kept below as ``sequential_colorize_files``),
  (b) the bare network forward at the same batch size and working size,
  (c) a Zhang-demo-style pipeline, file in and PNG out;
- the first run of ``--backend auto`` on the CPU, cold (it exports the model to ONNX) and warm;
- zlib levels on the PNG outputs: encode time and size (what ``--png-compress`` trades);
- on CUDA, the peak GPU memory of each row (``torch.cuda.max_memory_allocated``).

256² inputs: ``Colorizer.colorize_batch`` against the bare forward, and the bare forward in
onnxruntime against torch. Last, the peak RSS of colorizing 24 MP photos, in fresh processes.
"""

from __future__ import annotations

import os

# As `zhangcolor colorize` does, before torch loads; OMP_WAIT_POLICY=ACTIVE measures with torch's
# threads spinning between ops (faster for the network alone). The header says which ran.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import color, data, transform
from timing import interleaved_medians, median_seconds

from zhangcolor.colorize import Colorizer, join_image
from zhangcolor.colorize_files import Job, Outcome, OutputOptions, colorize_files, plan_jobs
from zhangcolor.files import atomic_write
from zhangcolor.images import ImageError, finished_image, load_image, write_image
from zhangcolor.options import default_workers

FOLDER_SIZE = (640, 480)  # 0.3 MP


def sources() -> list[np.ndarray]:
    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def photos(n: int) -> list[np.ndarray]:
    """``n`` 256² photos (the four sample photos, in turn)."""
    base = [(transform.resize(s, (256, 256)) * 255).astype(np.uint8) for s in sources()]
    return [base[i % 4] for i in range(n)]


def make_folder(folder: Path, n: int) -> Path:
    """``n`` different 640×480 JPEGs: crops of the sample photos, some mirrored."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        image = Image.fromarray(sources()[i % 4])
        w, h = image.size
        left, top = rng.integers(0, w // 8), rng.integers(0, h // 8)
        image = image.crop((left, top, left + w * 7 // 8, top + h * 7 // 8))
        if i % 8 >= 4:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.resize(FOLDER_SIZE, Image.Resampling.BICUBIC).save(
            folder / f"{i:03d}.jpg", quality=90
        )
    return folder


# ----------------------------------------------------------------------------- references


def sequential_colorize_files(
    colorizer: Colorizer, jobs: list[Job], batch_size: int = 4, png_compress: int = 6
):
    """Reference (a): colorize_files as it was before the pipeline (2026-11), one file at a time
    in one thread: decode, batch, join and write in turn, PNG at zlib's default level 6."""
    pending: list[tuple[Job, object]] = []

    def colorize_batch(images):  # as it was: the join on the CPU, whatever the device
        photos = [colorizer.prepare(image) for image in images]
        small = torch.cat([photo.small for photo in photos])
        ab = colorizer.decode(colorizer.network_output(small)).cpu()
        return [join_image(p.lightness, ab[i : i + 1]) for i, p in enumerate(photos)]

    def flush():
        if not pending:
            return
        results = colorize_batch([image for _, image in pending])
        for (job, image), rgb in zip(pending, results, strict=True):
            result = finished_image(rgb, image.alpha, "png")
            job.target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(
                job.target,
                lambda tmp, r=result: write_image(r, tmp, "png", png_compress=png_compress),
            )
            yield Outcome(job.source, "done", str(job.target))
        pending.clear()

    for job in jobs:
        try:
            image = load_image(job.source)
        except ImageError as e:
            yield Outcome(job.source, "failed", str(e))
            continue
        pending.append((job, image))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()


def demo_reference(colorizer: Colorizer, image: np.ndarray) -> np.ndarray:
    """Reference (c), the authors' demo flow: skimage Lab, the photo resized to 256² for the
    network, the network in fp32 on one image, numpy decoding, skimage upsampling and Lab ->
    RGB at full size."""
    lab = color.rgb2lab(image)
    small = image
    if image.shape[:2] != (256, 256):  # the demo's resize_img: PIL bicubic
        small = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.BICUBIC))
    lightness = torch.from_numpy(color.rgb2lab(small)[None, None, :, :, 0]).float()
    with torch.no_grad():
        logits = colorizer.model(lightness.to(colorizer.device)).float().cpu().numpy()[0]
    z = np.exp(logits - logits.max(0, keepdims=True))  # (Q, 64, 64)
    z /= z.sum(0, keepdims=True)
    f = np.exp(np.log(z + 1e-12) / 0.38)
    f /= f.sum(0, keepdims=True)
    ab = np.einsum("qhw,qc->hwc", f, colorizer.centers.cpu().numpy())
    ab = transform.resize(ab, image.shape[:2], order=1)
    with warnings.catch_warnings():  # "... negative Z values that have been clipped to zero"
        warnings.simplefilter("ignore", UserWarning)
        return color.lab2rgb(np.concatenate([lab[..., :1], ab], -1))


def demo_reference_files(colorizer: Colorizer, jobs: list[Job]) -> None:
    """Reference (c) on files: read the JPEG, colorize as the demo does, write a PNG."""
    for job in jobs:
        rgb = np.asarray(Image.open(job.source).convert("RGB"))
        out = demo_reference(colorizer, rgb)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((out * 255).round().astype(np.uint8)).save(job.target)


# ----------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Row:
    """One way of colorizing a folder's jobs, for :func:`interleaved_rates`."""

    name: str
    run: Callable[[list[Job]], object]  # returns the outcomes, or None
    files: int | None = None  # only the first this many jobs (the slow references)


def interleaved_rates(rows: list[Row], inputs: Path, out: Path, repeat: int, device) -> dict:
    """Median img/s of each row, and its peak GPU memory in MB (None off CUDA). Every row runs
    once to warm up, then ``repeat`` rounds of every row in turn, so that the load of this
    shared machine, which changes by the minute, weighs on each row alike."""
    rates: dict[str, list[float]] = {row.name: [] for row in rows}
    peaks: dict[str, float | None] = {row.name: None for row in rows}
    runs = 0
    for round_ in range(repeat + 1):
        for row in rows:
            runs += 1
            jobs = plan_jobs([str(inputs)], out / f"run{runs}", "png")[0][: row.files]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            result = row.run(jobs)
            sync(device)
            seconds = time.perf_counter() - start
            if result is not None:
                assert all(o.status == "done" for o in result), result
            if round_:
                rates[row.name].append(len(jobs) / seconds)
            if device.type == "cuda":
                peaks[row.name] = torch.cuda.max_memory_allocated() / 2**20
    return {name: (statistics.median(r), peaks[name]) for name, r in rates.items()}


def pipeline(colorizer: Colorizer, args, png_compress: int) -> Callable[[list[Job]], list]:
    output = OutputOptions(png_compress=png_compress)
    return lambda jobs: list(
        colorize_files(
            colorizer, jobs, output=output, batch_size=args.batch_size, workers=args.workers
        )
    )


def bare_forward(colorizer: Colorizer, batch: int) -> Callable[[list[Job]], None]:
    """The network alone, on as many batches as there are jobs (random L at the working size)."""
    light = torch.rand(batch, 1, colorizer.size, colorizer.size) * 100

    def run(jobs: list[Job]) -> None:
        for _ in range(0, len(jobs), batch):
            colorizer.network_output(light)

    return run


def bare_rate(colorizer: Colorizer, batch: int, repeat: int = 5) -> float:
    """img/s of the bare forward at ``batch`` (median of ``repeat``)."""
    light = torch.rand(batch, 1, colorizer.size, colorizer.size) * 100

    def forward():
        colorizer.network_output(light)
        sync(colorizer.device)

    return batch / median_seconds(forward, repeat)


def cold_and_warm_load(model: str, device: str, precision: str) -> tuple[float, float, str]:
    """Seconds to load ``--backend auto`` with an empty cache (an ONNX export, where auto picks
    onnx) and again (the export cached), each in a fresh process, imports included."""
    code = (
        "import time, sys; s = time.perf_counter(); from zhangcolor.colorize import Colorizer; "
        f"c = Colorizer.load({model!r}, device={device!r}, precision={precision!r}, "
        "backend='auto'); print(time.perf_counter() - s, c.backend)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ZHANGCOLOR_CACHE": cache}
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            )
            seconds, backend = done.stdout.split()
            runs.append((float(seconds), backend))
    return runs[0][0], runs[1][0], runs[1][1]


# ----------------------------------------------------------------------------- sections


def folder_benchmark(args, console: Console) -> None:
    torch_c = Colorizer.load(args.model, device=args.device)
    device, on_cpu = torch_c.device, torch_c.device.type == "cpu"
    precision = str(torch_c.autocast or torch.float32).removeprefix("torch.")
    demo_c = Colorizer.load(args.model, device=args.device, precision="fp32")
    rows = []
    if on_cpu:
        auto = Colorizer.load(args.model, device=args.device, backend="auto")
        rows.append(Row(f"colorize_files, backend auto ({auto.backend}), PNG level 1",
                        pipeline(auto, args, 1)))  # fmt: skip
        auto32 = Colorizer.load(args.model, device=args.device, precision="fp32", backend="auto")
        if auto32.backend != auto.backend:  # where the CPU has native bf16, auto is torch's
            name = f"colorize_files, backend auto ({auto32.backend}), fp32, PNG level 1"
            rows.append(Row(name, pipeline(auto32, args, 1)))
    rows += [
        Row(f"colorize_files, torch {precision}, PNG level 1", pipeline(torch_c, args, 1)),
        Row(f"colorize_files, torch {precision}, PNG level 6", pipeline(torch_c, args, 6)),
        Row(
            f"(a) one-at-a-time loop, torch {precision}, PNG level 6",
            lambda jobs: list(sequential_colorize_files(torch_c, jobs, args.batch_size)),
            files=64,
        ),
        Row(
            f"(b) bare forward, torch {precision}, batch {args.batch_size}",
            bare_forward(torch_c, args.batch_size),
        ),
    ]
    if on_cpu:
        onnx = Colorizer.load(args.model, backend="onnx")
        rows.append(Row(f"(b) bare forward, onnxruntime, batch {args.batch_size}",
                        bare_forward(onnx, args.batch_size)))  # fmt: skip
    rows.append(
        Row(
            "(c) Zhang-demo-style, one at a time, fp32, PNG",
            lambda jobs: demo_reference_files(demo_c, jobs),
            files=8,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_folder(Path(tmp) / "in", args.files)
        rates = interleaved_rates(rows, inputs, Path(tmp) / "out", args.repeat, device)
        print_folder_table(console, rates, args, device)
        png_levels(console, sorted((Path(tmp) / "out" / "run1").glob("*.png"))[:8])
    if not on_cpu:
        return
    for precision in ("auto", "fp32"):
        cold, warm, backend = cold_and_warm_load(args.model, args.device, precision)
        console.print(
            f"--backend auto --precision {precision} ({backend}), first use: loading took "
            f"{cold:.2f} s with an empty cache (an ONNX export, for onnx) and {warm:.2f} s once "
            f"cached: {cold - warm:+.2f} s once, {(cold - warm) / args.files * 1000:+.0f} ms an "
            f"image on {args.files} files"
        )


def print_folder_table(console: Console, rows: dict, args, device: torch.device) -> None:
    (first, _), *_ = rows.values()
    sequential = next(v for k, v in rows.items() if k.startswith("(a)"))[0]
    demo = rows["(c) Zhang-demo-style, one at a time, fp32, PNG"][0]
    table = Table(
        title=f"{args.files} JPEGs of 640×480 → PNG, {device.type}, batch {args.batch_size}, "
        f"{args.workers} workers; ratios: the first row ÷ this one"
    )
    for column in ("what", "img/s", "first ÷ this"):
        table.add_column(column, justify="left" if column == "what" else "right")
    if device.type == "cuda":
        table.add_column("peak GPU MB", justify="right")
    for name, (rate, gpu) in rows.items():
        cells = [name, f"{rate:.1f}", f"{first / rate:.2f}×"]
        if device.type == "cuda":
            cells.append("–" if gpu is None else f"{gpu:.0f}")
        table.add_row(*cells)
    console.print(table)
    console.print(
        f"pipeline ÷ one-at-a-time loop: {first / sequential:.2f}×; "
        f"pipeline ÷ Zhang-demo-style: {first / demo:.1f}×"
    )


def png_levels(console: Console, outputs: list[Path]) -> None:
    """Encode time and size of each zlib level on colorized 0.3 MP outputs, against level 6."""
    images = [Image.open(p).convert("RGB") for p in outputs]
    for image in images:
        image.load()

    def encode(level: int) -> int:
        size = 0
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=level)
            size += buffer.tell()
        return size

    results = {
        level: (median_seconds(lambda lv=level: encode(lv), 3), encode(level))
        for level in range(10)
    }
    base_time, base_size = results[6]
    table = Table(title=f"PNG zlib level on {len(images)} colorized 640×480 outputs")
    for column in ("level", "ms / image", "KB / image", "time ÷ level 6", "size ÷ level 6"):
        table.add_column(column, justify="right")
    for level, (seconds, size) in results.items():
        table.add_row(
            str(level),
            f"{seconds / len(images) * 1000:.1f}",
            f"{size / len(images) / 1024:.0f}",
            f"{seconds / base_time:.2f}",
            f"{size / base_size:.3f}",
        )
    console.print(table)


def batch_benchmark(args, console: Console) -> None:
    """256² inputs: colorize_batch against the bare forward, and onnxruntime against torch."""
    images = photos(args.n)
    pil = [Image.fromarray(i) for i in images]
    demo_c = Colorizer.load(args.model, device=args.device, precision="fp32")
    reference = median_seconds(lambda: [demo_reference(demo_c, i) for i in images[:4]], 1) / 4
    console.print(f"Zhang-demo-style reference, 256²: {1 / reference:.1f} img/s (one at a time)")
    for precision in args.precisions.split(","):
        c = Colorizer.load(args.model, device=args.device, precision=precision)
        light = torch.rand(args.n, 1, c.size, c.size) * 100
        took = interleaved_medians(
            {
                "bare": lambda c=c, light=light: (c.network_output(light), sync(c.device)),
                "batch": lambda c=c: (c.colorize_batch(pil), sync(c.device)),
            }
        )
        bare, batch = took["bare"] / args.n, took["batch"] / args.n
        single = median_seconds(lambda c=c: [c.colorize(p) for p in pil[:4]], 1) / 4
        console.print(
            f"{precision}: batch {1 / batch:.1f} img/s, single {1 / single:.1f} img/s, "
            f"bare forward {1 / bare:.1f} img/s -> batch/bare {bare / batch:.2f}×, "
            f"batch/reference {reference / batch:.1f}×, single/reference {reference / single:.1f}×"
        )
    if Colorizer.load(args.model, device=args.device).device.type != "cpu":
        return
    onnx = Colorizer.load(args.model, backend="onnx")
    ort = 1 / bare_rate(onnx, args.n)
    for precision in args.precisions.split(","):
        took = 1 / bare_rate(Colorizer.load(args.model, precision=precision), args.n)
        console.print(
            f"bare forward, batch {args.n}: onnxruntime {1 / ort:.1f} img/s, torch "
            f"{precision} {1 / took:.1f} img/s -> onnxruntime / torch {precision} {took / ort:.2f}×"
        )


#: The child's own peak RSS: VmHWM belongs to its address space, made new by exec, while
#: getrusage's ru_maxrss starts from the parent's peak (Linux keeps it across fork and exec), so
#: a parent grown by the sections above would show through.
PEAK_RSS = (
    "def peak_mb():\n"
    "    try:\n"
    "        with open('/proc/self/status') as f:\n"
    "            return next(int(x.split()[1]) for x in f if x.startswith('VmHWM')) / 1024\n"
    "    except OSError:\n"
    "        import resource; return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
)


def peak_rss(model: str, files: list[Path], out: Path, backend: str, device: str) -> float:
    """Peak RSS in MB of a fresh process that colorizes ``files`` with colorize_files, as the
    command line does (default workers)."""
    code = PEAK_RSS + (
        "import sys; from pathlib import Path; "
        "from zhangcolor.colorize import Colorizer; "
        "from zhangcolor.colorize_files import colorize_files, plan_jobs; "
        f"c = Colorizer.load({model!r}, device={device!r}, backend={backend!r}); "
        "jobs, _ = plan_jobs(sys.argv[2:], Path(sys.argv[1]), 'png'); "
        "assert all(o.status == 'done' for o in colorize_files(c, jobs, workers="
        f"{default_workers()})); "
        "print(peak_mb())"
    )
    command = [sys.executable, "-c", code, str(out), *map(str, files)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return float(done.stdout.strip().splitlines()[-1])


def rss_benchmark(args, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        big = [Path(tmp) / f"big{i}.jpg" for i in range(2)]
        for i, path in enumerate(big):
            photo = Image.fromarray(sources()[i])
            photo.resize((6000, 4000), Image.Resampling.BILINEAR).save(path, quality=90)
        small = make_folder(Path(tmp) / "small", 8)
        for backend in ("torch", "auto"):
            run = (backend, args.device)
            one = peak_rss(args.model, big[:1], Path(tmp) / f"1{backend}", *run)
            many = peak_rss(args.model, [*big, small], Path(tmp) / f"2{backend}", *run)
            console.print(
                f"peak RSS, backend {backend}: one 24 MP photo {one:.0f} MB; two 24 MP photos "
                f"and 8 small ones {many:.0f} MB (≤ 1500)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--files", type=int, help="JPEGs in the folder (32; 256 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=4, help="colorize_files' batch")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeat", type=int, default=3, help="runs per folder row (median)")
    parser.add_argument("--n", type=int, default=16, help="images per batch, 256² section")
    parser.add_argument("--precisions", default="fp32,bf16", help="256² section")
    parser.add_argument(
        "--only", choices=("folder", "batch", "rss"), action="append", help="sections to run"
    )
    args = parser.parse_args()
    args.files = args.files or (256 if args.device == "cuda" else 32)
    console = Console(width=140)
    console.print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {args.device}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    sections = {"folder": folder_benchmark, "batch": batch_benchmark, "rss": rss_benchmark}
    for name, section in sections.items():
        if not args.only or name in args.only:
            section(args, console)
            console.print(f"(load average after {name}: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
