"""``zhangcolor evaluate --hints 0,1,2,5,10,20,50``: guided models scored against the number of
colour points a user gives, as the SIGGRAPH 2017 paper sweeps PSNR against points (its Fig. 4).

For each photo (at the working size, as ``evaluate`` scores it), a fixed sequence of random
true-colour points is drawn once, from a generator seeded by the photo's name: the point with
n points are the sequence's first n, identical for every model and every run. A point is a pixel
drawn uniformly among the opaque ones, and its hint is the true mean ab of the 3 × 3 patch
around it (what a user's point covers by default). Beside the models, two baselines get the same
points in the same run: **Gray** (ab = 0), and the **nearest-point fill**, where every pixel
takes the ab of its nearest point (no network). A model that takes no points is scored without
them at every count: its line is flat.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from zhangcolor.bins import load_bins
from zhangcolor.colorize import Colorizer
from zhangcolor.constants import AB_NORM, WORKING_SIZE
from zhangcolor.evaluate import GRAY, Accumulator, model_label, truth_at
from zhangcolor.hints import CHANNELS, DEFAULT_PATCH
from zhangcolor.rebalance import inverse_prior_weights

#: The counts of points swept by default.
COUNTS = (0, 1, 2, 5, 10, 20, 50)
FILL = "Nearest-point fill"
#: The numbers of a row that hint_sweep.csv holds.
SWEEP_METRICS = ("psnr", "auc", "auc_rebalanced", "ssim", "colorfulness_ratio")


def draw_points(true_ab: Tensor, valid: Tensor, count: int, key: str, seed: int = 0) -> Tensor:
    """``count`` random true-colour points of one photo: ``(count, 4)`` float64 rows ``(y, x, a,
    b)``, each at a pixel drawn uniformly among the ``valid`` ones ``(H, W)`` (with replacement)
    by a generator seeded by ``seed`` and ``key`` (the photo's name), its ab the true mean over
    the :data:`~zhangcolor.hints.DEFAULT_PATCH`-pixel square around it. Fewer rows when the
    photo has no valid pixel."""
    w = valid.shape[1]
    candidates = valid.flatten().nonzero()[:, 0]
    if len(candidates) == 0:
        return torch.zeros(0, 4, dtype=torch.float64)
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    chosen = candidates[torch.randint(len(candidates), (count,), generator=generator)]
    ys, xs = chosen // w, chosen % w
    half = DEFAULT_PATCH // 2
    rows = []
    for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
        patch = (slice(max(0, y - half), y + half + 1), slice(max(0, x - half), x + half + 1))
        inside = valid[patch]
        mean = true_ab[:, patch[0], patch[1]][:, inside].double().mean(1)  # (2,)
        rows.append([y, x, float(mean[0]), float(mean[1])])
    return torch.tensor(rows, dtype=torch.float64)


def hint_channels(points: Tensor, size: int) -> Tensor:
    """``(1, 3, size, size)`` hint channels of points ``(n, 4)`` (rows ``y, x, a, b``) on a
    ``size × size`` photo: each a :data:`~zhangcolor.hints.DEFAULT_PATCH`-pixel square, as
    :func:`zhangcolor.hints.rasterize` paints a user's point; later points win."""
    out = torch.zeros(1, CHANNELS, size, size)
    half = DEFAULT_PATCH // 2
    for y, x, a, b in points.tolist():
        rows = slice(max(0, int(y) - half), int(y) + half + 1)
        cols = slice(max(0, int(x) - half), int(x) + half + 1)
        out[0, 0, rows, cols] = a / AB_NORM
        out[0, 1, rows, cols] = b / AB_NORM
        out[0, 2, rows, cols] = 1.0
    return out


def nearest_point_fill(points: Tensor, height: int, width: int) -> Tensor:
    """ab ``(2, H, W)`` where every pixel takes the ab of its nearest point (Euclidean distance
    between pixel centres; the earlier point on a tie); zeros without points."""
    if len(points) == 0:
        return torch.zeros(2, height, width)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    grid = torch.stack([ys.flatten(), xs.flatten()], 1).double()  # (HW, 2)
    nearest = torch.cdist(grid, points[:, :2]).argmin(1)  # (HW,)
    return points[nearest, 2:].T.reshape(2, height, width).float()


def sweep(
    models: list[str],
    paths: list[Path],
    *,
    counts: tuple[int, ...] = COUNTS,
    temperature: float | None = None,
    seed: int = 0,
    on_image=None,
    **load,
) -> dict:
    """Score ``models`` (and Gray and the fill) on ``paths`` at each count of points.

    ``load`` goes to :meth:`Colorizer.load` (``size``, ``device``, ``precision``);
    ``temperature`` None decodes each model at its own T. Returns the report: a row per
    (model or baseline, count), with PSNR, AuC, rebalanced AuC, SSIM and colourfulness.
    """
    if not counts or min(counts) < 0:
        raise ValueError(f"counts of points must be ≥ 0, got {counts}")
    size = load.setdefault("size", WORKING_SIZE)
    colorizers = {m: Colorizer.load(m, **load) for m in models}
    prior = load_bins()
    centers, prior_smoothed = prior["centers"].float(), prior["prior_smoothed"].float()
    names = [GRAY, FILL, *models]
    rows = {(name, n): Accumulator() for name in names for n in counts}
    used, skipped = [], []
    for path in paths:
        truth = truth_at(path, size)
        if isinstance(truth, str):
            skipped.append({"file": str(path), "reason": truth})
            continue
        lightness, true_ab = truth
        weight = inverse_prior_weights(true_ab[None], centers, prior_smoothed)[0]
        points = draw_points(
            true_ab, torch.ones(size, size, dtype=torch.bool), max(counts), path.name, seed
        )
        for n, predictions in _predictions(colorizers, lightness, points, counts, temperature):
            for name, ab in predictions.items():
                rows[(name, n)].add(ab, lightness, true_ab, weight)
        used.append(str(path))
        if on_image is not None:
            on_image(path)
    if not used:
        raise ValueError(f"none of the {len(paths)} images could be used")
    takes = {m: c.takes_hints for m, c in colorizers.items()}
    return {
        "size": size,
        "images": len(used),
        "skipped": skipped,
        "counts": list(counts),
        "seed": seed,
        "rows": [
            {
                "model": name,
                "label": name if name in (GRAY, FILL) else _label(name, takes[name]),
                "points": n,
                **{k: v for k, v in rows[(name, n)].summary().items() if k != "curve"},
            }
            for name in names
            for n in counts
        ],
    }


def _predictions(
    colorizers: dict[str, Colorizer],
    lightness: Tensor,
    points: Tensor,
    counts: tuple[int, ...],
    temperature: float | None,
):
    """``(n, {row name: ab (2, s, s)})`` for each count n: Gray, the fill, and each model given
    the first n points (a model that takes none is run once, without them)."""
    size = lightness.shape[-1]
    automatic: dict[str, Tensor] = {}
    for n in counts:
        chosen = points[:n]
        predictions = {
            GRAY: torch.zeros(2, size, size),
            FILL: nearest_point_fill(chosen, size, size),
        }
        for m, c in colorizers.items():
            if n and c.takes_hints:
                predictions[m] = _predict(c, lightness, hint_channels(chosen, size), temperature)
                continue
            if m not in automatic:
                automatic[m] = _predict(c, lightness, None, temperature)
            predictions[m] = automatic[m]
        yield n, predictions


def _predict(
    colorizer: Colorizer, lightness: Tensor, hints: Tensor | None, temperature: float | None
) -> Tensor:
    """ab ``(2, s, s)`` of a photo's L ``(1, s, s)`` with hint channels (or none)."""
    photo = colorizer.prepare(lightness[None], hints)
    return colorizer.upsampled_ab(photo, colorizer.predict([photo])[0], temperature)[0]


def _label(model: str, takes_hints: bool) -> str:
    return model_label(model) + ("" if takes_hints else " (takes no points)")


def write_sweep(report: dict, out: Path) -> None:
    """hint_sweep.json, hint_sweep.md (a table per metric: rows by model, columns by count),
    hint_sweep.csv and hint_sweep.png (PSNR and rebalanced AuC against points) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "hint_sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out / "hint_sweep.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "points", *SWEEP_METRICS])
        for r in report["rows"]:
            writer.writerow([r["label"], r["points"], *(r[k] for k in SWEEP_METRICS)])
    (out / "hint_sweep.md").write_text(sweep_tables(report))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for label, rows in _by_label(report).items():
        xs = [max(r["points"], 0.5) for r in rows]  # 0 points drawn at 0.5 on the log axis
        for ax, key in zip(axes, ("psnr", "auc_rebalanced"), strict=True):
            ax.plot(xs, [r[key] for r in rows], "o-", label=label)
    for ax, name in zip(axes, ("PSNR (dB)", "rebalanced AuC"), strict=True):
        ax.set(xlabel="colour points (0 drawn at 0.5)", ylabel=name, xscale="log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['images']} photos at {report['size']}²: random true-colour points")
    fig.savefig(out / "hint_sweep.png", dpi=100)
    plt.close(fig)


def _by_label(report: dict) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for r in report["rows"]:
        rows.setdefault(r["label"], []).append(r)
    return rows


def sweep_tables(report: dict) -> str:
    """Markdown: PSNR and rebalanced AuC by model (rows) and number of points (columns)."""
    counts = report["counts"]
    lines = [f"# Colour-point sweep: {report['images']} photos at {report['size']}²", ""]
    for key, name in (("psnr", "PSNR (dB)"), ("auc_rebalanced", "rebalanced AuC")):
        lines += [f"## {name}", "", "| model | " + " | ".join(f"{n} pts" for n in counts) + " |"]
        lines.append("|---|" + "---|" * len(counts))
        for label, rows in _by_label(report).items():
            lines.append(f"| {label} | " + " | ".join(f"{r[key]:.2f}" for r in rows) + " |")
        lines.append("")
    return "\n".join(lines)
