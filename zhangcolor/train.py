"""Training (``zhangcolor train``): ``load_data``, ``train_one_epoch``, ``evaluate``, ``run``.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``plots/loss.png``,
``samples/epoch_NNN.png`` and ``checkpoints/``:

- ``best.safetensors`` and ``last.safetensors``: the model weights, with the resolved config and
  the bins and class weights it was trained with in the safetensors metadata, so a checkpoint
  is all that colorizing needs;
- ``last.state.pt``: optimizer, scheduler, RNG and progress, loadable with ``weights_only=True``.

``--resume RUN_DIR`` continues exactly: same data order and crops, same steps. Under
``torchrun`` the run is data-parallel (gloo on CPU, nccl on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from zhangcolor import __version__
from zhangcolor.bins import load_bins
from zhangcolor.color import lab_to_rgb
from zhangcolor.config import config_dict
from zhangcolor.data import EpochSampler, PhotoDataset, collate, lab_batch, split_files
from zhangcolor.decode import decode_output
from zhangcolor.device import PRECISIONS, precision_context, resolve_precision
from zhangcolor.encode import soft_encode_sparse
from zhangcolor.files import atomic_write
from zhangcolor.loss import REGRESSION_LOSSES, rebalanced_cross_entropy, regression_loss
from zhangcolor.metrics import auc
from zhangcolor.models import ColorizationNet, ModelConfig, build_model

SCHEDULES = ("cosine", "constant")
#: Output stride of every backbone: targets are compared at 1/4 of the crop.
STRIDE = 4


@dataclass
class TrainConfig:
    """Everything a run needs (defaults in configs/*.yaml; CLI flags override)."""

    data: str | None = None  # folder of colour photos, searched recursively
    out: str = "runs/run"  # run folder
    bins: str | None = None  # bins.npz from build-bins; None: the shipped default prior
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "auto"  # auto: cross-entropy for classification, l2 for regression; l1, huber
    huber_delta: float = 10.0  # Huber threshold, ab units
    rebalance: bool = True  # weight pixels by w (the paper's "full"); False: its "class"
    crop: int = 176  # training crop side, px (the paper's 176)
    load_size: int = 256  # images are decoded at this short side before cropping
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps in all
    batch_size: int = 16  # global batch, split across processes
    micro_batches: int = 1  # split each process's batch, accumulating gradients (saves memory)
    lr: float = 3e-4
    schedule: str = "cosine"  # cosine decay to 0 over the run, or constant
    weight_decay: float = 1e-3  # the paper's
    betas: tuple[float, float] = (0.9, 0.99)  # the paper's Adam betas
    precision: str = "auto"  # auto: bf16 where the hardware has it; fp32; bf16
    channels_last: bool = True
    workers: int = 2  # DataLoader worker processes
    seed: int = 0
    val_fraction: float = 0.1
    val_images: int = 8  # fixed validation images for AuC and the sample grid
    freeze_epochs: int = 0  # pretrained encoders: epochs with the encoder frozen first
    finetune_lr_factor: float = 0.1  # then the encoder trains at lr × this
    patience: int | None = None  # stop after this many epochs without a better val loss
    save_every: int = 100  # steps between checkpoints (and at every epoch end)
    log_every: int = 10  # steps between metrics lines
    temperature: float = 0.38  # annealed-mean T of the sample grids and val AuC

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # YAML gives a list
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        valid_losses = ("auto", "ce", *REGRESSION_LOSSES)
        if self.loss not in valid_losses:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(valid_losses)}")
        if self.model.head == "classification" and self.loss not in ("auto", "ce"):
            raise ValueError(f"the classification head trains with cross-entropy, not {self.loss}")
        if self.model.head == "regression" and self.loss == "ce":
            raise ValueError("the regression head trains with l1, l2 or huber, not ce")
        if self.crop % STRIDE or self.crop < 16:
            raise ValueError(
                f"crop must be a multiple of {STRIDE} and at least 16, got {self.crop}"
            )
        for name in (
            "epochs",
            "batch_size",
            "micro_batches",
            "save_every",
            "log_every",
            "val_images",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def loss_kind(self) -> str:
        if self.loss != "auto":
            return self.loss
        return "ce" if self.model.head == "classification" else "l2"


class TrainingError(Exception):
    """The run cannot go on; the message says why and what to do."""


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


# ----------------------------------------------------------------------------- data


def load_data(config: TrainConfig) -> tuple[PhotoDataset, PhotoDataset, list[Path]]:
    """Training and validation datasets, and the fixed validation images."""
    if config.data is None:
        raise TrainingError("no training data: pass --data FOLDER (a folder of colour photos)")
    root = Path(config.data)
    if not root.is_dir():
        raise TrainingError(f"--data {root} is not a folder")
    train, val = split_files(root, config.val_fraction, config.seed)
    if not train:
        raise TrainingError(f"no images under {root} for training (looked recursively)")
    if not val:  # a tiny folder: validate on training images rather than not at all
        val = train[: config.val_images]
    train_set = PhotoDataset(train, crop=config.crop, train=True, load_size=config.load_size)
    val_set = PhotoDataset(val, crop=config.crop, train=False, load_size=config.load_size)
    return train_set, val_set, val[: config.val_images]


def make_loader(
    dataset: PhotoDataset, sampler, config: TrainConfig, device: torch.device, batch: int
):
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        drop_last=False,
        persistent_workers=False,
    )


# ----------------------------------------------------------------------------- loss


def targets_at_output(ab: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """ab ``(B, 2, H, W)`` and mask ``(B, H, W)`` averaged down to the output's 1/4 size; a
    pixel there counts only if all its 4×4 source pixels do."""
    small_ab = F.avg_pool2d(ab, STRIDE)
    small_mask = F.avg_pool2d(mask[:, None].float(), STRIDE)[:, 0] >= 1.0
    return small_ab, small_mask


def compute_loss(
    output: Tensor, ab: Tensor, mask: Tensor, config: TrainConfig, bins: dict[str, Tensor]
) -> Tensor:
    """The head's loss between the network output and the true ab of the crop."""
    small_ab, small_mask = targets_at_output(ab, mask)
    if config.model.head == "classification":
        index, weight = soft_encode_sparse(small_ab, bins["centers"])
        class_weights = bins["weights"] if config.rebalance else None
        return rebalanced_cross_entropy(output, index, weight, class_weights, small_mask)
    return regression_loss(output, small_ab, config.loss_kind, config.huber_delta, small_mask)


def predict_ab(
    model: nn.Module, lightness: Tensor, bins: dict[str, Tensor], temperature: float
) -> Tensor:
    """ab ``(B, 2, h, w)`` at the output's size: the annealed mean, or the regression output."""
    head = (model.module if hasattr(model, "module") else model).head_kind
    return decode_output(model(lightness).float(), head, bins["centers"], temperature)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_metadata(config: TrainConfig, bins: dict[str, Tensor], step: int) -> dict[str, str]:
    """What a .safetensors checkpoint carries besides weights: all strings, as safetensors wants."""
    return {
        "format": "zhangcolor-checkpoint-1",
        "step": str(step),
        "zhangcolor_version": __version__,
        "config": json.dumps(config_dict(config)),
        "centers": json.dumps(bins["centers"].tolist()),
        "weights": json.dumps(bins["weights"].tolist()),
    }


def save_model(
    path: Path, model: nn.Module, config: TrainConfig, bins: dict[str, Tensor], step: int
) -> None:
    """The model's weights as .safetensors, with what colorizing needs in the metadata."""
    module = model.module if hasattr(model, "module") else model
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()
    }
    metadata = checkpoint_metadata(config, bins, step)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def _checkpoint_step(path: Path) -> int | None:
    """The step a weights file was saved at; None when it is missing or unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    except Exception:
        return None


def load_checkpoint(path: str | Path) -> tuple[ColorizationNet, TrainConfig, dict[str, Tensor]]:
    """A model, its training config and bins, from a ``.safetensors`` checkpoint."""
    from safetensors import safe_open

    from zhangcolor.config import build_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable .safetensors checkpoint ({e})") from None
    if meta.get("format") != "zhangcolor-checkpoint-1":
        raise ValueError(f"{path} is not a zhangcolor checkpoint (no zhangcolor metadata)")
    config = build_config(TrainConfig, json.loads(meta["config"]), f" in {path}")
    config.model.pretrained = False  # the weights come from the checkpoint
    bins = {
        "centers": torch.tensor(json.loads(meta["centers"]), dtype=torch.float32),
        "weights": torch.tensor(json.loads(meta["weights"]), dtype=torch.float32),
    }
    model = build_model(config.model)
    model.load_state_dict(state)
    return model, config, bins


def package_model(
    source: str | Path, target: str | Path, *, half: bool = False, notes: dict | None = None
) -> dict:
    """Copy a checkpoint for shipping, optionally with its float weights in fp16, and write a
    provenance JSON beside it. Returns the provenance."""
    import datetime as dt
    import hashlib

    from safetensors import safe_open

    source, target = Path(source), Path(target)
    load_checkpoint(source)  # refuse anything that is not a loadable zhangcolor checkpoint
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(source))
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    provenance = {
        "source": str(source),
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "dtype": "float16" if half else "float32",
        "step": int(metadata.get("step", -1)),
        "config": json.loads(metadata["config"]),
        "zhangcolor_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(notes or {}),
    }
    target.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance


# ----------------------------------------------------------------------------- the loop


@dataclass
class Progress:
    """Where a run is; saved with every checkpoint."""

    step: int = 0
    epoch: int = 0
    epoch_samples: int = 0  # this rank's samples already used in the current epoch
    best_val: float = math.inf
    bad_epochs: int = 0
    skipped: int = 0


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    bins: dict[str, Tensor],
    state: Progress,
    device: torch.device,
    autocast: torch.dtype | None,
    *,
    total_steps: int,
    world: int,
    on_step: Callable[[dict], None],
    should_stop: Callable[[], bool],
    save: Callable[[], None],
) -> str:
    """Train until the epoch ends; returns "epoch", "max_steps" or "interrupted"."""
    model.train()
    for module in model.modules():  # a frozen encoder keeps its BatchNorm statistics too
        if any(True for _ in module.parameters()) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
    seen, started = 0, time.perf_counter()
    for batch in loader:
        state.skipped += len(batch["skipped"])
        state.epoch_samples += len(batch["skipped"])
        if batch["rgba"] is None:
            continue
        rgba = batch["rgba"].to(device, non_blocking=True)
        state.epoch_samples += rgba.shape[0]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        # Interleaved like the ranks' shards, so micro-batches group samples as processes do.
        chunks = [rgba[i :: config.micro_batches] for i in range(config.micro_batches)]
        chunks = [c for c in chunks if c.shape[0]]
        for i, chunk in enumerate(chunks):
            # DDP averages gradients once, on the last micro-batch's backward.
            last = i == len(chunks) - 1
            sync = model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()
            lightness, ab, mask = lab_batch(chunk)
            if config.channels_last:
                lightness = lightness.contiguous(memory_format=torch.channels_last)
            with precision_context(device, autocast):
                output = model(lightness)
            loss = compute_loss(output.float(), ab, mask, config, bins) / config.micro_batches
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} at step {state.step + 1}; the last good "
                    "checkpoint is kept. Try a lower --lr, or --precision fp32"
                )
            with sync:
                loss.backward()
            total += loss.item()
        optimizer.step()
        scheduler.step()
        state.step += 1
        seen += rgba.shape[0] * world
        if state.step % config.log_every == 0 or state.step == 1:
            on_step(
                {
                    "step": state.step,
                    "epoch": state.epoch,
                    "loss": total,
                    "lr": scheduler.get_last_lr()[0],
                    "img_per_s": seen / max(time.perf_counter() - started, 1e-9),
                }
            )
        if state.step >= total_steps:
            return "max_steps"
        if should_stop():
            return "interrupted"
        if state.step % config.save_every == 0:
            save()
    return "epoch"


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    config: TrainConfig,
    bins: dict[str, Tensor],
    device: torch.device,
    autocast: torch.dtype | None,
) -> dict[str, float]:
    """Mean validation loss and raw AuC (at T = config.temperature) over the validation set."""
    model.eval()
    losses, aucs = [], []
    for batch in loader:
        if batch["rgba"] is None:
            continue
        lightness, ab, mask = lab_batch(batch["rgba"].to(device))
        with precision_context(device, autocast):
            output = model(lightness)
        losses.append(compute_loss(output.float(), ab, mask, config, bins).item())
        small_ab, small_mask = targets_at_output(ab, mask)
        pred = decode_output(output.float(), config.model.head, bins["centers"], config.temperature)
        aucs.append(auc(pred, small_ab, small_mask))
    model.train()
    if not losses:
        return {"val_loss": math.nan, "val_auc": math.nan}
    return {"val_loss": sum(losses) / len(losses), "val_auc": sum(aucs) / len(aucs)}


@torch.no_grad()
def sample_grid(
    model: nn.Module, images: Tensor, bins: dict[str, Tensor], temperature: float
) -> Tensor:
    """Rows of gray | truth | prediction for uint8 RGBA ``images (B, 4, H, W)``: ``(3, H', W')``."""
    from torchvision.utils import make_grid

    model.eval()
    lightness, ab, _ = lab_batch(images)
    pred = predict_ab(model, lightness, bins, temperature)
    pred = F.interpolate(pred, size=lightness.shape[-2:], mode="bilinear", align_corners=False)
    gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
    truth = lab_to_rgb(torch.cat([lightness, ab], 1))
    colour = lab_to_rgb(torch.cat([lightness, pred], 1))
    model.train()
    rows = torch.stack([gray, truth, colour], 1).flatten(0, 1)  # (3B, 3, H, W)
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


def _encoder(model: ColorizationNet, config: TrainConfig) -> nn.Module | None:
    """The pretrained encoder of a U-Net, which the two-stage schedule freezes first."""
    if config.model.backbone != "unet" or not config.model.pretrained:
        return None
    return model.backbone.encoder


def _trainable(model: nn.Module) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in model.parameters())


def _optimizer(model: ColorizationNet, config: TrainConfig) -> torch.optim.Optimizer:
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


def run(config: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> str:
    """Train as ``config`` says; returns how the run ended: "done", "max_steps",
    "early_stop" or "interrupted". Raises :class:`TrainingError` when it cannot go on."""
    from rich.console import Console

    rank, world, device = setup_distributed()
    writer = rank == 0
    console = Console(stderr=True)
    out = Path(config.out)
    paths = {
        "config": out / "config.yaml",
        "metrics": out / "metrics.jsonl",
        "last": out / "checkpoints" / "last.safetensors",
        "state": out / "checkpoints" / "last.state.pt",
        "prev": out / "checkpoints" / "prev.safetensors",
    }
    if config.batch_size % world:
        raise TrainingError(f"--batch-size {config.batch_size} must divide among {world} processes")
    torch.manual_seed(config.seed)
    autocast = resolve_precision(config.precision, device)

    raw_bins = load_bins(config.bins)
    bins = {k: raw_bins[k].to(device=device, dtype=torch.float32) for k in ("centers", "weights")}
    train_set, val_set, fixed_val = load_data(config)
    model = build_model(config.model).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, config)
    per_rank = config.batch_size // world
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / world) / per_rank)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = _schedule(optimizer, config, total_steps)
    state = Progress()

    if resume:
        if not paths["state"].is_file():
            raise TrainingError(f"nothing to resume in {out}: {paths['state']} is missing")
        saved = torch.load(paths["state"], map_location="cpu", weights_only=True)
        step = saved["progress"]["step"]
        weights = next(
            (p for p in (paths["last"], paths["prev"]) if _checkpoint_step(p) == step), None
        )
        if weights is None:
            raise TrainingError(f"no weights in {out / 'checkpoints'} match the saved step {step}")
        model.load_state_dict(load_file(str(weights)))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = Progress(**saved["progress"])
        torch.set_rng_state(saved["rng"])
        if writer and paths["metrics"].exists():  # drop what was logged after the checkpoint
            kept = [
                line
                for line in paths["metrics"].read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= state.step
            ]
            paths["metrics"].write_text("".join(line + "\n" for line in kept))
    if writer:
        for sub in ("checkpoints", "plots", "samples"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        import yaml

        resolved = config_dict(config)
        resolved["betas"] = list(config.betas)
        atomic_write(
            paths["config"], lambda tmp: tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
        )

    if dist.is_initialized() and device.type == "cuda":
        # Batch statistics over the global batch (GPU-only in torch).
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp, trainable = model, None

    def log(record: dict) -> None:
        if writer:
            with paths["metrics"].open("a") as f:
                f.write(json.dumps(record) + "\n")

    def save() -> None:
        """Weights and trainer state at this step. The previous weights stay as prev until both
        new files are in place, so a kill at any moment leaves a matching pair to resume from."""
        if not writer:
            return
        payload = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "progress": vars(state).copy(),
            "rng": torch.get_rng_state(),
        }
        new_weights = paths["last"].with_name("next.safetensors")
        save_model(new_weights, model, config, bins, state.step)
        if paths["last"].exists():
            os.replace(paths["last"], paths["prev"])
        os.replace(new_weights, paths["last"])
        atomic_write(paths["state"], lambda tmp: torch.save(payload, tmp))

    interrupted = {"flag": False}
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame) -> None:
        interrupted["flag"] = True
        if writer:
            console.print("[yellow]interrupted: saving a checkpoint after this step …")

    signal.signal(signal.SIGINT, on_sigint)
    log(
        {
            "event": "resume" if resume else "start",
            "step": state.step,
            "device": str(device),
            "precision": str(autocast or torch.float32).removeprefix("torch."),
            "world": world,
            "backend": dist.get_backend() if dist.is_initialized() else None,
            "zhangcolor_version": __version__,
        }
    )
    fixed_batch = collate([val_set[val_set.paths.index(p)] for p in fixed_val])
    val_loader = make_loader(val_set, None, config, device, per_rank)
    bar = _progress(console, enabled=writer and show_progress)
    ending = "done"
    try:
        with bar:
            task = bar.add_task(
                f"epoch {state.epoch + 1}/{config.epochs}",
                total=total_steps,
                completed=state.step,
                loss=math.nan,
                rate=0.0,
            )

            def on_step(record: dict) -> None:
                log(record)
                bar.update(
                    task, completed=record["step"], loss=record["loss"], rate=record["img_per_s"]
                )

            while state.epoch < config.epochs and state.step < total_steps:
                encoder = _encoder(model, config)
                if encoder is not None:
                    encoder.requires_grad_(state.epoch >= config.freeze_epochs)
                if dist.is_initialized() and trainable != _trainable(model):
                    # DDP waits for a gradient of every parameter that required one when it
                    # was built, so a stage that (un)freezes the encoder needs a new wrapper.
                    trainable = _trainable(model)
                    ddp = nn.parallel.DistributedDataParallel(
                        model, device_ids=[device.index] if device.type == "cuda" else None
                    )
                bar.update(task, description=f"epoch {state.epoch + 1}/{config.epochs}")
                sampler = EpochSampler(
                    len(train_set),
                    seed=config.seed,
                    epoch=state.epoch,
                    rank=rank,
                    world=world,
                    skip=state.epoch_samples,
                )
                loader = make_loader(train_set, sampler, config, device, per_rank)
                reason = train_one_epoch(
                    ddp,
                    loader,
                    optimizer,
                    scheduler,
                    config,
                    bins,
                    state,
                    device,
                    autocast,
                    total_steps=total_steps,
                    world=world,
                    on_step=on_step,
                    should_stop=lambda: interrupted["flag"],
                    save=save,
                )
                bar.update(task, completed=state.step)
                if reason == "interrupted":
                    save()
                    ending = "interrupted"
                    break
                if reason == "epoch" or state.epoch_samples >= len(sampler) + sampler.skip:
                    state.epoch += 1
                    state.epoch_samples = 0
                metrics = evaluate(model, val_loader, config, bins, device, autocast)
                log(
                    {
                        "step": state.step,
                        "epoch": state.epoch,
                        **metrics,
                        "skipped_files": state.skipped,
                    }
                )
                improved = metrics["val_loss"] < state.best_val
                if improved:
                    state.best_val, state.bad_epochs = metrics["val_loss"], 0
                else:
                    state.bad_epochs += 1
                save()
                if writer:
                    write_epoch_artifacts(
                        out,
                        model,
                        fixed_batch["rgba"],
                        bins,
                        config,
                        state,
                        metrics,
                        improved,
                        console,
                    )
                if reason == "max_steps" and state.epoch < config.epochs:
                    ending = "max_steps"
                    break
                if config.patience is not None and state.bad_epochs >= config.patience:
                    ending = "early_stop"
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
        if dist.is_initialized():
            dist.destroy_process_group()
    return ending


def write_epoch_artifacts(
    out: Path,
    model: nn.Module,
    fixed: Tensor | None,
    bins: dict[str, Tensor],
    config: TrainConfig,
    state: Progress,
    metrics: dict[str, float],
    improved: bool,
    console,
) -> None:
    """Rank 0's epoch end: the best checkpoint, the loss plot, the sample grid and a line."""
    from torchvision.utils import save_image

    if improved:
        save_model(out / "checkpoints" / "best.safetensors", model, config, bins, state.step)
    plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png")
    if fixed is not None:
        device = next(model.parameters()).device
        grid = sample_grid(model, fixed.to(device), bins, config.temperature)
        name = out / "samples" / f"epoch_{state.epoch:03d}.png"
        atomic_write(name, lambda tmp: save_image(grid, tmp, format="png"))
    console.print(
        f"epoch {state.epoch}: val loss {metrics['val_loss']:.4f}, "
        f"val AuC {metrics['val_auc']:.1f}" + (" (best)" if improved else "")
    )


def _progress(console, *, enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.progress import (
        Progress as RichProgress,
    )

    return RichProgress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps  loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} img/s  eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
