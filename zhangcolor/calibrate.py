"""A temperature per model (paper, section 2.3: T trades the mean's accuracy for the mode's
vividness). The calibrated T is the one whose mean colorfulness on a validation split comes
closest to the truth's, among the temperatures that lose at most half a point of class-rebalanced
AuC against the paper's 0.38. ``calibrate`` writes it into a small JSON (:func:`write_calibration`);
``package-model --temperature-from`` (or ``--temperature``) stores it in the model, and colorize,
serve and the Python API then use it unless told otherwise."""

from __future__ import annotations

import json
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


#: Below this many photos the calibrated T is uncertain: colorfulness varies a lot per photo.
FEW_IMAGES = 50


def write_calibration(result: dict, path: str | Path, **about) -> None:
    """The calibration as a small JSON that ``package-model --temperature-from`` reads: T,
    how many photos chose it, the rows it was chosen from, and ``about`` (model, data, split)."""
    record = {"temperature": result["temperature"], "images": result["images"], **about}
    record |= {k: result[k] for k in ("chosen", "reference", "gray", "rows")}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_calibration(path: str | Path) -> float:
    """The temperature in a JSON that ``calibrate`` wrote; ValueError saying what is wrong."""
    try:
        temperature = json.loads(Path(path).read_text(encoding="utf-8"))["temperature"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(
            f"{path} is not a calibration that `zhangcolor calibrate` wrote (no temperature in it)"
        ) from None
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"{path}: the temperature is {temperature!r}, not a number")
    return float(temperature)
