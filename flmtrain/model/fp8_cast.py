"""Triton kernels for float8 casts on the GPU: the tensor's amax, then the cast and its transpose in one pass.

Per-tensor current scaling needs the whole tensor's amax before any element is cast, so each cast reads
its input twice; this keeps it at that floor (2 reads of the bf16 input, 1 or 2 one-byte writes): one
reduction kernel with an atomic max, and one tiled kernel that computes the power-of-two scale from the
amax on the device (no host sync), writes the float8 tensor and, when asked, its transpose (from
registers, so the input is not read a third time) and the inverse scale. torch.compile's code for the same
arithmetic read the input three times and ran at 1-2 TB/s (bench/NOTES-train-speed.md).

Imported only where a CUDA tensor is cast (Triton is not needed on the CPU); flm.train.model.fp8 holds the
same arithmetic in torch as the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

AMAX_BLOCK = 8192
TILE_M, TILE_N = 64, 128


@triton.jit
def _amax_kernel(x_ptr, amax_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.atomic_max(amax_ptr, tl.max(tl.abs(x), axis=0))


@triton.jit
def _cast_kernel(x_ptr, y_ptr, yt_ptr, amax_ptr, inv_ptr, m, n, fmax, TRANSPOSE: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr):
    amax = tl.maximum(tl.load(amax_ptr), 1e-30)
    scale = tl.exp2(tl.floor(tl.log2(fmax / amax)))
    rows = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    cols = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    mask = (rows[:, None] < m) & (cols[None, :] < n)
    x = tl.load(x_ptr + rows[:, None] * n + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.clamp(x * scale, -fmax, fmax)
    tl.store(y_ptr + rows[:, None] * n + cols[None, :], y.to(y_ptr.dtype.element_ty, fp_downcast_rounding="rtne"),
             mask=mask)
    if TRANSPOSE:
        tl.store(yt_ptr + cols[:, None] * m + rows[None, :],
                 tl.trans(y).to(yt_ptr.dtype.element_ty, fp_downcast_rounding="rtne"),
                 mask=(cols[:, None] < n) & (rows[None, :] < m))
    if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
        tl.store(inv_ptr, 1.0 / scale)


def amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a float32 scalar on x's device (NaN-free inputs; NaNs reach the cast and stay NaN there)."""
    out = torch.zeros((), dtype=torch.float32, device=x.device)
    n = x.numel()
    _amax_kernel[(triton.cdiv(n, AMAX_BLOCK),)](x, out, n, BLOCK=AMAX_BLOCK, num_warps=8)
    return out


def cast(x: torch.Tensor, dtype: torch.dtype, transpose: bool) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                       torch.Tensor]:
    """(x8, x8 transposed or None, inverse scale) of a contiguous 2-D CUDA tensor, as fp8.quantize defines them."""
    x = x.contiguous()
    m, n = x.shape
    a = amax(x)
    y = torch.empty((m, n), dtype=dtype, device=x.device)
    yt = torch.empty((n, m), dtype=dtype, device=x.device) if transpose else y
    inv = torch.empty((), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(m, TILE_M), triton.cdiv(n, TILE_N))
    _cast_kernel[grid](x, y, yt, a, inv, m, n, torch.finfo(dtype).max, TRANSPOSE=transpose, BM=TILE_M, BN=TILE_N,
                       num_warps=8)
    return y, (yt if transpose else None), inv
