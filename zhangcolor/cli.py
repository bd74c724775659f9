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


if __name__ == "__main__":
    main()
