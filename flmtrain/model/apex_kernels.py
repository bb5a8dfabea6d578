"""apex's fused kernels written with torch, installed into megatron-core where it would fall back.

Without apex or Transformer Engine, megatron-core 0.16 replaces three apex kernels with slow code:
  - `multi_tensor_l2norm` (gradient norm): a `torch.norm` per tensor gathered with `torch.tensor(list)`,
    which waits on the GPU once per parameter (about 200 host syncs per step for a 24-layer model);
  - `multi_tensor_scale` (gradient clipping, main<->model copies): `dst.copy_(src * scale)` per tensor,
    two passes over every gradient;
  - `fused_weight_gradient_mlp_cuda` (weight-gradient accumulation into the fp32 main_grad): no fusion.
The stand-ins here do the same arithmetic with torch's multi-tensor (`_foreach_*`) kernels and a bf16 GEMM
that accumulates into fp32, so they change speed, not results.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch


def multi_tensor_l2norm(chunk_size: int, noop_flag: torch.Tensor, tensor_lists: list[list[torch.Tensor]],
                        per_tensor: bool, *args: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """apex's `amp_C.multi_tensor_l2norm`: the L2 norm over all tensors of tensor_lists[0] as a float32
    tensor of shape [1] (and the per-tensor norms if asked), with no host sync."""
    tensors = tensor_lists[0]
    if not tensors:
        return torch.zeros(1, dtype=torch.float32, device=noop_flag.device), None
    norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32))
    return torch.linalg.vector_norm(norms).reshape(1), norms if per_tensor else None


def multi_tensor_scale(chunk_size: int, noop_flag: torch.Tensor, tensor_lists: list[list[torch.Tensor]],
                       scale: float) -> None:
    """apex's `amp_C.multi_tensor_scale`: dst = src * scale for each pair (in place when src is dst)."""
    src, dst = tensor_lists
    if all(s is d for s, d in zip(src, dst, strict=True)):
        if scale != 1.0:
            torch._foreach_mul_(dst, scale)
        return
    torch._foreach_copy_(dst, src if scale == 1.0 else torch._foreach_mul(src, scale))


def multi_tensor_applier(op: Any, noop_flag: torch.Tensor, tensor_lists: list[list[torch.Tensor]],
                         *args: Any) -> Any:
    """apex's `multi_tensor_applier` (the chunk size only matters to apex's CUDA kernels)."""
    return op(0, noop_flag, tensor_lists, *args)


def install_multi_tensor_ops() -> bool:
    """Put the multi-tensor stand-ins into megatron's optimizer modules where they hold megatron's local
    fallbacks (apex or Transformer Engine, when installed, are left in place). Returns whether installed."""
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads, optimizer

    if clip_grads.l2_norm_impl is not utils.local_multi_tensor_l2_norm:
        return False
    for module in (clip_grads, optimizer):
        module.multi_tensor_applier = multi_tensor_applier
        module.multi_tensor_scale_impl = multi_tensor_scale
    clip_grads.l2_norm_impl = multi_tensor_l2norm
    return True


class TorchWgradAccumulation:
    """apex's fused_weight_gradient_mlp_cuda API in torch: main_grad += grad_output^T @ input, the bf16 GEMM
    accumulating straight into the fp32 gradient (megatron's gradient_accumulation_fusion calls these)."""

    @staticmethod
    def wgrad_gemm_accum_fp32(inputs: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
        torch.addmm(main_grad, grad_output.t(), inputs, out_dtype=torch.float32, out=main_grad)

    @staticmethod
    def wgrad_gemm_accum_fp16(inputs: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
        main_grad.addmm_(grad_output.t(), inputs)


@lru_cache(maxsize=1)
def wgrad_fusion_available() -> bool:
    """Whether megatron can fuse weight-gradient accumulation here: apex, or torch.addmm accumulating
    bf16 products into fp32 in place on this GPU (installed into megatron in its place when it works)."""
    from megatron.core.tensor_parallel import layers

    if layers._grad_accum_fusion_available:
        return True
    if not torch.cuda.is_available():
        return False
    g = torch.Generator(device="cuda").manual_seed(0)
    a, b = (torch.randn(64, 48, device="cuda", generator=g).to(torch.bfloat16) for _ in range(2))
    acc = torch.randn(48, 48, device="cuda", generator=g)
    expected = acc + a.float().t() @ b.float()
    try:
        TorchWgradAccumulation.wgrad_gemm_accum_fp32(b, a, acc)
    except (RuntimeError, TypeError):
        return False
    if not torch.allclose(acc, expected, rtol=1e-3, atol=1e-3):
        return False
    layers.fused_weight_gradient_mlp_cuda = TorchWgradAccumulation
    layers._grad_accum_fusion_available = True
    return True
