"""The DVC pipeline (dvc.yaml, params.yaml): it runs end to end in a copy of the repository, on
generated photos and a tiny network, and the shipped params.yaml keeps the shipped model's recipe.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from zhangcolor.config import load_config
from zhangcolor.constants import TEMPERATURES
from zhangcolor.evaluate import row_key
from zhangcolor.options import PriorConfig, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["build-bins", "train", "evaluate", "calibrate", "package-model"]


def needs_dvc() -> None:
    """Skip without DVC, except in CI, which installs the dev extra and so must have it."""
    if importlib.util.find_spec("dvc") is None:
        if os.environ.get("CI"):
            pytest.fail("dvc is missing, though the dev extra declares it")
        pytest.skip("dvc is not installed: pip install '.[dev]'")


def photos(folder: Path, n: int = 30, size: int = 48) -> Path:
    """Smooth, colorful gradients, each with its own hues (as test_train.py's)."""
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        rgb = np.stack([(x * 5 + 40 * i) % 256, (y * 5) % 256, ((x + y) * 3 + 25 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def tiny_params(repo: Path) -> dict:
    """The shipped params.yaml, pointed at generated photos and a tiny, fast training config."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    config = {
        "model": {"backbone": "eccv16", "width": 0.125},
        "load_size": 48,
        "batch_size": 8,
        "workers": 0,
        "precision": "fp32",
        "val_images": 2,
    }
    (repo / "tiny.yaml").write_text(yaml.safe_dump(config))
    params["data"] = str(photos(repo / "photos").relative_to(repo))
    params["bins"]["size"] = 32
    params["train"].update(config="tiny.yaml", run="tiny", epochs=1, crop=32)
    params["evaluate"].update(size=32, temperatures="1,0.38")
    params["calibrate"].update(size=32)
    return params


def dvc(repo: Path, *args: str) -> str:
    """Run ``dvc ARGS`` in ``repo``; its stdout, or a failure that shows everything it said."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # zhangcolor
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(repo.with_name(f"{repo.name}-site")),  # not /var/tmp/dvc
    }
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A copy of the repository's pipeline and package source, with tiny params, after one
    ``dvc repro``."""
    needs_dvc()
    repo = tmp_path_factory.mktemp("repo")
    # The source is the stages' dependency (the code that runs is the installed package).
    ignore = shutil.ignore_patterns("__pycache__", "weights")
    shutil.copytree(ROOT / "zhangcolor", repo / "zhangcolor", ignore=ignore)
    for name in ["dvc.yaml", ".dvcignore", ".gitignore"]:
        shutil.copy(ROOT / name, repo / name)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(repo), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "repro")
    return repo


def test_the_shipped_params_are_the_shipped_models_recipe():
    """As it ships, params.yaml is the shipped model's recipe (config, epochs and crop, the
    default prior options on the train split, the paper's temperatures, calibration on the
    held-out photos) with a data folder for the user to name, which its first lines say (the
    recipe names none); the stages are in order."""
    text = (ROOT / "params.yaml").read_text()
    assert "EDIT `data:` FIRST" in "".join(text.splitlines(keepends=True)[:5])
    params = yaml.safe_load(text)
    train = params["train"]
    assert ROOT / train["config"] == ROOT / "zhangcolor" / "configs" / "default.yaml"
    recipe = load_config(TrainConfig, ROOT / train["config"])
    provenance = json.loads((ROOT / "zhangcolor" / "weights" / "default.json").read_text())
    shipped = TrainConfig(**provenance["config"])
    assert params["data"] == "photos" == Path(shipped.data).name and recipe.data is None
    for config in (recipe, shipped):
        assert (config.epochs, config.crop) == (train["epochs"], train["crop"])
    assert recipe.out == f"runs/{train['run']}"
    prior = PriorConfig()
    bins = params["bins"]
    assert (prior.lam, prior.sigma, prior.size) == (bins["lam"], bins["sigma"], bins["size"])
    assert bins["split"] == "train"
    temperatures = [float(t) for t in params["evaluate"]["temperatures"].split(",")]
    assert temperatures == list(TEMPERATURES) and params["evaluate"]["split"] == "val"
    assert params["calibrate"] == {"split": "val", "size": 256}
    assert list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) == STAGES


def test_dvc_repro_runs_every_stage_and_dvc_reads_the_metrics(pipeline):
    for out in [
        "bins/bins.npz",
        "runs/tiny/checkpoints/best.safetensors",
        "report/report.json",
        "report/auc_curves.csv",
        "model/default.safetensors",
    ]:
        assert (pipeline / out).is_file(), out
    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    # The repository's .gitignore already ignores what DVC caches, so repro leaves it alone.
    assert (pipeline / ".gitignore").read_text() == (ROOT / ".gitignore").read_text()
    assert sorted(p.parent.name for p in pipeline.glob("*/.gitignore")) == [".dvc"]

    shown = json.loads(dvc(pipeline, "metrics", "show", "--json"))
    metrics = shown[""]["data"]["report/metrics.json"]["data"]
    rows = json.loads((pipeline / "report" / "report.json").read_text())["rows"]
    assert [row_key(r) for r in rows] == ["gray", "tiny/best T=1", "tiny/best T=0.38"]
    for r in rows:
        assert metrics[row_key(r)]["auc_rebalanced"] == pytest.approx(r["auc_rebalanced"])
    assert 0 < metrics["tiny/best T=0.38"]["auc_rebalanced"] < 100

    packaged = json.loads((pipeline / "model" / "default.json").read_text())
    calibration = json.loads((pipeline / "report" / "calibration.json").read_text())
    assert packaged["temperature"] == calibration["temperature"] and packaged["dtype"] == "float16"
    assert calibration["split"] == "val" and calibration["images"] > 0
    assert packaged["config"]["bins"] == "bins/bins.npz"  # trained on the stage's prior

    plots = json.loads(dvc(pipeline, "plots", "show", "--json"))
    assert "errors" not in plots
    curves = plots["data"]["AuC curves"][0]["content"]["data"]["values"]
    assert {v["field"] for v in curves} == {"gray", "tiny/best T=0.38"}


def test_a_second_repro_does_nothing_and_a_param_reruns_only_its_stages(pipeline):
    (pipeline / "zhangcolor" / "__pycache__").mkdir(exist_ok=True)
    (pipeline / "zhangcolor" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0")
    report = pipeline / "report" / "metrics.json"
    before = report.stat().st_mtime_ns
    assert "Data and pipelines are up to date." in dvc(pipeline, "status")
    output = dvc(pipeline, "repro")
    assert "Data and pipelines are up to date." in output and "Running stage" not in output
    assert report.stat().st_mtime_ns == before

    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["calibrate"]["size"] = 48
    (pipeline / "params.yaml").write_text(yaml.safe_dump(params))
    assert set(json.loads(dvc(pipeline, "status", "--json"))) == {"calibrate"}
