"""Training (``zhangcolor train``): ``load_data``, ``train_one_epoch``, ``validate``, ``run``.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``plots/loss.png``,
``samples/epoch_NNN.png``, ``checkpoints/`` and, with ``tensorboard: true``, ``tensorboard/``:

- ``best.safetensors`` and ``last.safetensors``: the model weights, with the resolved config and
  the bins and class weights it was trained with in the safetensors metadata, so a checkpoint
  is all that colorizing needs (``best`` is the EMA's weights when there is an EMA);
- ``last.state.pt``: optimizer, scheduler, EMA, RNG and progress, loadable with
  ``weights_only=True``.

``--resume RUN_DIR`` continues exactly: same data order and crops, same steps. Under
``torchrun`` the run is data-parallel (gloo on CPU, nccl on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from zhangcolor import __version__
from zhangcolor.augment import jitter_lightness
from zhangcolor.bins import load_bins
from zhangcolor.checkpoint import (
    checkpoint_step,
    load_training_state,
    save_model,
    save_training_state,
)
from zhangcolor.color import lab_to_rgb
from zhangcolor.config import config_dict
from zhangcolor.data import Batch, EpochSampler, PhotoDataset, collate, device_batch
from zhangcolor.device import precision_context, resolve_precision
from zhangcolor.files import atomic_write, remove_stale_temps
from zhangcolor.loss import Criterion, build_criterion, targets_at_output
from zhangcolor.metrics import auc
from zhangcolor.models import ColorizationNet, build_model, feature_encoder, unwrap
from zhangcolor.options import FEATURE_LOSSES, TrainConfig
from zhangcolor.photo_cache import PhotoCache, estimate_bytes, is_built, open_cache
from zhangcolor.rebalance import inverse_prior_weights
from zhangcolor.split import split_files

__all__ = ["TrainConfig", "TrainingError", "run"]


class TrainingError(Exception):
    """The run cannot go on; the message says why and what to do."""


#: A parameter beyond this size means the run has diverged even while its loss is still finite
#: (weights of 1e30 train on to NaN); the shipped model's largest is 13. Buffers (BatchNorm's
#: running variances reach hundreds) are only checked to be finite.
MAX_WEIGHT = 1e6


# ----------------------------------------------------------------------------- environment


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group (nccl on GPUs, gloo on CPUs) when
    launched by torchrun, even for one process, so one GPU exercises the multi-GPU path."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    if cuda:  # before the process group, so nccl binds this process to its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        return rank, world, torch.device("cuda", torch.cuda.current_device())
    return rank, world, torch.device("cpu")


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ----------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """The training and validation photos, and how many of the latter the sample grid shows."""

    train: PhotoDataset
    val: PhotoDataset
    fixed: int


def load_data(config: TrainConfig, rank: int = 0, console: Console | None = None) -> TrainingData:
    """The datasets of a run. The split is keyed on the files' paths alone (not on the run's
    seed), so that ``evaluate --split val`` scores exactly the photos every run held out.
    With the cache on, rank 0 decodes every photo once first (``console``: with a progress
    bar) and the other ranks wait for it."""
    if config.data is None:
        raise TrainingError("no training data: pass --data FOLDER (a folder of color photos)")
    root = Path(config.data)
    if not root.is_dir():
        raise TrainingError(f"--data {root} is not a folder")
    train, val = split_files(root, config.val_fraction)
    if not train:
        raise TrainingError(f"no images under {root} for training (looked recursively)")
    if not val:  # a tiny folder: validate on training images rather than not at all
        val = train[: config.val_images]
    load_size = max(config.load_size, config.crop)
    caches = _photo_caches(config, [train, val], load_size, rank, console)
    return TrainingData(
        train=PhotoDataset(
            train, train=True, load_size=load_size, scale=config.crop_scale, cache=caches[0]
        ),
        val=PhotoDataset(val, train=False, load_size=load_size, cache=caches[1]),
        fixed=min(config.val_images, len(val)),
    )


def _photo_caches(
    config: TrainConfig, lists: list[list[Path]], load_size: int, rank: int, console
) -> list[PhotoCache | None]:
    """The decoded-photo caches of the lists, built by rank 0; None each when the cache is off,
    or (auto) when it would exceed ``cache_max_gb``."""
    count = sum(len(paths) for paths in lists)
    size = estimate_bytes(count, load_size)
    if config.cache == "off" or (config.cache == "auto" and size > config.cache_max_gb * 2**30):
        return [None] * len(lists)
    if rank == 0 and not all(is_built(paths, load_size) for paths in lists):
        from zhangcolor.progress import progress_bar

        bar = progress_bar(console or Console(quiet=True), enabled=console is not None)
        workers = max(2, config.workers)
        with bar:
            task = bar.add_task(f"caching photos at {load_size} px", total=count)
            for paths in lists:
                open_cache(paths, load_size, workers=workers, on_image=lambda _: bar.advance(task))
    _barrier()
    return [open_cache(paths, load_size) for paths in lists]


def make_loader(
    dataset: PhotoDataset, sampler, config: TrainConfig, device: torch.device, batch: int
) -> DataLoader:
    """One loader for the whole run: its sampler moves on with ``set_epoch``, so the worker
    processes persist across epochs."""
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        drop_last=False,
        persistent_workers=config.workers > 0,
    )


# ----------------------------------------------------------------------------- the run


@dataclass
class RunState:
    """Where a run is; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    epoch_samples: int = 0  # this rank's samples already used in the current epoch
    best_val: float = math.inf  # the best `select_on` value so far (negated for AuCs)
    bad_epochs: int = 0  # epochs since it last improved
    skipped: int = 0  # unusable files met
    stage: int = 1  # the stage of three-stage training


@dataclass(frozen=True)
class RunPaths:
    """The files of a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def plot(self) -> Path:
        return self.root / "plots" / "loss.png"

    def checkpoint(self, name: str) -> Path:
        """``last``, ``prev`` (the last but one), ``next`` (being written) or ``best`` weights."""
        return self.root / "checkpoints" / f"{name}.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "checkpoints" / "last.state.pt"

    def earlier_run(self) -> list[Path]:
        """What an earlier run left here that a new one would clobber: its checkpoints, and its
        metrics when they log a trained step."""
        names = ("best", "last", "prev")
        found = [p for p in [*map(self.checkpoint, names), self.state] if p.exists()]
        if self.metrics.is_file() and _logs_training(self.metrics):
            found.append(self.metrics)
        return found

    def clear(self) -> None:
        """Delete what a run writes (checkpoints, metrics, plot, samples, TensorBoard logs),
        so that a new run starts afresh; anything else in the folder stays."""
        names = ("best", "last", "prev", "next")
        for path in [*map(self.checkpoint, names), self.state, self.metrics, self.plot]:
            path.unlink(missing_ok=True)
        for pattern in ("samples/epoch_*.png", "tensorboard/events.out.tfevents.*"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)

    def remove_stale_temps(self) -> None:
        """What a kill mid-write left: temporary files, and weights not yet renamed to last."""
        for sub in ("", "checkpoints", "plots", "samples"):
            remove_stale_temps(self.root / sub)
        self.checkpoint("next").unlink(missing_ok=True)


def _logs_training(metrics: Path) -> bool:
    """Whether a metrics.jsonl logs any training step or validation (not only run starts)."""
    with metrics.open(encoding="utf-8", errors="replace") as f:
        return any('"loss"' in line or '"val_loss"' in line for line in f)


@dataclass
class Run:
    """Everything one training run works with, built by :func:`prepare`."""

    config: TrainConfig
    model: ColorizationNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    bins: dict[str, Tensor]  # centers, weights and prior_smoothed, on the device, float32
    device: torch.device
    autocast: torch.dtype | None
    rank: int
    world: int
    total_steps: int
    paths: RunPaths
    criterion: Criterion  # the head's loss, built once per run
    state: RunState = field(default_factory=RunState)
    ema: nn.Module | None = None  # the exponential moving average of the weights
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun
    trainable: tuple[bool, ...] = ()  # which parameters train now (the DDP wrapper's)
    stop: threading.Event = field(default_factory=threading.Event)  # set by Ctrl-C
    tensorboard: object | None = None  # a SummaryWriter, with `tensorboard: true`
    skipped_files: dict[str, str] = field(default_factory=dict)  # file -> why it is unusable

    @property
    def writer(self) -> bool:
        """Only rank 0 writes files."""
        return self.rank == 0

    @property
    def net(self) -> nn.Module:
        """What the training step calls: the DDP wrapper, or the model itself."""
        return self.ddp if self.ddp is not None else self.model

    @property
    def judged(self) -> nn.Module:
        """What validation scores and the best checkpoint keeps: the EMA, if any."""
        return self.ema if self.ema is not None else self.model

    def log(self, record: dict) -> None:
        if not self.writer:
            return
        with self.paths.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            group = "val" if any(k.startswith("val_") for k in record) else "train"
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, int | float):
                    name = key.removeprefix("val_")
                    self.tensorboard.add_scalar(f"{group}/{name}", value, record["step"])

    def save(self) -> None:
        """Weights and trainer state at this step. The previous weights stay as prev until both
        new files are in place, so a kill at any moment leaves a matching pair to resume from.
        Weights that have diverged are refused (:func:`check_weights`), so they never replace
        the last good pair."""
        check_weights(self)
        if not self.writer:
            return
        payload = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": vars(self.state).copy(),
            "rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            payload["ema"] = {k: v.cpu() for k, v in self.ema.state_dict().items()}
        last, prev, new = (self.paths.checkpoint(n) for n in ("last", "prev", "next"))
        save_model(new, self.model, self.config, self.bins, self.state.step)
        if last.exists():
            os.replace(last, prev)
        os.replace(new, last)
        save_training_state(self.paths.state, payload)


@torch.no_grad()
def check_weights(run: Run) -> None:
    """Raise :class:`TrainingError` when a parameter of the model or its EMA is not finite or
    larger than :data:`MAX_WEIGHT`, or a buffer (BatchNorm's statistics) is not finite."""
    for name, module in (("weights", run.model), ("EMA weights", run.ema)):
        if module is None:
            continue
        sizes = [p.abs().amax().float() for p in module.parameters() if p.numel()]
        largest = float(torch.stack(sizes).max())  # NaN wins here, unlike in Python's max
        finite = all(bool(b.isfinite().all()) for b in module.buffers() if b.is_floating_point())
        if not (largest <= MAX_WEIGHT and finite):  # NaN fails every comparison
            raise TrainingError(
                f"the {name} diverged by step {run.state.step} (largest |w| {largest:.3g}, "
                f"the limit is {MAX_WEIGHT:g}"
                + ("" if finite else "; non-finite BatchNorm statistics")
                + "); the last good checkpoint is kept. Try a lower --lr, or --precision fp32"
            )


def _encoder(model: ColorizationNet, config: TrainConfig) -> nn.Module | None:
    """The pretrained encoder of a U-Net, which the staged schedules freeze first."""
    if config.model.backbone != "unet" or not config.model.pretrained:
        return None
    return unwrap(model).backbone.encoder


def _optimizer(model: ColorizationNet, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over two groups: the rest (decoder and head), then the pretrained encoder."""
    encoder = _encoder(model, config)
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    groups = [{"params": rest, "lr": config.lr}]
    if encoder is not None:
        groups.append(
            {"params": list(encoder.parameters()), "lr": config.lr * config.finetune_lr_factor}
        )
    return torch.optim.Adam(groups, betas=config.betas, weight_decay=config.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total: int):
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    )


def _run_bins(config: TrainConfig, device: torch.device) -> dict[str, Tensor]:
    """The bins a run trains with, float32 on its device."""
    loaded = load_bins(config.bins)
    names = ("centers", "weights", "prior_smoothed")
    return {k: loaded[k].to(device=device, dtype=torch.float32) for k in names}


def _maximises(config: TrainConfig) -> bool:
    return config.select_on != "val_loss"


def prepare(config: TrainConfig, train_size: int, rank: int, world: int, device) -> Run:
    """The model, optimizer and schedule of a new run on this process's device."""
    if config.batch_size % world:
        raise TrainingError(f"--batch-size {config.batch_size} must divide among {world} processes")
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.is_initialized() and device.type == "cuda":
        # Batch statistics over the global batch (GPU-only in torch).
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    per_rank = config.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(train_size / world) / per_rank)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = _optimizer(model, config)
    bins = _run_bins(config, device)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema_decay else None
    features = feature_encoder(device) if config.loss_kind in FEATURE_LOSSES else None
    return Run(
        config=config,
        model=model,
        optimizer=optimizer,
        scheduler=_schedule(optimizer, config, total_steps),
        bins=bins,
        device=device,
        autocast=resolve_precision(config.precision, device),
        rank=rank,
        world=world,
        total_steps=total_steps,
        paths=RunPaths(Path(config.out)),
        criterion=build_criterion(config, bins, features),
        state=RunState(best_val=-math.inf if _maximises(config) else math.inf),
        ema=ema,
    )


def restore(run: Run, console: Console | None = None) -> None:
    """Load the run folder's last matching weights and trainer state into ``run`` (resume)."""
    saved, weights = _saved_pair(run.paths)
    try:
        run.model.load_state_dict(load_file(str(weights)))
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        if run.ema is not None and "ema" in saved:
            run.ema.load_state_dict(saved["ema"])
        run.state = RunState(**saved["progress"])
        torch.set_rng_state(saved["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise TrainingError(
            f"cannot resume from {run.paths.root}: its checkpoint does not fit this run ({e})"
        ) from None
    if run.writer and run.paths.metrics.exists():
        _trim_metrics(run.paths.metrics, run.state.step, console or Console(stderr=True))


def _saved_pair(paths: RunPaths) -> tuple[dict, Path]:
    """The training state and the weights file saved at the same step."""
    if not paths.state.is_file():
        raise TrainingError(f"nothing to resume in {paths.root}: {paths.state} is missing")
    try:
        saved = load_training_state(paths.state)
    except ValueError as e:
        raise TrainingError(
            f"cannot resume: {e}. Restore it from a backup, or start afresh with "
            f"--overwrite (which deletes the run's checkpoints and metrics)"
        ) from None
    step = saved["progress"]["step"]
    candidates = (paths.checkpoint("last"), paths.checkpoint("prev"))
    weights = next((p for p in candidates if checkpoint_step(p) == step), None)
    if weights is None:
        raise TrainingError(f"no weights in {paths.state.parent} match the saved step {step}")
    return saved, weights


def _trim_metrics(path: Path, step: int, console: Console) -> None:
    """Drop what was logged after the checkpoint at ``step``, atomically. A torn last line (a
    kill or a full disk mid-write) is dropped with a warning; a bad line elsewhere is not ours
    to drop."""
    lines = [
        x for x in path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()
    ]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a record")
        except ValueError:
            if number < len(lines):
                raise TrainingError(
                    f"cannot resume: line {number} of {path} is not a JSON record; "
                    "repair or delete that line"
                ) from None
            console.print(f"[yellow]warning: dropped the torn last line of {path}: {line[:80]!r}")
            continue
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"), durable=True)


def check_folder(paths: RunPaths, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an earlier one, unless ``overwrite``."""
    if resume and overwrite:
        raise TrainingError("--resume continues a run and --overwrite replaces it: pass one")
    earlier = [] if resume or overwrite else paths.earlier_run()
    if earlier:
        names = ", ".join(str(p.relative_to(paths.root)) for p in earlier)
        raise TrainingError(
            f"{paths.root} holds an earlier run ({names}): continue it with "
            f"--resume {paths.root}, or start afresh with --overwrite (which deletes its "
            "checkpoints and metrics), or pick another --out"
        )


def start_folder(run: Run, *, fresh: bool = True) -> None:
    """Rank 0 makes the run folder, deletes what a kill mid-write left there (and, for a
    ``fresh`` run, what an earlier run wrote), writes the resolved config and opens
    TensorBoard's log."""
    if not run.writer:
        return
    import yaml

    for sub in ("checkpoints", "plots", "samples"):
        (run.paths.root / sub).mkdir(parents=True, exist_ok=True)
    run.paths.remove_stale_temps()
    if fresh:
        run.paths.clear()
    resolved = yaml.safe_dump(config_dict(run.config), sort_keys=False)
    atomic_write(run.paths.config, lambda tmp: tmp.write_text(resolved))
    if run.config.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainingError(
                "tensorboard: true needs the tensorboard package: "
                "pip install 'zhangcolor[tensorboard]'"
            ) from None
        run.tensorboard = SummaryWriter(str(run.paths.root / "tensorboard"))


def set_stage(run: Run) -> None:
    """Freeze or unfreeze the pretrained encoder and set each group's learning rate for this
    epoch's stage, and under torchrun wrap the model for DistributedDataParallel again when
    what trains has changed: DDP waits for a gradient of every parameter that required one
    when it was built.

    Two stages: the encoder frozen for ``freeze_epochs``, then fine-tuned at
    lr × ``finetune_lr_factor``. Three: the decoder at lr, then at lr × ``stage_lr_factor``,
    then the whole network (the encoder at lr × ``finetune_lr_factor``).
    """
    config, state = run.config, run.state
    encoder = _encoder(run.model, config)
    if config.stages == 3:
        frozen = state.stage < 3
        decoder_lr = config.lr * (config.stage_lr_factor if state.stage >= 2 else 1.0)
        bases = [decoder_lr, config.lr * config.finetune_lr_factor][
            : len(run.optimizer.param_groups)
        ]
        run.scheduler.base_lrs = bases
        factor = run.scheduler.lr_lambdas[0](run.scheduler.last_epoch)
        for group, base in zip(run.optimizer.param_groups, bases, strict=True):
            group["lr"] = base * factor
    else:
        frozen = state.epoch < config.freeze_epochs
    if encoder is not None:
        encoder.requires_grad_(not frozen)
    trainable = tuple(p.requires_grad for p in run.model.parameters())
    if dist.is_initialized() and trainable != run.trainable:
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.ddp = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    run.trainable = trainable


# ----------------------------------------------------------------------------- steps and epochs


def train_step(run: Run, batch: Batch) -> float:
    """One optimizer step on a batch of crops (:func:`~zhangcolor.data.device_batch`);
    returns its loss."""
    config, net = run.config, run.net
    run.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    # Color-neutral jitter of the input L, seeded by the step (and rank): exact on resume.
    generator = torch.Generator(run.device)
    generator.manual_seed((config.seed * 1_000_003 + run.state.step) * 64 + run.rank)
    chunks = [batch.micro_batch(i, config.micro_batches) for i in range(config.micro_batches)]
    chunks = [c for c in chunks if c.lightness.shape[0]]
    for i, (lightness, ab, mask) in enumerate(chunks):
        # DDP averages gradients once, on the last micro-batch's backward.
        last = i == len(chunks) - 1
        sync = net.no_sync() if hasattr(net, "no_sync") and not last else nullcontext()
        seen = jitter_lightness(lightness, generator, config.light_jitter)
        if config.channels_last:
            seen = seen.contiguous(memory_format=torch.channels_last)
        with precision_context(run.device, run.autocast):
            output = net(seen)
        loss = run.criterion(output, lightness, ab, mask) / config.micro_batches
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at step {run.state.step + 1}; the last good "
                "checkpoint is kept. Try a lower --lr, or --precision fp32"
            )
        with sync:
            loss.backward()
        total += loss.item()
    run.optimizer.step()
    run.scheduler.step()
    run.state.step += 1
    if run.ema is not None:
        update_ema(run.ema, run.model, run.config.ema_decay, run.state.step)
    return total


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema ← ema + (1 − d)(model − ema), with d warming up as (1 + step) / (10 + step) so the
    first steps' random weights fade fast; buffers (BatchNorm statistics) are copied."""
    d = min(decay, (1 + step) / (10 + step))
    for e, m in zip(ema.parameters(), unwrap(model).parameters(), strict=True):
        e.lerp_(m.detach(), 1.0 - d)
    for e, m in zip(ema.buffers(), unwrap(model).buffers(), strict=True):
        e.copy_(m)


def _keep_frozen_statistics(model: nn.Module) -> None:
    """A frozen encoder keeps its BatchNorm statistics too: modules whose parameters all stay
    fixed run in eval mode."""
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def train_one_epoch(run: Run, loader: DataLoader, on_step: Callable[[dict], None]) -> str:
    """Train until the epoch ends; returns "epoch", "max_steps" or "interrupted"."""
    run.model.train()
    _keep_frozen_statistics(run.model)
    config, state = run.config, run.state
    seen, started = 0, time.perf_counter()
    for batch in loader:
        state.skipped += len(batch["skipped"])
        state.epoch_samples += len(batch["skipped"])
        run.skipped_files.update(batch["skipped"])
        if batch["rgba"] is None:
            continue
        crops = device_batch(batch, config.crop, run.device)
        size = crops.lightness.shape[0]
        state.epoch_samples += size
        loss = train_step(run, crops)
        seen += size * run.world
        if state.step % config.log_every == 0 or state.step == 1:
            rate = seen / max(time.perf_counter() - started, 1e-9)
            lr = run.scheduler.get_last_lr()[0]
            record = {"step": state.step, "epoch": state.epoch, "loss": loss, "lr": lr}
            on_step({**record, "img_per_s": rate})
        if state.step >= run.total_steps:
            return "max_steps"
        if run.stop.is_set():
            return "interrupted"
        if state.step % config.save_every == 0:
            run.save()
    return "epoch"


@torch.no_grad()
def validate(run: Run, loader: DataLoader) -> dict[str, float]:
    """Mean validation loss, raw AuC and class-rebalanced AuC (at T = config.temperature) of
    the judged weights (the EMA, if any) over the validation set; a pixel's rebalancing weight
    is 1 / p̃ of its true color's bin, p̃ of the run's own bins."""
    model, config, bins = run.judged, run.config, run.bins
    model.eval()
    losses, aucs, rebalanced = [], [], []
    for batch in loader:
        if batch["rgba"] is None:
            continue
        lightness, ab, mask = device_batch(batch, config.crop, run.device)
        with precision_context(run.device, run.autocast):
            output = model(lightness)
        losses.append(run.criterion(output, lightness, ab, mask).item())
        small_ab, small_mask = targets_at_output(ab, mask)
        pred = unwrap(model).kind.decode(output.float(), bins["centers"], config.temperature)
        aucs.append(auc(pred, small_ab, small_mask))
        weight = inverse_prior_weights(small_ab, bins["centers"], bins["prior_smoothed"])
        rebalanced.append(auc(pred, small_ab, small_mask, weight))
    run.model.train()
    if not losses:
        return {"val_loss": math.nan, "val_auc": math.nan, "val_auc_rebalanced": math.nan}
    return {
        "val_loss": sum(losses) / len(losses),
        "val_auc": sum(aucs) / len(aucs),
        "val_auc_rebalanced": sum(rebalanced) / len(rebalanced),
    }


@torch.no_grad()
def sample_grid(
    model: nn.Module, images: Batch, bins: dict[str, Tensor], temperature: float
) -> Tensor:
    """Rows of gray | truth | prediction for a batch of crops: ``(3, H', W')``."""
    from torchvision.utils import make_grid

    model = unwrap(model)
    training = model.training
    model.eval()
    lightness, ab, _ = images
    pred = model.kind.decode(model(lightness).float(), bins["centers"], temperature)
    pred = F.interpolate(pred, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
    gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
    truth = lab_to_rgb(torch.cat([lightness, ab], 1))
    color = lab_to_rgb(torch.cat([lightness, pred], 1))
    model.train(training)
    rows = torch.stack([gray, truth, color], 1).flatten(0, 1)  # (3B, 3, H, W)
    return make_grid(rows.cpu(), nrow=3, padding=2, pad_value=1.0)


def plot_losses(metrics_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    steps = [m for m in lines if "loss" in m]
    vals = [m for m in lines if "val_loss" in m]
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot([m["step"] for m in steps], [m["loss"] for m in steps], lw=1, label="train (step)")
    if vals:
        ax.plot([m["step"] for m in vals], [m["val_loss"] for m in vals], "o-", label="val (epoch)")
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    ax.legend()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _judge(run: Run, metrics: dict[str, float]) -> bool:
    """Whether this epoch's ``select_on`` beats the best so far; counts the epochs it does not."""
    value = metrics[run.config.select_on]
    value = -value if _maximises(run.config) else value
    best = -run.state.best_val if _maximises(run.config) else run.state.best_val
    improved = value < best
    if improved:
        run.state.best_val = -value if _maximises(run.config) else value
        run.state.bad_epochs = 0
    else:
        run.state.bad_epochs += 1
    return improved


def end_epoch(run: Run, metrics: dict[str, float], fixed: Batch | None, console: Console) -> bool:
    """Log the validation, keep the best weights, checkpoint, and (rank 0) draw the loss plot
    and the sample grid. Returns whether the run should stop early."""
    state, config = run.state, run.config
    check_weights(run)  # before diverged weights could become the best
    run.log({"step": state.step, "epoch": state.epoch, **metrics, "skipped_files": state.skipped})
    improved = _judge(run, metrics)
    if run.writer and improved:
        save_model(run.paths.checkpoint("best"), run.judged, config, run.bins, state.step)
    patience_out = config.patience is not None and state.bad_epochs >= config.patience
    next_stage = config.stages == 3 and patience_out and state.stage < 3
    if next_stage:  # early-stopped stage: on from its best weights
        _barrier()
        best = load_file(str(run.paths.checkpoint("best")), device=str(run.device))
        for module in (run.model, run.ema):
            if module is not None:
                module.load_state_dict(best)
        state.stage, state.bad_epochs = state.stage + 1, 0
    run.save()
    if run.writer:
        _draw_epoch(run, metrics, fixed, improved, console)
    return patience_out and not next_stage


def _draw_epoch(run: Run, metrics: dict, fixed: Batch | None, improved: bool, console) -> None:
    from torchvision.utils import save_image

    state = run.state
    plot_losses(run.paths.metrics, run.paths.plot)
    if fixed is not None:
        grid = sample_grid(run.judged, fixed, run.bins, run.config.temperature)
        name = run.paths.root / "samples" / f"epoch_{state.epoch:03d}.png"
        atomic_write(name, lambda tmp: save_image(grid, tmp, format="png"))
        if run.tensorboard is not None:
            run.tensorboard.add_image("samples", grid, state.step)
            run.tensorboard.flush()
    stage = f" (stage {state.stage})" if run.config.stages == 3 else ""
    console.print(
        f"epoch {state.epoch}{stage}: val loss {metrics['val_loss']:.4f}, "
        f"val AuC {metrics['val_auc']:.1f}, rebalanced {metrics['val_auc_rebalanced']:.1f}"
        + (" (best)" if improved else "")
    )


@contextmanager
def stop_on_sigint(run: Run, console: Console) -> Iterator[None]:
    """Ctrl-C asks the run to stop after the step in hand (and save), rather than kill it."""

    def on_sigint(signum, frame) -> None:
        run.stop.set()
        if run.writer:
            console.print("[yellow]interrupted: saving a checkpoint after this step …")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_record(run: Run, resumed: bool) -> dict:
    return {
        "event": "resume" if resumed else "start",
        "step": run.state.step,
        "device": str(run.device),
        "precision": str(run.autocast or torch.float32).removeprefix("torch."),
        "world": run.world,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "zhangcolor_version": __version__,
    }


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> str:
    """Train as ``config`` says; returns how the run ended: "done", "max_steps",
    "early_stop" or "interrupted". Raises :class:`TrainingError` when it cannot go on.

    A new run refuses a folder that holds an earlier one, unless ``overwrite`` (which deletes
    the earlier run's checkpoints and metrics); ``resume`` continues it."""
    rank, world, device = setup_distributed()
    try:
        check_folder(RunPaths(Path(config.out)), resume=resume, overwrite=overwrite)
        console = Console(stderr=True)
        data = load_data(config, rank, console if show_progress and rank == 0 else None)
        current = prepare(config, len(data.train), rank, world, device)
        if resume:
            restore(current, console)
        start_folder(current, fresh=not resume)
        current.log(_start_record(current, resume))
        with stop_on_sigint(current, console):
            return _epochs(current, data, console, show_progress)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _no_usable_images(run: Run, shown: int = 20) -> str:
    """Why a whole epoch trained nothing: every file's reason."""
    skipped = sorted(run.skipped_files.items())
    lines = [f"  {file}: {reason}" for file, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  … and {len(skipped) - shown} more")
    return (
        f"no usable training images in {run.config.data}: a whole epoch skipped all "
        f"{len(skipped)} files, and nothing was trained or saved:\n" + "\n".join(lines)
    )


def _epochs(run: Run, data: TrainingData, console: Console, show_progress: bool) -> str:
    """The epoch loop of :func:`run`; returns how it ended."""
    from zhangcolor.progress import progress_bar

    config, state, device = run.config, run.state, run.device
    per_rank = config.batch_size // run.world
    sampler = EpochSampler(len(data.train), seed=config.seed, rank=run.rank, world=run.world)
    loader = make_loader(data.train, sampler, config, device, per_rank)
    val_loader = make_loader(data.val, None, config, device, per_rank)
    fixed = collate([data.val[i] for i in range(data.fixed)])
    fixed = device_batch(fixed, config.crop, device) if fixed["rgba"] is not None else None
    extra = "loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} img/s"
    bar = progress_bar(console, "step", extra=extra, enabled=run.writer and show_progress)
    with bar:
        task = bar.add_task(
            "", total=run.total_steps, completed=state.step, loss=math.nan, rate=0.0
        )

        def on_step(record: dict) -> None:
            run.log(record)
            bar.update(
                task, completed=record["step"], loss=record["loss"], rate=record["img_per_s"]
            )

        while state.epoch < config.epochs and state.step < run.total_steps:
            set_stage(run)
            bar.update(task, description=f"epoch {state.epoch + 1}/{config.epochs}")
            sampler.set_epoch(state.epoch, skip=state.epoch_samples)
            reason = train_one_epoch(run, loader, on_step)
            bar.update(task, completed=state.step)
            if reason == "epoch" and state.step == 0:
                raise TrainingError(_no_usable_images(run))
            if reason == "interrupted":
                run.save()
                return "interrupted"
            if reason == "epoch" or state.epoch_samples >= len(sampler) + sampler.skip:
                state.epoch, state.epoch_samples = state.epoch + 1, 0
            stop = end_epoch(run, validate(run, val_loader), fixed, console)
            if reason == "max_steps" and state.epoch < config.epochs:
                return "max_steps"
            if stop:
                return "early_stop"
    return "done"
