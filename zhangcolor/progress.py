"""rich progress bars with a throughput column, shared by the long-running commands, and the
loss meter of a training run's bar and metrics."""

from __future__ import annotations

import math
import time
from collections import deque

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, e.g. ``52.3 img/s``."""

    def __init__(self, unit: str = "img") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        shown = f"{speed:,.1f}" if speed else "–"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


def progress_bar(
    console: Console, unit: str = "img", *, extra: str | None = None, enabled: bool = True
) -> Progress:
    """A progress bar: description, bar, done/total, rate, elapsed and remaining time.

    ``extra`` is a rich format of more fields, e.g. ``"loss {task.fields[loss]:.4f}"`` (pass the
    fields to ``add_task`` and ``update``); ``enabled=False`` draws nothing (other ranks).
    """
    columns = [
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
    ]
    if extra is not None:
        columns.append(TextColumn(extra))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=False, disable=not enabled)


def training_bar(console: Console, *, enabled: bool = True) -> Progress:
    """A training run's bar of steps, with a :class:`LossMeter`'s fields (``loss``, ``rate``)."""
    extra = "train loss {task.fields[loss]}  {task.fields[rate]} img/s"
    return progress_bar(console, "step", extra=extra, enabled=enabled)


class LossMeter:
    """A training run's step losses as the bar and the metrics show them.

    - ``smoothed``: an exponential moving average of the step losses, bias-corrected so the
      first steps are not pulled towards zero; the bar shows it at every step.
    - ``interval()``: a metrics line's ``loss``, the mean since the last line (so a line every
      ``log_every`` steps stands for all of them, not for one noisy batch), and ``img_per_s``.
    - ``epoch_record()``: ``train_loss``, the mean over the epoch, logged beside ``val_loss``.
    - ``rate``: images per second over the last ``window`` steps.

    A resumed run starts a new meter: the values cover the steps of this process only.
    """

    def __init__(self, smoothing: float = 0.9, window: int = 20) -> None:
        self.smoothing = smoothing
        self._average, self._steps = 0.0, 0
        self._interval: list[float] = []
        self._epoch: list[float] = []
        self._times: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self._times.append((time.perf_counter(), 0))
        self._images = 0

    def add(self, loss: float, images: int) -> None:
        """One step's loss, and how many images it trained on (all processes together)."""
        self._steps += 1
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        self._interval.append(loss)
        self._epoch.append(loss)
        self._images += images
        self._times.append((time.perf_counter(), self._images))

    @property
    def smoothed(self) -> float | None:
        if not self._steps:
            return None
        return self._average / (1 - self.smoothing**self._steps)

    @property
    def rate(self) -> float | None:
        (t0, n0), (t1, n1) = self._times[0], self._times[-1]
        return (n1 - n0) / (t1 - t0) if n1 > n0 and t1 > t0 else None

    def interval(self) -> dict[str, float]:
        """``loss``: the mean since the last call; ``img_per_s``: :attr:`rate` (0 if unknown)."""
        values, self._interval = self._interval, []
        loss = sum(values) / len(values) if values else math.nan
        return {"loss": loss, "img_per_s": self.rate or 0.0}

    def epoch_record(self) -> dict[str, float]:
        """``train_loss``, the mean over the steps since the last call; empty without any."""
        values, self._epoch = self._epoch, []
        return {"train_loss": sum(values) / len(values)} if values else {}

    def fields(self) -> dict[str, str]:
        """The bar's ``loss`` and ``rate`` fields, "–" until there is a value (never nan)."""
        loss, rate = self.smoothed, self.rate
        return {
            "loss": "–" if loss is None else f"{loss:.4f}",
            "rate": "–" if rate is None else f"{rate:,.1f}",
        }
