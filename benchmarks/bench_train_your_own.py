"""How long "train on your own photos" takes and how good the model gets, by folder size.

Runs the five commands of docs/train-your-own.md, as the page gives them, on random subsets of
a folder of colour photos (drawn from the photos `train` would train on), then scores each
model on photos of the folder that no subset holds (the folder's own validation split), beside
Gray and the shipped model, at each model's own calibrated T:

    python benchmarks/bench_train_your_own.py PHOTOS --sizes 100,300,1000 --work /tmp/tyo

Writes WORK/results.json and prints a Markdown table (the one in docs/train-your-own.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "train-your-own.md"


def page_commands(page: Path = PAGE) -> list[list[str]]:
    """The five commands of the page's first shell block, each as its arguments."""
    block = re.search(r"```sh\n(.*?)```", page.read_text(), re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("zhangcolor ")]


def link_subset(photos: list[Path], root: Path, folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in photos:
        (folder / path.relative_to(root).as_posix().replace("/", "__")).symlink_to(path)


def run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "zhangcolor", *args[1:]], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def one_size(n: int, train: list[Path], root: Path, work: Path, scored: Path) -> dict:
    folder = work / f"{n}"
    link_subset(random.Random(n).sample(train, n), root, folder / "my-photos")
    old = next(scored.iterdir())
    (folder / "old-photo.jpg").symlink_to(old.resolve())
    seconds = {}
    for args in page_commands():
        seconds[args[1]] = run(args, folder)
    run_dir = folder / "runs" / "mine"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    calibration = json.loads((run_dir / "calibration.json").read_text())
    t = calibration["temperature"]
    report = folder / "report"
    run(
        ["zhangcolor", "evaluate", str(scored), "--model", "mine.safetensors",
         "--temperatures", f"{t:g}", "--out", str(report)],
        folder,
    )  # fmt: skip
    rows = json.loads((report / "report.json").read_text())["rows"]
    return {
        "photos": n,
        "steps": max(m["step"] for m in lines),
        "seconds": seconds,
        "calibrated_t": t,
        "calibration_photos": calibration["images"],
        "scores": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("--sizes", default="100,300,1000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/train-your-own"))
    parser.add_argument("--scored", type=int, default=100, help="held-out photos scored")
    options = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from zhangcolor.split import split_files

    root = options.photos.resolve()
    train, val = split_files(root)
    options.work.mkdir(parents=True, exist_ok=False)
    scored = options.work / "held-out"
    link_subset(random.Random(0).sample(val, min(options.scored, len(val))), root, scored)
    run(
        ["zhangcolor", "evaluate", str(scored), "--model", "default", "--temperatures", "0.36",
         "--out", str(options.work / "shipped")],
        options.work,
    )  # fmt: skip
    shipped = json.loads((options.work / "shipped" / "report.json").read_text())["rows"]
    results = {"shipped": shipped, "sizes": []}
    for n in (int(s) for s in options.sizes.split(",")):
        results["sizes"].append(one_size(n, train, root, options.work, scored))
        (options.work / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps(results["sizes"][-1]["seconds"]), flush=True)
    print(table(results))


def table(results: dict) -> str:
    from zhangcolor.evaluate import GRAY

    def score(rows: list[dict], model: str) -> dict:
        return next(r for r in rows if r["model"] == model)

    gray = score(results["shipped"], GRAY)
    lines = [
        "| photos | steps | build-bins | train | calibrate | T | rebalanced AuC "
        "| colourful / truth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| Gray | | | | | | {gray['auc_rebalanced']:.1f} | {gray['colorfulness_ratio']:.2f} |",
    ]
    for size in results["sizes"]:
        s = size["seconds"]
        mine = next(r for r in size["scores"] if r["model"] != GRAY)
        lines.append(
            f"| {size['photos']:,} | {size['steps']:,} | {s['build-bins']:.0f} s "
            f"| {s['train'] / 60:.1f} min | {s['calibrate']:.0f} s | {size['calibrated_t']:g} "
            f"| {mine['auc_rebalanced']:.1f} | {mine['colorfulness_ratio']:.2f} |"
        )
    shipped = next(r for r in results["shipped"] if r["model"] != GRAY)
    lines.append(
        f"| shipped model | | | | | 0.36 | {shipped['auc_rebalanced']:.1f} "
        f"| {shipped['colorfulness_ratio']:.2f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
