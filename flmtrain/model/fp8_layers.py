"""megatron-core's parallel linears with their GEMMs in float8 (flm.train.model.fp8), for the layer spec.

The subclasses replace only `_forward_impl`, the call megatron makes for the matrix multiply: weights,
initialisation, sharded state dicts, sequence/tensor-parallel wiring and forward hooks (growth masks)
are megatron's own, so checkpoints and growth do not see a difference.
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

from flm.train.model.fp8 import fp8_linear


def _megatron_forward_impl(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           gradient_accumulation_fusion: bool, allreduce_dgrad: bool, sequence_parallel: bool,
                           tp_group: Any = None, grad_output_buffer: Any = None, wgrad_deferral_limit: Any = None,
                           **_: Any) -> torch.Tensor:
    """megatron's `linear_with_grad_accumulation_and_async_allreduce`, float8 (no deferred embedding wgrad:
    these are the layers' linears, never the embedding's)."""
    if tp_group is None and (allreduce_dgrad or sequence_parallel):
        tp_group = parallel_state.get_tensor_model_parallel_group()
    return fp8_linear(input, weight, bias, main_grad_fusion=gradient_accumulation_fusion,
                      allreduce_dgrad=allreduce_dgrad, sequence_parallel=sequence_parallel, tp_group=tp_group)


class Fp8ColumnParallelLinear(ColumnParallelLinear):
    """megatron's ColumnParallelLinear (QKV, FFN in) with its GEMMs in float8."""

    def _forward_impl(self, input: torch.Tensor, weight: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _megatron_forward_impl(input, weight, *args, **kwargs)


class Fp8RowParallelLinear(RowParallelLinear):
    """megatron's RowParallelLinear (attention output, FFN out) with its GEMMs in float8."""

    def _forward_impl(self, input: torch.Tensor, weight: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return _megatron_forward_impl(input, weight, *args, **kwargs)

