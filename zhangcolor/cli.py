"""The ``zhangcolor`` command: a thin layer that parses, validates and calls the library."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from rich.console import Console
from rich.table import Table

from zhangcolor import __version__

click.rich_click.TEXT_MARKUP = "markdown"
click.rich_click.SHOW_ARGUMENTS = True

console = Console(stderr=True)
out = Console()


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="zhangcolor")
def main() -> None:
    """Automatic image colorization, after Zhang, Isola & Efros, *Colorful Image Colorization*.

    Quantise ab into the paper's 313 bins, rebalance by the prior of your photos, train with
    cross-entropy on soft-encoded targets, and decode with the annealed mean.
    """


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
@click.option(
    "--lambda",
    "lam",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="λ, weight of the uniform distribution in the weights. [default: 0.5]",
)
@click.option(
    "--sigma",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="σ (ab units) of the Gaussian smoothing of the prior. [default: 5.0]",
)
@click.option(
    "--size",
    type=click.IntRange(min=8),
    default=None,
    help="Short side (px) images are resized to before counting. [default: 256]",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="Use at most this many images, drawn at random with --seed. [default: all]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads that decode and count images in parallel. [default: 2]",
)
@click.option("--seed", type=int, default=None, help="Seed of the --max-images draw. [default: 0]")
def build_bins(
    data_dir: Path,
    out_dir: Path,
    config_path: Path | None,
    lam: float | None,
    sigma: float | None,
    size: int | None,
    max_images: int | None,
    workers: int | None,
    seed: int | None,
) -> None:
    """Estimate the ab prior and class-rebalancing weights of a folder of colour photos.

    Walks DATA_DIR recursively (jpg, png, webp, bmp, tif), counts the opaque pixels of each
    colour image in its nearest of the 313 bins, smooths the distribution (σ), mixes it with the
    uniform one (λ) and inverts it. Grayscale and unreadable files are skipped and reported.
    Writes bins.npz, bins.json and prior.png into --out.
    """
    from zhangcolor.config import load_config
    from zhangcolor.prior import PriorConfig, PriorError, estimate_prior, save_prior, select_images
    from zhangcolor.progress import progress_bar

    try:
        config = load_config(
            PriorConfig,
            config_path,
            lam=lam,
            sigma=sigma,
            size=size,
            max_images=max_images,
            workers=workers,
            seed=seed,
        )
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--config") from None
    total = len(select_images(data_dir, config))
    with progress_bar(console) as progress:
        task = progress.add_task("counting ab", total=total)
        try:
            result = estimate_prior(data_dir, config, on_image=lambda _: progress.advance(task))
        except PriorError as e:
            raise click.ClickException(str(e)) from None
    save_prior(result, out_dir, config, source=str(data_dir))

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
    out.print(f"wrote {out_dir / 'bins.npz'}, bins.json and prior.png")


@main.command("train")
@config_option("unet-effnet-classification")
@click.option(
    "--data", type=click.Path(exists=True, file_okay=False), help="Folder of colour photos."
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder. [default: runs/run]")
@click.option("--head", type=click.Choice(["classification", "regression"]), help="Output head.")
@click.option("--backbone", type=click.Choice(["eccv16", "unet"]), help="Network body.")
@click.option(
    "--encoder",
    type=click.Choice(["resnet18", "resnet34", "efficientnet-lite0"]),
    help="U-Net encoder.",
)
@click.option(
    "--width", type=click.FloatRange(min=0, min_open=True), help="eccv16 width multiplier."
)
@click.option(
    "--loss",
    type=click.Choice(["auto", "ce", "l1", "l2", "huber"]),
    help="auto: ce for classification, l2 for regression.",
)
@click.option(
    "--no-rebalance",
    is_flag=True,
    default=None,
    help="Unweighted cross-entropy (the paper's 'class' variant).",
)
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many steps in all.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Global batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--crop", type=click.IntRange(min=16), help="Training crop side (multiple of 4).")
@click.option(
    "--bins",
    type=click.Path(exists=True, dir_okay=False),
    help="bins.npz from build-bins. [default: the shipped prior]",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    help="auto: bf16 where the hardware runs it natively.",
)
@click.option("--workers", type=click.IntRange(min=0), help="DataLoader worker processes.")
@click.option("--seed", type=int)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue the run in this folder exactly where its last checkpoint left it.",
)
def train(config_path, resume_dir, no_rebalance, head, backbone, encoder, width, **flags) -> None:
    """Train a colorization network on a folder of colour photos.

    YAML gives the defaults (`--config`), flags override them, and the resolved config is saved
    in the run folder with `metrics.jsonl`, `plots/`, `samples/` and `checkpoints/`. Ctrl-C saves
    a checkpoint and exits; `--resume RUN_DIR` goes on from it. Under
    `torchrun --nproc_per_node N -m zhangcolor train ...` the run is data-parallel.
    """
    from zhangcolor.config import load_config
    from zhangcolor.train import TrainConfig, TrainingError, run

    model = {
        k: v
        for k, v in {"head": head, "backbone": backbone, "encoder": encoder, "width": width}.items()
        if v is not None
    }
    if no_rebalance:
        flags["rebalance"] = False
    if resume_dir is not None:
        config_path = resume_dir / "config.yaml"
        if not config_path.is_file():
            raise click.BadParameter(f"{resume_dir} holds no config.yaml", param_hint="--resume")
        flags["out"] = str(resume_dir)
    try:
        config = load_config(TrainConfig, config_path, model=model or None, **flags)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--config / flags") from None
    try:
        ending = run(config, resume=resume_dir is not None)
    except (TrainingError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    messages = {
        "done": "finished all epochs",
        "max_steps": "reached --max-steps",
        "early_stop": "stopped early: the validation loss stopped improving",
        "interrupted": f"interrupted; resume with: zhangcolor train --resume {config.out}",
    }
    out.print(f"{messages[ending]}. Run folder: {config.out}")
    if ending == "interrupted":
        raise SystemExit(130)


def inference_options(command):
    """--device, --precision and --size, shared by the commands that run a trained model."""
    options = [
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
        ),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16"]),
            default="auto",
            show_default=True,
            help="auto: bf16 where the hardware runs it natively.",
        ),
        click.option(
            "--size",
            type=click.IntRange(min=16),
            default=256,
            show_default=True,
            help="Working size the network sees; outputs keep the input's size.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("colorize")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("colorized"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--temperature",
    "-t",
    type=float,
    default=0.38,
    show_default=True,
    help="Annealed-mean T in (0, 1]: lower is more vivid, 1 is the mean.",
)
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="'default' (shipped) or a .safetensors checkpoint from `zhangcolor train`.",
)
@inference_options
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="onnx: run the network in onnxruntime (pip install 'zhangcolor[onnx]').",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["png", "jpg"]), default="png", show_default=True
)
@click.option("--side-by-side", is_flag=True, help="Write gray | colour, for sharing.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (otherwise skipped).")
def colorize(
    inputs,
    backend,
    out_dir,
    temperature,
    model,
    device,
    precision,
    size,
    batch_size,
    fmt,
    side_by_side,
    overwrite,
) -> None:
    """Colorize photos: files, folders (recursively) and globs.

    The output has the input's full size and its very L; only ab comes from the network.
    Outputs mirror the input tree under --out. Exit status 1 when any input failed.
    """
    from zhangcolor.colorize import Colorizer, check_colorize_temperature, colorize_files, plan_jobs
    from zhangcolor.progress import progress_bar

    try:
        check_colorize_temperature(temperature)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--temperature") from None
    if size % 4:
        raise click.BadParameter(f"must be a multiple of 4, got {size}", param_hint="--size")
    try:
        colorizer = Colorizer.load(
            model, device=device, precision=precision, size=size, backend=backend
        )
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(f"cannot load the model: {e}") from None
    if colorizer.head == "regression" and temperature != 0.38:
        console.print("[yellow]warning: --temperature is ignored: this is a regression model")
    jobs, outcomes = plan_jobs(inputs, out_dir, fmt)
    with progress_bar(console) as progress:
        task = progress.add_task("colorizing", total=len(jobs), visible=len(jobs) > 1)
        for outcome in colorize_files(
            colorizer,
            jobs,
            temperature=temperature,
            fmt=fmt,
            batch_size=batch_size,
            side_by_side=side_by_side,
            overwrite=overwrite,
        ):
            outcomes.append(outcome)
            progress.advance(task)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    table = Table(
        title=f"colorize: {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed → {out_dir}"
    )
    table.add_column("file", overflow="fold")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    shown = [o for o in outcomes if o.status != "done"] or outcomes[:10]
    for o in shown[:50]:
        table.add_row(str(o.source), o.status, o.detail)
    out.print(table)
    if counts["failed"]:
        raise SystemExit(1)


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
    default="1,0.77,0.58,0.38,0.29,0.14,0.01",
    show_default=True,
    help="Comma-separated annealed-mean temperatures in (0, 1].",
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
    type=click.Choice(["all", "val"]),
    default="all",
    show_default=True,
    help="val: only the validation split that `train` holds out of DATA.",
)
@inference_options
@click.option("--max-images", type=click.IntRange(min=1), help="Use the first N images only.")
def evaluate_command(
    data, models, temperatures, out_dir, split, size, max_images, device, precision
):
    """Measure models on a folder of colour photos, as the paper does (section 3.1).

    Raw and class-rebalanced AuC (ab L2 thresholds 0-150), PSNR, SSIM and colourfulness (Hasler
    & Süsstrunk) against the truth, per model and temperature, always with the Gray baseline.
    """
    from zhangcolor.colorize import check_colorize_temperature
    from zhangcolor.evaluate import evaluate, write_report
    from zhangcolor.progress import progress_bar

    try:
        temps = tuple(check_colorize_temperature(float(t)) for t in temperatures.split(","))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--temperatures") from None
    from zhangcolor.data import split_files
    from zhangcolor.images import find_images

    total = len(split_files(data)[1] if split == "val" else find_images(data))
    total = min(total, max_images or total)
    with progress_bar(console) as progress:
        task = progress.add_task("evaluating", total=total)
        try:
            report = evaluate(
                data,
                list(models),
                temperatures=temps,
                size=size,
                split=split,
                max_images=max_images,
                device=device,
                precision=precision,
                on_image=lambda _: progress.advance(task),
            )
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from None
    write_report(report, out_dir)
    table = Table(title=f"evaluate: {report['images']} images ({split}) at {size}²")
    for column in ("model", "T", "AuC", "rebal. AuC", "PSNR", "SSIM", "colourful / truth"):
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
            f"{r['colourfulness_ratio']:.2f}",
        )
    out.print(table)
    out.print(f"wrote {out_dir}/report.json, report.md, auc_curves.png, temperature_sweep.png")


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
def package_model_command(checkpoint: Path, target: Path, half: bool) -> None:
    """Copy a trained checkpoint for shipping, with a provenance JSON beside it.

    This is how the default model in zhangcolor/weights/ is made (see the README's model card).
    """
    from zhangcolor.train import package_model

    try:
        info = package_model(checkpoint, target, half=half)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    size = target.stat().st_size / 1e6
    out.print(f"wrote {target} ({size:.1f} MB, {info['dtype']}) and {target.with_suffix('.json')}")


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
)
@click.option(
    "--size",
    type=click.IntRange(min=16),
    default=256,
    show_default=True,
    help="Example input size for tracing; the batch size stays dynamic.",
)
def export_onnx_command(model: str, target: Path, size: int) -> None:
    """Export the network alone to ONNX (dynamic batch; decoding stays outside, so T is free).

    Run it with `zhangcolor colorize --backend onnx --model model.onnx`.
    """
    from zhangcolor.export import export_onnx

    try:
        export_onnx(model, target, size=size)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    out.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


@main.command("serve")
@config_option("serve")
@click.option("--host", help="Interface to listen on. [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), help="[default: 8000]")
@click.option("--model", help="'default' (shipped), a .safetensors checkpoint, or an .onnx file.")
@click.option("--workers", type=click.IntRange(min=1), help="Server processes. [default: 1]")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), help="[default: torch]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="[default: auto]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), help="[default: auto]")
@click.option("--size", type=click.IntRange(min=16), help="Network working size. [default: 256]")
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    help="Largest accepted image file. [default: 20]",
)
@click.option(
    "--max-pixels", type=click.IntRange(min=1), help="Largest width × height. [default: 50e6]"
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    help="Threads that colorize, per worker (torch uses every core in each). [default: 1]",
)
@click.option(
    "--max-queue", type=click.IntRange(min=0), help="Requests that may wait. [default: 32]"
)
@click.option(
    "--cache-mb",
    type=click.FloatRange(min=0),
    help="Memory for cached network outputs per worker. [default: 1024]",
)
@click.option(
    "--cache-ttl-s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a cached upload is kept after its last use. [default: 900]",
)
def serve_command(config_path, **flags) -> None:
    """Serve the web page and the REST API (needs `pip install 'zhangcolor[serve]'`).

    Open http://127.0.0.1:8000/ for the page: upload a photo, compare before and after, move the
    temperature (re-decoded from the cached network output, so the network does not run again),
    and download. `POST /api/colorize` takes a multipart `image` with `temperature` and `format`;
    the OpenAPI docs are at `/docs`.
    """
    from zhangcolor.config import load_config

    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(
            f"zhangcolor serve needs the serve extra ({e.name} is missing): "
            "pip install 'zhangcolor[serve]'"
        ) from None
    from zhangcolor.serve import ServeConfig, serve

    try:
        config = load_config(ServeConfig, config_path, **flags)
    except (ValueError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--config / flags") from None
    if config.size % 4:
        raise click.BadParameter(f"must be a multiple of 4, got {config.size}", param_hint="--size")
    console.print(
        f"zhangcolor serve: model {config.model} ({config.backend}), "
        f"{config.workers} worker(s); open http://{config.host}:{config.port}/"
    )
    try:
        serve(config)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(f"cannot serve: {e}") from None


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
        variant = f"width {row['width']}" if "width" in row else row["encoder"]
        table.add_row(row["backbone"], variant, row["head"], f"{row['parameters'] / 1e6:.2f} M")
    out.print(table)


if __name__ == "__main__":
    main()
