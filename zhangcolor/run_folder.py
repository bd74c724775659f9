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

A run holds ``train.lock`` for its life (:func:`lock_run_folder`), so a second run on the same
folder is refused, naming the first; a lock its process left behind when it died is taken over.
Resuming compares the options with those the checkpoint was trained with (:func:`resume_plan`):
a change that breaks the exact continuation is refused unless overridden, and every change is
said, never written into ``config.yaml`` silently.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import Tensor, nn

from zhangcolor.checkpoint import (
    checkpoint_step,
    load_training_state,
    read_checkpoint,
    save_model,
    save_training_state,
    training_provenance,
)
from zhangcolor.config import config_dict, short
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
    total_steps: int = 0  # the run's steps in all, kept on --resume (0: saved before it was)
    train_files: int = 0  # the training photos the run started with
    data_digest: str = ""  # a hash of their paths (file_list_digest)


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


# ----------------------------------------------------------------------------- the lock

#: The file a run holds locked in its folder for its life; it says who holds it.
LOCK = "train.lock"


@contextmanager
def lock_run_folder(paths: RunPaths) -> Iterator[None]:
    """Hold ``RUN/train.lock`` (an exclusive ``flock``) while the block runs, with the holder's
    pid, host and start time in it; a TrainingError naming the holder when another process
    holds it. The kernel lets go of a lock when its process dies however it dies (a SIGKILL, a
    power cut), so a lock left behind by a dead run is simply taken. On a file system without
    locks the run goes on unlocked."""
    paths.root.mkdir(parents=True, exist_ok=True)
    path = paths.root / LOCK
    fd = _take_lock(path)
    try:
        if fd is not None:
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # before the lock goes: a newcomer retries on a new file
            os.close(fd)


def _take_lock(path: Path) -> int | None:
    """The open, locked lock file; None when the file system has no locks."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise TrainingError(
                f"{path.parent} is in use by another training run ({holder}); wait for it to "
                f"end or stop it, or pick another --out (the lock: {path})"
            ) from None
        except OSError:  # no locks here (some network file systems)
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder deleted it as we opened it: lock the new one


def _holder(fd: int) -> str:
    """Who holds a lock, in words, from what it wrote into the file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        pid, host, started = int(holder["pid"]), str(holder["host"]), str(holder["started"])
        return f"pid {pid} on {host[:64]}, started {started[:25]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


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
    ``train/epoch_loss``). An OSError (a full disk) names the file."""
    try:
        with paths.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(paths.metrics)) from None
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


#: A parameter beyond this size means the run has diverged even while its loss is still finite
#: (weights of 1e30 train on to NaN); the shipped model's largest is 13. Buffers (BatchNorm's
#: running variances reach hundreds) are only checked to be finite.
MAX_WEIGHT = 1e6


@torch.no_grad()
def check_weights(model: nn.Module, ema: nn.Module | None, step: int) -> None:
    """Raise :class:`TrainingError` when a parameter of the model or its EMA is not finite or
    larger than :data:`MAX_WEIGHT`, or a buffer (BatchNorm's statistics) is not finite: weights
    that diverged never become the last good checkpoint."""
    for name, module in (("weights", model), ("EMA weights", ema)):
        if module is None:
            continue
        sizes = [p.abs().amax().float() for p in module.parameters() if p.numel()]
        largest = float(torch.stack(sizes).max())  # NaN wins here, unlike in Python's max
        finite = all(bool(b.isfinite().all()) for b in module.buffers() if b.is_floating_point())
        if not (largest <= MAX_WEIGHT and finite):  # NaN fails every comparison
            raise TrainingError(
                f"the {name} diverged by step {step} (largest |w| {largest:.3g}, "
                f"the limit is {MAX_WEIGHT:g}"
                + ("" if finite else "; non-finite BatchNorm statistics")
                + "); the last good checkpoint is kept. Try a lower --lr, or --precision fp32"
            )


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
    point: ResumePoint | None = None,
) -> RunState:
    """Load the folder's last matching pair (``point``, when it is loaded already) into the
    model, optimizer, scheduler and EMA, and the CPU RNG; returns the saved progress. Raises
    :class:`TrainingError` when there is no pair, or it does not fit these modules. The point's
    state is released once loaded (a run holds its plan, and so the point, for its whole life)."""
    point = point or load_resume_point(paths)
    saved = dict(point.state)
    point.state.clear()
    try:
        model.load_state_dict(load_file(str(point.weights)))
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


# ----------------------------------------------------------------------------- resuming


#: Options that may change on --resume without changing what the steps compute: where files
#: are, how often they are written, how fast photos load, and how long the run goes on.
RESUME_SAFE = frozenset(
    {
        "data",
        "out",
        "workers",
        "save_every",
        "log_every",
        "tensorboard",
        "cache",
        "cache_max_gb",
        "val_images",
        "patience",
        "init_from",
        "epochs",
        "max_steps",
    }
)
#: Options whose change gives the run another number of steps (recomputed, then).
_LENGTH = ("epochs", "max_steps", "batch_size")


@dataclass(frozen=True)
class Change:
    """An option that differs from what the checkpoint was trained with."""

    name: str  # dotted for a section's, e.g. model.width
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.name} {short(self.old)} → {short(self.new)}"


@dataclass(frozen=True)
class ResumePoint:
    """What a run resumes from: the training state, the weights saved with it, and the options
    those weights were trained with (their provenance; empty when unreadable)."""

    state: dict
    weights: Path
    trained_with: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ResumePlan:
    """How a run starts: for a resumed one, what it resumes from, the options that changed, and
    its total steps (the saved ones, kept whatever the data; None to compute them, as for a new
    run, or when its length options changed)."""

    point: ResumePoint | None = None
    changes: list[Change] = field(default_factory=list)
    total_steps: int | None = None


@contextmanager
def open_run(
    paths: RunPaths,
    config: TrainConfig,
    *,
    rank: int,
    resume: bool,
    overwrite: bool,
    override: bool,
) -> Iterator[ResumePlan]:
    """A run's folder for the run's life: locked by rank 0 (:func:`lock_run_folder`), checked
    (:func:`check_folder`), and, to ``resume``, what it resumes from and how
    (:func:`resume_plan`), all before any photo is read."""
    with lock_run_folder(paths) if rank == 0 else nullcontext():
        check_folder(paths, resume=resume, overwrite=overwrite)
        if not resume:
            yield ResumePlan()
            return
        yield resume_plan(load_resume_point(paths), config, override=override)


def load_resume_point(paths: RunPaths) -> ResumePoint:
    """The folder's last matching pair and the options it was trained with; a TrainingError
    when there is none (see :func:`_saved_pair`)."""
    saved, weights = _saved_pair(paths)
    try:
        trained = read_checkpoint(weights)[1].get("training")
    except ValueError:
        trained = None
    return ResumePoint(saved, weights, trained if isinstance(trained, dict) else {})


def resume_plan(point: ResumePoint, config: TrainConfig, *, override: bool) -> ResumePlan:
    """Compare ``config`` with the options ``point`` was trained with. A change outside
    :data:`RESUME_SAFE` (the seed, the batch size, the learning rate, the network, ...) breaks
    the exact continuation, and is a TrainingError that lists them all unless ``override``."""
    changes = option_changes(point.trained_with, training_provenance(config)[0])
    breaking = [c for c in changes if c.name.split(".")[0] not in RESUME_SAFE]
    if breaking and not override:
        raise TrainingError(
            f"cannot resume {config.out} exactly: these options differ from those its "
            f"checkpoint was trained with: {', '.join(map(str, breaking[:10]))}"
            + (f" and {len(breaking) - 10} more" if len(breaking) > 10 else "")
            + ". Resume without changing them, or pass --override to go on with them (the run "
            "then differs from an unbroken one)"
        )
    saved = int(point.state["progress"].get("total_steps") or 0)
    keep = saved > 0 and not any(c.name in _LENGTH for c in changes)
    return ResumePlan(point, changes, saved if keep else None)


def option_changes(old: dict, new: dict, prefix: str = "") -> list[Change]:
    """The options whose values differ between two configs as plain data (sections by dotted
    names); an option ``old`` lacks (added since it was saved) is left out."""
    changes = []
    for key, value in new.items():
        if key not in old:
            continue
        before = old[key]
        if isinstance(value, dict) and isinstance(before, dict):
            changes += option_changes(before, value, f"{prefix}{key}.")
        elif before != value:
            changes.append(Change(prefix + key, before, value))
    return changes


def note_progress(
    state: RunState,
    plan: ResumePlan,
    total_steps: int,
    photos: Sequence[Path],
    console: Console | None,
) -> None:
    """Record the run's steps in all and its training ``photos`` in its progress. Resuming
    (``plan.point``), first say on ``console`` (rank 0's) which options changed since the
    checkpoint, and whether the photos did: that changes the epochs' order and crops, not the
    run's length."""
    root = Path(os.path.commonpath([str(p.parent) for p in photos])) if photos else Path()
    digest = file_list_digest(photos, root)
    if plan.point is not None and console is not None:
        if plan.changes:
            console.print(
                f"[yellow]resuming with changed options: {', '.join(map(str, plan.changes))} "
                f"(config.yaml now holds them; {total_steps:,} steps in all)"
            )
        if state.data_digest and state.data_digest != digest:
            console.print(
                f"[yellow]the training photos changed since the run started "
                f"({state.train_files:,} → {len(photos):,}): the epochs' order and crops differ "
                f"from an unbroken run's; its {total_steps:,} steps in all stay"
            )
    state.total_steps, state.train_files, state.data_digest = total_steps, len(photos), digest


def file_list_digest(paths: Sequence[Path], root: Path) -> str:
    """A hash of the files' paths under ``root`` (their bytes, so any name has one): the
    training photos a run started with, to tell on --resume whether they changed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(path.relative_to(root)) + b"\0")
    return digest.hexdigest()[:16]
