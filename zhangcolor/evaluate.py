"""``zhangcolor evaluate``: the paper's metrics (section 3.1) plus the usual ones, for several
models and temperatures, always against the Gray baseline (ab = 0).

Each photo is resized to the working size (size × size, as the network sees it); the prediction
is the network's ab upsampled to that size, joined with the photo's own L.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.bins import load_bins, nearest_bins
from zhangcolor.color import lab_to_rgb, rgb_to_lab
from zhangcolor.colorize import Colorizer
from zhangcolor.images import ImageError, find_images, load_image
from zhangcolor.metrics import AUC_MAX_THRESHOLD
from zhangcolor.prior import is_gray

TEMPERATURES = (1.0, 0.77, 0.58, 0.38, 0.29, 0.14, 0.01)


def model_label(model: str) -> str:
    """A short, telling name: "default", a file's stem, or the run folder of a train checkpoint."""
    path = Path(model)
    if path.parent.name == "checkpoints":
        return f"{path.parents[1].name}/{path.stem}"
    return path.stem if path.suffix else model


def colourfulness(rgb: Tensor) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of sRGB ``(3, H, W)`` in [0, 1] (0-255 scale)."""
    r, g, b = (rgb.double() * 255).unbind(0)
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(
        torch.hypot(rg.std(unbiased=False), yb.std(unbiased=False))
        + 0.3 * torch.hypot(rg.mean(), yb.mean())
    )


@dataclass
class Accumulator:
    """Running sums for one (model, temperature) row."""

    within: np.ndarray = field(default_factory=lambda: np.zeros(AUC_MAX_THRESHOLD + 1))
    within_rebalanced: np.ndarray = field(default_factory=lambda: np.zeros(AUC_MAX_THRESHOLD + 1))
    pixels: float = 0.0
    weight: float = 0.0
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    colour_pred: list = field(default_factory=list)
    colour_true: list = field(default_factory=list)

    def add(
        self, pred_ab: Tensor, lightness: Tensor, true_ab: Tensor, pixel_weight: Tensor
    ) -> None:
        error = (pred_ab - true_ab).norm(dim=0).flatten()  # (H·W,)
        thresholds = torch.arange(AUC_MAX_THRESHOLD + 1, dtype=error.dtype)
        hits = error[None, :] <= thresholds[:, None]  # (151, H·W)
        self.within += hits.sum(1).double().numpy()
        self.within_rebalanced += (hits * pixel_weight.flatten()[None]).sum(1).double().numpy()
        self.pixels += error.numel()
        self.weight += float(pixel_weight.sum())
        pred = lab_to_rgb(torch.cat([lightness, pred_ab])[None])[0]
        true = lab_to_rgb(torch.cat([lightness, true_ab])[None])[0]
        p, t = pred.permute(1, 2, 0).double().numpy(), true.permute(1, 2, 0).double().numpy()
        with np.errstate(divide="ignore"):  # a perfect prediction has an infinite PSNR
            self.psnr.append(peak_signal_noise_ratio(t, p, data_range=1.0))
        self.ssim.append(structural_similarity(t, p, channel_axis=2, data_range=1.0))
        self.colour_pred.append(colourfulness(pred))
        self.colour_true.append(colourfulness(true))

    def summary(self) -> dict:
        curve = self.within / max(self.pixels, 1)
        rebalanced = self.within_rebalanced / max(self.weight, 1e-12)
        pred, true = float(np.mean(self.colour_pred)), float(np.mean(self.colour_true))
        return {
            "auc": float(curve.mean() * 100),
            "auc_rebalanced": float(rebalanced.mean() * 100),
            "psnr": float(np.mean(self.psnr)),
            "ssim": float(np.mean(self.ssim)),
            "colourfulness": pred,
            "colourfulness_truth": true,
            "colourfulness_ratio": pred / true if true else float("nan"),
            "curve": (curve * 100).round(3).tolist(),
        }


def evaluate(
    data: str | Path,
    models: list[str],
    *,
    temperatures: tuple[float, ...] = TEMPERATURES,
    size: int = 256,
    split: str = "all",
    max_images: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    on_image=None,
) -> dict:
    """Evaluate ``models`` (``"default"`` or checkpoint paths) on the colour photos under ``data``.

    Returns the report: rows per (model, temperature) and the Gray baseline, and the files used.
    """
    from zhangcolor.data import split_files

    root = Path(data)
    paths = split_files(root)[1] if split == "val" else find_images(root)
    if max_images is not None:
        paths = paths[:max_images]
    if not paths:
        raise ValueError(f"no images to evaluate under {root} (split {split})")
    prior = load_bins()
    centers = prior["centers"].float()
    inverse_prior = 1.0 / prior["prior_smoothed"].float()
    colorizers = {
        m: Colorizer.load(m, device=device, precision=precision, size=size) for m in models
    }
    # Temperatures apply to classification heads only; a regression model gets one row.
    sweeps = {
        m: temperatures if c.head == "classification" else (None,) for m, c in colorizers.items()
    }
    rows: dict[tuple[str, float | None], Accumulator] = {("Gray (ab = 0)", None): Accumulator()}
    rows.update({(m, t): Accumulator() for m, ts in sweeps.items() for t in ts})
    used, skipped = [], []
    for path in paths:
        try:
            image = load_image(path)
        except ImageError as e:
            skipped.append({"file": str(path), "reason": str(e)})
            continue
        if is_gray(image):
            skipped.append({"file": str(path), "reason": "grayscale"})
            continue
        rgb = torch.from_numpy(image.rgb).permute(2, 0, 1)[None]
        rgb = F.interpolate(
            rgb, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        lab = rgb_to_lab(rgb.clamp(0, 1))[0]
        lightness, true_ab = lab[:1], lab[1:]
        _, index = nearest_bins(true_ab[None], centers, 1)
        pixel_weight = inverse_prior[index[0, 0]]
        rows[("Gray (ab = 0)", None)].add(
            torch.zeros_like(true_ab), lightness, true_ab, pixel_weight
        )
        for m, c in colorizers.items():
            output = c.network_output(lightness[None]).cpu()
            for t in sweeps[m]:
                ab = c.decode(output, t if t is not None else 1.0)
                ab = F.interpolate(ab, size=(size, size), mode="bilinear", align_corners=False)[0]
                rows[(m, t)].add(ab, lightness, true_ab, pixel_weight)
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


def write_report(report: dict, out: Path) -> None:
    """report.json, report.md and plots (AuC curves, the temperature sweep) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# zhangcolor evaluate: {report['images']} images from {report['data']} "
        f"(split {report['split']}, {report['size']}²)",
        "",
        "| model | T | AuC | rebalanced AuC | PSNR | SSIM | colourfulness (truth) | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        t = "–" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(
            f"| {r['label']} | {t} | {r['auc']:.1f} | {r['auc_rebalanced']:.1f} | "
            f"{r['psnr']:.2f} | "
            f"{r['ssim']:.3f} | {r['colourfulness']:.1f} ({r['colourfulness_truth']:.1f}) | "
            f"{r['colourfulness_ratio']:.2f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for r in report["rows"]:
        if r["temperature"] in (None, 0.38):
            label = r["label"] if r["temperature"] is None else f"{r['label']} (T = 0.38)"
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
        for ax, key in zip(axes, ("auc", "auc_rebalanced", "colourfulness_ratio"), strict=True):
            ax.plot(ts, [r[key] for r in rs], "o-", label=rs[0]["label"])
            ax.set(xlabel="temperature T", ylabel=key, xscale="log")
    for ax in axes:
        ax.legend(fontsize=7) if sweeps else None
    fig.suptitle("temperature sweep (the paper's mean–mode trade-off)")
    fig.savefig(out / "temperature_sweep.png", dpi=100)
    plt.close(fig)
