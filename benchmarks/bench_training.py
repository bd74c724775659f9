"""Training throughput: the train step alone, the input pipeline alone, and both together.

    python benchmarks/bench_training.py [--data PHOTOS] [--device cpu|cuda]
        [--configs eccv16-compact unet-effnet-classification] [--crop 128] [--batch 16]

Every row runs the real training code (``train.prepare``, ``train_step``, the DataLoader and
the device-side augmentation) on the chosen device, at the precision ``auto`` picks there:

1. step only: img/s of ``train_step`` on one augmented batch already on the device;
2. loader only: img/s of the DataLoader (the decoded-photo cache, and for reference decoding
   every photo each time) including the copy to the device and the crops on it;
3. end to end: img/s of ``train_one_epoch`` for a number of steps, which comes close to the
   step-only rate when the loader keeps up;
4. on CUDA, the peak GPU memory of each config.
Ratios are against rows measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from zhangcolor.config import load_config, resolve_config
from zhangcolor.data import EpochSampler, device_batch
from zhangcolor.device import cpu_has_native_bf16, resolve_precision
from zhangcolor.options import TrainConfig
from zhangcolor.train import (
    load_data,
    make_loader,
    prepare,
    train_one_epoch,
    train_step,
)

CONFIGS = ["eccv16-compact", "unet-effnet-classification", "eccv16"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generated_photos(folder: Path, n: int = 96) -> Path:
    """JPEGs of about 0.15 MP with color in them, when no photo folder is given."""
    from PIL import Image

    y, x = np.mgrid[0:320, 0:480]
    for i in range(n):
        rgb = np.stack([(x + 13 * i) % 256, (y * 2) % 256, (x + y + 29 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return folder


def config_for(name: str, args, data: Path, out: Path) -> TrainConfig:
    """A shipped config with the benchmark's overrides (no ImageNet weights: speed only)."""
    overrides = {"crop": args.crop, "batch_size": args.batch, "workers": args.workers}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if name == "eccv16" and args.device == "cpu":
        overrides.setdefault("batch_size", 8)  # full width on a CPU: seconds a step
    model = {"pretrained": False} if "unet" in name else None
    return load_config(
        TrainConfig,
        resolve_config(name),
        data=str(data),
        out=str(out / name),
        model=model,
        precision=args.precision,
        **overrides,
    )


def timed(fn, steps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(config: TrainConfig, data, device: torch.device, steps: int) -> dict:
    """Step-only, loader-only and end-to-end img/s (and peak GPU memory) of one config."""
    trainer = prepare(config, len(data.train), 0, 1, device)
    trainer.model.train()
    sampler = EpochSampler(len(data.train), seed=0)
    loader = make_loader(data.train, sampler, config, device, config.batch_size)
    batch = next(b for b in loader if b["rgba"] is not None)
    crops = device_batch(batch, config.crop, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = config.batch_size / timed(lambda: train_step(trainer, crops), steps, device)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    def loader_rate(loader) -> float:
        batches, images = iter(loader), 0
        next(batches)  # the workers start
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            b = next(batches)
            images += device_batch(b, config.crop, device).lightness.shape[0]
        sync(device)
        return images / (time.perf_counter() - start)

    cached = loader_rate(loader)
    decoding = data.train.cache
    data.train.cache = None  # the same loader, decoding every photo each time
    uncached = loader_rate(make_loader(data.train, sampler, config, device, config.batch_size))
    data.train.cache = decoding

    trainer.total_steps = trainer.state.step + steps
    loader = make_loader(data.train, sampler, config, device, config.batch_size)
    train_one_epoch(trainer, loader, lambda record: None)  # warm: the workers start
    trainer.total_steps = trainer.state.step + steps
    sync(device)
    start, first = time.perf_counter(), trainer.state.step
    train_one_epoch(trainer, loader, lambda record: None)
    sync(device)
    end_to_end = (trainer.state.step - first) * config.batch_size / (time.perf_counter() - start)
    return {
        "step": step,
        "loader": cached,
        "loader_decoding": uncached,
        "end_to_end": end_to_end,
        "memory_gb": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="photos (default: generated JPEGs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--crop", type=int, help="override each config's crop")
    parser.add_argument("--batch", type=int, help="override each config's batch size")
    parser.add_argument("--workers", type=int, help="override each config's loader workers")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=8, help="timed steps or batches per row")
    args = parser.parse_args()
    device = torch.device(args.device)
    console = Console()
    autocast = resolve_precision(args.precision, device)
    console.print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}"
        f"{'' if device.type == 'cuda' else f'native bf16: {cpu_has_native_bf16()}'}), "
        f"precision {autocast or 'fp32'}, torch {torch.__version__}"
    )
    table = Table(title=f"training throughput on {device} (img/s)")
    columns = (
        *("config", "crop×batch", "workers", "step only", "loader (cache)", "loader (decoding)"),
        *("end to end", "e2e / step", "loader / step", "GPU GB"),
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "config" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or generated_photos(Path(tmp))
        for name in args.configs:
            config = config_for(name, args, data_dir, Path(tmp))
            data = load_data(config, 0, console)
            r = measure(config, data, device, args.steps)
            memory = "–" if r["memory_gb"] is None else f"{r['memory_gb']:.1f}"
            table.add_row(
                name,
                f"{config.crop}²×{config.batch_size}",
                str(config.workers),
                f"{r['step']:.1f}",
                f"{r['loader']:.1f}",
                f"{r['loader_decoding']:.1f}",
                f"{r['end_to_end']:.1f}",
                f"{r['end_to_end'] / r['step']:.2f}×",
                f"{r['loader'] / r['step']:.1f}×",
                memory,
            )
            console.print(table)


if __name__ == "__main__":
    main()
