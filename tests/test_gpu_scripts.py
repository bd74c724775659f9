"""benchmarks/gpu_train.sh, the prepared GPU training run, rehearsed on the CPU with a tiny carry:
it must hold out the validation photos of their own (pre-WebP) names, and leave the three files
the device tool brings back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from makers import photo_bytes

from zhangcolor.split import is_validation

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_train_script_holds_out_the_pool_names_and_leaves_three_files(tmp_path):
    carry, out = tmp_path / "carry", tmp_path / "out"
    names = [f"a/p{i:02d}.jpg" for i in range(30)] + [f"top{i}.png" for i in range(10)]
    for seed, name in enumerate(names):  # the copies, as gpu_prep.sh makes them: name.webp
        copy = carry / "photos" / Path(name).with_suffix(".webp")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(photo_bytes(seed, size=(80, 64), fmt="WEBP"))
    (carry / "photo-names.txt").write_text("".join(f"{n}\n" for n in names))
    held_out = [n for n in names if is_validation(n)]
    as_webp = [n for n in names if is_validation(Path(n).with_suffix(".webp").as_posix())]
    assert len(held_out) != len(as_webp)  # so the count below tells which split was used

    env = {
        **os.environ,
        "CARRY": str(carry),
        "OUT": str(out),
        "TMPDIR": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TRAIN_SECONDS": "240",
    }
    flags = ["--max-steps", "2", "--batch-size", "2", "--crop", "64", "--precision", "fp32"]
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_train.sh"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "default.json",
        "default.safetensors",
        "gpu-train.tar.gz",
    ]
    with tarfile.open(out / "gpu-train.tar.gz") as tar:
        members = set(tar.getnames())
        report = tar.extractfile("./eval/report.md").read().decode()
    assert {"./train.txt", "./calibrate.txt", "./run/metrics.jsonl"} <= members
    # Scored on the photos held out under their own names, beside the shipped model.
    assert re.search(rf"\b{len(held_out)} images\b", report) and "| default |" in report
