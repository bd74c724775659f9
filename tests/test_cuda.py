"""On a CUDA GPU: the paper's pieces give the CPU's results, and every network trains there.

Skipped where torch sees no CUDA device (as in CI). `ZHANGCOLOR_CUDA_TEST_ON_CPU=1` runs the
same checks with the CPU standing in for the GPU: that tries this file's own code where no GPU
is at hand, and proves nothing about CUDA. `benchmarks/gpu_run.sh` runs this file on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data

from zhangcolor.bins import ab_bins, nearest_bins
from zhangcolor.encode import soft_encode_sparse

if torch.cuda.is_available():
    DEVICE = torch.device("cuda")
elif os.environ.get("ZHANGCOLOR_CUDA_TEST_ON_CPU") == "1":
    DEVICE = torch.device("cpu")
else:
    DEVICE = None

pytestmark = pytest.mark.skipif(DEVICE is None, reason="no CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 means fp32 here: cuDNN and cuBLAS otherwise round convolutions and matmuls to TF32
    on recent GPUs, and this file compares with the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def ab_points(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    """ab ``(1, 2, 1, N)`` float64: a photo's colors, random ones over the gamut and beyond,
    and a few far outside any color (which take the brute-force path)."""
    from skimage import color

    photo = color.rgb2lab(data.astronaut()[::4, ::4] / 255.0)[..., 1:].reshape(-1, 2)
    rng = np.random.default_rng(seed)
    spread = rng.uniform(-130, 130, (n, 2))
    far = rng.uniform(-1000, 1000, (64, 2))
    points = np.concatenate([photo, spread, far])
    return torch.from_numpy(points).T.reshape(1, 2, 1, -1)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_nearest_bins_on_the_device_equal_the_cpus(k):
    ab = ab_points()
    centers = ab_bins(torch.float64)
    dist_cpu, index_cpu = nearest_bins(ab, centers, k)
    dist_dev, index_dev = nearest_bins(ab.to(DEVICE), centers.to(DEVICE), k)
    assert index_dev.device.type == DEVICE.type
    assert torch.equal(index_dev.cpu(), index_cpu)
    torch.testing.assert_close(dist_dev.cpu(), dist_cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_encoding_on_the_device_equals_the_cpus(dtype):
    ab = ab_points().to(dtype)
    centers = ab_bins(dtype)
    index_cpu, weight_cpu = soft_encode_sparse(ab, centers)
    index_dev, weight_dev = soft_encode_sparse(ab.to(DEVICE), centers.to(DEVICE))
    # float32 distances may round differently on the device: allow the rare near-tie swap.
    agree = (index_dev.cpu() == index_cpu).all(1).double().mean()
    assert agree == 1.0 if dtype == torch.float64 else agree > 0.999
    same = (index_dev.cpu() == index_cpu).all(1, keepdim=True).expand_as(weight_cpu)
    torch.testing.assert_close(weight_dev.cpu()[same], weight_cpu[same])


def photos(folder: Path, n: int = 8, size: int = 80) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        rgb = np.stack([(x * 3 + 30 * i) % 256, (y * 3) % 256, ((x + y) * 2 + 20 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _variants() -> list[tuple[dict, dict]]:
    from zhangcolor.models.unet import ENCODERS

    backbones = [{"backbone": "eccv16", "width": 0.25}]
    backbones += [{"backbone": "unet", "encoder": e, "pretrained": False} for e in ENCODERS]
    heads = [
        {"head": "classification", "rebalance": True},  # the paper's "full"
        {"head": "classification", "rebalance": False},  # its "class"
        {"head": "regression", "loss": "l2"},  # its L2 baseline
    ]
    return [(b, h) for b in backbones for h in heads]


def _label(variant) -> str:
    backbone, head = variant
    name = backbone.get("encoder", "eccv16")
    return f"{name}-{head['head']}" + ("" if head.get("rebalance", True) else "-class")


@pytest.mark.parametrize("variant", _variants(), ids=_label)
def test_twenty_training_steps_of_every_backbone_and_head(variant, tmp_path_factory):
    """The real training loop (loader, soft-encoding, loss, optimizer, evaluation, sample grid,
    checkpoints) on the device, at the precision auto picks (bf16 on a recent GPU)."""
    from zhangcolor.model_file import load_model
    from zhangcolor.models import ModelConfig
    from zhangcolor.train import TrainConfig, run

    backbone, head = variant
    tmp = tmp_path_factory.mktemp("run")
    model = {"backbone": backbone["backbone"], "head": head["head"]}
    model.update({k: v for k, v in backbone.items() if k != "backbone"})
    config = TrainConfig(
        data=str(photos(tmp_path_factory.getbasetemp() / "photos")),
        out=str(tmp / "run"),
        model=ModelConfig(**model),
        rebalance=head.get("rebalance", True),
        loss=head.get("loss", "auto"),
        crop=64,
        load_size=80,
        batch_size=4,
        epochs=100,
        max_steps=20,
        workers=0,
        log_every=1,
    )
    assert run(config, show_progress=False) == "max_steps"
    lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    start = next(m for m in lines if m.get("event") == "start")
    assert start["device"].startswith(DEVICE.type)
    if DEVICE.type == "cuda":
        assert start["precision"] == "bfloat16" or not torch.cuda.is_bf16_supported()
    losses = [m["loss"] for m in lines if "loss" in m]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert all(np.isfinite(m["val_loss"]) for m in lines if "val_loss" in m)
    net, _ = load_model(tmp / "run" / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_bf16_autocast_on_the_device_and_decoding_in_float32():
    from zhangcolor.decode import annealed_mean
    from zhangcolor.device import precision_context, resolve_precision
    from zhangcolor.models import ModelConfig, build_model

    autocast = resolve_precision("auto", DEVICE)
    if DEVICE.type == "cuda":
        assert autocast == (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    autocast = resolve_precision("bf16", DEVICE)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="unet", encoder="efficientnet-lite0")).to(DEVICE)
    lightness = torch.rand(2, 1, 64, 64, device=DEVICE) * 100
    with torch.no_grad(), precision_context(DEVICE, autocast):
        logits = model.eval()(lightness)
    assert logits.dtype == torch.bfloat16
    ab = annealed_mean(logits, ab_bins(device=DEVICE), 0.38)
    assert ab.dtype == torch.float32  # computed in float32, whatever the network's dtype
    reference = annealed_mean(logits.double(), ab_bins(torch.float64, DEVICE), 0.38)
    assert (ab.double() - reference).abs().max() < 1e-3


def test_colorize_on_the_device_is_within_one_ab_level_of_the_cpu():
    from zhangcolor.colorize import Colorizer, image_lightness

    cpu = Colorizer.load("default", device="cpu", precision="fp32")
    dev = Colorizer.load("default", device=DEVICE.type, precision="fp32")
    fast = Colorizer.load("default", device=DEVICE.type, precision="auto")
    for image in (data.astronaut(), data.coffee(), data.chelsea()):
        lightness = image_lightness(image)
        ab_cpu = cpu.decode(cpu.network_output(lightness), 0.38)
        ab_dev = dev.decode(dev.network_output(lightness), 0.38).cpu()
        assert (ab_dev - ab_cpu).norm(dim=1).max() <= 1.0
        ab_fast = fast.decode(fast.network_output(lightness), 0.38).cpu()
        error = (ab_fast - ab_cpu).norm(dim=1)  # bf16 where the device runs it natively
        # The retrained model measured a mean of 1.19 ab units and a 99th percentile of 7.5 on a
        # CPU's native bf16 (the old model: under 1 and 5). Scored on 160 validation photos, bf16
        # and fp32 give the same AuC, rebalanced AuC and colourfulness to 0.1: bf16's error sits
        # in ambiguous pixels, where either answer is as likely.
        assert error.mean() <= 1.5 and torch.quantile(error.flatten(), 0.99) <= 10.0
        rgb_cpu = np.asarray(cpu.colorize(image), dtype=int)
        rgb_dev = np.asarray(dev.colorize(image), dtype=int)
        assert np.abs(rgb_dev - rgb_cpu).max() <= 2


def test_the_points_geodesic_fill_on_the_device_equals_the_cpus():
    """The points' search (sweeps of running minima in float64, the points found by unique) and
    the shipped model's colours with points, on the device against the CPU."""
    from zhangcolor.colorize import Colorizer
    from zhangcolor.models.hint_prior import geodesic_fill

    generator = torch.Generator().manual_seed(0)
    lightness = torch.nn.functional.avg_pool2d(
        torch.rand(2, 1, 128, 128, generator=generator) * 100, 9, 1, 4
    )
    hints = torch.zeros(2, 3, 128, 128)
    for i, (y, x) in enumerate(((10, 20), (90, 40), (60, 100), (20, 110))):
        hints[i % 2, :2, y : y + 6, x : x + 6] = torch.rand(2, 1, 1, generator=generator) - 0.5
        hints[i % 2, 2, y : y + 6, x : x + 6] = 1.0
    cpu = geodesic_fill(hints, lightness, (32, 32))
    dev = geodesic_fill(hints.to(DEVICE), lightness.to(DEVICE), (32, 32))
    for a, b in zip(cpu, dev, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-3)

    points = {
        "points": [{"x": 60, "y": 40, "color": "#c03020"}, {"x": 200, "y": 300, "color": "#2050c0"}]
    }
    image = data.astronaut()
    on_cpu = Colorizer.load("default", device="cpu", precision="fp32").colorize(image, hints=points)
    on_dev = Colorizer.load("default", device=DEVICE.type, precision="fp32").colorize(
        image, hints=points
    )
    difference = np.abs(np.asarray(on_dev, dtype=int) - np.asarray(on_cpu, dtype=int))
    assert np.percentile(difference, 99.9) <= 2 and difference.mean() < 0.1


@pytest.mark.parametrize("size", [(480, 640), (1500, 900)])  # one device band, two
def test_join_on_the_device_equals_the_cpu_join(size):
    """The ab upsampling and Lab -> sRGB8 on the device give the banded CPU join's pixels, but
    for rounding-boundary values."""
    from zhangcolor.colorize import join_image

    torch.manual_seed(0)
    light = torch.rand(1, 1, *size) * 100
    ab = torch.randn(1, 2, 64, 64) * 40
    on_device = np.asarray(join_image(light, ab, DEVICE), dtype=int)
    on_cpu = np.asarray(join_image(light, ab), dtype=int)
    diff = np.abs(on_device - on_cpu)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_colorize_files_on_the_device_writes_the_cpus_files(tmp_path):
    """The folder pipeline with the network and the join on the device (joins from the worker
    threads), against the CPU's files."""
    from zhangcolor.colorize import Colorizer
    from zhangcolor.colorize_files import colorize_files, plan_jobs

    folder = photos(tmp_path / "photos", n=6, size=96)
    results = []
    for i, device in enumerate(("cpu", DEVICE.type)):
        colorizer = Colorizer.load("default", device=device, precision="fp32")
        jobs, _ = plan_jobs([str(folder)], tmp_path / f"out{i}", "png")
        outcomes = list(colorize_files(colorizer, jobs, batch_size=4, workers=4))
        assert [o.status for o in outcomes] == ["done"] * 6
        files = sorted((tmp_path / f"out{i}").glob("*"))
        results.append({p.name: np.asarray(Image.open(p), dtype=int) for p in files})
    on_cpu, on_device = results
    assert sorted(on_device) == sorted(on_cpu) and len(on_cpu) == 6
    for name, values in on_cpu.items():
        assert np.abs(on_device[name] - values).max() <= 2, name


def test_the_server_colorizes_on_the_device_like_on_the_cpu():
    import io

    from zhangcolor.serve import ColorizeService, ServeConfig

    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, format="PNG")
    results = []
    for device in ("cpu", DEVICE.type):
        service = ColorizeService.load(ServeConfig(device=device, precision="fp32"))
        first = service.colorize(buffer.getvalue(), temperature=0.38)
        again = service.recolor(first.upload_id, temperature=0.7)
        assert again.network_ran is False
        results.append([np.asarray(Image.open(io.BytesIO(r.content)), int) for r in (first, again)])
    for on_cpu, on_device in zip(*results, strict=True):
        assert np.abs(on_cpu - on_device).max() <= 2


def test_evaluate_on_the_device_gives_the_cpus_numbers(tmp_path):
    from zhangcolor.evaluate import evaluate

    folder = photos(tmp_path / "photos", n=3, size=96)
    rows = [
        evaluate(folder, ["default"], temperatures=(0.38,), size=64, device=d, precision="fp32")
        for d in ("cpu", DEVICE.type)
    ]
    for cpu_row, dev_row in zip(rows[0]["rows"], rows[1]["rows"], strict=True):
        assert abs(cpu_row["auc"] - dev_row["auc"]) < 0.1
        assert abs(cpu_row["auc_rebalanced"] - dev_row["auc_rebalanced"]) < 0.1


def test_torchrun_with_one_process_uses_the_multi_gpu_path(tmp_path):
    """torchrun --nproc_per_node 1: the process group (nccl on GPUs), DistributedDataParallel,
    SyncBatchNorm, and a stage where the pretrained-style encoder unfreezes."""
    config = {
        "data": str(photos(tmp_path / "photos")),
        "out": str(tmp_path / "run"),
        "model": {"backbone": "unet", "encoder": "efficientnet-lite0", "pretrained": False},
        "crop": 64,
        "load_size": 80,
        "batch_size": 4,
        "epochs": 2,
        "freeze_epochs": 1,
        "workers": 1,
        "log_every": 1,
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
    command += ["--master_port", "29531", "-m", "zhangcolor", "train", "--config", str(path)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
    if DEVICE.type == "cpu":
        env.pop("CUDA_VISIBLE_DEVICES")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start = next(m for m in lines if m.get("event") == "start")
    assert start["backend"] == ("nccl" if DEVICE.type == "cuda" else "gloo")
    assert start["world"] == 1 and start["device"].startswith(DEVICE.type)
    assert [m["epoch"] for m in lines if "val_loss" in m] == [1, 2]
