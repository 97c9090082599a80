"""Where a run executes: the device, and its place in a torchrun job (DDP)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from focalbench.errors import InputError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "train.device=cuda but CUDA is not available here; choose from ['auto', 'cpu']"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def setup_dist(device_name: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the process group (NCCL on GPUs, gloo on the
    CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world == 1:
        return Dist(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(device, torch.distributed.get_rank(), world)


def wrap(model: nn.Module, dist: Dist) -> nn.Module:
    """The module the steps run: model itself, or its DistributedDataParallel wrapper."""
    if dist.world == 1:
        return model
    device = dist.device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
