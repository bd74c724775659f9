"""rich progress bars with a throughput column, shared by the long-running commands."""

from __future__ import annotations

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
