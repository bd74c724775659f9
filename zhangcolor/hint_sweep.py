"""``zhangcolor evaluate --hints 0,1,2,5,10,20,50``: guided models scored against the number of
colour points a user gives, as the SIGGRAPH 2017 paper sweeps PSNR against points (its Fig. 4).

The points follow the authors' sweep (richzhang/colorization-pytorch's ``test_sweep.py``): each is
a 6 × 6 patch whose corner is drawn from a normal distribution centred on the photo with σ a
quarter of its size (users click near the middle), clipped to the photo, and whose hint is the
true mean ab over the patch, exactly as training's simulated users draw them
(:mod:`zhangcolor.simulated_users`). For each photo (at the working size, as ``evaluate`` scores
it), a fixed sequence of points is drawn once, from a generator seeded by the photo's name: the
run with n points uses the sequence's first n, identical for every model and every run. Beside
the models, two baselines get the same points in the same run: **Gray** (ab = 0), and the
**nearest-point fill**, where every pixel takes the ab of its nearest point's centre (no
network). A model that takes no points is scored without them at every count: its line is flat.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from zhangcolor.bins import load_bins
from zhangcolor.colorize import Colorizer
from zhangcolor.constants import HINT_COUNTS, WORKING_SIZE
from zhangcolor.evaluate import GRAY, Accumulator, model_label, truth_at
from zhangcolor.rebalance import inverse_prior_weights
from zhangcolor.simulated_users import corners, paint_points

#: The side of each point's patch (the authors' sweep: ``sample_Ps = [6]``).
PATCH = 6
FILL = "Nearest-point fill"
#: The numbers of a row that hint_sweep.csv holds.
SWEEP_METRICS = ("psnr", "auc", "auc_rebalanced", "ssim", "colorfulness_ratio")


def draw_points(count: int, key: str, seed: int = 0) -> Tensor:
    """``count`` points of one photo, as :func:`~zhangcolor.simulated_users.draw_points` gives
    them (``(count, 3)``: the side, then two standard normal draws that place the corner), from
    a generator seeded by ``seed`` and ``key`` (the photo's name). The draws are sequential, so
    the first n of any longer sequence are the n points."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8", "surrogateescape")).digest()
    generator = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    place = torch.from_numpy(generator.standard_normal((count, 2)))
    return torch.cat([torch.full((count, 1), float(PATCH), dtype=torch.float64), place], 1)


def point_hints(true_ab: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """A photo's hint channels ``(1, 3, H, W)`` for ``points`` ``(n, 3)``, each the true mean ab
    over its patch (:func:`~zhangcolor.simulated_users.paint_points`), and the points as rows
    ``(n, 4)`` float64 ``(y, x, a, b)``: each patch's centre and its hint, for the fill."""
    h, w = true_ab.shape[-2:]
    valid = torch.ones(1, h, w, dtype=torch.bool)
    hints = paint_points(true_ab[None], valid, points[None], "normal")  # (1, 3, H, W)
    places = corners(points, h, w, "normal").tolist()
    rows = []
    for (top, left), side in zip(places, points[:, 0].long().tolist(), strict=True):
        mean = true_ab[:, top : top + side, left : left + side].double().mean((1, 2))
        rows.append([top + side / 2 - 0.5, left + side / 2 - 0.5, float(mean[0]), float(mean[1])])
    return hints, torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


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
    counts: tuple[int, ...] = HINT_COUNTS,
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
        points = draw_points(max(counts), path.name, seed)
        for n, predictions in _predictions(colorizers, truth, points, counts, temperature):
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
    truth: tuple[Tensor, Tensor],
    points: Tensor,
    counts: tuple[int, ...],
    temperature: float | None,
):
    """``(n, {row name: ab (2, s, s)})`` for each count n: Gray, the fill, and each model given
    the first n points (a model that takes none is run once, without them)."""
    lightness, true_ab = truth
    size = lightness.shape[-1]
    automatic: dict[str, Tensor] = {}
    for n in counts:
        hints, centres = point_hints(true_ab, points[:n])
        predictions = {
            GRAY: torch.zeros(2, size, size),
            FILL: nearest_point_fill(centres, size, size),
        }
        for m, c in colorizers.items():
            if n and c.takes_hints:
                predictions[m] = _predict(c, lightness, hints, temperature)
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
