"""A temperature per model (paper, section 2.3: T trades the mean's accuracy for the mode's
vividness). The calibrated T is the one whose mean colorfulness on a validation split comes
closest to the truth's, among the temperatures that lose at most half a point of class-rebalanced
AuC against the paper's 0.38. ``package-model --temperature`` stores it in the model, and
colorize, serve and the Python API then use it unless told otherwise."""

from __future__ import annotations

from pathlib import Path

from zhangcolor.constants import TEMPERATURE
from zhangcolor.evaluate import GRAY, evaluate

#: The temperatures tried: 0.20, 0.22, ..., 1.00 (and the paper's 0.38 among them).
CANDIDATES = tuple(round(0.2 + 0.02 * i, 2) for i in range(41))
#: The most rebalanced AuC (points) the calibrated T may lose against T = 0.38.
MAX_AUC_LOSS = 0.5


def choose_temperature(rows: list[dict], max_loss: float = MAX_AUC_LOSS) -> dict:
    """From one model's report rows (one per T, with ``auc_rebalanced`` and
    ``colorfulness_ratio``), the row of the calibrated T."""
    reference = next(r for r in rows if r["temperature"] == TEMPERATURE)
    eligible = [r for r in rows if r["auc_rebalanced"] >= reference["auc_rebalanced"] - max_loss]
    return min(eligible, key=lambda r: (abs(r["colorfulness_ratio"] - 1.0), r["temperature"]))


def calibrate(data: str | Path, model: str, *, split: str = "val", **options) -> dict:
    """Sweep :data:`CANDIDATES` on the photos of ``data`` (``options`` as for
    :func:`zhangcolor.evaluate.evaluate`: ``paths``, ``on_image``, ``size``, ``device``...).

    Returns ``{"temperature": T, "chosen": row, "reference": row at 0.38, "gray": row,
    "rows": [row per T], "images": n}``.
    """
    report = evaluate(data, [model], temperatures=CANDIDATES, split=split, quick=True, **options)
    rows = [r for r in report["rows"] if r["model"] != GRAY]
    if rows[0]["temperature"] is None:
        raise ValueError(f"{model} is a regression model: the temperature does not apply to it")
    chosen = choose_temperature(rows)
    return {
        "temperature": chosen["temperature"],
        "chosen": chosen,
        "reference": next(r for r in rows if r["temperature"] == TEMPERATURE),
        "gray": next(r for r in report["rows"] if r["model"] == GRAY),
        "rows": rows,
        "images": report["images"],
    }
