"""The run folder on its own: the checkpoint pair, resuming from it, and trimming the metrics."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console

from zhangcolor.bins import load_bins
from zhangcolor.models import ModelConfig, build_model
from zhangcolor.options import TrainConfig
from zhangcolor.run_folder import (
    RunPaths,
    RunState,
    TrainingError,
    check_folder,
    restore,
    save_checkpoint,
    start_folder,
    training_state,
    trim_metrics,
)

CONFIG = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125))
BINS = {k: v.float() for k, v in load_bins().items()}


def modules(seed: int):
    torch.manual_seed(seed)
    model = build_model(CONFIG.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


def save_at(paths: RunPaths, model, optimizer, scheduler, step: int) -> None:
    state = training_state(
        optimizer=optimizer, scheduler=scheduler, progress=RunState(step=step), ema=None
    )
    save_checkpoint(paths, model=model, config=CONFIG, bins=BINS, state=state)


def test_restore_loads_the_pair_saved_at_one_step_and_the_rng(tmp_path):
    paths = RunPaths(tmp_path)
    start_folder(paths, CONFIG)
    model, optimizer, scheduler = modules(0)
    model(torch.rand(1, 1, 32, 32) * 100).sum().backward()
    optimizer.step()  # Adam has moments to save
    torch.manual_seed(7)
    save_at(paths, model, optimizer, scheduler, step=5)
    expected_draw = torch.rand(3)

    other, other_optimizer, other_scheduler = modules(1)
    progress = restore(
        paths, model=other, optimizer=other_optimizer, scheduler=other_scheduler, ema=None
    )
    assert progress == RunState(step=5)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    moments = [s["exp_avg"] for s in other_optimizer.state_dict()["state"].values()]
    assert moments and any(m.abs().sum() > 0 for m in moments)
    assert torch.equal(torch.rand(3), expected_draw)  # the CPU RNG goes on as saved


def test_a_kill_between_the_two_writes_resumes_from_prev(tmp_path, monkeypatch):
    """The weights of step 6 are in place, its state file is not: the pair of step 3 holds."""
    import zhangcolor.run_folder as run_folder

    paths = RunPaths(tmp_path)
    start_folder(paths, CONFIG)
    model, optimizer, scheduler = modules(0)
    save_at(paths, model, optimizer, scheduler, step=3)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)

    def killed(path, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_folder, "save_training_state", killed)
    with pytest.raises(KeyboardInterrupt):
        save_at(paths, model, optimizer, scheduler, step=6)
    monkeypatch.undo()
    fresh, fresh_optimizer, fresh_scheduler = modules(1)
    assert (
        restore(
            paths, model=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler, ema=None
        ).step
        == 3
    )
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


def test_restore_refuses_a_folder_without_a_pair_or_weights_of_another_network(tmp_path):
    paths = RunPaths(tmp_path)
    start_folder(paths, CONFIG)
    model, optimizer, scheduler = modules(0)
    with pytest.raises(TrainingError, match="nothing to resume"):
        restore(paths, model=model, optimizer=optimizer, scheduler=scheduler, ema=None)
    save_at(paths, model, optimizer, scheduler, step=2)
    wider = build_model(ModelConfig(backbone="eccv16", width=0.25))
    optimizer = torch.optim.Adam(wider.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(TrainingError, match="does not fit this run"):
        restore(paths, model=wider, optimizer=optimizer, scheduler=scheduler, ema=None)


def test_trim_metrics_keeps_what_was_logged_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"event": "start", "step": 0}, {"step": 1, "loss": 2.0}, {"step": 4, "loss": 1.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "lo')
    printed = io.StringIO()
    trim_metrics(path, 1, Console(file=printed))
    assert [json.loads(x) for x in path.read_text().splitlines()] == records[:2]
    assert "torn last line" in printed.getvalue()
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TrainingError, match=r"line 2 .* is not a JSON record"):
        trim_metrics(path, 2, Console(quiet=True))


def test_a_new_run_refuses_a_folder_with_an_earlier_one(tmp_path):
    paths = RunPaths(tmp_path)
    check_folder(paths, resume=False, overwrite=False)  # empty: fine
    paths.metrics.write_text('{"event": "start", "step": 0}\n')
    check_folder(paths, resume=False, overwrite=False)  # a start alone trained nothing
    paths.metrics.write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(TrainingError, match=r"holds an earlier run \(metrics\.jsonl\)"):
        check_folder(paths, resume=False, overwrite=False)
    check_folder(paths, resume=True, overwrite=False)
    check_folder(paths, resume=False, overwrite=True)
    with pytest.raises(TrainingError, match="pass one"):
        check_folder(paths, resume=True, overwrite=True)
