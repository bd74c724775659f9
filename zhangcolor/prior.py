"""The empirical ab prior of a folder of photos and its artifacts: `zhangcolor build-bins`.

Each image is reduced to a working size (its short side; a smaller image is never enlarged, so a
photo weighs its own pixels up to that size and a 1×1 image one pixel), converted to Lab, and its
opaque pixels are counted in their nearest bin. The counts give p; :mod:`zhangcolor.rebalance`
turns p into p̃ and the weights w.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zhangcolor import __version__
from zhangcolor.bins import MAX_WEIGHT, ab_bins, grid_index
from zhangcolor.color_table import COLORFUL, color_table, opaque_entries
from zhangcolor.config import config_dict
from zhangcolor.constants import GRID, IMAGE_SUFFIXES
from zhangcolor.files import as_text, atomic_write_all
from zhangcolor.images import ImageError, find_images, load_image
from zhangcolor.options import PriorConfig
from zhangcolor.rebalance import class_weights, prior_from_counts, smooth_prior
from zhangcolor.split import split_files


class PriorError(Exception):
    """The folder gave nothing to estimate a prior from; the message says what to do."""


@dataclass
class PriorResult:
    """Counts, distributions and weights over the Q bins, and what happened to each file."""

    centers: np.ndarray  # (Q, 2) bin centres
    counts: np.ndarray  # (Q,) int64 opaque pixels per nearest bin
    prior: np.ndarray  # (Q,) p, sums to 1
    prior_smoothed: np.ndarray  # (Q,) p̃, sums to 1
    weights: np.ndarray  # (Q,) w, with Σ p̃ w = 1
    images_found: int
    images_used: int
    pixels: int
    seconds: float
    gray: list[str] = field(default_factory=list)  # files skipped as grayscale
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def count_image(path: Path, size: int) -> tuple[np.ndarray, int] | None:
    """Count the opaque pixels of one image per nearest of the 313 bins, at short side ``size``
    (or its own, when smaller: enlarging would only repeat its pixels).

    Returns:
        ``(counts (Q,), pixels)``, or None when the image is grayscale (no opaque pixel with
        |a| or |b| above 5). Raises :class:`ImageError` when the file cannot be used.
    """
    image = load_image(path, short_side=size, enlarge=False)
    if image.gray_source:
        return None
    entries = opaque_entries(image)
    if entries.size == 0:
        raise ImageError("no opaque pixel (alpha is below 255 everywhere)")
    if not bool((entries >= COLORFUL).any()):
        return None
    counts = np.bincount(entries.ravel() % COLORFUL, minlength=COLORFUL)[: len(ab_bins())]
    return counts.astype(np.int64), int(entries.size)


def select_images(data_dir: Path, config: PriorConfig) -> list[Path]:
    """The image files to count: all of them (or, ``split: train``, those ``train`` trains on,
    leaving out its validation split), or a seeded draw of ``max_images``."""
    paths = find_images(data_dir) if config.split == "all" else split_files(data_dir)[0]
    if config.max_images is not None and len(paths) > config.max_images:
        paths = sorted(random.Random(config.seed).sample(paths, config.max_images))
    return paths


def estimate_prior(
    data_dir: str | Path,
    config: PriorConfig | None = None,
    on_image: Callable[[Path], None] | None = None,
    paths: list[Path] | None = None,
) -> PriorResult:
    """Estimate the ab prior and class weights of every image under ``data_dir``.

    Args:
        data_dir: folder searched recursively for images.
        config: options; defaults as in zhangcolor/configs/prior.yaml.
        on_image: called with each path once it is done (for progress bars).
        paths: the images, if :func:`select_images` already listed them.

    Raises:
        PriorError: the folder holds no image, or no image could be used.
    """
    config = config or PriorConfig()
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise PriorError(f"{data_dir} does not exist")
    paths = select_images(data_dir, config) if paths is None else paths
    if not paths:
        raise PriorError(
            f"no image files under {data_dir} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "point build-bins at a folder of color photos"
        )
    centers = ab_bins()
    start = time.perf_counter()
    total, pixels, gray, failed = _count_all(paths, config, data_dir, on_image)
    seconds = time.perf_counter() - start
    used = len(paths) - len(gray) - len(failed)
    if used == 0:
        raise PriorError(
            f"none of the {len(paths)} image(s) under {data_dir} could be used "
            f"({len(gray)} grayscale, {len(failed)} unusable); "
            "build-bins needs color photos" + _first_reasons(failed)
        )
    counts = torch.from_numpy(total).to(torch.float64)
    prior = prior_from_counts(counts)
    smoothed, weights = _rebalance(prior, centers.double(), config)
    return PriorResult(
        centers=centers.double().numpy(),
        counts=total,
        prior=prior.numpy(),
        prior_smoothed=smoothed.numpy(),
        weights=weights.numpy(),
        images_found=len(paths),
        images_used=used,
        pixels=pixels,
        seconds=seconds,
        gray=gray,
        failed=failed,
    )


def _rebalance(prior: torch.Tensor, centers: torch.Tensor, config: PriorConfig):
    """p̃ and w of ``prior`` (:mod:`zhangcolor.rebalance`); PriorError when the weights would
    be infinite, or larger than :data:`~zhangcolor.bins.MAX_WEIGHT`, what a model file stores
    (λ = 0 weighs a bin of almost no mass by the inverse of that mass: 7.7e227 for one colour)."""
    advice = "raise --lambda: every weight stays below Q(1 - λ)/λ + 1, 314 at the paper's 0.5"
    smoothed = smooth_prior(prior, centers, config.sigma)
    try:
        weights = class_weights(smoothed, config.lam)
    except ValueError as e:
        raise PriorError(f"cannot weigh the bins at λ = {config.lam:g}: {e}; {advice}") from None
    largest = float(weights.max())
    if largest > MAX_WEIGHT:
        raise PriorError(
            f"the class weights would reach {largest:.3g}, and a model stores at most "
            f"{MAX_WEIGHT:g}: at λ = {config.lam:g}, bins of almost no mass get enormous weights; "
            f"{advice}"
        )
    return smoothed, weights


def _count_all(
    paths: list[Path], config: PriorConfig, data_dir: Path, on_image
) -> tuple[np.ndarray, int, list[str], list[tuple[str, str]]]:
    """Count every image's opaque pixels per bin, on ``config.workers`` threads (decoding
    releases the GIL): the summed counts, the pixels, and the gray and unusable files."""
    total = np.zeros(len(ab_bins()), dtype=np.int64)
    pixels, gray, failed = 0, [], []

    def work(path: Path) -> tuple[Path, tuple[np.ndarray, int] | str | None]:
        try:
            return path, count_image(path, config.size)
        except ImageError as e:
            return path, str(e)

    color_table()  # build or load it once, before the threads need it
    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        for path, outcome in pool.map(work, paths):
            name = _relative(path, data_dir)
            if outcome is None:
                gray.append(name)
            elif isinstance(outcome, str):
                failed.append((name, outcome))
            else:
                total += outcome[0]
                pixels += outcome[1]
            if on_image is not None:
                on_image(path)
    return total, pixels, gray, failed


def _relative(path: Path, root: Path) -> str:
    """A file's path under ``root`` as :func:`as_text`."""
    try:
        return as_text(str(path.relative_to(root)))
    except ValueError:
        return as_text(str(path))


def _first_reasons(failed: list[tuple[str, str]], n: int = 3) -> str:
    if not failed:
        return ""
    return "; e.g. " + "; ".join(f"{name}: {reason}" for name, reason in failed[:n])


def save_prior(result: PriorResult, out_dir: str | Path, config: PriorConfig, source: str) -> None:
    """Write ``bins.npz``, ``bins.json`` and ``prior.png`` into ``out_dir``: all three, or (on a
    full disk or a read-only folder, an OSError) none, leaving any earlier set as it was."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                centers=result.centers,
                counts=result.counts,
                prior=result.prior,
                prior_smoothed=result.prior_smoothed,
                weights=result.weights,
            )

    meta = {
        "parameters": config_dict(config),
        "images_found": result.images_found,
        "images_used": result.images_used,
        "images_gray": len(result.gray),
        "images_failed": len(result.failed),
        "pixels": result.pixels,
        "empty_bins": int((result.counts == 0).sum()),
        "seconds": round(result.seconds, 2),
        "skipped": [{"file": f, "reason": "grayscale"} for f in result.gray]
        + [{"file": f, "reason": r} for f, r in result.failed],
        "source": as_text(source),
        "zhangcolor_version": __version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    writes = {
        out_dir / "bins.npz": write_npz,
        out_dir / "bins.json": lambda tmp: tmp.write_text(text, encoding="utf-8"),
        out_dir / "prior.png": lambda tmp: plot_prior(result, tmp),
    }
    atomic_write_all(writes, durable=True)


def plot_prior(result: PriorResult, path: Path) -> None:
    """Draw the bins' colors, log10 p̃ and w over the ab plane (cf. the paper's Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhangcolor.color import lab_to_rgb

    centers = torch.from_numpy(result.centers)
    rows, cols, n = grid_index(centers)
    half = (n // 2) * GRID

    def on_grid(values: np.ndarray) -> np.ndarray:
        grid = np.full((n, n), np.nan)
        grid[rows.numpy(), cols.numpy()] = values
        return grid.T  # rows: b, columns: a

    lab = torch.cat([torch.full((len(centers), 1), 50.0, dtype=torch.float64), centers], 1)
    swatch = lab_to_rgb(lab.T[:, :, None]).squeeze(-1).T.numpy()  # (Q, 3)
    colors = np.ones((n, n, 3))
    colors[cols.numpy(), rows.numpy()] = swatch
    with np.errstate(divide="ignore"):
        log_prior = np.log10(result.prior_smoothed)
    extent = (-half - 5, half + 5, -half - 5, half + 5)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    panels = [
        (colors, "313 bins in gamut (L = 50)", None),
        (on_grid(log_prior), "log10 p̃ (smoothed empirical prior)", "viridis"),
        (on_grid(result.weights), "rebalancing weight w", "magma"),
    ]
    for ax, (image, title, cmap) in zip(axes, panels, strict=True):
        shown = ax.imshow(image, origin="lower", extent=extent, cmap=cmap, interpolation="nearest")
        ax.set(title=title, xlabel="a", ylabel="b")
        if cmap is not None:
            fig.colorbar(shown, ax=ax, shrink=0.85)
    fig.suptitle(f"{result.images_used} images, {result.pixels:,} pixels", fontsize=10)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
