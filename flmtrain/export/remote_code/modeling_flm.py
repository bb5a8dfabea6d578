"""The FLM decoder as a transformers model (loaded from an `flm export` directory as remote code).

It computes the same function as flm's megatron-core model (flmtrain/model.py), in plain torch:
- input embeddings times `embedding_multiplier` (μP);
- per layer, pre-norm attention then pre-norm MLP, each added to the residual stream;
- attention: q/k/v projections (grouped-query when num_key_value_heads < num_attention_heads),
  xPos or RoPE on q and k with the rotate-half pairing (x[j], x[j + d/2]), causal softmax attention
  scaled by 1/head_dim under μP (else 1/sqrt(head_dim)), divided by the 1-based layer index when
  scale_attn_by_inverse_layer_idx is on;
- final norm, hidden state times `logit_multiplier` (μP), output head (the embedding when tied).

xPos scales q at position n by zeta ** ((n - c) / scale_base) and k at m by zeta ** (-(m - c) / scale_base),
so scores depend on n - m only; c is the middle of the window (flm's convention), which keeps the powers
small for long windows. Positions are the indices of the window, also under a padding mask: the encoding
is relative, so left padding shifts nothing but rounding.

There is no KV cache: `generate()` recomputes the forward pass over the whole window (at most
max_position_embeddings tokens, the newest kept) for each new token. That is exact and simple, and fast
enough for the small models and short continuations this export is meant for.

This file imports only torch and transformers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from .configuration_flm import FLMConfig

XPOS_GAMMA = 0.4
"""zeta_j = (2j/d + gamma) / (1 + gamma), as in the xPos paper and flm."""


@lru_cache(maxsize=32)
def rotary_tables(total: int, head_dim: int, theta: float, scale_base: float | None, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos/sin for q and for k at positions [0, total), each [total, head_dim]; built in float64, then cast.

    Without `scale_base` this is plain RoPE (q and k share the tables).
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
        scale = zeta ** ((pos - total // 2)[:, None] / scale_base)
        cos_q, sin_q = torch.cat([cos * scale] * 2, dim=-1), torch.cat([sin * scale] * 2, dim=-1)
        cos_k, sin_k = torch.cat([cos / scale] * 2, dim=-1), torch.cat([sin / scale] * 2, dim=-1)
    return tuple(t.to(device=device, dtype=dtype) for t in (cos_q, sin_q, cos_k, sin_k))  # type: ignore[return-value]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def make_norm(config: FLMConfig) -> nn.Module:
    if config.norm_type == "rmsnorm":
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class FLMAttention(nn.Module):
    def __init__(self, config: FLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                    config.head_dim)
        hidden, bias = config.hidden_size, config.use_bias
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)
        scale = 1.0 / self.head_dim if config.mup_attention_scale else 1.0 / math.sqrt(self.head_dim)
        self.scale = scale / (layer_idx + 1) if config.scale_attn_by_inverse_layer_idx else scale
        self.position = config.position_embedding
        self.theta = float(config.rotary_base)
        self.scale_base = float(config.xpos_scale_base) if self.position == "xpos" else None
        self.dropout = config.attention_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [batch, seq, hidden]; mask bool [batch, 1, seq, seq], True where attention is allowed (None: causal)."""
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.position != "none":
            cos_q, sin_q, cos_k, sin_k = rotary_tables(s, self.head_dim, self.theta, self.scale_base, q.device,
                                                       q.dtype)
            q, k = q * cos_q + rotate_half(q) * sin_q, k * cos_k + rotate_half(k) * sin_k
        if self.kv_heads != self.heads:  # query head i reads key/value head i // (heads / kv_heads)
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))


class FLMMLP(nn.Module):
    def __init__(self, config: FLMConfig) -> None:
        super().__init__()
        hidden, ffn, bias = config.hidden_size, config.intermediate_size, config.use_bias
        self.gated = config.hidden_act == "swiglu"
        if self.gated:
            self.gate_proj = nn.Linear(hidden, ffn, bias=bias)
        self.up_proj = nn.Linear(hidden, ffn, bias=bias)
        self.down_proj = nn.Linear(ffn, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class FLMDecoderLayer(nn.Module):
    def __init__(self, config: FLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = make_norm(config)
        self.self_attn = FLMAttention(config, layer_idx)
        self.post_attention_layernorm = make_norm(config)
        self.mlp = FLMMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = h + self.dropout(self.self_attn(self.input_layernorm(h), mask))
        return h + self.dropout(self.mlp(self.post_attention_layernorm(h)))


class FLMPreTrainedModel(PreTrainedModel):
    config_class = FLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["FLMDecoderLayer"]
    _supports_sdpa = True


def attention_mask_4d(attention_mask: torch.Tensor | None, seq: int) -> torch.Tensor | None:
    """Causal mask combined with a [batch, seq] padding mask (1 = token, 0 = padding), True = may attend.

    Every query may attend to itself, so a padding query's softmax stays finite (its output is unused).
    None when there is no padding: plain causal attention.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    causal = torch.ones(seq, seq, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal & attention_mask.bool()[:, None, None, :]
    return allowed | torch.eye(seq, dtype=torch.bool, device=attention_mask.device)


class FLMModel(FLMPreTrainedModel):
    """Embeddings, decoder layers and the final norm; returns the final hidden states (before the logit multiplier)."""

    def __init__(self, config: FLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(FLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = make_norm(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, return_dict: bool | None = None,
                **kwargs: Any) -> BaseModelOutput | tuple[torch.Tensor]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        h = self.dropout(inputs_embeds * self.config.embedding_multiplier)
        mask = attention_mask_4d(attention_mask, h.shape[1])
        for layer in self.layers:
            h = layer(h, mask)
        h = self.norm(h)
        if return_dict is False:
            return (h,)
        return BaseModelOutput(last_hidden_state=h)


class FLMForCausalLM(FLMPreTrainedModel, GenerationMixin):
    """FLM with its output head. `forward(input_ids, attention_mask=None, labels=None)` -> CausalLMOutput.

    With `labels`, the loss is the mean cross-entropy of logits[:, :-1] against labels[:, 1:] (the shift
    happens here, as in every transformers causal LM), ignoring label -100.
    """

    def __init__(self, config: FLMConfig) -> None:
        super().__init__(config)
        self.model = FLMModel(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module | None:
        """The separate output head; None when tied (the logits are computed with the input embedding)."""
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                return_dict: bool | None = None, **kwargs: Any) -> CausalLMOutput | tuple[torch.Tensor, ...]:
        h = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)[0]
        h = h * self.config.logit_multiplier
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(h, weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """The whole window each step (no cache): the newest max_position_embeddings tokens."""
        window = self.config.max_position_embeddings
        inputs = {"input_ids": input_ids[:, -window:]}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask[:, -window:]
        return inputs

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # no KV cache: generate() must not hand one to forward()
