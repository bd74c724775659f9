"""The ``evaluate`` and ``calibrate`` commands: a model measured on a folder of photos."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from rich.table import Table

from zhangcolor.cli.common import build, console, inference_options, out
from zhangcolor.config import short
from zhangcolor.constants import (
    HINT_COUNTS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    TEMPERATURE,
    TEMPERATURES,
)
from zhangcolor.options import EVALUATION_SPLITS, ColorizeConfig


@click.command("evaluate")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("default",),
    show_default=True,
    help="'default' or a .safetensors checkpoint; repeat to compare several.",
)
@click.option(
    "--temperatures",
    default=",".join(f"{t:g}" for t in TEMPERATURES),
    show_default=True,
    help="Comma-separated annealed-mean temperatures in "
    f"[{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Folder for report.json, report.md and the plots.",
)
@click.option(
    "--split",
    type=click.Choice(EVALUATION_SPLITS),
    default="all",
    show_default=True,
    help="val: only the validation split that `train` holds out of DATA.",
)
@click.option(
    "--hints",
    "hint_counts",
    metavar="COUNTS",
    help="Sweep colour points instead: comma-separated numbers of random true-colour points "
    f"per photo (e.g. {','.join(map(str, HINT_COUNTS))}), scored with Gray and the nearest-point "
    "fill; writes hint_sweep.md/.csv/.json/.png. Each model decodes at its own T unless "
    "--temperatures gives one.",
)
@inference_options
@click.option("--max-images", type=click.IntRange(min=1), help="Use the first N images only.")
def evaluate_command(
    data, models, temperatures, out_dir, split, max_images, hint_counts, **flags
) -> None:
    """Measure models on a folder of color photos, as the paper does (section 3.1).

    Raw and class-rebalanced AuC (ab L2 thresholds 0-150), PSNR, SSIM and colorfulness (Hasler
    & Süsstrunk) against the truth, per model and temperature, always with the Gray baseline.
    With `--hints`, guided models are scored against the number of colour points a user gives,
    as the SIGGRAPH 2017 paper does (docs/guided.md).
    """
    from zhangcolor.decode import check_colorize_temperature
    from zhangcolor.evaluate import evaluate, write_report

    try:
        temps = tuple(check_colorize_temperature(float(t)) for t in temperatures.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--temperatures") from None
    config = build(ColorizeConfig, **flags)
    paths = _scored_images(data, split, max_images)
    if hint_counts is not None:
        given = click.get_current_context().get_parameter_source("temperatures")
        chosen = given is not click.core.ParameterSource.DEFAULT
        if chosen and len(temps) != 1:
            raise click.BadParameter(
                "give one temperature with --hints", param_hint="--temperatures"
            )
        _sweep_points(
            models, paths, _counts(hint_counts), temps[0] if chosen else None, config, out_dir
        )
        return
    report = _scored(
        "evaluating",
        paths,
        lambda on_image: evaluate(
            data,
            list(models),
            temperatures=temps,
            split=split,
            paths=paths,
            on_image=on_image,
            **_loading(config),
        ),
    )
    write_report(report, out_dir)
    _print_report(report, split)
    out.print(
        f"wrote {out_dir}/report.json, report.md, metrics.json, auc_curves.csv/.png and "
        "temperature_sweep.csv/.png"
    )


def _loading(config: ColorizeConfig) -> dict:
    """What Colorizer.load takes from the inference options."""
    return {"size": config.size, "device": config.device, "precision": config.precision}


def _scored(what: str, paths: list[Path], score):
    """``score(on_image)`` under a progress bar of ``paths``; a ValueError or a missing file
    (a bad model, no usable photo) is a clean error."""
    from zhangcolor.progress import progress_bar

    with progress_bar(console) as progress:
        task = progress.add_task(what, total=len(paths))
        try:
            return score(lambda _: progress.advance(task))
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None


def _counts(text: str) -> tuple[int, ...]:
    """--hints' numbers of points: distinct, ascending, each in [0, MAX_POINTS]."""
    from zhangcolor.hints import MAX_POINTS

    try:
        counts = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 0 or counts[-1] > MAX_POINTS:
        raise click.BadParameter(
            f"must be comma-separated numbers of points in [0, {MAX_POINTS}], e.g. "
            f"{','.join(map(str, HINT_COUNTS))}; got {short(text)}",
            param_hint="--hints",
        )
    return tuple(counts)


def _sweep_points(models, paths, counts, temperature, config: ColorizeConfig, out_dir) -> None:
    """evaluate --hints: the colour-point sweep, written and shown (PSNR by count)."""
    from zhangcolor.hint_sweep import sweep, write_sweep

    report = _scored(
        "sweeping points",
        paths,
        lambda on_image: sweep(
            list(models),
            paths,
            counts=counts,
            temperature=temperature,
            on_image=on_image,
            **_loading(config),
        ),
    )
    write_sweep(report, out_dir)
    table = Table(title=f"PSNR (dB) against colour points: {report['images']} images")
    table.add_column("model")
    for n in counts:
        table.add_column(f"{n}", justify="right")
    rows: dict[str, list[str]] = {}
    for r in report["rows"]:
        rows.setdefault(r["label"], []).append(f"{r['psnr']:.2f}")
    for label, cells in rows.items():
        table.add_row(label, *cells)
    out.print(table)
    out.print(f"wrote {out_dir}/hint_sweep.md, .csv, .json and .png")


def _print_report(report: dict, split: str) -> None:
    table = Table(title=f"evaluate: {report['images']} images ({split}) at {report['size']}²")
    for column in ("model", "T", "AuC", "rebal. AuC", "PSNR", "SSIM", "colorful / truth"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in report["rows"]:
        t = "–" if r["temperature"] is None else f"{r['temperature']:g}"
        table.add_row(
            r["label"],
            t,
            f"{r['auc']:.1f}",
            f"{r['auc_rebalanced']:.1f}",
            f"{r['psnr']:.2f}",
            f"{r['ssim']:.3f}",
            f"{r['colorfulness_ratio']:.2f}",
        )
    out.print(table)


@click.command("calibrate")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, help="A .safetensors checkpoint (classification head).")
@click.option(
    "--split",
    type=click.Choice(EVALUATION_SPLITS),
    default="val",
    show_default=True,
    help="val: the validation split that `train` holds out of DATA.",
)
@click.option(
    "-o",
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write T and the sweep it was chosen from (package-model --temperature-from "
    "reads it). [default: calibration.json in the model's run folder, or beside the model]",
)
@inference_options
@click.option("--max-images", type=click.IntRange(min=1), help="Use the first N images only.")
def calibrate_command(data, model, split, out_path, max_images, **flags) -> None:
    """Find the model's temperature: the T whose colorfulness comes closest to the truth's,
    losing at most half a point of rebalanced AuC against the paper's 0.38.

    Writes it to `--out`; store it in the model with
    `zhangcolor package-model CKPT --temperature-from calibration.json -o MODEL.safetensors`,
    and colorize and serve then use it by default. Fewer than 50 photos give an uncertain T.
    """
    from zhangcolor.calibrate import FEW_IMAGES, calibrate, write_calibration

    config = build(ColorizeConfig, model=model, **flags)
    paths = _scored_images(data, split, max_images)
    result = _scored(
        "calibrating",
        paths,
        lambda on_image: calibrate(
            data, config.model, split=split, paths=paths, on_image=on_image, **_loading(config)
        ),
    )
    _print_calibration(result, split)
    about = {"model": str(model), "data": Path(data).resolve().name, "split": split}
    out_path = out_path or _calibration_path(model)
    write_calibration(result, out_path, **about)
    if result["images"] < FEW_IMAGES:
        console.print(
            f"[yellow]warning: only {result['images']} photos were scored ({split} split of "
            f"{data}): T = {result['temperature']:g} is uncertain. Calibrate on a folder with "
            f"at least {FEW_IMAGES} photos held out of training"
            + (
                ", or with --split all (which also scores the photos the model trained on)."
                if split == "val"
                else "."
            )
        )
    out.print(f"wrote {out_path}. Store T in the model:")
    out.print(
        f"  zhangcolor package-model {_shell(_checkpoint_path(model))} "
        f"--temperature-from {_shell(out_path)} -o {_shell(_packaged_name(model))}",
        soft_wrap=True,  # one line, to copy whole
        markup=False,
        highlight=False,
    )


def _print_calibration(result: dict, split: str) -> None:
    from zhangcolor.calibrate import MAX_AUC_LOSS

    table = Table(title=f"calibrate: {result['images']} images ({split})")
    for column in ("T", "rebal. AuC", "AuC", "colorful / truth"):
        table.add_column(column, justify="right")
    shown = {r["temperature"] for r in (result["chosen"], result["reference"])}
    for r in result["rows"]:
        if r["temperature"] in shown or round(r["temperature"] * 50) % 5 == 0:
            mark = " ← chosen" if r is result["chosen"] else ""
            table.add_row(
                f"{r['temperature']:g}{mark}",
                f"{r['auc_rebalanced']:.1f}",
                f"{r['auc']:.1f}",
                f"{r['colorfulness_ratio']:.2f}",
            )
    out.print(table)
    gray = result["gray"]
    out.print(
        f"Gray: rebalanced AuC {gray['auc_rebalanced']:.1f}, AuC {gray['auc']:.1f}. Calibrated "
        f"T = {result['temperature']:g} (at most {MAX_AUC_LOSS} point below T = {TEMPERATURE})."
    )


def _scored_images(data: Path, split: str, max_images: int | None) -> list[Path]:
    """The photos to score; a validation split with none is a usage error that says why."""
    from zhangcolor.evaluate import evaluation_images

    paths = evaluation_images(data, split, max_images)
    if not paths and split == "val":
        raise click.BadParameter(
            f"none of the photos in {data} is in the validation split (train holds about one "
            "in ten out, chosen by each file's path): use more photos, or --split all",
            param_hint="--split",
        )
    return paths


def _calibration_path(model: str) -> Path:
    """Where calibrate writes by default: runs/NAME/calibration.json for a run's checkpoint,
    MODEL.calibration.json beside another model file, calibration.json for the shipped one."""
    path = Path(model)
    if model == "default":
        return Path("calibration.json")
    if path.parent.name == "checkpoints":
        return path.parent.parent / "calibration.json"
    return path.with_name(f"{path.stem}.calibration.json")


def _checkpoint_path(model: str) -> str:
    """The file package-model is to read: the shipped model's for "default"."""
    if model == "default":
        from zhangcolor.model_file import default_model_path

        return str(default_model_path())
    return model


def _packaged_name(model: str) -> str:
    """A name for the packaged model: the run's (runs/NAME/checkpoints/best.safetensors ->
    NAME.safetensors), else the checkpoint's own with "-calibrated"."""
    path = Path(model)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}.safetensors"
    return f"{path.stem}-calibrated.safetensors"


def _shell(value) -> str:
    import shlex

    return shlex.quote(str(value))
