"""Float8 GEMMs for the transformer layers' linears (`model.precision: fp8`), on `torch._scaled_mm`.

The four linears of every layer (QKV, attention output, FFN in and out) run forward, data gradient and
weight gradient in float8; embedding, output head, norms, attention and the optimizer are untouched, and
weights, their gradients and tensor-parallel communication stay bf16 / fp32.

Scaling: per-tensor *current* scaling. Each GEMM operand is scaled by 2**floor(log2(fmax / amax)) of the
tensor it is cast from, at the moment it is cast, so the largest element lands in the top binade of the
format: activations and weights in e4m3 (3 mantissa bits, max 448), output gradients in e5m2 (2 mantissa
bits but up to 57344, for their wider spread). Why per-tensor: cuBLAS's per-tensor fp8 GEMM is the fastest
on Hopper, and the weight gradient contracts over tokens, so a row-wise scale per token would have to be
recomputed along the other axis from a bf16 copy (a second cast of every operand); current rather than
delayed scaling: nothing to keep between steps (so checkpoints, resume and growth see no fp8 state) and
no overflow when a tensor's range jumps. Scales are powers of two, so scaling and unscaling are exact and
only the float8 rounding itself loses bits.

`_scaled_mm` wants both operands K-major (the contracted dimension contiguous), so each cast writes the
tensor and its transpose in one pass: x and x^T for the forward and the weight gradient,
W and W^T for the forward and the data gradient, dY and dY^T for the data and weight gradients. Only the
float8 copies are saved for the backward (half the bytes of megatron's bf16 input).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from flm.train.config import ModelConfig

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
MIN_CAPABILITY = (8, 9)
"""float8 tensor cores: Ada (8.9) and Hopper (9.0) and later."""
ALIGN = 16
"""`_scaled_mm` needs the contracted and output dimensions to be multiples of 16."""


class Fp8Unavailable(RuntimeError):
    """float8 GEMMs asked for where the hardware has none."""


def check_fp8_device(device: torch.device | str) -> None:
    """Refuse float8 training on a CPU or a GPU below compute capability 8.9, naming what was found."""
    device = torch.device(device)
    if device.type != "cuda":
        raise Fp8Unavailable(f"model.precision: fp8 needs an NVIDIA GPU with float8 tensor cores (compute "
                             f"capability >= 8.9: Ada, Hopper or later); this run is on the {device.type.upper()}. "
                             "Set model.precision: default to train in train.precision.")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < MIN_CAPABILITY:
        raise Fp8Unavailable(f"model.precision: fp8 needs compute capability >= 8.9 (Ada, Hopper or later); "
                             f"{torch.cuda.get_device_name(device)} has {major}.{minor}. "
                             "Set model.precision: default to train in train.precision.")


def readable_model(cfg: ModelConfig, device: torch.device | str) -> ModelConfig:
    """The model config to read a checkpoint with on `device` (eval, generate, proposition scoring).

    fp8 decides only how the layers' GEMMs compute; the weights it trains are ordinary ones. So a checkpoint
    trained in fp8 is read with the usual GEMMs wherever float8 is unavailable (a CPU, an older GPU), instead of
    being refused there: a checkpoint reads anywhere. Training in fp8 on such a device is still refused."""
    if cfg.precision != "fp8":
        return cfg
    try:
        check_fp8_device(device)
    except Fp8Unavailable:
        return replace(cfg, precision="default")
    return cfg


def check_fp8_shapes(**dims: int) -> None:
    """Refuse GEMM dimensions that `_scaled_mm` cannot take (each must be a multiple of 16)."""
    bad = {k: v for k, v in dims.items() if v % ALIGN}
    if bad:
        raise ValueError("model.precision: fp8 needs every linear's input and output size to be a multiple of "
                         f"{ALIGN} (per tensor-parallel rank); not: "
                         + ", ".join(f"{k} = {v}" for k, v in bad.items()))


# ------------------------------------------------------------------------------------------- scaling


def fp8_scale(amax: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The power-of-two factor that brings `amax` into the top binade of `dtype` (fp32 scalar).

    amax 0 gives a large finite scale (the tensor stays 0); amax inf or NaN gives 0 or NaN, so a non-finite
    input makes a non-finite product (the trainer's bad-step check sees it) instead of being clipped away.
    """
    fmax = torch.finfo(dtype).max
    ratio = fmax / amax.float().clamp(min=2.0**-100)
    return torch.exp2(torch.floor(torch.log2(ratio)))


def quantize_reference(x: torch.Tensor, dtype: torch.dtype, transpose: bool
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`quantize` in plain torch: what runs on the CPU, and what the GPU kernels are checked against."""
    scale = fp8_scale(x.abs().amax(), dtype)
    fmax = torch.finfo(dtype).max
    y = (x.float() * scale).clamp(-fmax, fmax).to(dtype)
    return y, (y.t().contiguous() if transpose else None), scale.reciprocal()


def quantize(x: torch.Tensor, dtype: torch.dtype = E4M3, *, transpose: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Cast a 2-D tensor to float8 with its current per-tensor scale.

    Returns (x8, x8 transposed and contiguous if asked, inverse scale): x ~= x8.float() * inverse scale.
    Values beyond the format's range saturate at its largest finite value (after scaling only rounding
    can push one there). On CUDA two Triton kernels (flm.train.model.fp8_cast) do the same arithmetic.
    """
    if x.is_cuda:
        from flm.train.model.fp8_cast import cast

        return cast(x, dtype, transpose)
    return quantize_reference(x, dtype, transpose)


def dequantize(x8: torch.Tensor, inv_scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The values a float8 tensor and its inverse scale stand for."""
    return (x8.float() * inv_scale).to(dtype)


# --------------------------------------------------------------------------------------------- GEMMs


def _mm(a8: torch.Tensor, b8_t: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor, out_dtype: torch.dtype,
        fast: bool) -> torch.Tensor:
    """a [M, K] (row-major) @ b [K, N] where `b8_t` is b transposed and contiguous ([N, K]), unscaled."""
    return torch._scaled_mm(a8, b8_t.t(), scale_a=sa, scale_b=sb, out_dtype=out_dtype, use_fast_accum=fast)


def _pad_tokens(t8: torch.Tensor, multiple: int = ALIGN) -> torch.Tensor:
    """Zero-pad the last (token) dimension of a transposed float8 operand for the weight gradient's GEMM,
    whose contracted dimension is the token count (zeros add nothing to the sum)."""
    extra = -t8.shape[-1] % multiple
    if not extra:
        return t8
    out = torch.zeros(t8.shape[0], t8.shape[1] + extra, dtype=t8.dtype, device=t8.device)
    out[:, : t8.shape[1]].copy_(t8)
    return out


class Fp8LinearFunction(torch.autograd.Function):
    """y = x W^T (+ b) with float8 GEMMs each way, megatron's tensor-parallel communication in bf16.

    The arguments after `bias` mirror megatron's `LinearWithGradAccumulationAndAsyncCommunication`:
    `main_grad_fusion` adds the weight gradient into `weight.main_grad` (fp32) in the backward,
    `allreduce_dgrad` all-reduces the input gradient over `tp_group`, `sequence_parallel` all-gathers the
    input along the sequence first and reduce-scatters its gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, main_grad_fusion: bool,
                allreduce_dgrad: bool, sequence_parallel: bool, tp_group: Any, need_backward: bool) -> torch.Tensor:
        if sequence_parallel:
            full = torch.empty((x.shape[0] * tp_group.size(), *x.shape[1:]), dtype=x.dtype, device=x.device)
            dist.all_gather_into_tensor(full, x.contiguous(), group=tp_group)
            x = full
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        x8, x8_t, sx = quantize(x2, E4M3, transpose=need_backward)
        w8, w8_t, sw = quantize(weight, E4M3, transpose=need_backward)
        out = torch._scaled_mm(x8, w8.t(), scale_a=sx, scale_b=sw, out_dtype=x.dtype, use_fast_accum=True)
        if bias is not None:
            out = out + bias
        if need_backward:
            ctx.save_for_backward(x8_t, sx, w8_t, sw)
            ctx.weight = weight
            ctx.main_grad = weight.main_grad if main_grad_fusion and hasattr(weight, "main_grad") else None
            ctx.has_bias = bias is not None
            ctx.allreduce_dgrad, ctx.sequence_parallel, ctx.tp_group = allreduce_dgrad, sequence_parallel, tp_group
            ctx.lead, ctx.dtype = lead, x.dtype
        return out.reshape(*lead, out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x8_t, sx, w8_t, sw = ctx.saved_tensors
        weight = ctx.weight
        g = grad_out.reshape(-1, grad_out.shape[-1])
        g8, g8_t, sg = quantize(g, E5M2, transpose=True)
        grad_in = _mm(g8, w8_t, sg, sw, ctx.dtype, fast=False).reshape(*ctx.lead, w8_t.shape[0])
        handle = None
        if ctx.sequence_parallel:
            group = ctx.tp_group
            shard = torch.empty((grad_in.shape[0] // group.size(), *grad_in.shape[1:]), dtype=grad_in.dtype,
                                device=grad_in.device)
            handle = dist.reduce_scatter_tensor(shard, grad_in.contiguous(), group=group, async_op=True)
            grad_in = shard
        elif ctx.allreduce_dgrad:
            handle = dist.all_reduce(grad_in, group=ctx.tp_group, async_op=True)
        grad_b = g.sum(0, dtype=torch.float32).to(g.dtype) if ctx.has_bias else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(ctx, weight, g8_t, sg, x8_t, sx)
        if handle is not None:
            handle.wait()
        return grad_in, grad_w, grad_b, None, None, None, None, None


def _weight_grad(ctx: Any, weight: torch.Tensor, g8_t: torch.Tensor, sg: torch.Tensor, x8_t: torch.Tensor,
                 sx: torch.Tensor) -> torch.Tensor | None:
    """dW = dY^T x in float8 (fp32 out): added into main_grad when fused, else returned in the weight's dtype."""
    grad_w = _mm(_pad_tokens(g8_t), _pad_tokens(x8_t), sg, sx, torch.float32, fast=False)
    if ctx.main_grad is not None:
        weight.main_grad = ctx.main_grad
        ctx.main_grad.add_(grad_w)
        # as megatron's own linear does: a placeholder gradient keeps DDP's hooks on the main thread, and
        # grad_added_to_main_grad tells them the gradient is in main_grad already
        if not hasattr(weight, "grad_added_to_main_grad"):
            return None
        weight.grad_added_to_main_grad = True
        return torch.empty(weight.main_grad.shape, dtype=ctx.dtype, device=grad_w.device)
    return grad_w.to(weight.dtype)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
               main_grad_fusion: bool = False, allreduce_dgrad: bool = False, sequence_parallel: bool = False,
               tp_group: Any = None) -> torch.Tensor:
    """F.linear(x, weight, bias) with float8 GEMMs (see Fp8LinearFunction)."""
    need_backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    return Fp8LinearFunction.apply(x, weight, bias, main_grad_fusion, allreduce_dgrad, sequence_parallel, tp_group,
                                   need_backward)
