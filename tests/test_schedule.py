"""The learning-rate schedule and the parameter groups (the stages train end to end in
test_train.py)."""

import math

import pytest
import torch

from zhangcolor.options import ModelConfig, TrainConfig
from zhangcolor.schedule import build_optimizer, build_schedule, enter_stage, pretrained_encoder


def lrs(config: TrainConfig, total: int, steps: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    scheduler = build_schedule(optimizer, config, total)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_the_cosine_falls_from_lr_to_zero_over_the_run_and_stays_there():
    seen = lrs(TrainConfig(lr=1e-3), total=10, steps=13)
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * min(s, 10) / 10)) for s in range(13)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[5] == pytest.approx(5e-4) and seen[10:] == pytest.approx([0.0] * 3, abs=1e-12)
    assert lrs(TrainConfig(lr=1e-3, schedule="constant"), total=10, steps=4) == [1e-3] * 4


def test_without_a_pretrained_encoder_there_is_one_group_and_nothing_freezes():
    config = TrainConfig(model=ModelConfig(backbone="eccv16", width=0.125), freeze_epochs=2)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    assert pretrained_encoder(model, config) is None and len(optimizer.param_groups) == 1
    scheduler = build_schedule(optimizer, config, 10)
    enter_stage(model, optimizer, scheduler, config, stage=1, epoch=0)
    assert all(p.requires_grad for p in model.parameters())
