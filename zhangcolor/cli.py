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
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of defaults (see configs/prior.yaml); the flags below override it.",
)
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
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML of defaults, e.g. configs/eccv16-compact.yaml; the flags below override it.",
)
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
