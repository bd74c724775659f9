"""Training: overfitting, the CLI end to end, exact resume after SIGKILL, SIGINT, NaN, and DDP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from zhangcolor.bins import load_bins
from zhangcolor.cli import main
from zhangcolor.config import load_config
from zhangcolor.data import lab_batch
from zhangcolor.loss import build_criterion
from zhangcolor.model_file import load_model, read_model
from zhangcolor.models import ModelConfig, build_model
from zhangcolor.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def photos(folder: Path, n: int = 10, size: int = 48) -> Path:
    """Smooth, colorful generated photos (gradients), so there is color to learn."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size, 0:size]
    for i in range(n):
        rgb = np.stack([(x * 5 + 40 * i) % 256, (y * 5) % 256, ((x + y) * 3 + 25 * i) % 256], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def tiny_config(tmp_path: Path, **extra) -> Path:
    """A YAML config for a tiny, fast eccv16 run."""
    values = {
        "data": str(photos(tmp_path / "photos")),
        "out": str(tmp_path / "run"),
        "model": {"backbone": "eccv16", "width": 0.125},
        "crop": 32,
        "load_size": 48,
        "batch_size": 4,
        "epochs": 2,
        "workers": 0,
        "log_every": 1,
        "save_every": 2,
        "precision": "fp32",
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def invoke(*args) -> object:
    return CliRunner(env={"COLUMNS": "400"}).invoke(
        main, [str(a) for a in args], catch_exceptions=False
    )


@pytest.mark.parametrize("head", ["classification", "regression"])
def test_one_image_overfits_in_30_steps(head):
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    rgb = torch.stack([x * 8, y * 8, (x + y) * 4]).clamp(0, 255).to(torch.uint8)
    rgba = torch.cat([rgb, torch.full_like(rgb[:1], 255)])[None]  # (1, 4, 32, 32)
    lightness, ab, mask = lab_batch(rgba)
    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125, head=head), crop=32)
    bins = {k: v.float() for k, v in load_bins().items()}
    model = build_model(config.model)
    criterion = build_criterion(config, bins)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = criterion(model(lightness), lightness, ab, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.5 * losses[0]


def test_train_cli_end_to_end_writes_a_complete_run_folder(tmp_path):
    result = invoke("train", "--config", tiny_config(tmp_path), "--head", "classification")
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in [
        "config.yaml",
        "metrics.jsonl",
        "plots/loss.png",
        "samples/epoch_001.png",
        "samples/epoch_002.png",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "checkpoints/last.state.pt",
    ]:
        assert (run / name).is_file(), name
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["width"] == 0.125 and resolved["crop"] == 32
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "loss" in m]
    assert {"step", "loss", "lr", "img_per_s"} <= set(steps[0])
    assert [m["epoch"] for m in lines if "val_loss" in m] == [1, 2]
    assert all(0 <= m["val_auc"] <= 100 for m in lines if "val_auc" in m)

    model, file = load_model(run / "checkpoints" / "last.safetensors")
    assert file.record.network.width == 0.125 and file.record.centers.shape == (313, 2)
    assert torch.allclose(file.record.weights.double(), load_bins()["weights"], atol=1e-6)
    assert file.provenance["training"]["crop"] == 32
    assert model(torch.rand(1, 1, 32, 32) * 100).shape == (1, 313, 8, 8)
    state = torch.load(run / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["progress"]["step"] == steps[-1]["step"] and "optimizer" in state


def test_regression_head_trains_from_the_cli_too(tmp_path):
    result = invoke(
        "train",
        "--config",
        tiny_config(tmp_path, epochs=3),
        "--head",
        "regression",
        "--loss",
        "huber",
    )
    assert result.exit_code == 0, result.output
    model, file = load_model(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert file.record.head == "regression" and file.provenance["training"]["loss"] == "huber"
    assert model(torch.rand(1, 1, 32, 32) * 100).shape == (1, 2, 8, 8)  # ab, not 313 logits
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in lines if "val_loss" in m]
    assert val[-1] < val[0]  # it learns


def test_bad_options_are_refused_with_the_valid_choices(tmp_path):
    config = tiny_config(tmp_path)
    result = invoke("train", "--config", config, "--head", "regression", "--loss", "ce")
    assert result.exit_code == 2 and "l1, l2 or huber" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("crop: 32\nmodle: {}\n")
    result = invoke("train", "--config", bad)
    assert result.exit_code == 2 and "valid:" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("train", "--config", config, "--data", empty)
    assert result.exit_code == 1 and f"no images under {empty}" in result.output
    result = invoke("train", "--config", config, "--lr", "-1", "--workers", "-3")
    assert result.exit_code == 2 and "lr=-1.0 (must be a number > 0)" in result.output
    assert "workers=-3" in result.output  # every bad field is named at once


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import zhangcolor.train as train

    real = train.build_criterion
    calls = {"n": 0}

    def poisoned_criterion(*args, **kwargs):
        criterion = real(*args, **kwargs)

        def poisoned(*batch):
            calls["n"] += 1
            loss = criterion(*batch)
            return loss * float("nan") if calls["n"] == 4 else loss

        return poisoned

    monkeypatch.setattr(train, "build_criterion", poisoned_criterion)
    result = invoke("train", "--config", tiny_config(tmp_path, epochs=3))
    found = re.search(r"became nan at step (\d+)", result.output)
    assert result.exit_code == 1 and found and "lower --lr" in result.output
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.state.pt", weights_only=True)
    assert 0 < state["progress"]["step"] < int(found.group(1))  # a checkpoint from before it


def _run_cli(args: list, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "zhangcolor", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def _wait_for_step(
    metrics: Path, step: int, process: subprocess.Popen, timeout: float = 120
) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.exists():
            lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            if any(m.get("step", 0) >= step for m in lines):
                return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.05)
    raise AssertionError(f"step {step} never came")


@pytest.mark.parametrize("hints", [False, True], ids=["automatic", "guided"])
def test_resume_after_sigkill_gives_the_same_weights_as_an_unbroken_run(tmp_path, hints):
    """A guided network's simulated points are drawn per sample too: exact as well."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    steps = 14
    model = {"backbone": "eccv16", "width": 0.125, "hints": hints}
    for side in ("a", "b"):
        config = tiny_config(tmp_path / side, epochs=20, max_steps=steps, save_every=3, model=model)
        config.write_text(
            config.read_text().replace(
                str(tmp_path / side / "photos"), str(tmp_path / "a" / "photos")
            )
        )
    unbroken = _run_cli(["train", "--config", tmp_path / "a" / "tiny.yaml"])
    assert unbroken.wait(timeout=300) == 0, unbroken.stdout.read()

    killed = _run_cli(["train", "--config", tmp_path / "b" / "tiny.yaml"])
    _wait_for_step(tmp_path / "b" / "run" / "metrics.jsonl", 8, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    resumed = _run_cli(["train", "--resume", tmp_path / "b" / "run"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps_logged = [
        json.loads(x)["step"]
        for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(x)
    ]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    process = _run_cli(["train", "--config", tiny_config(tmp_path, epochs=50)])
    _wait_for_step(tmp_path / "run" / "metrics.jsonl", 3, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "resume with" in output and "Traceback" not in output
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["progress"]["step"] >= 3


def test_ddp_with_two_gloo_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    """torchrun -m zhangcolor train with 2 gloo processes against 1 process with the same global
    batch. On CPU, BatchNorm normalises each process's half-batch (SyncBatchNorm is GPU-only), so
    the single process splits its batch into the same 2 micro-batches; the averaged gradients,
    and so the weights, then agree up to float summation order. Only rank 0 writes. The single
    process runs with one thread, as each DDP process does: with more, its convolutions sum in
    another order."""
    (tmp_path / "one").mkdir()
    single = tiny_config(tmp_path / "one", max_steps=3, epochs=5, micro_batches=2)
    alone = _run_cli(["train", "--config", single])
    assert alone.wait(timeout=300) == 0, alone.stdout.read()
    config = yaml.safe_load(single.read_text())
    config.update(out=str(tmp_path / "ddp"), micro_batches=1)
    ddp_yaml = tmp_path / "ddp.yaml"
    ddp_yaml.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "zhangcolor",
        "train",
        "--config",
        str(ddp_yaml),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([x for x in lines if '"loss"' in x]) == 3  # one writer: no duplicated lines
    one = load_file(str(tmp_path / "one" / "run" / "checkpoints" / "last.safetensors"))
    two = load_file(str(tmp_path / "ddp" / "checkpoints" / "last.safetensors"))
    torch.manual_seed(0)
    init = build_model(load_config(TrainConfig, single).model).state_dict()
    learned = [k for k in init if k.endswith(("weight", "bias")) and "running" not in k]
    delta_one = torch.cat([(one[k] - init[k]).flatten() for k in learned])
    delta_two = torch.cat([(two[k] - init[k]).flatten() for k in learned])
    assert delta_one.abs().max() > 5e-4  # training moved the weights by whole Adam steps ...
    # ... and both runs moved them alike. Float summation order differs (all-reduce against
    # accumulation) and Adam turns a sign flip of a near-zero gradient into a whole step, so a
    # few elements may differ; nearly all agree within a third of a step (lr 3e-4).
    off = (delta_two - delta_one).abs() > 1e-4
    assert off.float().mean() < 1e-3
    assert (delta_two - delta_one).norm() / delta_one.norm() < 0.05


def test_ddp_survives_the_stage_where_the_encoder_unfreezes(tmp_path):
    """DDP expects a gradient for every parameter that required one when it was built; a
    frozen-then-unfrozen encoder (the shipped U-Net configs) must not break it. 2 gloo
    processes, epoch 1 frozen, epoch 2 fine-tuned."""
    config = tiny_config(
        tmp_path,
        epochs=2,
        freeze_epochs=1,
        model={"backbone": "unet", "encoder": "efficientnet-lite0", "pretrained": True},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", "29519", "-m", "zhangcolor", "train", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines if "val_loss" in x] == [1, 2]


def test_train_takes_a_shipped_config_by_name(tmp_path):
    data = photos(tmp_path / "photos", n=4)
    result = invoke(
        "train",
        *("--config", "eccv16-compact", "--data", data, "--out", tmp_path / "run"),
        *("--max-steps", 1, "--crop", 32, "--batch-size", 2, "--workers", 0, "--width", 0.125),
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["model"]["backbone"] == "eccv16" and resolved["epochs"] == 20
    result = invoke("train", "--config", "eccv17", "--data", data)
    assert result.exit_code == 2 and "shipped:" in result.output


def test_two_stage_training_freezes_the_pretrained_encoder_first(tmp_path):
    config = tiny_config(
        tmp_path,
        epochs=1,
        freeze_epochs=1,
        model={"backbone": "unet", "encoder": "efficientnet-lite0", "pretrained": True},
    )
    assert invoke("train", "--config", config).exit_code == 0
    pretrained = build_model(load_config(TrainConfig, config).model).state_dict()
    after_one = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    # A second epoch, the first with the encoder unfrozen, by extending the run.
    assert invoke("train", "--resume", tmp_path / "run", "--epochs", 2).exit_code == 0
    after_two = load_file(str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    encoder = [k for k in pretrained if k.startswith("backbone.encoder.")]
    decoder = [k for k in pretrained if k.startswith("backbone.up4.") and "weight" in k]
    assert all(torch.equal(after_one[k], pretrained[k]) for k in encoder)  # weights and BN stats
    assert not all(torch.equal(after_one[k], pretrained[k]) for k in decoder)
    assert not all(torch.equal(after_two[k], pretrained[k]) for k in encoder)


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, monkeypatch):
    import zhangcolor.train as train

    losses = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    monkeypatch.setattr(
        train,
        "validate",
        lambda *a, **k: {"val_loss": next(losses), "val_auc": 50.0, "val_auc_rebalanced": 50.0},
    )
    result = invoke("train", "--config", tiny_config(tmp_path, epochs=5, patience=2))
    assert result.exit_code == 0 and "stopped early" in result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["val_loss"] for x in lines if "val_loss" in x] == [1.0, 2.0, 3.0]


def test_corrupt_files_met_in_training_are_skipped_and_counted(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    photos_dir = Path(yaml.safe_load(config.read_text())["data"])
    for name in ("broken.jpg", "also broken.png", "zz.png"):
        (photos_dir / name).write_bytes(b"not an image at all")
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_files"] for m in lines if "val_loss" in m][-1] >= 1


def test_ema_follows_the_weights_and_the_best_checkpoint_keeps_it(tmp_path, monkeypatch):
    from zhangcolor.train import update_ema

    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = ema.weight.detach().clone()
    update_ema(ema, model, decay=0.99, step=1000)  # past the warm-up: d = 0.99
    torch.testing.assert_close(ema.weight, 0.99 * before + 0.01 * model.weight.detach())
    update_ema(ema, model, decay=0.99, step=0)  # warm-up: d = 1/10, mostly the model
    assert (ema.weight - model.weight).abs().max() < (before - model.weight).abs().max()

    import zhangcolor.train as train

    scores = iter([1.0, 2.0])  # improving: the best is the last epoch's
    monkeypatch.setattr(
        train,
        "validate",
        lambda *a, **k: {"val_loss": 0.0, "val_auc": 0.0, "val_auc_rebalanced": next(scores)},
    )
    config = tiny_config(tmp_path, epochs=2, ema_decay=0.9, select_on="val_auc_rebalanced")
    assert invoke("train", "--config", config).exit_code == 0
    checkpoints = tmp_path / "run" / "checkpoints"
    best = load_file(str(checkpoints / "best.safetensors"))
    last = load_file(str(checkpoints / "last.safetensors"))
    ema_state = torch.load(checkpoints / "last.state.pt", weights_only=True)["ema"]
    weight = next(k for k in last if k.endswith("head.weight"))
    assert not torch.equal(ema_state[weight], last[weight])  # the EMA is not the weights ...
    assert torch.equal(best[weight], ema_state[weight])  # ... and the best checkpoint keeps it


def test_the_best_checkpoint_and_early_stopping_follow_select_on(tmp_path, monkeypatch):
    import zhangcolor.train as train

    scores = iter([(3.0, 40.0), (2.0, 55.0), (1.0, 50.0), (0.5, 45.0), (0.4, 44.0)])

    def fake(*args, **kwargs):
        loss, rebalanced = next(scores)
        return {"val_loss": loss, "val_auc": 80.0, "val_auc_rebalanced": rebalanced}

    monkeypatch.setattr(train, "validate", fake)
    config = tiny_config(tmp_path, epochs=5, patience=2, select_on="val_auc_rebalanced")
    result = invoke("train", "--config", config)
    assert result.exit_code == 0 and "val_auc_rebalanced stopped improving" in result.output
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in lines if "val_loss" in m]
    assert [m["epoch"] for m in epochs] == [1, 2, 3, 4]  # best at 2, then 2 without a better one
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert read_model(best).provenance["step"] == epochs[1]["step"]  # epoch 2's, not the lowest
    assert load_file(str(best))


def test_three_stages_freeze_the_encoder_then_lower_the_lr_then_train_everything(
    tmp_path, monkeypatch
):
    """Decoder at lr, decoder at lr × stage_lr_factor, then everything, each stage ending when
    the validation stops improving (patience 1 here: a stage lasts until one worse epoch)."""
    import zhangcolor.train as train

    losses = iter([5.0, 6.0, 4.0, 4.5, 3.0, 3.5, 2.0, 2.5])
    monkeypatch.setattr(
        train,
        "validate",
        lambda *a, **k: {"val_loss": next(losses), "val_auc": 1.0, "val_auc_rebalanced": 1.0},
    )
    seen = []
    real = train.train_one_epoch

    def record(trainer, loader, on_step):
        encoder = trainer.model.backbone.encoder
        seen.append(
            (
                trainer.state.stage,
                any(p.requires_grad for p in encoder.parameters()),
                all(p.requires_grad for p in trainer.model.backbone.up4.parameters()),
                [round(g["lr"], 8) for g in trainer.optimizer.param_groups],
            )
        )
        return real(trainer, loader, on_step)

    monkeypatch.setattr(train, "train_one_epoch", record)
    model = {"backbone": "unet", "encoder": "efficientnet-lite0", "pretrained": True}
    config = tiny_config(
        tmp_path, epochs=8, stages=3, patience=1, schedule="constant", lr=1e-3, model=model
    )
    result = invoke("train", "--config", config)
    assert result.exit_code == 0, result.output
    assert [s[:3] for s in seen] == [
        (1, False, True),
        (1, False, True),
        (2, False, True),
        (2, False, True),
        (3, True, True),
        (3, True, True),
    ]
    assert seen[0][3][0] == 1e-3 and seen[2][3][0] == 1e-4  # the decoder's lr, lowered
    assert seen[4][3] == [1e-4, 1e-4]  # stage 3: the encoder at lr × finetune_lr_factor
    assert "stopped early" in result.output


def test_tensorboard_event_files_hold_the_losses_the_aucs_and_the_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = invoke("train", "--config", tiny_config(tmp_path, epochs=2), "--tensorboard")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/img_per_s"} <= scalars
    assert {"val/loss", "val/auc", "val/auc_rebalanced"} <= scalars
    assert [e.step for e in events.Scalars("val/auc_rebalanced")] == [
        json.loads(x)["step"]
        for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "val_loss" in x
    ]
    assert len(events.Images("samples")) == 2


@pytest.mark.parametrize(
    "extra",
    [
        ["--head", "regression", "--loss", "l2+perceptual"],
        ["--head", "regression", "--loss", "l2+contrastive"],
        ["--color-space", "rgb"],
    ],
    ids=["perceptual", "contrastive", "rgb"],
)
def test_the_feature_losses_and_the_rgb_baseline_train_and_colorize(tmp_path, extra):
    from zhangcolor.colorize import Colorizer

    result = invoke("train", "--config", tiny_config(tmp_path, epochs=2), *extra)
    assert result.exit_code == 0, result.output
    path = tmp_path / "run" / "checkpoints" / "last.safetensors"
    training = read_model(path).provenance["training"]
    assert training["loss"] == (extra[-1] if "--loss" in extra else "auto")
    colorizer = Colorizer.load(path, size=32)
    out = colorizer.colorize(np.full((20, 30), 128, np.uint8))
    assert out.size == (30, 20) and not colorizer.uses_temperature
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["val_loss"]) for m in lines if "val_loss" in m)


# ----------------------------------------------------------------------------- hardening


def test_training_with_no_usable_images_fails_with_the_reasons(tmp_path):
    from makers import solid

    from zhangcolor.split import split_files

    data = tmp_path / "unusable"
    for i in range(4):
        (data / f"broken{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (data / f"broken{i}.jpg").write_bytes(b"not an image")
        solid(data / f"gray{i}.png", (90, 90, 90), size=(48, 48))
    config = tiny_config(tmp_path, data=str(data), cache="off")
    result = invoke("train", "--config", config)
    assert result.exit_code == 1, result.output
    assert "no usable training images" in result.output and "finished" not in result.output
    train, _ = split_files(data)
    for path in train:
        reason = "grayscale" if path.name.startswith("gray") else ""
        assert re.search(rf"{path.name}: {reason}", result.output), path.name
    assert not (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()


def test_diverged_weights_are_never_kept_as_the_last_good_checkpoint(tmp_path, monkeypatch):
    import zhangcolor.train as train

    real = train.train_step

    def diverging(trainer, batch):
        loss = real(trainer, batch)
        if trainer.state.step == 4:  # the loss is still finite; the weights are not sane
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(1e30)
        return loss

    monkeypatch.setattr(train, "train_step", diverging)
    result = invoke("train", "--config", tiny_config(tmp_path, epochs=3))  # saves at 2, 4, 6
    assert result.exit_code == 1 and "weights diverged by step 4" in result.output
    assert "1e+30" in result.output and "last good checkpoint is kept" in result.output
    checkpoints = tmp_path / "run" / "checkpoints"
    state = torch.load(checkpoints / "last.state.pt", weights_only=True)
    assert state["progress"]["step"] == 2
    weights = load_file(str(checkpoints / "last.safetensors"))
    assert all(v.abs().max() < 1e6 for v in weights.values() if v.is_floating_point())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (one epoch of 2 steps), to copy."""
    root = tmp_path_factory.mktemp("finished")
    result = invoke("train", "--config", tiny_config(root, epochs=1))
    assert result.exit_code == 0, result.output
    return root / "run"


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_a_torn_last_metrics_line_or_a_full_disk_does_not_stop_resume(
    finished_run, tmp_path, monkeypatch
):
    import errno

    run = copy_run(finished_run, tmp_path)
    metrics = run / "metrics.jsonl"
    # A full disk while resume rewrites the metrics: the file stays as it was.
    original = metrics.read_text()
    real_write_text = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if "metrics.jsonl" in self.name:
            real_write_text(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    result = invoke("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert metrics.read_text() == original
    assert not [p for p in run.iterdir() if p.name.startswith(".metrics.jsonl")]
    monkeypatch.undo()

    # A full disk mid-append tore the last line: resume drops it and goes on.
    with metrics.open("a") as f:
        f.write('{"step": 4, "epoch": 1, "lo')
    result = invoke("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert "dropped the torn last line" in result.output
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in lines if "val_loss" in m] == [1, 2]


def test_an_empty_or_damaged_state_file_fails_resume_clearly(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    state = run / "checkpoints" / "last.state.pt"
    for content, words in [(b"", "is empty"), (b"PK\x03\x04 not a zip", "is damaged")]:
        state.write_bytes(content)
        result = invoke("train", "--resume", run, "--epochs", 2)
        assert result.exit_code == 1 and f"last.state.pt {words}" in result.output
        assert "--overwrite" in result.output and "Aborted" not in result.output


def test_training_into_an_earlier_run_is_refused_unless_overwrite(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    config = tmp_path / "again.yaml"
    config.write_text((finished_run.parent / "tiny.yaml").read_text())
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = invoke("train", "--config", config, "--out", run)
    assert result.exit_code == 1
    assert f"--resume {run}" in result.output and "--overwrite" in result.output
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # untouched

    result = invoke("train", "--config", config, "--out", run, "--overwrite")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["event"] for m in lines if "event" in m] == ["start"]  # started afresh
    assert [m["epoch"] for m in lines if "val_loss" in m] == [1]
    result = invoke("train", "--resume", run, "--overwrite")
    assert result.exit_code == 2 and "pick one" in result.output


def test_temporary_files_of_a_killed_write_are_removed_on_resume(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    stale = [
        run / "checkpoints" / ".next.safetensors.k2j3h4g5.safetensors",
        run / "checkpoints" / ".last.state.pt.a1b2c3d4.pt",
        run / "checkpoints" / "next.safetensors",  # written, never renamed to last
        run / "samples" / ".epoch_002.png.zz_9yy8x.png",
        run / ".metrics.jsonl.qwertyui.jsonl",
    ]
    kept = [run / "notes.txt", run / "checkpoints" / ".keep", run / ".hidden.cfg"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    result = invoke("train", "--resume", run, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale)
    assert all(p.read_bytes() == b"partial" for p in kept)


def test_checkpoint_writes_are_fsynced_file_and_folder(tmp_path, monkeypatch):
    from test_colorize import make_checkpoint

    import zhangcolor.files as files

    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    path = make_checkpoint(tmp_path / "m.safetensors")
    assert path.stat().st_ino in synced  # the file, before its rename (which keeps the inode)
    assert tmp_path.stat().st_ino in synced  # the folder, after it
