"""The few collectives the loop and evaluation need, written so they also work with no process group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def data_parallel() -> tuple[int, int]:
    """(rank, size) of this process in its data-parallel group."""
    if parallel_state.model_parallel_is_initialized():
        return parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    return rank(), world_size()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum floats over every rank (NaN anywhere stays NaN everywhere, so all ranks decide alike)."""
    if world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_tensor(values: list[torch.Tensor | float]) -> torch.Tensor:
    """Sum scalars over every rank in one collective, on the device the tensors among them live on, without reading
    them on the host: the caller reads the result when it needs it (one wait instead of one per value)."""
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), None)
    # A float becomes a fill kernel on the device, not a host-to-device copy.
    tensor = torch.stack([v.float().reshape(()) if isinstance(v, torch.Tensor)
                          else torch.full((), v, dtype=torch.float32, device=device) for v in values])
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor
