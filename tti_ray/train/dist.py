"""Data-parallel plumbing shared by the training loop and evaluation.

One code path serves 1 and N workers (EleutherAI sparsify's ``maybe_all_reduce`` pattern): each
helper here does nothing unless ``torch.distributed`` is initialised with more than one worker
(the Ray Train glue initialises it), so ``loop`` and ``evaluate`` never branch on the world size
for a collective.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and device of this worker (1 worker: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @classmethod
    def detect(cls, device: torch.device | None = None) -> DistInfo:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device)
        return cls(0, 1, device)


def distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one worker."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def maybe_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the workers, in place, and return it; unchanged on one worker."""
    if distributed():
        dist.all_reduce(x)
    return x


def maybe_barrier() -> None:
    """Wait for every worker (e.g. until rank 0 has written a checkpoint); no-op on one worker."""
    if distributed():
        dist.barrier()


def any_worker(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any worker. Every rank must take the same branch before the
    next collective, or that collective hangs."""
    if not distributed():
        return flag  # one worker: no tensor and no host sync per step
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(maybe_all_reduce(t).item() > 0)


def maybe_ddp(
    module: nn.Module, device: torch.device, *, find_unused_parameters: bool
) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when data-parallel, else ``module``."""
    if not distributed():
        return module
    return nn.parallel.DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def maybe_no_sync(module: nn.Module, *, sync: bool) -> AbstractContextManager[Any]:
    """The context of one micro-batch's forward/backward: DDP's ``no_sync`` unless ``sync`` (the
    last micro-batch of a step), so gradients are all-reduced once per optimizer step; a no-op
    for an unwrapped module."""
    if sync or not isinstance(module, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return module.no_sync()
