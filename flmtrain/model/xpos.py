"""xPos (Sun et al. 2022, "A Length-Extrapolatable Transformer") and plain RoPE for q and k.

xPos rotates q and k like RoPE and multiplies dimension pair j of the query at position n by
zeta_j ** (n / scale_base) and of the key at position m by zeta_j ** (-m / scale_base), with
zeta_j = (2j/d + 0.4) / 1.4 < 1. The score q_n . k_m then depends only on n - m, and for n > m it
decays like zeta ** ((n - m) / scale_base): attention fades with distance, which is what lets the
model extrapolate beyond its training length.

Only n - m matters, so the exponent is taken relative to a centre position (the middle of the span
as torchscale does): that halves the largest exponent and keeps zeta ** x far from under/overflow
for long sequences. For generation, q holds the newest positions and k all positions so far; both
share the span [0, offset + len(q)) and so the same centre (cache keys before xPos, as torchscale
and megatron's inference path do with position_embedding_type="none").

Layout: tensors are [seq, batch, heads, head_dim] (megatron's), pairs are (x[j], x[j + d/2])
("rotate half", as megatron and GPT-NeoX lay them out).
"""

from __future__ import annotations

from functools import lru_cache

import torch

XPOS_GAMMA = 0.4
"""zeta_j = (2j/d + gamma) / (1 + gamma), the paper's (and torchscale's) choice."""


@lru_cache(maxsize=64)
def _tables(total: int, head_dim: int, theta: float, scale_base: float | None,
            device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos/sin tables for q and k over positions [0, total), shaped [total, 1, 1, head_dim].

    Built once per (length, device, dtype) in float64 on the CPU, then cast: the angles stay exact
    for long sequences and the cost is paid once.
    """
    half = head_dim // 2
    pos = torch.arange(total, dtype=torch.float64)
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / head_dim)
    angles = torch.outer(pos, inv_freq)
    cos, sin = angles.cos(), angles.sin()
    if scale_base is None:
        cos_q = cos_k = torch.cat([cos, cos], dim=-1)
        sin_q = sin_k = torch.cat([sin, sin], dim=-1)
    else:
        zeta = (torch.arange(half, dtype=torch.float64) * 2 / head_dim + XPOS_GAMMA) / (1 + XPOS_GAMMA)
        centre = total // 2
        scale = zeta ** ((pos - centre)[:, None] / scale_base)  # [total, half]
        cos_q, sin_q = torch.cat([cos * scale] * 2, dim=-1), torch.cat([sin * scale] * 2, dim=-1)
        cos_k, sin_k = torch.cat([cos / scale] * 2, dim=-1), torch.cat([sin / scale] * 2, dim=-1)
    return tuple(t[:, None, None, :].to(device=device, dtype=dtype) for t in (cos_q, sin_q, cos_k, sin_k))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _rotate(q: torch.Tensor, k: torch.Tensor, cos_q: torch.Tensor, sin_q: torch.Tensor, cos_k: torch.Tensor,
            sin_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q * cos_q + _rotate_half(q) * sin_q, k * cos_k + _rotate_half(k) * sin_k


_rotate_compiled = torch.compile(_rotate)
"""The same rotation as one fused kernel per direction (GPU; compiled at first use)."""


def _apply(q: torch.Tensor, k: torch.Tensor, offset: int, theta: float,
           scale_base: float | None, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    sq, sk, head_dim = q.shape[0], k.shape[0], q.shape[-1]
    if head_dim % 2 or k.shape[-1] != head_dim:
        raise ValueError(f"head_dim must be even and equal for q and k, got {head_dim} and {k.shape[-1]}")
    total = offset + sq
    if offset < 0 or sk > total:
        raise ValueError(f"keys ({sk}) must cover at most the span [0, offset + len(q)) = [0, {total})")
    cos_q, sin_q, cos_k, sin_k = _tables(total, head_dim, float(theta),
                                         None if scale_base is None else float(scale_base), q.device, q.dtype)
    rotate = _rotate_compiled if compiled else _rotate
    return rotate(q, k, cos_q[offset:], sin_q[offset:], cos_k[total - sk:], sin_k[total - sk:])


def apply_xpos(q: torch.Tensor, k: torch.Tensor, offset: int = 0, scale_base: float = 512,
               theta: float = 10000.0, *, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate and scale q and k ([seq, batch, heads, head_dim]) with xPos.

    q holds positions [offset, offset + len(q)); k holds the last len(k) positions of
    [0, offset + len(q)) (the same positions as q when the lengths are equal). `compiled` runs
    the rotation through torch.compile (one kernel instead of about ten).
    """
    return _apply(q, k, offset, theta, scale_base, compiled)


def apply_rope(q: torch.Tensor, k: torch.Tensor, offset: int = 0, theta: float = 10000.0, *,
               compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain rotary embedding (Su et al. 2021) with the same layout and position rules as apply_xpos."""
    return _apply(q, k, offset, theta, None, compiled)
