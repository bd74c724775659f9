"""Start-up: `zhangcolor colorize one.jpg` against `python -c "import torch"`, in the same run.

    python benchmarks/bench_startup.py [--repeat 7] [--importtime]

Each command runs in a fresh process, in turn (torch, colorize, torch, colorize, ...) after one
warm-up of each, so that the ratio of the medians is not skewed by the machine's load drifting
between them. The photo is generated (a 640×480 gradient), the model is the shipped one, and
the output goes to a temporary folder.
``--importtime`` also lists what colorize imports that takes over 20 ms (``python -X
importtime``), outside torch itself.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def seconds(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def slow_imports(command: list[str], cwd: Path, over_ms: float = 20) -> list[tuple[str, float]]:
    """The modules imported by the entry point or our code whose import took over ``over_ms``,
    not counting the torch and numpy they import (``-X importtime`` lists each module after
    what it imported, indented one level deeper)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]], cwd=cwd, capture_output=True, text=True
    )
    rows = []  # (depth, name, cumulative ms)
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if match:
            rows.append((len(match.group(2)) // 2, match.group(3), int(match.group(1)) / 1000))
    found = []
    for i, (depth, name, ms) in enumerate(rows):
        if depth > 1 or name.startswith(("torch", "numpy", "encodings", "site")):
            continue
        heavy = 0.0  # torch and numpy, imported first within this module's import
        for inner_depth, inner, inner_ms in reversed(rows[:i]):
            if inner_depth <= depth:
                break
            if inner in ("torch", "numpy"):
                heavy += inner_ms
        if ms - heavy > over_ms:
            found.append((name, ms - heavy))
    return sorted(found, key=lambda x: -x[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--importtime", action="store_true")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        y, x = np.mgrid[0:480, 0:640]
        Image.fromarray(((x + y) * 255 // 1118).astype(np.uint8)).save(work / "one.jpg")
        commands = {
            "import torch": [sys.executable, "-c", "import torch"],
            "zhangcolor colorize one.jpg": [
                sys.executable, "-m", "zhangcolor", "colorize", "one.jpg", "-o", "out",
                "--overwrite",
            ],
        }  # fmt: skip
        for command in commands.values():  # warm-up: file caches, the ONNX export if any
            seconds(command, work)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(options.repeat):
            for name, command in commands.items():
                times[name].append(seconds(command, work))
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            spread = ", ".join(f"{s:.2f}" for s in sorted(t))
            print(f"{name:30s} median {medians[name]:.2f} s  ({spread})")
        ratio = medians["zhangcolor colorize one.jpg"] / medians["import torch"]
        print(f"colorize / import torch: {ratio:.2f}×")
        if options.importtime:
            print("colorize's imports over 20 ms, without the torch and numpy within them:")
            for name, ms in slow_imports(commands["zhangcolor colorize one.jpg"], work):
                print(f"  {name:40s} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
