"""flm's megatron-core weights as Hugging Face tensors and config.json, for `flm export`.

Two layouts share one split of megatron's fused tensors:
- "flm": names of flmtrain/hf/modeling_flm.py (model.layers.N.self_attn.q_proj.weight, ...) and a config
  with every hyperparameter; the function is reproduced by that remote code, nothing is folded.
- "llama": transformers' own LlamaForCausalLM, for models it can express (RoPE, RMSNorm, SwiGLU). What
  Llama lacks is folded into the weights, exactly: μP's input multiplier into the embedding (untied
  from the head when the multiplier is not 1), the logit multiplier into the final RMSNorm's gain, and
  the attention scale (μP's 1/d, FLM's 1/layer) into q_proj, since Llama scales by 1/sqrt(d).
  Linear biases map to Llama's attention_bias / mlp_bias.

megatron's fused tensors: `linear_qkv` rows are grouped by key/value group, each group [its q heads;
k; v] (head_dim rows each; flm.train.growth.layout); `linear_fc1` rows are [gate; up] for SwiGLU.
Rotary pairs are (x[j], x[j + d/2]) in flm and in transformers' Llama alike, so no row permutation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flm.config.errors import FlmError
from flm.train.config import ModelConfig
from flm.train.model.mup import width_mult

LLAMA_NEEDS = {"position": "rope", "norm": "rmsnorm", "activation": "swiglu"}
"""ModelConfig fields that Llama cannot fold away, and the value it needs."""


class ExportError(FlmError, ValueError):
    """A checkpoint cannot be exported as asked; the message names the file or field and what to do."""


def multipliers(cfg: ModelConfig) -> tuple[float, float]:
    """(input embedding multiplier, logit multiplier) as FLMModel applies them."""
    if not cfg.mup.enabled:
        return 1.0, 1.0
    return cfg.mup.input_mult, cfg.mup.output_mult / width_mult(cfg)


def llama_incompatible(cfg: ModelConfig) -> list[str]:
    """`model.FIELD is VALUE (Llama needs NEED)` for each field that keeps `cfg` from being a Llama model."""
    return [f"model.{name} is {getattr(cfg, name)!r} (Llama needs {need!r})"
            for name, need in LLAMA_NEEDS.items() if getattr(cfg, name) != need]


def _split_layer(cfg: ModelConfig, sd: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """One megatron layer's tensors under HF names (q/k/v, gate/up split; norms under Llama's names)."""
    src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
    heads, kv, d = cfg.heads, cfg.kv_heads or cfg.heads, cfg.head_dim
    per = heads // kv
    out: dict[str, torch.Tensor] = {}
    for kind in ("weight", "bias"):
        qkv = sd.get(f"{src}self_attention.linear_qkv.{kind}")
        if qkv is None:
            continue
        grouped = qkv.reshape(kv, per + 2, d, *qkv.shape[1:])
        out[f"{dst}self_attn.q_proj.{kind}"] = grouped[:, :per].reshape(heads * d, *qkv.shape[1:])
        out[f"{dst}self_attn.k_proj.{kind}"] = grouped[:, per].reshape(kv * d, *qkv.shape[1:])
        out[f"{dst}self_attn.v_proj.{kind}"] = grouped[:, per + 1].reshape(kv * d, *qkv.shape[1:])
    renames = {"self_attention.linear_proj": "self_attn.o_proj", "mlp.linear_fc2": "mlp.down_proj",
               "input_layernorm": "input_layernorm", "pre_mlp_layernorm": "post_attention_layernorm"}
    for old, new in renames.items():
        for kind in ("weight", "bias"):
            if f"{src}{old}.{kind}" in sd:
                out[f"{dst}{new}.{kind}"] = sd[f"{src}{old}.{kind}"]
    for kind in ("weight", "bias"):
        fc1 = sd.get(f"{src}mlp.linear_fc1.{kind}")
        if fc1 is None:
            continue
        if cfg.activation == "swiglu":
            gate, up = fc1.chunk(2, dim=0)
            out[f"{dst}mlp.gate_proj.{kind}"], out[f"{dst}mlp.up_proj.{kind}"] = gate, up
        else:
            out[f"{dst}mlp.up_proj.{kind}"] = fc1
    return out


def hf_tensors(cfg: ModelConfig, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The "flm" layout: every tensor of `sd` (megatron names, checked by the caller) under its HF name."""
    out = {"model.embed_tokens.weight": sd["embedding.word_embeddings.weight"]}
    for i in range(cfg.layers):
        out.update(_split_layer(cfg, sd, i))
    for kind in ("weight", "bias"):
        if f"decoder.final_layernorm.{kind}" in sd:
            out[f"model.norm.{kind}"] = sd[f"decoder.final_layernorm.{kind}"]
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["output_layer.weight"]
    return out


def llama_tensors(cfg: ModelConfig, sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool, list[str]]:
    """The "llama" layout with flm's extra factors folded in: (tensors, tied, what was folded)."""
    bad = llama_incompatible(cfg)
    if bad:
        raise ExportError("not a Llama-compatible model: " + "; ".join(bad) + ". Export with --format flm instead")
    out = hf_tensors(cfg, sd)
    folded = []
    input_mult, logit_mult = multipliers(cfg)
    tied = cfg.tie_embeddings
    embed = out["model.embed_tokens.weight"].double()
    if input_mult != 1.0:
        out["model.embed_tokens.weight"] = embed * input_mult
        folded.append(f"embedding x {input_mult:g} (μP input multiplier)")
        if tied:
            out["lm_head.weight"] = embed
            tied = False
            folded.append("output head untied from the embedding (they now differ by the input multiplier)")
    if logit_mult != 1.0:
        out["model.norm.weight"] = out["model.norm.weight"].double() * logit_mult
        folded.append(f"final norm gain x {logit_mult:g} (μP logit multiplier)")
    # flm's scale (flm.train.model.attention.attention_scale, not imported: it loads megatron) over Llama's 1/sqrt(d)
    mup_ratio = math.sqrt(cfg.head_dim) / cfg.head_dim if cfg.mup.enabled else 1.0
    for i in range(cfg.layers):
        ratio = mup_ratio / (i + 1) if cfg.scale_attn_by_inverse_layer_idx else mup_ratio
        if ratio != 1.0:
            for kind in ("weight", "bias"):
                name = f"model.layers.{i}.self_attn.q_proj.{kind}"
                if name in out:
                    out[name] = out[name].double() * ratio
    if cfg.mup.enabled:
        folded.append("q_proj x sqrt(head_dim)/head_dim (μP's 1/head_dim attention scale)")
    if cfg.scale_attn_by_inverse_layer_idx:
        folded.append("q_proj of layer i x 1/(i+1) (scale_attn_by_inverse_layer_idx)")
    return out, tied, folded


def _token_ids(tokenizer: dict[str, Any] | None) -> dict[str, int | None]:
    eos = tokenizer["eos_id"] if tokenizer else None
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": tokenizer["pad_id"] if tokenizer else None}


def _common(cfg: ModelConfig, dtype: str, tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    torch_dtype = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
    return {"vocab_size": cfg.padded_vocab_size, "hidden_size": cfg.hidden, "intermediate_size": cfg.ffn_size,
            "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads or cfg.heads, "max_position_embeddings": cfg.seq_len,
            "initializer_range": cfg.init_std, "torch_dtype": torch_dtype, "dtype": torch_dtype,
            **_token_ids(tokenizer)}


def flm_config(cfg: ModelConfig, *, dtype: str, tokenizer: dict[str, Any] | None,
               source: dict[str, Any]) -> dict[str, Any]:
    """config.json of the "flm" layout (FLMConfig's fields; auto_map points at the copied remote code)."""
    input_mult, logit_mult = multipliers(cfg)
    return {
        "architectures": ["FLMForCausalLM"], "model_type": "flm",
        "auto_map": {"AutoConfig": "configuration_flm.FLMConfig",
                     "AutoModelForCausalLM": "modeling_flm.FLMForCausalLM"},
        **_common(cfg, dtype, tokenizer),
        "tokenizer_vocab_size": cfg.vocab_size, "norm_type": cfg.norm, "norm_eps": cfg.norm_eps,
        "hidden_act": cfg.activation, "use_bias": cfg.bias, "position_embedding": cfg.position,
        "rotary_base": cfg.rotary_base, "xpos_scale_base": cfg.xpos_scale_base,
        "scale_attn_by_inverse_layer_idx": cfg.scale_attn_by_inverse_layer_idx,
        "mup_attention_scale": cfg.mup.enabled, "embedding_multiplier": input_mult, "logit_multiplier": logit_mult,
        "attention_dropout": cfg.dropout, "hidden_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings, "use_cache": False, "flm_source": source,
    }


def llama_config(cfg: ModelConfig, *, dtype: str, tokenizer: dict[str, Any] | None, tied: bool,
                 source: dict[str, Any]) -> dict[str, Any]:
    """config.json of the "llama" layout (transformers' LlamaConfig; rope given in both its old and new keys)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", **_common(cfg, dtype, tokenizer),
        "head_dim": cfg.head_dim, "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rotary_base, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_base},
        "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": 0.0, "pretraining_tp": 1,
        "tie_word_embeddings": tied, "use_cache": True, "flm_source": source,
    }


def generation_config(cfg: ModelConfig, tokenizer: dict[str, Any] | None, *, use_cache: bool) -> dict[str, Any]:
    """generation_config.json: the tokenizer's special ids, and the vocabulary padding never generated."""
    config: dict[str, Any] = {**_token_ids(tokenizer), "use_cache": use_cache}
    padding = list(range(cfg.vocab_size, cfg.padded_vocab_size))
    if padding:
        config["suppress_tokens"] = padding
    return {k: v for k, v in config.items() if v is not None}
