"""Training (``zhangcolor train``): ``prepare``, ``train_one_epoch``, ``validate``, ``run``.

``run`` loads the data (``load_data``), builds the model, optimizer, schedule and criterion
(``prepare``), then trains epoch by epoch: each epoch's steps (``train_one_epoch``,
``train_step``), then its validation, checkpoints and early stopping (``end_epoch``). The files
it writes are :mod:`zhangcolor.run_folder`'s.

``--resume RUN_DIR`` continues exactly: same data order and crops, same steps. Under
``torchrun`` the run is data-parallel (gloo on CPU, nccl on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from zhangcolor import __version__
from zhangcolor.augment import jitter_lightness
from zhangcolor.bins import load_bins
from zhangcolor.checkpoint import copy_matching, save_model
from zhangcolor.color import lab_to_rgb
from zhangcolor.data import Batch, EpochSampler, PhotoDataset, collate, device_batch
from zhangcolor.device import precision_context, resolve_precision
from zhangcolor.distributed import barrier, setup_distributed
from zhangcolor.files import atomic_write
from zhangcolor.loss import Criterion, build_criterion, targets_at_output
from zhangcolor.metrics import auc
from zhangcolor.model_file import load_model
from zhangcolor.models import ColorizationNet, build_model, feature_encoder, unwrap
from zhangcolor.options import FEATURE_LOSSES, HintConfig, TrainConfig
from zhangcolor.photo_cache import PhotoCache, estimate_bytes, is_built, open_cache, try_cache
from zhangcolor.progress import LossMeter
from zhangcolor.rebalance import inverse_prior_weights
from zhangcolor.run_folder import (
    ResumePoint,
    RunPaths,
    RunState,
    TrainingError,
    check_weights,
    log_record,
    note_progress,
    open_run,
    plot_losses,
    restore,
    save_checkpoint,
    start_folder,
    training_state,
    trim_metrics,
)
from zhangcolor.schedule import build_optimizer, build_schedule, enter_stage
from zhangcolor.split import split_files

__all__ = ["TrainConfig", "TrainingError", "run"]

# ----------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """The training and validation photos, and how many of the latter the sample grid shows."""

    train: PhotoDataset
    val: PhotoDataset
    grid_images: int


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
    hints = _hint_config(config)
    return TrainingData(
        train=PhotoDataset(
            train,
            train=True,
            load_size=load_size,
            scale=config.crop_scale,
            cache=caches[0],
            hints=hints,
        ),
        val=PhotoDataset(val, train=False, load_size=load_size, cache=caches[1], hints=hints),
        grid_images=min(config.val_images, len(val)),
    )


def _photo_caches(
    config: TrainConfig, lists: list[list[Path]], load_size: int, rank: int, console
) -> list[PhotoCache | None]:
    """The decoded-photo caches of the lists, built by rank 0; None each when the cache is off,
    or (auto) when it would exceed ``cache_max_gb`` or cannot be written."""
    count = sum(len(paths) for paths in lists)
    size = estimate_bytes(count, load_size)
    if config.cache == "off" or (config.cache == "auto" and size > config.cache_max_gb * 2**30):
        return [None] * len(lists)
    if rank == 0 and not all(is_built(paths, load_size) for paths in lists):
        from zhangcolor.progress import progress_bar

        bar = progress_bar(console or Console(quiet=True), enabled=console is not None)
        workers, shown = max(2, config.workers), console or Console(stderr=True)
        with bar:
            task = bar.add_task(f"caching photos at {load_size} px", total=count)
            for paths in lists:
                try_cache(paths, load_size, required=config.cache == "on", workers=workers,
                          on_image=lambda _: bar.advance(task),
                          warn=lambda text: shown.print(f"[yellow]warning: {text}"))  # fmt: skip
    barrier()
    return [open_cache(paths, load_size) if is_built(paths, load_size) else None for paths in lists]


def _hint_config(config: TrainConfig) -> HintConfig | None:
    """The simulated users of a guided network's run; None for an automatic one."""
    return config.hints if config.model.hints else None


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
        worker_init_fn=_leave_stop_signals_to_the_run,
    )


def _leave_stop_signals_to_the_run(worker: int) -> None:
    """Slurm and Ctrl-C signal every process of a job: the run saves, then ends its workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ----------------------------------------------------------------------------- the trainer


@dataclass
class Trainer:
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
    stop: threading.Event = field(default_factory=threading.Event)  # set by SIGINT or SIGTERM
    stopped_by: int = 0  # the signal that asked the run to stop
    tensorboard: object | None = None  # a SummaryWriter, with `tensorboard: true`
    skipped_files: dict[str, str] = field(default_factory=dict)  # file -> why it is unusable

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the only process that writes files."""
        return self.rank == 0

    @property
    def net(self) -> nn.Module:
        """What the training step calls: the DDP wrapper, or the model itself."""
        return self.ddp if self.ddp is not None else self.model

    @property
    def scored_model(self) -> nn.Module:
        """What validation scores and the best checkpoint keeps: the EMA, if any."""
        return self.ema if self.ema is not None else self.model

    def log(self, record: dict) -> None:
        """Rank 0 appends ``record`` to metrics.jsonl (and TensorBoard's log)."""
        if self.is_main:
            log_record(self.paths, record, self.tensorboard)

    def save(self) -> None:
        """Weights and trainer state at this step, as a pair (:func:`save_checkpoint`).
        Weights that have diverged are refused (:func:`check_weights`), so they never replace
        the last good pair."""
        check_weights(self.model, self.ema, self.state.step)
        if not self.is_main:
            return
        state = training_state(
            optimizer=self.optimizer, scheduler=self.scheduler, progress=self.state, ema=self.ema
        )
        save_checkpoint(
            self.paths, model=self.model, config=self.config, bins=self.bins, state=state
        )


def _run_bins(config: TrainConfig, device: torch.device) -> dict[str, Tensor]:
    """The bins a run trains with, float32 on its device; a bins file that cannot be used is a
    TrainingError that says why."""
    try:
        loaded = load_bins(config.bins)
    except ValueError as e:  # BinsError: the file is named in its words
        raise TrainingError(f"--bins: {e}") from None
    names = ("centers", "weights", "prior_smoothed")
    return {k: loaded[k].to(device=device, dtype=torch.float32) for k in names}


def _maximises(config: TrainConfig) -> bool:
    """Whether ``select_on`` improves upwards (the AuCs) or downwards (the losses)."""
    return "auc" in config.select_on


def prepare(
    config: TrainConfig, train_size: int, rank: int, world: int, device, total_steps=None
) -> Trainer:
    """The model, optimizer, schedule and criterion of a new run on this process's device;
    ``total_steps`` when a resumed run keeps its own (else from the epochs and the data)."""
    if config.batch_size % world:
        raise TrainingError(f"--batch-size {config.batch_size} must divide among {world} processes")
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    if config.init_from is not None:
        _start_from(model, config.init_from)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.is_initialized() and device.type == "cuda":
        # Batch statistics over the global batch (GPU-only in torch).
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    per_rank = config.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(train_size / world) / per_rank)
    if total_steps is None:
        total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
    optimizer = build_optimizer(model, config)
    bins = _run_bins(config, device)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema_decay else None
    features = feature_encoder(device) if config.loss_kind in FEATURE_LOSSES else None
    return Trainer(
        config=config,
        model=model,
        optimizer=optimizer,
        scheduler=build_schedule(optimizer, config, total_steps),
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


def _start_from(model: nn.Module, source: str) -> None:
    """``model`` initialised from a model file's weights (``init_from``): every weight they
    share, and the L channels of an input layer that also takes hints; a model file of another
    network, or one that shares nothing, is a TrainingError."""
    try:
        network, _ = load_model(source)
        left = copy_matching(model, {k: v.float() if v.is_floating_point() else v
                                     for k, v in network.state_dict().items()})  # fmt: skip
    except (FileNotFoundError, ValueError) as e:
        raise TrainingError(f"cannot start from {source}: {e}") from None
    shared = len(model.state_dict()) - len(left)
    if shared == 0:
        raise TrainingError(f"cannot start from {source}: it shares no weight with this network")


def _resume(trainer: Trainer, point: ResumePoint, console: Console) -> None:
    """Load the pair ``point`` holds into ``trainer``; rank 0 drops the metrics logged after it."""
    trainer.state = restore(
        trainer.paths,
        model=trainer.model,
        optimizer=trainer.optimizer,
        scheduler=trainer.scheduler,
        ema=trainer.ema,
        point=point,
    )
    if trainer.is_main and trainer.paths.metrics.exists():
        trim_metrics(trainer.paths.metrics, trainer.state.step, console)


def set_stage(trainer: Trainer) -> None:
    """Set what trains, and at which rate, for this epoch's stage (:func:`enter_stage`), and
    under torchrun wrap the model for DistributedDataParallel again when what trains has
    changed: DDP waits for a gradient of every parameter that required one when it was built."""
    state = trainer.state
    enter_stage(
        trainer.model,
        trainer.optimizer,
        trainer.scheduler,
        trainer.config,
        stage=state.stage,
        epoch=state.epoch,
    )
    trainable = tuple(p.requires_grad for p in trainer.model.parameters())
    if dist.is_initialized() and trainable != trainer.trainable:
        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        trainer.ddp = nn.parallel.DistributedDataParallel(trainer.model, device_ids=ids)
    trainer.trainable = trainable


# ----------------------------------------------------------------------------- steps and epochs


def train_step(trainer: Trainer, batch: Batch) -> float:
    """One optimizer step on a batch of crops (:func:`~zhangcolor.data.device_batch`);
    returns its loss."""
    config, net = trainer.config, trainer.net
    trainer.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    # Color-neutral jitter of the input L, seeded by the step (and rank): exact on resume.
    generator = torch.Generator(trainer.device)
    generator.manual_seed((config.seed * 1_000_003 + trainer.state.step) * 64 + trainer.rank)
    chunks = [batch.micro_batch(i, config.micro_batches) for i in range(config.micro_batches)]
    chunks = [c for c in chunks if c.lightness.shape[0]]
    for i, chunk in enumerate(chunks):
        # DDP averages gradients once, on the last micro-batch's backward.
        last = i == len(chunks) - 1
        sync = net.no_sync() if hasattr(net, "no_sync") and not last else nullcontext()
        network_input = jitter_lightness(chunk.lightness, generator, config.light_jitter)
        if config.channels_last:
            network_input = network_input.contiguous(memory_format=torch.channels_last)
        with precision_context(trainer.device, trainer.autocast):
            output = _forward(net, network_input, chunk.hints)
        loss = trainer.criterion(output, chunk.lightness, chunk.ab, chunk.mask)
        loss = loss / config.micro_batches
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {loss.item()} at step {trainer.state.step + 1}; the last good "
                "checkpoint is kept. Try a lower --lr, or --precision fp32"
            )
        with sync:
            loss.backward()
        total += loss.item()
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.state.step += 1
    if trainer.ema is not None:
        update_ema(trainer.ema, trainer.model, config.ema_decay, trainer.state.step)
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


def train_one_epoch(
    trainer: Trainer, loader: DataLoader, on_step: Callable[[float, int], None]
) -> str:
    """Train until the epoch ends, calling ``on_step(loss, images)`` after each step (images:
    those of every rank); returns "epoch", "max_steps" or "interrupted"."""
    trainer.model.train()
    _keep_frozen_statistics(trainer.model)
    config, state = trainer.config, trainer.state
    for loaded in loader:
        state.skipped += len(loaded["skipped"])
        state.epoch_samples += len(loaded["skipped"])
        trainer.skipped_files.update(loaded["skipped"])
        if loaded["rgba"] is None:
            continue
        batch = device_batch(loaded, config.crop, trainer.device, _hint_config(config))
        size = batch.lightness.shape[0]
        state.epoch_samples += size
        on_step(train_step(trainer, batch), size * trainer.world)
        if state.step >= trainer.total_steps:
            return "max_steps"
        if trainer.stop.is_set():
            return "interrupted"
        if state.step % config.save_every == 0:
            trainer.save()
    return "epoch"


@torch.no_grad()
def validate(trainer: Trainer, loader: DataLoader) -> dict[str, float]:
    """Mean validation loss, raw AuC and class-rebalanced AuC (at T = config.temperature) of
    the scored model (the EMA, if any) over the validation set, without colour points; a
    pixel's rebalancing weight is 1 / p̃ of its true color's bin, p̃ of the run's own bins. A
    guided network is also scored with each validation crop's simulated points (the same every
    epoch): the same metrics, suffixed ``_hints``."""
    model, config = trainer.scored_model, trainer.config
    model.eval()
    sums: dict[str, list[float]] = {}
    for loaded in loader:
        if loaded["rgba"] is None:
            continue
        batch = device_batch(loaded, config.crop, trainer.device, _hint_config(config))
        for suffix, hints in (("", None), ("_hints", batch.hints)):
            if suffix and hints is None:
                continue
            for name, value in _scores(trainer, model, batch, hints).items():
                sums.setdefault(name + suffix, []).append(value)
    trainer.model.train()
    if not sums:
        return {"val_loss": math.nan, "val_auc": math.nan, "val_auc_rebalanced": math.nan}
    return {name: sum(values) / len(values) for name, values in sums.items()}


def _scores(
    trainer: Trainer, model: nn.Module, batch: Batch, hints: Tensor | None
) -> dict[str, float]:
    """One validation batch's loss, AuC and rebalanced AuC, with ``hints`` (or none)."""
    bins, config = trainer.bins, trainer.config
    with precision_context(trainer.device, trainer.autocast):
        output = _forward(model, batch.lightness, hints)
    loss = trainer.criterion(output, batch.lightness, batch.ab, batch.mask).item()
    small_ab, small_mask = targets_at_output(batch.ab, batch.mask)
    pred = unwrap(model).kind.decode(output.float(), bins["centers"], config.temperature)
    weight = inverse_prior_weights(small_ab, bins["centers"], bins["prior_smoothed"])
    return {
        "val_loss": loss,
        "val_auc": auc(pred, small_ab, small_mask),
        "val_auc_rebalanced": auc(pred, small_ab, small_mask, weight),
    }


def _forward(net: nn.Module, lightness: Tensor, hints: Tensor | None) -> Tensor:
    """The network on L, with hint channels when there are any."""
    return net(lightness) if hints is None else net(lightness, hints)


@torch.no_grad()
def sample_grid(
    model: nn.Module, images: Batch, bins: dict[str, Tensor], temperature: float
) -> Tensor:
    """Rows of gray | truth | prediction for a batch of crops: ``(3, H', W')``."""
    model = unwrap(model)
    training = model.training
    model.eval()
    lightness, ab = images.lightness, images.ab
    pred = model.kind.decode(model(lightness).float(), bins["centers"], temperature)
    pred = F.interpolate(pred, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
    gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
    truth = lab_to_rgb(torch.cat([lightness, ab], 1))
    color = lab_to_rgb(torch.cat([lightness, pred], 1))
    model.train(training)
    # White lines of 2 px between the crops and around them.
    tiles = F.pad(torch.stack([gray, truth, color], 1).cpu(), (2, 0, 2, 0), value=1.0)
    b, _, _, h, w = tiles.shape  # (B, 3 crops, 3, H + 2, W + 2)
    grid = tiles.permute(2, 0, 3, 1, 4).reshape(3, b * h, 3 * w)
    return F.pad(grid, (0, 2, 0, 2), value=1.0)  # (3, H', W')


# ----------------------------------------------------------------------------- epochs' ends


def _improves(trainer: Trainer, metrics: dict[str, float]) -> bool:
    """Whether this epoch's ``select_on`` beats the best so far; counts the epochs it does not."""
    config, state = trainer.config, trainer.state
    value = metrics[config.select_on]
    value = -value if _maximises(config) else value
    best = -state.best_val if _maximises(config) else state.best_val
    improved = value < best
    if improved:
        state.best_val = -value if _maximises(config) else value
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return improved


def end_epoch(
    trainer: Trainer, metrics: dict[str, float], grid_batch: Batch | None, console: Console
) -> bool:
    """Log the validation, keep the best weights, checkpoint, and (rank 0) draw the loss plot
    and the sample grid of ``grid_batch``. Returns whether the run should stop early."""
    state, config = trainer.state, trainer.config
    check_weights(trainer.model, trainer.ema, state.step)  # before they could become the best
    trainer.log(
        {"step": state.step, "epoch": state.epoch, **metrics, "skipped_files": state.skipped}
    )
    improved = _improves(trainer, metrics)
    if trainer.is_main and improved:
        best = trainer.paths.checkpoint("best")
        save_model(best, trainer.scored_model, config, trainer.bins, state.step)
    patience_out = config.patience is not None and state.bad_epochs >= config.patience
    next_stage = config.stages == 3 and patience_out and state.stage < 3
    if next_stage:  # early-stopped stage: on from its best weights
        barrier()
        best = load_file(str(trainer.paths.checkpoint("best")), device=str(trainer.device))
        for module in (trainer.model, trainer.ema):
            if module is not None:
                module.load_state_dict(best)
        state.stage, state.bad_epochs = state.stage + 1, 0
    trainer.save()
    if trainer.is_main:
        _draw_epoch(trainer, metrics, grid_batch, improved, console)
    return patience_out and not next_stage


def _draw_epoch(
    trainer: Trainer, metrics: dict, grid_batch: Batch | None, improved: bool, console
) -> None:
    state, paths = trainer.state, trainer.paths
    plot_losses(paths.metrics, paths.plot, trainer.config)
    if grid_batch is not None:
        grid = sample_grid(
            trainer.scored_model, grid_batch, trainer.bins, trainer.config.temperature
        )
        png = Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
        atomic_write(paths.samples(state.epoch), lambda tmp: png.save(tmp, "PNG"))
        if trainer.tensorboard is not None:
            trainer.tensorboard.add_image("samples", grid, state.step)
            trainer.tensorboard.flush()
    stage = f" (stage {state.stage})" if trainer.config.stages == 3 else ""
    trained = f"{metrics['train_loss']:.4f}" if "train_loss" in metrics else "–"
    console.print(
        f"epoch {state.epoch}{stage}: loss train {trained} / val {metrics['val_loss']:.4f}, "
        f"val AuC {metrics['val_auc']:.1f}, rebalanced {metrics['val_auc_rebalanced']:.1f}"
        + (" (best)" if improved else "")
    )


# ----------------------------------------------------------------------------- the run


@contextmanager
def stop_on_signals(trainer: Trainer, console: Console) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (docker stop, Slurm, Kubernetes) ask the run to stop after
    the step in hand and save, rather than kill it; ``trainer.stopped_by`` says which."""
    owner = os.getpid()

    def on_signal(signum, frame) -> None:
        # Forked DataLoader workers get the terminal's Ctrl-C too: the run's process speaks, once.
        if os.getpid() != owner or trainer.stop.is_set():
            return
        trainer.stopped_by = signum
        trainer.stop.set()
        if trainer.is_main:
            what = {signal.SIGINT: "interrupted"}.get(signum, "terminated")
            console.print(f"[yellow]{what}: saving a checkpoint after this step …")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start_record(trainer: Trainer, resumed: bool) -> dict:
    return {
        "event": "resume" if resumed else "start",
        "step": trainer.state.step,
        "device": str(trainer.device),
        "precision": str(trainer.autocast or torch.float32).removeprefix("torch."),
        "world": trainer.world,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "zhangcolor_version": __version__,
    }


def run(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    override: bool = False,
    show_progress: bool = True,
) -> str:
    """Train as ``config`` says; returns how the run ended: "done", "max_steps",
    "early_stop", "interrupted" (SIGINT) or "terminated" (SIGTERM), the last two after saving.
    Raises :class:`TrainingError` when it cannot go on.

    A new run refuses a folder that holds an earlier one, unless ``overwrite`` (which deletes
    the earlier run's checkpoints and metrics); ``resume`` continues it, refusing options that
    break its exact continuation unless ``override`` (:func:`open_run`)."""
    rank, world, device = setup_distributed()
    paths, how = RunPaths(Path(config.out)), {"resume": resume, "overwrite": overwrite}
    try:
        with open_run(paths, config, rank=rank, override=override, **how) as plan:
            console = Console(stderr=True)
            data = load_data(config, rank, console if show_progress and rank == 0 else None)
            trainer = prepare(config, len(data.train), rank, world, device, plan.total_steps)
            if plan.point is not None:
                _resume(trainer, plan.point, console)
            shown = console if trainer.is_main else None
            note_progress(trainer.state, plan, trainer.total_steps, data.train.paths, shown)
            if trainer.is_main:
                trainer.tensorboard = start_folder(trainer.paths, config, fresh=not resume)
            trainer.log(_start_record(trainer, resume))
            with stop_on_signals(trainer, console):
                ending = _epochs(trainer, data, console, show_progress)
            stopped = {signal.SIGTERM: "terminated"}.get(trainer.stopped_by, ending)
            return stopped if ending == "interrupted" else ending
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _no_usable_images(trainer: Trainer, shown: int = 20) -> str:
    """Why a whole epoch trained nothing: every file's reason."""
    skipped = sorted(trainer.skipped_files.items())
    lines = [f"  {file}: {reason}" for file, reason in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  … and {len(skipped) - shown} more")
    return (
        f"no usable training images in {trainer.config.data}: a whole epoch skipped all "
        f"{len(skipped)} files, and nothing was trained or saved:\n" + "\n".join(lines)
    )


def _epochs(trainer: Trainer, data: TrainingData, console: Console, show_progress: bool) -> str:
    """The epoch loop of :func:`run`; returns how it ended."""
    from zhangcolor.progress import training_bar

    config, state, device = trainer.config, trainer.state, trainer.device
    per_rank = config.batch_size // trainer.world
    sampler = EpochSampler(
        len(data.train), seed=config.seed, rank=trainer.rank, world=trainer.world
    )
    loader = make_loader(data.train, sampler, config, device, per_rank)
    val_loader = make_loader(data.val, None, config, device, per_rank)
    grid_photos = collate([data.val[i] for i in range(data.grid_images)])
    grid_batch = None
    if grid_photos["rgba"] is not None:
        grid_batch = device_batch(grid_photos, config.crop, device)
    bar, meter = training_bar(console, enabled=trainer.is_main and show_progress), LossMeter()
    with bar:
        task = bar.add_task("", total=trainer.total_steps, completed=state.step, **meter.fields())

        def on_step(loss: float, images: int) -> None:
            meter.add(loss, images)
            bar.update(task, completed=state.step, **meter.fields())
            if state.step % config.log_every == 0 or state.step == 1:
                lr = trainer.scheduler.get_last_lr()[0]
                trainer.log(
                    {"step": state.step, "epoch": state.epoch, **meter.interval(), "lr": lr}
                )

        while state.epoch < config.epochs and state.step < trainer.total_steps:
            set_stage(trainer)
            bar.update(task, description=f"epoch {state.epoch + 1}/{config.epochs}")
            sampler.set_epoch(state.epoch, skip=state.epoch_samples)
            reason = train_one_epoch(trainer, loader, on_step)
            bar.update(task, completed=state.step)
            if reason == "epoch" and state.step == 0:
                raise TrainingError(_no_usable_images(trainer))
            if reason == "interrupted":
                trainer.save()
                return "interrupted"
            if reason == "epoch" or state.epoch_samples >= len(sampler) + sampler.skip:
                state.epoch, state.epoch_samples = state.epoch + 1, 0
            metrics = meter.epoch_record() | validate(trainer, val_loader)
            stop = end_epoch(trainer, metrics, grid_batch, console)
            if reason == "max_steps" and state.epoch < config.epochs:
                return "max_steps"
            if stop:
                return "early_stop"
    return "done"
