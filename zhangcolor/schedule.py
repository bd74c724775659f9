"""What trains, and at which learning rate, when: the optimizer, its schedule and the stages.

- Adam over two parameter groups: the decoder and head at lr, and a pretrained U-Net encoder
  at lr × ``finetune_lr_factor``.
- The learning rate follows a cosine from lr to 0 over the run's steps, or stays constant.
- Two stages: the pretrained encoder frozen for ``freeze_epochs``, then fine-tuned. Three: the
  decoder at lr, then at lr × ``stage_lr_factor``, then the whole network; the loop moves on
  to the next stage when the validation stops improving.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zhangcolor.models import unwrap
from zhangcolor.options import TrainConfig


def pretrained_encoder(model: nn.Module, config: TrainConfig) -> nn.Module | None:
    """The pretrained encoder of a U-Net, which the staged schedules freeze first."""
    if config.model.backbone != "unet" or not config.model.pretrained:
        return None
    return unwrap(model).backbone.encoder


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over two groups: the rest (decoder and head), then the pretrained encoder."""
    encoder = pretrained_encoder(model, config)
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    rest = [p for p in model.parameters() if id(p) not in encoder_ids]
    groups = [{"params": rest, "lr": config.lr}]
    if encoder is not None:
        groups.append(
            {"params": list(encoder.parameters()), "lr": config.lr * config.finetune_lr_factor}
        )
    return torch.optim.Adam(groups, betas=config.betas, weight_decay=config.weight_decay)


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate's factor per step: a cosine from 1 to 0 over ``total_steps``, or 1."""
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def enter_stage(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    config: TrainConfig,
    *,
    stage: int,
    epoch: int,
) -> None:
    """Freeze or unfreeze the pretrained encoder and, with three stages, set each group's
    learning rate for ``stage`` (two stages follow ``epoch`` instead)."""
    if config.stages == 3:
        frozen = stage < 3
        decoder_lr = config.lr * (config.stage_lr_factor if stage >= 2 else 1.0)
        bases = [decoder_lr, config.lr * config.finetune_lr_factor][: len(optimizer.param_groups)]
        scheduler.base_lrs = bases
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        for group, base in zip(optimizer.param_groups, bases, strict=True):
            group["lr"] = base * factor
    else:
        frozen = epoch < config.freeze_epochs
    encoder = pretrained_encoder(model, config)
    if encoder is not None:
        encoder.requires_grad_(not frozen)
    if config.model.hints and config.hints.freeze_automatic:
        # Only the layers that take the points train: without points, the network stays the
        # automatic one it started from.
        for name, parameter in unwrap(model).named_parameters():
            parameter.requires_grad_(is_hint_layer(name))


def is_hint_layer(name: str) -> bool:
    """Whether a parameter belongs to the layers that take a user's points (a U-Net's hint
    branches)."""
    return ".hint_" in f".{name}"
