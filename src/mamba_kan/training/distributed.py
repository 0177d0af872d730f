"""Data-parallel training of one run with PyTorch's own stack (``torchrun`` + DDP).

Launch: ``torchrun --nproc_per_node=N -m mamba_kan train ...`` (NCCL on GPUs, gloo on CPU). Every rank builds the
same task and the same model from the same seed, draws the same *global* batch ``train_batch(step, batch_size)`` and
keeps its contiguous slice, so the data order is exactly that of a one-process run with the same global batch.
DDP averages gradients over ranks; :func:`loss_weight` rescales each rank's mean loss so that the average equals
the global-batch mean even when masked positions are spread unevenly across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mamba_kan.errors import UserError
from mamba_kan.tasks.base import Batch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> DistInfo:
    """Join the process group: an existing one (initialised by the caller), or one described by torchrun's
    environment (``WORLD_SIZE`` > 1), else a single process."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def teardown_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(batch: Batch, info: DistInfo) -> Batch:
    """This rank's contiguous slice of the global batch (dim 0 of every tensor)."""
    if not info.enabled:
        return batch
    n = batch.size
    if n % info.world_size:
        raise UserError(f"batch_size ({n}) must be divisible by the number of processes ({info.world_size})")
    k = n // info.world_size
    lo, hi = info.rank * k, (info.rank + 1) * k

    def cut(t: torch.Tensor) -> torch.Tensor:
        return t[lo:hi] if t.dim() > 0 and t.shape[0] == n else t

    return Batch(
        cut(batch.inputs),
        cut(batch.targets),
        None if batch.mask is None else cut(batch.mask),
        {key: cut(v) for key, v in batch.extra.items()},
    )


def loss_weight(global_batch: Batch, local_batch: Batch, info: DistInfo) -> float:
    """Factor for this rank's mean loss so that DDP's gradient average equals the gradient of the global mean.

    Global mean = sum_r n_r * mean_r / N; DDP computes (1/W) sum_r grad(w_r * mean_r), so w_r = W n_r / N.
    Without a mask every rank has n_r = N / W and w_r = 1.
    """
    if not info.enabled or global_batch.mask is None:
        return 1.0
    n_global = int(global_batch.mask.sum())
    n_local = int(local_batch.mask.sum()) if local_batch.mask is not None else 0
    return info.world_size * n_local / max(n_global, 1)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def all_reduce_min(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
