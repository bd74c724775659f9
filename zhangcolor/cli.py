"""The ``zhangcolor`` command: a thin layer that parses, validates and calls the library.

Choices, defaults and each option's help come from :mod:`zhangcolor.options` (light: no torch,
so ``--help`` is quick); each value is checked once, where it enters, by the config dataclass it
fills. ``docs/make_cli_reference.py`` writes docs/cli.md from these commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import rich_click as click
from rich.console import Console
from rich.table import Table

from zhangcolor import __version__
from zhangcolor.config import field_help, shown_default
from zhangcolor.constants import MAX_TEMPERATURE, MIN_TEMPERATURE, TEMPERATURE, TEMPERATURES
from zhangcolor.options import (
    BACKBONES,
    BACKENDS,
    CACHE_MODES,
    COLOR_SPACES,
    DEVICES,
    ENCODERS,
    EVALUATION_SPLITS,
    FORMATS,
    HEADS,
    LOSSES,
    PRECISIONS,
    PRIOR_SPLITS,
    SELECT_ON,
    STAGES,
    ColorizeConfig,
    ModelConfig,
    PriorConfig,
    ServeConfig,
    TrainConfig,
)

click.rich_click.TEXT_MARKUP = "markdown"
click.rich_click.SHOW_ARGUMENTS = True

console = Console(stderr=True)
out = Console()


# ----------------------------------------------------------------------------- helpers


def field_option(cls: type, name: str, *decls: str, **kwargs: Any):
    """An option that fills field ``name`` of config dataclass ``cls``: None unless given, so a
    YAML config's value stands. Its help is the field's own (a ``help`` here only where the flag
    needs other words), with the dataclass's default shown (flags: off)."""
    kwargs.setdefault("help", field_help(cls, name))
    if not kwargs.get("is_flag"):
        kwargs["show_default"] = shown_default(cls, name)
    return click.option(*decls, name, default=None, **kwargs)


def _resolve_config(ctx, param, value):
    from zhangcolor.config import resolve_config

    if value is None:
        return None
    try:
        return resolve_config(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def config_option(example: str):
    """--config: a YAML file, or the name of a config shipped with zhangcolor."""
    return click.option(
        "--config",
        "config_path",
        callback=_resolve_config,
        help=f"YAML of defaults: a file, or a shipped config by name (e.g. {example}); "
        "the flags below override it.",
    )


def build(cls: type, config_path: Path | None = None, **flags):
    """The config from defaults, YAML and flags; a bad value is a usage error (status 2)."""
    from zhangcolor.config import load_config

    try:
        return load_config(cls, config_path, **flags)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--config / flags") from None


def inference_options(command):
    """--device, --precision and --size, shared by the commands that run a trained model."""
    options = [
        field_option(ColorizeConfig, "device", "--device", type=click.Choice(DEVICES)),
        field_option(ColorizeConfig, "precision", "--precision", type=click.Choice(PRECISIONS)),
        field_option(ColorizeConfig, "size", "--size", type=int),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zhangcolor")
def main() -> None:
    """Automatic image colorization, after Zhang, Isola & Efros, *Colorful Image Colorization*.

    Quantise ab into the paper's 313 bins, rebalance by the prior of your photos, train with
    cross-entropy on soft-encoded targets, and decode with the annealed mean.
    """


# ----------------------------------------------------------------------------- build-bins


@main.command("build-bins")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "-o",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write bins.npz, bins.json and prior.png into (created if missing).",
)
@config_option("prior")
@field_option(PriorConfig, "lam", "--lambda", type=float)
@field_option(PriorConfig, "sigma", "--sigma", type=float)
@field_option(PriorConfig, "size", "--size", type=int)
@field_option(PriorConfig, "max_images", "--max-images", type=int)
@field_option(PriorConfig, "workers", "--workers", type=int)
@field_option(PriorConfig, "seed", "--seed", type=int)
@field_option(PriorConfig, "split", "--split", type=click.Choice(PRIOR_SPLITS))
def build_bins(data_dir: Path, out_dir: Path, config_path: Path | None, **flags) -> None:
    """Estimate the ab prior and class-rebalancing weights of a folder of color photos.

    Walks DATA_DIR recursively (jpg, png, webp, bmp, tif), counts the opaque pixels of each
    color image in its nearest of the 313 bins, smooths the distribution (σ), mixes it with the
    uniform one (λ) and inverts it. Grayscale and unreadable files are skipped and reported.
    Writes bins.npz, bins.json and prior.png into --out.
    """
    from zhangcolor.prior import PriorError, estimate_prior, save_prior, select_images
    from zhangcolor.progress import progress_bar

    config = build(PriorConfig, config_path, **flags)
    paths = select_images(data_dir, config)
    with progress_bar(console) as progress:
        task = progress.add_task("counting ab", total=len(paths))
        try:
            result = estimate_prior(
                data_dir, config, on_image=lambda _: progress.advance(task), paths=paths
            )
        except PriorError as e:
            raise click.ClickException(str(e)) from None
    try:
        save_prior(result, out_dir, config, source=str(data_dir))
    except OSError as e:  # a full disk or a read-only folder: nothing of the set is written
        raise click.ClickException(f"cannot write into {out_dir}: {e.strerror or e}") from None
    _print_prior_summary(result, data_dir)
    out.print(f"wrote {out_dir / 'bins.npz'}, bins.json and prior.png")


def _print_prior_summary(result, data_dir: Path) -> None:
    table = Table(title=f"build-bins: {data_dir}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = result.images_found / result.seconds if result.seconds else float("nan")
    for name, value in [
        ("images found", f"{result.images_found:,}"),
        ("used", f"{result.images_used:,}"),
        ("skipped: grayscale", f"{len(result.gray):,}"),
        ("skipped: unusable", f"{len(result.failed):,}"),
        ("pixels counted", f"{result.pixels:,}"),
        ("bins never seen", f"{int((result.counts == 0).sum())} / {len(result.counts)}"),
        ("time", f"{result.seconds:.1f} s ({rate:.1f} img/s)"),
        ("weights w", f"{result.weights.min():.3f} … {result.weights.max():.3f}"),
    ]:
        table.add_row(name, value)
    out.print(table)
    if result.failed:
        skipped = Table(title="unusable files (all are listed in bins.json)")
        skipped.add_column("file", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for name, reason in result.failed[:20]:
            skipped.add_row(name, reason)
        if len(result.failed) > 20:
            skipped.add_row(f"… and {len(result.failed) - 20} more", "")
        out.print(skipped)


# ----------------------------------------------------------------------------- train


@main.command("train")
@config_option("unet-effnet-classification")
@field_option(TrainConfig, "data", "--data", type=click.Path(exists=True, file_okay=False))
@field_option(TrainConfig, "out", "--out")
@field_option(ModelConfig, "head", "--head", type=click.Choice(HEADS))
@field_option(ModelConfig, "backbone", "--backbone", type=click.Choice(BACKBONES))
@field_option(ModelConfig, "encoder", "--encoder", type=click.Choice(ENCODERS))
@field_option(ModelConfig, "width", "--width", type=float)
@field_option(TrainConfig, "loss", "--loss", type=click.Choice(LOSSES))
@click.option(
    "--no-rebalance",
    is_flag=True,
    default=None,
    help="Unweighted cross-entropy (the paper's 'class' variant).",
)
@field_option(TrainConfig, "epochs", "--epochs", type=int)
@field_option(TrainConfig, "max_steps", "--max-steps", type=int)
@field_option(TrainConfig, "batch_size", "--batch-size", type=int)
@field_option(TrainConfig, "lr", "--lr", type=float)
@field_option(TrainConfig, "crop", "--crop", type=int)
@field_option(TrainConfig, "bins", "--bins")
@field_option(TrainConfig, "precision", "--precision", type=click.Choice(PRECISIONS))
@field_option(TrainConfig, "workers", "--workers", type=int)
@field_option(TrainConfig, "seed", "--seed", type=int)
@field_option(TrainConfig, "select_on", "--select-on", type=click.Choice(SELECT_ON))
@field_option(TrainConfig, "patience", "--patience", type=int)
@field_option(TrainConfig, "ema_decay", "--ema-decay", type=float)
@field_option(TrainConfig, "stages", "--stages", type=click.Choice([str(s) for s in STAGES]))
@field_option(TrainConfig, "light_jitter", "--light-jitter", type=float)
@field_option(TrainConfig, "cache", "--cache", type=click.Choice(CACHE_MODES))
@click.option(
    "--color-space",
    type=click.Choice(COLOR_SPACES),
    help="rgb: the RGB-space regression baseline (--head rgb-regression). [default: lab]",
)
@field_option(TrainConfig, "tensorboard", "--tensorboard", is_flag=True)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue the run in this folder exactly where its last checkpoint left it.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start afresh in a run folder that holds an earlier run, deleting its checkpoints "
    "and metrics (otherwise refused).",
)
@click.option(
    "--override",
    is_flag=True,
    help="With --resume: go on with options that differ from those the checkpoint was trained "
    "with (the seed, the batch size, the lr, ...), though the run then differs from an unbroken "
    "one (otherwise refused).",
)
def train(
    config_path, resume_dir, no_rebalance, color_space, head, backbone, encoder, width, **flags
) -> None:
    """Train a colorization network on a folder of color photos.

    YAML gives the defaults (`--config`), flags override them, and the resolved config is saved
    in the run folder with `metrics.jsonl`, `plots/`, `samples/` and `checkpoints/`. Ctrl-C or
    SIGTERM saves a checkpoint and exits (status 130 or 143); `--resume RUN_DIR` goes on from
    it, with the run's own config.yaml. Under `torchrun --nproc_per_node N -m zhangcolor train
    ...` the run is data-parallel.
    """
    if color_space == "rgb":
        if head not in (None, "regression", "rgb-regression"):
            raise click.BadParameter("the RGB space is for regression", param_hint="--head")
        head = "rgb-regression"
    if flags.get("stages") is not None:
        flags["stages"] = int(flags["stages"])
    model = {"head": head, "backbone": backbone, "encoder": encoder, "width": width}
    model = {k: v for k, v in model.items() if v is not None}
    if no_rebalance:
        flags["rebalance"] = False
    overwrite, override = flags.pop("overwrite"), flags.pop("override")
    if resume_dir is not None:
        config_path = _resumed_config(resume_dir, config_path, overwrite)
        flags["out"] = str(resume_dir)
    elif override:
        raise click.BadParameter("is for --resume only", param_hint="--override")
    config = build(TrainConfig, config_path, model=model or None, **flags)
    _run_training(config, resume=resume_dir is not None, overwrite=overwrite, override=override)


def _resumed_config(resume_dir: Path, config_path: Path | None, overwrite: bool) -> Path:
    """The config of a run to resume: its own config.yaml; --overwrite and --config are usage
    errors beside --resume."""
    if overwrite:
        raise click.BadParameter(
            "continues a run, --overwrite replaces it: pick one", param_hint="--resume"
        )
    if config_path is not None:
        raise click.BadParameter(
            "a resumed run keeps its own config.yaml; give the options to change as flags "
            "(with --override where they change what the run computes)",
            param_hint="--config",
        )
    own = resume_dir / "config.yaml"
    if not own.is_file():
        raise click.BadParameter(f"{resume_dir} holds no config.yaml", param_hint="--resume")
    return own


#: How a run ended: its words, and the exit status where it is not 0 (128 + the signal).
_ENDINGS = {
    "done": ("finished all epochs", 0),
    "max_steps": ("reached its last step", 0),
    "early_stop": ("stopped early: {select_on} stopped improving", 0),
    "interrupted": ("interrupted; resume with: zhangcolor train --resume {out}", 130),
    "terminated": ("terminated (SIGTERM); resume with: zhangcolor train --resume {out}", 143),
}


def _run_training(config, *, resume: bool, overwrite: bool, override: bool) -> None:
    """Run it; a TrainingError or a failed write is a clean error (status 1), and SIGINT or
    SIGTERM, once it has saved, exits with 130 or 143."""
    from zhangcolor.train import TrainingError, run

    try:
        ending = run(config, resume=resume, overwrite=overwrite, override=override)
    except TrainingError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a full disk, a read-only folder: the file is named
        where = f"cannot write {e.filename}: " if e.filename else ""
        raise click.ClickException(f"{where}{e.strerror or e}") from None
    words, status = _ENDINGS[ending]
    if ending == "max_steps" and config.max_steps is not None:
        words = "reached --max-steps"
    out.print(
        f"{words.format(select_on=config.select_on, out=config.out)}. Run folder: {config.out}"
    )
    if status:
        raise SystemExit(status)


# ----------------------------------------------------------------------------- colorize


@main.command("colorize")
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
@field_option(ColorizeConfig, "model", "--model")
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
    "--hints",
    "hints_path",
    type=click.Path(exists=True, path_type=Path),
    help='Colour points to steer a guided model: a JSON file {"points": [{"x": 120, "y": 45, '
    '"color": "#c03020"}, ...]} for one photo, or a folder of <stem>.json at the photos\' paths.',
)
def colorize(inputs, out_dir, hints_path, **flags) -> None:
    """Colorize photos: files, folders (recursively) and globs.

    The output has the input's full size and its very L; only ab comes from the network.
    Outputs mirror the inputs' paths under --out. Exit status 1 when any input failed.
    """
    # torch's OpenMP threads spin between ops by default, holding the cores that the decode and
    # write threads need: a folder went about 30 % faster without (2-core CPU). libgomp reads
    # this when torch loads, so before the import below; a value of the user's stands.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
    jobs, outcomes = plan_jobs(inputs, out_dir, config.format, overwrite=config.overwrite)
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
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    table = Table(
        title=f"colorize: {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed → {out_dir}"
    )
    table.add_column("file", overflow="fold")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    outcomes = sorted(outcomes, key=lambda o: str(o.source))  # they finish in any order
    shown = [o for o in outcomes if o.status != "done"] or outcomes[:10]
    for o in shown[:50]:
        table.add_row(str(o.source), o.status, o.detail)
    out.print(table)
    if counts["failed"]:
        raise SystemExit(1)


# ----------------------------------------------------------------------------- evaluate


@main.command("evaluate")
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
@inference_options
@click.option("--max-images", type=click.IntRange(min=1), help="Use the first N images only.")
def evaluate_command(data, models, temperatures, out_dir, split, max_images, **flags) -> None:
    """Measure models on a folder of color photos, as the paper does (section 3.1).

    Raw and class-rebalanced AuC (ab L2 thresholds 0-150), PSNR, SSIM and colorfulness (Hasler
    & Süsstrunk) against the truth, per model and temperature, always with the Gray baseline.
    """
    from zhangcolor.decode import check_colorize_temperature
    from zhangcolor.evaluate import evaluate, evaluation_images, write_report
    from zhangcolor.progress import progress_bar

    try:
        temps = tuple(check_colorize_temperature(float(t)) for t in temperatures.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--temperatures") from None
    config = build(ColorizeConfig, **flags)
    paths = evaluation_images(data, split, max_images)
    with progress_bar(console) as progress:
        task = progress.add_task("evaluating", total=len(paths))
        try:
            report = evaluate(
                data,
                list(models),
                temperatures=temps,
                split=split,
                paths=paths,
                on_image=lambda _: progress.advance(task),
                size=config.size,
                device=config.device,
                precision=config.precision,
            )
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
    write_report(report, out_dir)
    _print_report(report, split)
    out.print(
        f"wrote {out_dir}/report.json, report.md, metrics.json, auc_curves.csv/.png and "
        "temperature_sweep.csv/.png"
    )


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


@main.command("calibrate")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, help="A .safetensors checkpoint (classification head).")
@click.option(
    "--split",
    type=click.Choice(EVALUATION_SPLITS),
    default="val",
    show_default=True,
    help="val: the validation split that `train` holds out of DATA.",
)
@inference_options
@click.option("--max-images", type=click.IntRange(min=1), help="Use the first N images only.")
def calibrate_command(data, model, split, max_images, **flags) -> None:
    """Find the model's temperature: the T whose colorfulness comes closest to the truth's,
    losing at most half a point of rebalanced AuC against the paper's 0.38.

    Store it with `zhangcolor package-model CKPT --temperature T`; colorize and serve then use
    it by default.
    """
    from zhangcolor.calibrate import MAX_AUC_LOSS, calibrate
    from zhangcolor.evaluate import evaluation_images
    from zhangcolor.progress import progress_bar

    config = build(ColorizeConfig, model=model, **flags)
    paths = evaluation_images(data, split, max_images)
    with progress_bar(console) as progress:
        task = progress.add_task("calibrating", total=len(paths))
        try:
            result = calibrate(
                data,
                config.model,
                split=split,
                paths=paths,
                on_image=lambda _: progress.advance(task),
                size=config.size,
                device=config.device,
                precision=config.precision,
            )
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
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
        f"T = {result['temperature']:g} (at most {MAX_AUC_LOSS} point below T = {TEMPERATURE}). "
        f"Store it: zhangcolor package-model {model} --temperature {result['temperature']:g} "
        "-o MODEL.safetensors"
    )


# ----------------------------------------------------------------------------- models as files


@main.command("package-model")
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
def package_model_command(
    checkpoint: Path, target: Path, half: bool, temperature: float | None
) -> None:
    """Copy a trained checkpoint for shipping, with a provenance JSON beside it.

    This is how the default model in zhangcolor/weights/ is made (see the README's model card).
    """
    from zhangcolor.checkpoint import package_model
    from zhangcolor.decode import check_colorize_temperature

    try:
        if temperature is not None:
            check_colorize_temperature(temperature)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--temperature") from None
    try:
        info = package_model(checkpoint, target, half=half, temperature=temperature)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    size = target.stat().st_size / 1e6
    out.print(f"wrote {target} ({size:.1f} MB, {info['dtype']}) and {target.with_suffix('.json')}")


@main.command("convert-weights")
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
def convert_weights_command(source: Path, target: Path, head: str | None) -> None:
    """Convert the authors' released weights into a zhangcolor checkpoint: eccv16
    (colorization_release_v2-9b330a0b.pth: the paper's network, classification head and 313
    bins) or siggraph17 (siggraph17-df00044c.pth: their network with user points).

    `zhangcolor colorize --model OUT --temperature 1` decodes eccv16 as the authors' PyTorch
    demo does; see docs/authors-weights.md.
    """
    import warnings

    from zhangcolor.model_file import convert_weights

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


@main.group("export")
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
def export_onnx_command(model: str, target: Path, size: int | None) -> None:
    """Export the network alone to ONNX (dynamic batch; decoding stays outside, so T is free).

    Run it with `zhangcolor colorize --backend onnx --model model.onnx`.
    """
    from zhangcolor.model_file import export_model_onnx

    config = build(ColorizeConfig, model=model, size=size)
    try:
        export_model_onnx(config.model, target, size=config.size)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a full disk or a read-only folder; no partial file is left
        raise click.ClickException(f"cannot write {target}: {e.strerror or e}") from None
    out.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


# ----------------------------------------------------------------------------- serve


@main.command("serve")
@config_option("serve")
@field_option(ServeConfig, "host", "--host")
@field_option(ServeConfig, "port", "--port", type=int)
@field_option(ServeConfig, "model", "--model")
@field_option(ServeConfig, "workers", "--workers", type=int)
@field_option(ServeConfig, "backend", "--backend", type=click.Choice(BACKENDS))
@field_option(ServeConfig, "device", "--device", type=click.Choice(DEVICES))
@field_option(ServeConfig, "precision", "--precision", type=click.Choice(PRECISIONS))
@field_option(ServeConfig, "size", "--size", type=int)
@field_option(ServeConfig, "max_upload_mb", "--max-upload-mb", type=float)
@field_option(ServeConfig, "max_pixels", "--max-pixels", type=int)
@field_option(ServeConfig, "max_aspect", "--max-aspect", type=float)
@field_option(ServeConfig, "read_timeout_s", "--read-timeout-s", type=float)
@field_option(ServeConfig, "upload_timeout_s", "--upload-timeout-s", type=float)
@field_option(ServeConfig, "max_concurrent", "--max-concurrent", type=int)
@field_option(ServeConfig, "max_queue", "--max-queue", type=int)
@field_option(ServeConfig, "cache_mb", "--cache-mb", type=float)
@field_option(ServeConfig, "cache_ttl_s", "--cache-ttl-s", type=float)
def serve_command(config_path, **flags) -> None:
    """Serve the web page and the REST API (needs `pip install 'zhangcolor[serve]'`).

    Open http://127.0.0.1:8000/ for the page: upload a photo, compare before and after, move the
    temperature (re-decoded from the cached network output, so the network does not run again),
    and download. `POST /api/colorize` takes a multipart `image` with `temperature` and `format`;
    the API docs are at `/docs`.
    """
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(
            f"zhangcolor serve needs the serve extra ({e.name} is missing): "
            "pip install 'zhangcolor[serve]'"
        ) from None
    from zhangcolor.serve import serve

    config = build(ServeConfig, config_path, **flags)
    console.print(
        f"zhangcolor serve: model {config.model} ({config.backend}), "
        f"{config.workers} worker(s); open http://{config.host}:{config.port}/"
    )
    try:
        serve(config)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(f"cannot serve: {e}") from None


# ----------------------------------------------------------------------------- models


@main.command("models")
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


if __name__ == "__main__":
    main()
