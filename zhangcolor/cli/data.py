"""The ``build-bins`` command: a folder's ab prior and class-rebalancing weights."""

from __future__ import annotations

from pathlib import Path

import rich_click as click
from rich.table import Table

from zhangcolor.cli.common import build, config_option, console, field_option, out
from zhangcolor.options import PRIOR_SPLITS, PriorConfig


@click.command("build-bins")
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
