"""``zhangcolor evaluate``: the paper's metrics (section 3.1) plus the usual ones, for several
models and temperatures, always against the Gray baseline (ab = 0).

Each photo is resized to the working size (size × size, as the network sees it); the prediction
is the network's ab upsampled to that size, joined with the photo's own L.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.bins import load_bins
from zhangcolor.color import lab_to_rgb, rgb_to_lab
from zhangcolor.color_table import is_gray
from zhangcolor.colorize import Colorizer
from zhangcolor.constants import TEMPERATURE, TEMPERATURES, VAL_FRACTION, WORKING_SIZE
from zhangcolor.images import ImageError, find_images, load_image
from zhangcolor.metrics import (
    AUC_MAX_THRESHOLD,
    auc_from_sums,
    colorfulness,
    within_thresholds,
)
from zhangcolor.options import EVALUATION_SPLITS
from zhangcolor.rebalance import inverse_prior_weights
from zhangcolor.split import split_files

GRAY = "Gray (ab = 0)"
#: The numbers of a row that metrics.json and temperature_sweep.csv hold.
ROW_METRICS = ("auc", "auc_rebalanced", "psnr", "ssim", "colorfulness", "colorfulness_ratio")


def model_label(model: str) -> str:
    """A short, telling name: "default", a file's stem, or the run folder of a train checkpoint."""
    path = Path(model)
    if path.parent.name == "checkpoints":
        return f"{path.parents[1].name}/{path.stem}"
    return path.stem if path.suffix else model


@dataclass
class Accumulator:
    """Running sums for one (model, temperature) row."""

    within: np.ndarray = field(default_factory=lambda: np.zeros(AUC_MAX_THRESHOLD + 1))
    within_rebalanced: np.ndarray = field(default_factory=lambda: np.zeros(AUC_MAX_THRESHOLD + 1))
    pixels: float = 0.0
    weight: float = 0.0
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    color_pred: list = field(default_factory=list)
    color_true: list = field(default_factory=list)
    quick: bool = False  # leave out PSNR and SSIM (the slow ones)

    def add(
        self, pred_ab: Tensor, lightness: Tensor, true_ab: Tensor, pixel_weight: Tensor
    ) -> None:
        """One image: ab ``(2, H, W)``, L ``(1, H, W)``, and its pixels' weights ``(H, W)``."""
        self.within += within_thresholds(pred_ab[None], true_ab[None]).numpy()
        self.within_rebalanced += within_thresholds(
            pred_ab[None], true_ab[None], pixel_weight[None]
        ).numpy()
        self.pixels += pixel_weight.numel()
        self.weight += float(pixel_weight.sum())
        pred = lab_to_rgb(torch.cat([lightness, pred_ab])[None])[0]
        true = lab_to_rgb(torch.cat([lightness, true_ab])[None])[0]
        if not self.quick:
            p, t = pred.permute(1, 2, 0).double().numpy(), true.permute(1, 2, 0).double().numpy()
            with np.errstate(divide="ignore"):  # a perfect prediction has an infinite PSNR
                self.psnr.append(peak_signal_noise_ratio(t, p, data_range=1.0))
            self.ssim.append(structural_similarity(t, p, channel_axis=2, data_range=1.0))
        self.color_pred.append(colorfulness(pred))
        self.color_true.append(colorfulness(true))

    def summary(self) -> dict:
        pred, true = float(np.mean(self.color_pred)), float(np.mean(self.color_true))
        return {
            "auc": auc_from_sums(torch.from_numpy(self.within), self.pixels),
            "auc_rebalanced": auc_from_sums(torch.from_numpy(self.within_rebalanced), self.weight),
            "psnr": float(np.mean(self.psnr)) if self.psnr else float("nan"),
            "ssim": float(np.mean(self.ssim)) if self.ssim else float("nan"),
            "colorfulness": pred,
            "colorfulness_truth": true,
            "colorfulness_ratio": pred / true if true else float("nan"),
            "curve": (self.within / max(self.pixels, 1) * 100).round(3).tolist(),
        }


def evaluation_images(
    data: str | Path,
    split: str = "all",
    max_images: int | None = None,
    val_fraction: float = VAL_FRACTION,
) -> list[Path]:
    """The photos to evaluate: every image under ``data``, or (``split="val"``) only the
    validation split that ``train`` holds out, the first ``max_images`` of them."""
    if split not in EVALUATION_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(EVALUATION_SPLITS)}")
    root = Path(data)
    paths = split_files(root, val_fraction)[1] if split == "val" else find_images(root)
    return paths[:max_images] if max_images is not None else paths


def evaluate(
    data: str | Path,
    models: list[str],
    *,
    temperatures: tuple[float, ...] = TEMPERATURES,
    split: str = "all",
    paths: list[Path] | None = None,
    on_image=None,
    quick: bool = False,
    **load,
) -> dict:
    """Evaluate ``models`` (``"default"`` or checkpoint paths) on the color photos under ``data``
    (all, or the validation split), or on ``paths`` chosen with :func:`evaluation_images`.

    ``load`` goes to :meth:`Colorizer.load` (``size``, ``device``, ``precision``); photos are
    scored at the working size. ``quick`` leaves out PSNR and SSIM. Returns the report: rows per
    (model, temperature) and the Gray baseline, and the files used.
    """
    root = Path(data)
    size = load.setdefault("size", WORKING_SIZE)
    if paths is None:
        paths = evaluation_images(root, split)
    if not paths:
        raise ValueError(f"no images to evaluate under {root} (split {split})")
    prior = load_bins()  # the shipped prior rebalances every model's AuC alike
    centers, prior_smoothed = prior["centers"].float(), prior["prior_smoothed"].float()
    colorizers = {m: Colorizer.load(m, **load) for m in models}
    # Temperatures apply to classification heads only; a regression model gets one row.
    sweeps = {m: temperatures if c.uses_temperature else (None,) for m, c in colorizers.items()}
    rows: dict[tuple[str, float | None], Accumulator] = {(GRAY, None): Accumulator(quick=quick)}
    rows.update({(m, t): Accumulator(quick=quick) for m, ts in sweeps.items() for t in ts})
    used, skipped = [], []
    for path in paths:
        truth = truth_at(path, size)
        if isinstance(truth, str):
            skipped.append({"file": str(path), "reason": truth})
            continue
        _score(truth, colorizers, sweeps, rows, centers, prior_smoothed)
        used.append(str(path))
        if on_image is not None:
            on_image(path)
    if not used:
        raise ValueError(f"none of the {len(paths)} images under {root} could be used")
    return {
        "data": str(root),
        "split": split,
        "size": size,
        "images": len(used),
        "skipped": skipped,
        "rows": [
            {"model": m, "label": model_label(m), "temperature": t, **acc.summary()}
            for (m, t), acc in rows.items()
        ],
    }


def _score(truth, colorizers, sweeps, rows, centers: Tensor, prior_smoothed: Tensor) -> None:
    """Add one photo (``truth``: its L and ab at the working size) to every row: Gray, and each
    model at each of its temperatures. A pixel's rebalancing weight is 1 / p̃ of its bin."""
    lightness, true_ab = truth
    pixel_weight = inverse_prior_weights(true_ab[None], centers, prior_smoothed)[0]
    rows[(GRAY, None)].add(torch.zeros_like(true_ab), lightness, true_ab, pixel_weight)
    for m, c in colorizers.items():
        photo = c.prepare(lightness[None])
        output = c.predict([photo])[0]
        for t in sweeps[m]:
            rows[(m, t)].add(c.upsampled_ab(photo, output, t)[0], lightness, true_ab, pixel_weight)


def truth_at(path: Path, size: int) -> tuple[Tensor, Tensor] | str:
    """A photo's L ``(1, size, size)`` and ab ``(2, size, size)``, or why it cannot be used."""
    try:
        image = load_image(path)
    except ImageError as e:
        return str(e)
    if is_gray(image):
        return "grayscale"
    rgb = torch.from_numpy(image.rgb).permute(2, 0, 1)[None]
    rgb = F.interpolate(
        rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    lab = rgb_to_lab(rgb.clamp(0, 1))[0]
    return lab[:1], lab[1:]


def row_key(row: dict) -> str:
    """A row's name in metrics.json and the CSV files: "gray", a model's label, and for a
    classification model its temperature too, e.g. "default/best T=0.38"."""
    if row["model"] == GRAY:
        return "gray"
    t = row["temperature"]
    return row["label"] if t is None else f"{row['label']} T={t:g}"


def write_tables(report: dict, out: Path) -> None:
    """The numbers of ``report`` as tools such as DVC read them, into ``out``:

    - ``metrics.json``: the number of images and the truth's colourfulness, then for each row
      (named by :func:`row_key`) its AuC, rebalanced AuC, PSNR, SSIM and colourfulness;
    - ``auc_curves.csv``: ``threshold`` (ab L2, 0..150), then each row's % of pixels within it;
    - ``temperature_sweep.csv``: one line per (model, T) of the classification models.
    """
    rows = report["rows"]
    metrics = {"images": report["images"], "colorfulness_truth": rows[0]["colorfulness_truth"]}
    for r in rows:
        metrics[row_key(r)] = {k: r[k] for k in ROW_METRICS}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    with (out / "auc_curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["threshold", *(row_key(r) for r in rows)])
        for threshold in range(AUC_MAX_THRESHOLD + 1):
            writer.writerow([threshold, *(r["curve"][threshold] for r in rows)])

    with (out / "temperature_sweep.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "temperature", *ROW_METRICS])
        for r in rows:
            if r["temperature"] is not None:
                writer.writerow([r["label"], r["temperature"], *(r[k] for k in ROW_METRICS)])


def _auc_curve_rows(rows: list[dict]) -> list[dict]:
    """The rows the AuC-curve plot shows, in the report's order: Gray, each regression model,
    and each classification model at the paper's T when it was evaluated, else at the evaluated
    T closest to it."""
    nearest: dict[str, dict] = {}
    for r in rows:
        if r["temperature"] is not None:
            best = nearest.setdefault(r["model"], r)
            if abs(r["temperature"] - TEMPERATURE) < abs(best["temperature"] - TEMPERATURE):
                nearest[r["model"]] = r
    return [r for r in rows if r["temperature"] is None or nearest[r["model"]] is r]


def write_report(report: dict, out: Path) -> None:
    """report.json, report.md, plots (AuC curves, the temperature sweep) and the tables of
    :func:`write_tables` (metrics.json, auc_curves.csv, temperature_sweep.csv) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_tables(report, out)
    lines = [
        f"# zhangcolor evaluate: {report['images']} images from {report['data']} "
        f"(split {report['split']}, {report['size']}²)",
        "",
        "| model | T | AuC | rebalanced AuC | PSNR | SSIM | colorfulness (truth) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        t = "–" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(
            f"| {r['label']} | {t} | {r['auc']:.1f} | {r['auc_rebalanced']:.1f} | "
            f"{r['psnr']:.2f} | "
            f"{r['ssim']:.3f} | {r['colorfulness']:.1f} ({r['colorfulness_truth']:.1f}) | "
            f"{r['colorfulness_ratio']:.2f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for r in _auc_curve_rows(report["rows"]):
        label = (
            r["label"] if r["temperature"] is None else f"{r['label']} (T = {r['temperature']:g})"
        )
        ax.plot(range(AUC_MAX_THRESHOLD + 1), r["curve"], label=label)
    ax.set(xlabel="ab L2 threshold", ylabel="% pixels within", title="AuC curves")
    ax.legend(fontsize=7)
    fig.savefig(out / "auc_curves.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), constrained_layout=True)
    sweeps: dict[str, list] = {}
    for r in report["rows"]:
        if r["temperature"] is not None:
            sweeps.setdefault(r["model"], []).append(r)
    for rs in sweeps.values():
        ts = [r["temperature"] for r in rs]
        for ax, key in zip(axes, ("auc", "auc_rebalanced", "colorfulness_ratio"), strict=True):
            ax.plot(ts, [r[key] for r in rs], "o-", label=rs[0]["label"])
            ax.set(xlabel="temperature T", ylabel=key, xscale="log")
    for ax in axes:
        ax.legend(fontsize=7) if sweeps else None
    fig.suptitle("temperature sweep (the paper's mean–mode trade-off)")
    fig.savefig(out / "temperature_sweep.png", dpi=100)
    plt.close(fig)
