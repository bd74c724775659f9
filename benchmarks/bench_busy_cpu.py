"""evaluate and train beside a CPU-busy process, with the thread policy every command sets
(OMP_WAIT_POLICY=PASSIVE) and without it (the OpenMP runtime's default: threads spin a while
between operations).

    python benchmarks/bench_busy_cpu.py [--repeat 2] [--photos 40]

The busy process is another torch job: matrix products on torch's default threads, as a
second training run or any numeric job would be. Each command runs in a fresh process, with
and without the policy in turn; "without" runs the same command line with the policy removed
(``zhangcolor.cli.THREAD_POLICY`` emptied, the variable unset), so libgomp keeps its default.
The photos are generated (smooth colour gradients with noise, 320×240): users have them too.

One run on a 2-core CPU that other jobs shared as well (medians of 2): evaluate 35.1 s with the
policy against 128.2 s without (3.6×); train 93.1 s against 412.2 s (4.4×).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BUSY = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"
WITHOUT = (
    "import sys, zhangcolor.cli as cli; cli.THREAD_POLICY.clear(); "
    "sys.argv[0] = 'zhangcolor'; cli.main()"
)


def make_photos(folder: Path, n: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    for i in range(n):
        rgb = np.stack([(x + 30 * i) % 256, (y + 50 * i) % 256, (x + y + 70 * i) % 256], -1)
        rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i:03d}.jpg", quality=90)


def timed(args: list[str], policy: bool, cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    head = ["-m", "zhangcolor"] if policy else ["-c", WITHOUT]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *head, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--photos", type=int, default=40)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_photos(work / "photos", options.photos)
        commands = {
            "evaluate (10 photos, shipped model)": [
                "evaluate", "photos", "--max-images", "10", "--temperatures", "0.38",
                "--out", "report",
            ],
            "train (shipped recipe, 12 steps of 16)": [
                "train", "--data", "photos", "--max-steps", "12", "--out", "run", "--overwrite",
            ],
        }  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        busy = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
        try:
            time.sleep(3)  # the busy job up to speed
            results = {}
            for name, args in commands.items():
                runs: dict[bool, list[float]] = {True: [], False: []}
                for _ in range(options.repeat):
                    for policy in (True, False):
                        runs[policy].append(timed(args, policy, work))
                results[name] = {p: statistics.median(t) for p, t in runs.items()}
                print(
                    f"{name}: {results[name][True]:.1f} s with the policy, "
                    f"{results[name][False]:.1f} s without: "
                    f"{results[name][False] / results[name][True]:.1f}× faster with it",
                    flush=True,
                )
        finally:
            busy.kill()
            busy.wait()


if __name__ == "__main__":
    main()
