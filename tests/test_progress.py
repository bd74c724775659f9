"""What a training run shows while it runs: the bar's smoothed loss and rate (never nan), the
metrics' interval and epoch means, the loss plot's curves and legend, the sample grid, and one
interrupt message."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import torch
from rich.console import Console

from zhangcolor.models import ModelConfig, build_model
from zhangcolor.options import TrainConfig
from zhangcolor.progress import LossMeter
from zhangcolor.run_folder import loss_figure, plot_losses


def test_the_meter_shows_a_dash_before_any_step_and_never_nan():
    meter = LossMeter()
    assert meter.fields() == {"loss": "–", "rate": "–"}  # a resumed run that has no step left
    assert meter.epoch_record() == {}
    meter.add(4.0, 16)
    assert meter.fields()["loss"] == "4.0000"  # bias-corrected: the first step is itself
    for _ in range(50):
        meter.add(2.0, 16)
    assert meter.smoothed == pytest.approx(2.0, abs=0.02)
    assert meter.rate > 0 and "nan" not in str(meter.fields())


def test_a_metrics_line_is_the_mean_since_the_last_and_the_epoch_its_own_mean():
    meter = LossMeter()
    for loss in (1.0, 2.0, 3.0):
        meter.add(loss, 4)
    assert meter.interval()["loss"] == 2.0
    meter.add(6.0, 4)
    assert meter.interval()["loss"] == 6.0
    assert meter.epoch_record() == {"train_loss": 3.0}
    assert meter.epoch_record() == {}


def test_the_loss_plot_draws_both_losses_with_a_legend_that_says_what_each_is(tmp_path):
    records = [
        {"event": "start", "step": 0},
        {"step": 1, "epoch": 0, "loss": 6.5, "lr": 1e-3, "img_per_s": 10.0},
        {"step": 5, "epoch": 1, "train_loss": 4.0, "val_loss": 3.4, "val_auc": 80.0},
        {"step": 10, "epoch": 2, "train_loss": 3.5, "val_loss": 3.2, "val_auc": 81.0},
    ]
    config = TrainConfig(ema_decay=0.999)
    fig = loss_figure(records, config)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [len(line.get_xdata()) for line in ax.get_lines()] == [1, 2, 2]
    assert any(x.startswith("train") for x in labels) and any("validation" in x for x in labels)
    assert ax.get_ylabel() == "class-rebalanced cross-entropy"
    note = " ".join(t.get_text() for t in fig.texts)
    assert "w-weighted" in note and "centre crops" in note and "moving average" in note
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_losses(metrics, tmp_path / "loss.png", config)
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sample_grid_is_laid_out_as_torchvision_lays_it_out():
    """Independent reference: torchvision's make_grid (the grid once came from it; training no
    longer imports torchvision)."""
    make_grid = pytest.importorskip("torchvision.utils").make_grid
    from zhangcolor.bins import load_bins
    from zhangcolor.color import lab_to_rgb
    from zhangcolor.data import Batch
    from zhangcolor.train import sample_grid

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="eccv16", width=0.125)).eval()
    lightness = torch.rand(2, 1, 16, 24) * 100
    ab = torch.randn(2, 2, 16, 24) * 30
    batch = Batch(lightness, ab, torch.ones(2, 16, 24, dtype=torch.bool))
    bins = {k: v.float() for k, v in load_bins().items()}
    grid = sample_grid(model, batch, bins, 0.38)
    truth = lab_to_rgb(torch.cat([lightness, ab], 1))
    gray = lab_to_rgb(torch.cat([lightness, torch.zeros_like(ab)], 1))
    reference_layout = make_grid(
        torch.stack([gray, truth, truth], 1).flatten(0, 1), nrow=3, padding=2, pad_value=1.0
    )
    assert grid.shape == reference_layout.shape == (3, 2 + 2 * 18, 2 + 3 * 26)
    mask = torch.ones_like(grid, dtype=torch.bool)
    for i in range(2):  # the prediction's tiles are the network's own: compare the rest
        top, left = 2 + i * 18, 2 + 2 * 26
        mask[:, top : top + 16, left : left + 24] = False
    assert torch.allclose(grid[mask], reference_layout[mask], atol=1e-6)


def test_ctrl_c_is_announced_once_and_not_by_forked_workers():
    from zhangcolor.train import stop_on_signals

    class Trainer:
        stop = threading.Event()
        is_main = True

    console = Console(record=True, width=200)
    with stop_on_signals(Trainer, console):
        handler = signal.getsignal(signal.SIGINT)
        for _ in range(3):  # the terminal's Ctrl-C pressed again while it saves
            handler(signal.SIGINT, None)
        pid = os.fork()
        if pid == 0:  # a DataLoader worker, forked with the handler: silent
            Trainer.stop.clear()
            handler(signal.SIGINT, None)
            os._exit(0 if not Trainer.stop.is_set() else 1)
        assert os.waitpid(pid, 0)[1] == 0
    assert Trainer.stop.is_set()
    assert console.export_text().count("interrupted") == 1
