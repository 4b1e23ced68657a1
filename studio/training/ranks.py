"""What the ranks of a distributed training run do together: sums, barriers, a shared stop decision.

Every function works without a process group too (one rank): sums are the values themselves, the
barrier does nothing. In a distributed run every rank must call the collective ones (`sum_over_ranks`,
`any_rank`, `barrier`) at the same point, or the others wait for it forever.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """Return True when a `torch.distributed` process group of more than one rank is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """Return (this rank, number of ranks); (0, 1) when not distributed."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def sum_over_ranks(*values: float) -> list[float]:
    """Return each value summed over all ranks (the values themselves when not distributed)."""
    if not is_distributed():
        return list(values)
    # float64: token counts stay exact far beyond any dataset size.
    totals = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == dist.Backend.NCCL:
        totals = totals.cuda()
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return [float(v) for v in totals.cpu().tolist()]


def sum_tensor_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Return `tensor` (on the CPU) summed element-wise over all ranks (itself when not distributed)."""
    if not is_distributed():
        return tensor
    total = tensor.cuda() if dist.get_backend() == dist.Backend.NCCL else tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()


def any_rank(flag: bool) -> bool:
    """Return True when `flag` is True on at least one rank (every rank must call this together)."""
    if not is_distributed():
        return flag
    (count,) = sum_over_ranks(1.0 if flag else 0.0)
    return count > 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap(model: nn.Module) -> Any:
    """Return the model inside a DDP wrapper (`model` itself when it is not wrapped)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def max_over_ranks(value: int) -> int:
    """Return the largest `value` of all ranks (itself when not distributed)."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == dist.Backend.NCCL:
        total = total.cuda()
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return int(total.item())


def lockstep_rounds(batches: int, *, sharded: bool) -> int:
    """Return how many forwards this rank runs for its `batches`: as many as the busiest rank when sharded.

    Every forward of an FSDP model gathers parameters from all ranks, so a rank with fewer batches
    (an uneven evaluation split) runs extra forwards whose results it drops, or the others would wait.
    """
    return max_over_ranks(batches) if sharded else batches
