"""Data-parallel training under ``torchrun``: this process's rank, world size and device.

Without torchrun a run is one process of rank 0 in a world of 1. Under torchrun every process
trains on its own share of each global batch (gloo on CPUs, nccl on GPUs) and only rank 0
writes files; the others wait for it where they read what it wrote (:func:`barrier`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group (nccl on GPUs, gloo on CPUs) when
    launched by torchrun, even for one process, so one GPU exercises the multi-GPU path."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    cuda = torch.cuda.is_available()
    if cuda:  # before the process group, so nccl binds this process to its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        return rank, world, torch.device("cuda", torch.cuda.current_device())
    return rank, world, torch.device("cpu")


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if dist.is_initialized():
        dist.barrier()
