"""The ``colorize`` command: files, folders and globs."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from rich.table import Table

from zhangcolor.cli.common import build, console, field_option, inference_options, out
from zhangcolor.options import BACKENDS, FORMATS, ColorizeConfig


@click.command("colorize")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("colorized"),
    show_default=True,
    help="Output folder; outputs mirror the inputs' paths from their common root.",
)
@field_option(ColorizeConfig, "temperature", "--temperature", "-t", type=float)
@field_option(
    ColorizeConfig,
    "model",
    "--model",
    help="'default' (shipped), a .safetensors model from `zhangcolor train` or "
    "`package-model`, an .onnx file from `zhangcolor export onnx`, or the authors' eccv16 .pth.",
)
@inference_options
@field_option(ColorizeConfig, "backend", "--backend", type=click.Choice(BACKENDS))
@field_option(ColorizeConfig, "batch_size", "--batch-size", type=int)
@field_option(ColorizeConfig, "max_pixels", "--max-pixels", type=int)
@field_option(ColorizeConfig, "workers", "--workers", type=int)
@field_option(ColorizeConfig, "format", "--format", type=click.Choice(FORMATS))
@field_option(ColorizeConfig, "png_compress", "--png-compress", type=int)
@field_option(ColorizeConfig, "side_by_side", "--side-by-side", is_flag=True)
@field_option(ColorizeConfig, "overwrite", "--overwrite", is_flag=True)
@click.option(
    "--include-outputs",
    is_flag=True,
    help="Colorize earlier results of colorize too (they carry a mark; otherwise skipped).",
)
@click.option(
    "--hints",
    "hints_path",
    type=click.Path(exists=True, path_type=Path),
    help='Colour points to steer a guided model: a JSON file {"points": [{"x": 120, "y": 45, '
    '"color": "#c03020"}, ...]} for one photo, or a folder of <stem>.json at the photos\' paths.',
)
def colorize(inputs, out_dir, hints_path, include_outputs, **flags) -> None:
    """Colorize photos: files, folders (recursively) and globs.

    The output has the input's full size and its very L; only ab comes from the network.
    Outputs mirror the inputs' paths under --out. Exit status 1 when any input failed.
    """
    from zhangcolor.colorize import Colorizer
    from zhangcolor.colorize_files import (
        OutputOptions,
        assign_hints,
        colorize_files,
        plan_jobs,
    )
    from zhangcolor.progress import progress_bar

    config = build(ColorizeConfig, **flags)
    try:
        colorizer = Colorizer.load_as(config)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(f"cannot load the model: {e}") from None
    if not colorizer.uses_temperature and config.temperature is not None:
        console.print("[yellow]warning: --temperature is ignored: this is a regression model")
    jobs, outcomes = plan_jobs(
        inputs,
        out_dir,
        config.format,
        overwrite=config.overwrite,
        include_outputs=include_outputs,
    )
    if hints_path is not None:
        if not colorizer.takes_hints:
            raise click.BadParameter(
                "this model takes no colour points (it was trained without them); use a guided "
                "model",
                param_hint="--hints",
            )
        try:
            assign_hints(jobs, hints_path)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--hints") from None
    with progress_bar(console) as progress:
        task = progress.add_task("colorizing", total=len(jobs), visible=len(jobs) > 1)
        output = OutputOptions(
            fmt=config.format,
            side_by_side=config.side_by_side,
            png_compress=config.png_compress,
            overwrite=config.overwrite,
        )
        for outcome in colorize_files(
            colorizer,
            jobs,
            temperature=config.temperature,
            output=output,
            batch_size=config.batch_size,
            workers=config.workers,
            max_pixels=config.max_pixels,
        ):
            outcomes.append(outcome)
            progress.advance(task)
    _print_outcomes(outcomes, out_dir)


def _print_outcomes(outcomes: list, out_dir: Path) -> None:
    """One line when every file was colorized; else that line and a table of the files that
    were skipped or failed, and why."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    done = counts["done"]
    summary = f"colorized {done} photo{'s' if done != 1 else ''} → {out_dir}"
    if done == 1:
        summary = f"colorized {next(o.source for o in outcomes if o.status == 'done')} → "
        summary += next(o.detail for o in outcomes if o.status == "done")
    others = [o for o in outcomes if o.status != "done"]
    if not others:
        out.print(summary, soft_wrap=True, markup=False, highlight=False)
        return
    table = Table(
        title=f"colorize: {done} done, {counts['skipped']} skipped, {counts['failed']} failed "
        f"→ {out_dir}"
    )
    table.add_column("file", overflow="fold")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    others.sort(key=lambda o: str(o.source))  # they finish in any order
    for o in others[:50]:
        table.add_row(str(o.source), o.status, o.detail)
    if len(others) > 50:
        table.add_row(f"… and {len(others) - 50} more", "", "")
    out.print(table)
    if counts["failed"]:
        raise SystemExit(1)
