"""Training throughput: each shipped config, fp32 against bf16, and the data loader alone.

    python benchmarks/bench_training.py [--data ../shared/data/photos] [--steps 6] [--loss-steps 80]

Tables:
1. train-step img/s per config (its own crop and batch size; channels_last), fp32 vs bf16
   autocast, on random batches already in memory;
2. DataLoader img/s (decode + augment, its workers) against the compact config's train step:
   the loader must not be the bottleneck;
3. bf16 against fp32 on a short run of the compact config on real photos: the mean loss of the
   last 20 steps should agree.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from zhangcolor.bins import load_bins
from zhangcolor.config import load_config
from zhangcolor.data import EpochSampler, PhotoDataset, lab_batch
from zhangcolor.device import cpu_has_native_bf16
from zhangcolor.models import build_model
from zhangcolor.split import split_files
from zhangcolor.train import TrainConfig, compute_loss, make_loader

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["eccv16-compact", "unet-effnet-classification", "unet-effnet-regression", "eccv16"]


def bins() -> dict[str, torch.Tensor]:
    loaded = load_bins()
    return {k: loaded[k].float() for k in ("centers", "weights")}


def step_fn(config: TrainConfig, bf16: bool):
    """A closure running one optimizer step on a batch; the model is built once."""
    torch.manual_seed(0)
    model = build_model(config.model).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    b = bins()

    def step(rgba: torch.Tensor) -> float:
        lightness, ab, mask = lab_batch(rgba)
        lightness = lightness.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(lightness)
        loss = compute_loss(output.float(), ab, mask, config, b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def random_batch(config: TrainConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (config.batch_size, 3, config.crop, config.crop), generator=g)
    return torch.cat([rgb, torch.full_like(rgb[:, :1], 255)], 1).to(torch.uint8)


def throughput(config: TrainConfig, bf16: bool, steps: int) -> float:
    step, batch = step_fn(config, bf16), random_batch(config)
    step(batch)  # warm-up (allocations, oneDNN kernels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    return config.batch_size / statistics.median(times)


def loader_throughput(config: TrainConfig, data: Path, batches: int) -> float:
    train, _ = split_files(data)
    dataset = PhotoDataset(train, crop=config.crop, train=True, load_size=config.load_size)
    sampler = EpochSampler(len(dataset), seed=0, epoch=0)
    loader = iter(make_loader(dataset, sampler, config, torch.device("cpu"), config.batch_size))
    next(loader)  # workers start
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(loader)
        n += 0 if batch["rgba"] is None else batch["rgba"].shape[0]
    return n / (time.perf_counter() - start)


def short_run_loss(config: TrainConfig, data: Path, bf16: bool, steps: int) -> list[float]:
    train, _ = split_files(data)
    dataset = PhotoDataset(train, crop=config.crop, train=True, load_size=config.load_size)
    sampler = EpochSampler(len(dataset), seed=0, epoch=0)
    loader = make_loader(dataset, sampler, config, torch.device("cpu"), config.batch_size)
    step, losses = step_fn(config, bf16), []
    while len(losses) < steps:
        for batch in loader:
            if batch["rgba"] is not None:
                losses.append(step(batch["rgba"]))
            if len(losses) == steps:
                break
    return losses


def generated_photos(folder: Path, n: int = 64) -> Path:
    from PIL import Image

    y, x = np.mgrid[0:320, 0:480]
    for i in range(n):
        rgb = np.stack([(x + 13 * i) % 256, (y * 2) % 256, (x + y + 29 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return folder


def describe(config: TrainConfig) -> str:
    m = config.model
    body = f"unet {m.encoder}" if m.backbone == "unet" else f"eccv16 ×{m.width}"
    return f"{body}, {m.head}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="photos for the loader and loss rows")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per config")
    parser.add_argument("--loss-steps", type=int, default=40, help="steps of the short run")
    args = parser.parse_args()
    console = Console()
    console.print(f"bf16 natively supported by this CPU: {cpu_has_native_bf16()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or generated_photos(Path(tmp))
        console.print("[bold]train step img/s (random batches in memory, channels_last)")
        for name in CONFIGS:
            config = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
            steps = 1 if name == "eccv16" else args.steps  # full width: seconds per step
            fp32 = throughput(config, False, steps)
            # Emulated bf16 on the full-width network takes minutes a step: leave it out.
            slow = name == "eccv16" and not cpu_has_native_bf16()
            bf16 = math.nan if slow else throughput(config, True, 1)
            console.print(
                f"  {name:28s} {describe(config):40s} {config.crop}²×{config.batch_size}  "
                f"fp32 {fp32:6.1f}  bf16 {bf16:6.1f}  bf16/fp32 {bf16 / fp32:.2f}×"
            )

        compact = load_config(TrainConfig, ROOT / "configs" / "eccv16-compact.yaml")
        loader = loader_throughput(compact, data, batches=12)
        train_fp32 = throughput(compact, False, args.steps)
        console.print(
            f"[bold]data loader[/] {loader:.1f} img/s ({compact.workers} workers) against the "
            f"eccv16-compact fp32 train step {train_fp32:.1f} img/s: {loader / train_fp32:.1f}×"
        )
        # The short run uses small crops so that the emulated bf16 of an AVX2-only CPU finishes.
        short = load_config(
            TrainConfig, ROOT / "configs" / "eccv16-compact.yaml", crop=64, batch_size=8
        )
        for precision, bf16 in (("fp32", False), ("bf16", True)):
            losses = short_run_loss(short, data, bf16, args.loss_steps)
            console.print(
                f"[bold]short run[/] eccv16-compact 64²×8, {args.loss_steps} steps, {precision}: "
                f"first {losses[0]:.3f}, mean of last 10 {np.mean(losses[-10:]):.3f}"
            )


if __name__ == "__main__":
    main()
