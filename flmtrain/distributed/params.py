"""The whole model's parameter count from inside any tensor/pipeline-parallel layout."""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def whole_model_params(module: torch.nn.Module) -> int:
    """Parameters of the whole model, as one process holding all of it would count them.

    Each rank of a tensor/pipeline-parallel group holds only its share: tensor-parallel weights are split
    (every TP rank counts its slice), replicated ones (norms, biases of row-parallel layers) are counted by
    TP rank 0 only, and the last pipeline stage's copy of a tied embedding (megatron marks it `shared`) is
    not counted at all; the shares are then summed over the model-parallel group."""
    model_parallel = parallel_state.model_parallel_is_initialized() and dist.is_initialized()
    tp_rank = parallel_state.get_tensor_model_parallel_rank() if model_parallel else 0
    local = sum(p.numel() for p in module.parameters()
                if not getattr(p, "shared", False)
                and (getattr(p, "tensor_model_parallel", False) or tp_rank == 0))
    if not model_parallel or dist.get_world_size(parallel_state.get_model_parallel_group()) == 1:
        return local
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    total = torch.tensor([local], dtype=torch.int64, device=device)
    dist.all_reduce(total, group=parallel_state.get_model_parallel_group())
    return int(total.item())
