"""Core attention for megatron-core's layer spec: xPos (or RoPE) on q and k, then PyTorch SDPA.

megatron-core's own RoPE and DotProductAttention call CUDA, so this module replaces both
(`position_embedding_type="none"` on the model): the same code runs on CPU in CI and picks the
flash / cuDNN / memory-efficient kernel on GPU. Those kernels accumulate QK^T and the softmax in
fp32, which is what FLM's `reorder_and_upcast_attn` asks for.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide
from torch.nn.attention import SDPBackend, sdpa_kernel

from flm.train.model.xpos import apply_rope, apply_xpos

SDPA_BACKENDS = {
    "auto": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
             SDPBackend.MATH],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "math": [SDPBackend.MATH],
}
"""SDPA kernels per `model.kernels.attention`, in priority order (auto: the fastest first on Hopper)."""


def attention_scale(head_dim: int, layer_number: int, *, mup: bool, inverse_layer_idx: bool) -> float:
    """1/d_head under μP (so attention logits stay O(1) as heads widen), else 1/sqrt(d_head);
    further divided by the 1-based layer index when FLM's scale_attn_by_inverse_layer_idx is on."""
    scale = 1.0 / head_dim if mup else 1.0 / math.sqrt(head_dim)
    return scale / layer_number if inverse_layer_idx else scale


def document_attention_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Causal mask that also blocks attention across documents packed into one row.

    A document starts wherever position_ids restarts at 0 (megatron's reset_position_ids). Returns
    megatron's convention: bool [batch, 1, seq, seq], True where attention is *not* allowed.
    """
    doc = (position_ids == 0).cumsum(dim=-1)  # [b, s]: document index of each token
    seq = position_ids.shape[-1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=position_ids.device).tril()
    allowed = causal & (doc[:, :, None] == doc[:, None, :])
    return ~allowed[:, None]


class FLMCoreAttention(MegatronModule):
    """Drop-in for megatron's DotProductAttention: inputs [s, b, heads, d] -> output [s, b, heads*d]."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
        *,
        position: Literal["xpos", "rope", "none"] = "xpos",
        rotary_base: float = 10000.0,
        xpos_scale_base: float = 512.0,
        mup: bool = False,
        inverse_layer_idx: bool = False,
        kernel: str = "auto",
        compiled: bool = False,
    ) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("FLMCoreAttention does not support context parallelism")
        tp = pg_collection.tp.size() if pg_collection is not None else config.tensor_model_parallel_size
        self.heads = divide(config.num_attention_heads, tp)
        self.kv_heads = divide(config.num_query_groups or config.num_attention_heads, tp)
        self.head_dim = config.kv_channels
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.position = position
        self.rotary_base = rotary_base
        self.xpos_scale_base = xpos_scale_base
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.scale = softmax_scale if softmax_scale is not None else attention_scale(
            self.head_dim, self.layer_number, mup=mup, inverse_layer_idx=inverse_layer_idx)
        self.backends = SDPA_BACKENDS[kernel]
        self.compiled = compiled

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("FLMCoreAttention takes no packed_seq_params or attention_bias; "
                                      "pass a document mask (document_attention_mask) instead")
        sq, sk = query.shape[0], key.shape[0]
        on_gpu = query.is_cuda
        # With a key cache (inference) q holds the newest sq of the sk positions.
        if self.position == "xpos":
            query, key = apply_xpos(query, key, offset=sk - sq, scale_base=self.xpos_scale_base,
                                    theta=self.rotary_base, compiled=self.compiled and on_gpu)
        elif self.position == "rope":
            query, key = apply_rope(query, key, offset=sk - sq, theta=self.rotary_base,
                                    compiled=self.compiled and on_gpu)

        mask, is_causal = self._mask(attention_mask, attn_mask_type or self.attn_mask_type, sq, sk, query.device)
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout = self.dropout if self.training else 0.0
        rng = tensor_parallel.get_cuda_rng_tracker().fork() if dropout > 0 and on_gpu else nullcontext()
        kernels = sdpa_kernel(self.backends, set_priority=True) if on_gpu else nullcontext()
        with rng, kernels:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
                                                 scale=self.scale, enable_gqa=self.kv_heads != self.heads)
        # [b, h, s, d] -> [s, b, h*d]
        return out.permute(2, 0, 1, 3).reshape(sq, out.shape[0], self.heads * self.head_dim)

    @staticmethod
    def _mask(attention_mask: torch.Tensor | None, mask_type: AttnMaskType, sq: int, sk: int,
              device: torch.device) -> tuple[torch.Tensor | None, bool]:
        """SDPA's (attn_mask, is_causal) from megatron's mask (True = blocked) and mask type."""
        if attention_mask is not None:
            return ~attention_mask, False
        if mask_type != AttnMaskType.causal or sq == 1:
            return None, False
        if sq == sk:
            return None, True
        # Queries are the last sq of sk positions: causal aligned to the bottom right.
        return torch.ones(sq, sk, dtype=torch.bool, device=device).tril(diagonal=sk - sq), False

