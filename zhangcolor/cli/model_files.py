"""The commands on model files: ``package-model``, ``convert-weights``, ``export onnx`` and
``models``."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from rich.table import Table

from zhangcolor.cli.common import build, console, field_option, out
from zhangcolor.options import ColorizeConfig


def overwrite_option(command):
    """``--overwrite``: a model-file command writes over an existing target only when asked."""
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Replace the target if it exists (otherwise refused).",
    )(command)


def refuse_existing(overwrite: bool, *targets: Path) -> None:
    """A clear error when any of ``targets`` exists and ``--overwrite`` was not given."""
    if not overwrite:
        for target in targets:
            if target.exists() or target.is_symlink():
                raise click.ClickException(f"{target} exists: give --overwrite to replace it")


@click.command("package-model")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write it, e.g. zhangcolor/weights/default.safetensors.",
)
@click.option("--half", is_flag=True, help="Store the float weights in fp16 (half the size).")
@click.option(
    "--temperature",
    type=float,
    help="The model's calibrated T, stored as colorize's and serve's default for it.",
)
@click.option(
    "--temperature-from",
    "calibration",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The JSON `zhangcolor calibrate` wrote: store its T (instead of --temperature).",
)
@click.option(
    "--point-strength",
    type=click.FloatRange(min=0, min_open=True),
    help="Guided classification models: multiply the points' vote confidence by this (> 0), "
    "so that colorize follows the points more closely than training's cross-entropy hedges "
    "(calibrated with evaluate --hints). [default: 1]",
)
@overwrite_option
def package_model_command(
    checkpoint: Path,
    target: Path,
    half: bool,
    temperature: float | None,
    calibration: Path | None,
    point_strength: float | None,
    overwrite: bool,
) -> None:
    """Copy a trained checkpoint for shipping, with its calibrated T and a provenance JSON
    beside it.

    This is how the default model in zhangcolor/weights/ is made (see docs/model-card.md).
    """
    from zhangcolor.checkpoint import package_model
    from zhangcolor.decode import check_colorize_temperature

    hint = "--temperature"
    try:
        if calibration is not None:
            if temperature is not None:
                raise ValueError("give --temperature or --temperature-from, not both")
            from zhangcolor.calibrate import read_calibration

            hint, temperature = "--temperature-from", read_calibration(calibration)
        if temperature is not None:
            check_colorize_temperature(temperature)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None
    refuse_existing(overwrite, target, target.with_suffix(".json"))
    try:
        info = package_model(
            checkpoint, target, half=half, temperature=temperature, point_strength=point_strength
        )
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    size = target.stat().st_size / 1e6
    stored = "" if temperature is None else f", T = {temperature:g}"
    out.print(
        f"wrote {target} ({size:.1f} MB, {info['dtype']}{stored}) and {target.with_suffix('.json')}"
    )


@click.command("convert-weights")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the checkpoint, e.g. eccv16-authors.safetensors.",
)
@click.option(
    "--head",
    type=click.Choice(["classification", "regression"]),
    default=None,
    help="siggraph17: the output to keep, regression (ab, their demo's; the default) or "
    "classification (its 529 classes). eccv16 has classification only.",
)
@overwrite_option
def convert_weights_command(source: Path, target: Path, head: str | None, overwrite: bool) -> None:
    """Convert the authors' released weights into a zhangcolor checkpoint: eccv16
    (colorization_release_v2-9b330a0b.pth: the paper's network, classification head and 313
    bins) or siggraph17 (siggraph17-df00044c.pth: their network with user points).

    `zhangcolor colorize --model OUT --temperature 1` decodes eccv16 as the authors' PyTorch
    demo does; see docs/authors-weights.md.
    """
    import warnings

    from zhangcolor.model_file import convert_weights

    refuse_existing(overwrite, target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # only ours: the bin centres' warning
        try:
            file = convert_weights(source, target, head)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            console.print(f"[yellow]warning: {warning.message}")
    size = target.stat().st_size / 1e6
    network = file.record.network
    bins = f", {len(file.record.centers)} bins" if network.head.uses_temperature else ""
    out.print(
        f"wrote {target} ({size:.1f} MB): {network.backbone}, {network.head.value} head{bins}"
    )


@click.group("export")
def export() -> None:
    """Export a trained network to other runtimes."""


@export.command("onnx")
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="'default' or a .safetensors checkpoint from `zhangcolor train`.",
)
@click.option(
    "-o",
    "--out",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("model.onnx"),
    show_default=True,
    help="Where to write the ONNX file.",
)
@field_option(
    ColorizeConfig,
    "size",
    "--size",
    type=int,
    help="Example input size for tracing; the batch and image sizes stay dynamic.",
)
@overwrite_option
def export_onnx_command(model: str, target: Path, size: int | None, overwrite: bool) -> None:
    """Export the network alone to ONNX (dynamic batch; decoding stays outside, so T is free).

    Run it with `zhangcolor colorize --backend onnx --model model.onnx`.
    """
    from zhangcolor.model_file import export_model_onnx

    config = build(ColorizeConfig, model=model, size=size)
    refuse_existing(overwrite, target)
    try:
        export_model_onnx(config.model, target, size=config.size)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a full disk or a read-only folder; no partial file is left
        raise click.ClickException(f"cannot write {target}: {e.strerror or e}") from None
    out.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """List the backbones × heads with their parameter counts."""
    import json

    from zhangcolor.models import catalogue

    rows = catalogue()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="zhangcolor models (backbone × head)")
    for column in ("backbone", "variant", "head", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for row in rows:
        variant = row.get("encoder") or f"width {row['width']}"
        if row["backbone"] == "siggraph17":
            variant = "the authors' layout"
        table.add_row(row["backbone"], variant, row["head"], f"{row['parameters'] / 1e6:.2f} M")
    out.print(table)
