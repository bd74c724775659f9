"""The run folder: the files a training run writes, and the checkpoint pair it resumes from.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl``, ``plots/loss.png``,
``samples/epoch_NNN.png``, ``checkpoints/`` and, with ``tensorboard: true``, ``tensorboard/``:

- ``best.safetensors`` and ``last.safetensors``: the model weights, with the resolved config and
  the bins and class weights it was trained with in the safetensors metadata, so a checkpoint
  is all that colorizing needs (``best`` is the EMA's weights when there is an EMA);
- ``last.state.pt``: optimizer, scheduler, EMA, RNG and progress, loadable with
  ``weights_only=True``.

``last`` and ``last.state.pt`` are written as a pair (:func:`save_checkpoint`); resuming
(:func:`restore`) loads the pair saved at one step and drops the metrics logged after it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import Tensor, nn

from zhangcolor.checkpoint import (
    checkpoint_step,
    load_training_state,
    save_model,
    save_training_state,
)
from zhangcolor.config import config_dict
from zhangcolor.files import atomic_write, remove_stale_temps
from zhangcolor.options import TrainConfig


class TrainingError(Exception):
    """The run cannot go on; the message says why and what to do."""


@dataclass
class RunState:
    """Where a run is; saved with every checkpoint as its ``progress``."""

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

    def samples(self, epoch: int) -> Path:
        return self.root / "samples" / f"epoch_{epoch:03d}.png"

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


# ----------------------------------------------------------------------------- starting


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


def start_folder(paths: RunPaths, config: TrainConfig, *, fresh: bool = True) -> object | None:
    """Make the run folder, delete what a kill mid-write left there (and, for a ``fresh``
    run, what an earlier run wrote) and write the resolved config. Returns TensorBoard's
    ``SummaryWriter`` with ``tensorboard: true``, else None. Only rank 0 calls it."""
    import yaml

    for sub in ("checkpoints", "plots", "samples"):
        (paths.root / sub).mkdir(parents=True, exist_ok=True)
    paths.remove_stale_temps()
    if fresh:
        paths.clear()
    resolved = yaml.safe_dump(config_dict(config), sort_keys=False)
    atomic_write(paths.config, lambda tmp: tmp.write_text(resolved))
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError(
            "tensorboard: true needs the tensorboard package: pip install 'zhangcolor[tensorboard]'"
        ) from None
    return SummaryWriter(str(paths.root / "tensorboard"))


# ----------------------------------------------------------------------------- metrics


def log_record(paths: RunPaths, record: dict, tensorboard=None) -> None:
    """Append ``record`` to metrics.jsonl, and its numbers to TensorBoard's log at its ``step``:
    ``val_*`` under ``val/``, the rest under ``train/`` (the epoch's mean loss as
    ``train/epoch_loss``)."""
    with paths.metrics.open("a") as f:
        f.write(json.dumps(record) + "\n")
    if tensorboard is not None:
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, int | float):
                name = "train/epoch_loss" if key == "train_loss" else f"train/{key}"
                if key.startswith("val_"):
                    name = f"val/{key.removeprefix('val_')}"
                tensorboard.add_scalar(name, value, record["step"])


def plot_losses(metrics_path: Path, out: Path, config: TrainConfig | None = None) -> None:
    """Draw a metrics.jsonl's training and validation losses into a PNG (:func:`loss_figure`)."""
    import matplotlib.pyplot as plt

    lines = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig = loss_figure(lines, config)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def loss_figure(records: list[dict], config: TrainConfig | None = None):
    """The training and validation losses of metrics records, with a legend that says what each
    curve is and a note on why they differ (``config``: the run's, for the loss's name and
    whether validation scores a moving average of the weights)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    curves = [
        ("loss", ".-", "train: mean of each logged interval of steps"),
        ("train_loss", "s-", "train: mean over the epoch"),
        ("val_loss", "o-", "validation: held-out photos, after each epoch"),
    ]
    for key, style, label in curves:
        points = [(m["step"], m[key]) for m in records if key in m]
        if points:
            ax.plot(*zip(*points, strict=True), style, lw=1, ms=4, label=label)
    ax.set(xlabel="step", ylabel=_loss_name(config), title="training and validation loss")
    ax.legend()
    fig.text(0.01, 0.01, _why_they_differ(config), fontsize=7, va="bottom", wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.1, 1, 0.9))  # room for the note
    return fig


def _loss_name(config: TrainConfig | None) -> str:
    if config is None:
        return "loss"
    if config.loss_kind == "ce":
        return "class-rebalanced cross-entropy" if config.rebalance else "cross-entropy"
    return f"{config.loss_kind} loss"


def _why_they_differ(config: TrainConfig | None) -> str:
    """Why the two curves need not meet: the same loss, on other crops and other weights."""
    weights = "w-weighted (class rebalancing) " if config is None or config.rebalance else ""
    ema = config is not None and config.ema_decay is not None
    return (
        f"Both are the same {weights}loss per valid pixel. Train: random resized, flipped and "
        "rotated crops with lightness jitter, the network in training mode (BatchNorm on batch "
        "statistics) while its weights change through the epoch. Validation: centre crops of "
        "photos never trained on, in eval mode, with the weights at the epoch's end"
        + (" (their moving average)" if ema else "")
        + ". So the two need not sit at the same level; compare each curve's trend."
    )


def trim_metrics(path: Path, step: int, console: Console) -> None:
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


# ----------------------------------------------------------------------------- the checkpoint pair


def training_state(
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: RunState,
    ema: nn.Module | None,
) -> dict:
    """What ``last.state.pt`` holds: the optimizer's and the scheduler's states, the progress,
    the CPU RNG, and the EMA's weights when there is an EMA."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": vars(progress).copy(),
        "rng": torch.get_rng_state(),
    }
    if ema is not None:
        state["ema"] = {k: v.cpu() for k, v in ema.state_dict().items()}
    return state


def save_checkpoint(
    paths: RunPaths, *, model: nn.Module, config: TrainConfig, bins: dict[str, Tensor], state: dict
) -> None:
    """The weights and the :func:`training_state` of one step, as ``last``. The previous
    weights stay as ``prev`` until both new files are in place, so a kill at any moment leaves
    a matching pair to resume from."""
    last, prev, new = (paths.checkpoint(n) for n in ("last", "prev", "next"))
    save_model(new, model, config, bins, state["progress"]["step"])
    if last.exists():
        os.replace(last, prev)
    os.replace(new, last)
    save_training_state(paths.state, state)


def restore(
    paths: RunPaths,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: nn.Module | None,
) -> RunState:
    """Load the folder's last matching pair into the model, optimizer, scheduler and EMA, and
    the CPU RNG; returns the saved progress. Raises :class:`TrainingError` when there is no
    pair, or it does not fit these modules."""
    saved, weights = _saved_pair(paths)
    try:
        model.load_state_dict(load_file(str(weights)))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if ema is not None and "ema" in saved:
            ema.load_state_dict(saved["ema"])
        progress = RunState(**saved["progress"])
        torch.set_rng_state(saved["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise TrainingError(
            f"cannot resume from {paths.root}: its checkpoint does not fit this run ({e})"
        ) from None
    return progress


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
