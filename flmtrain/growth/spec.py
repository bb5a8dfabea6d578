"""What a growth from one model shape to another changes, and whether it is possible at all.

Growth only adds structure: more layers (depth), a wider residual stream (hidden), more attention
heads of the same size, more key/value groups, a wider FFN. Everything that shapes the function
otherwise (norm, activation, biases, positions, μP settings, vocabulary) must be the same, because
no choice of new weights could make a model with another norm or activation compute the old function.
"""

from __future__ import annotations

from dataclasses import dataclass

from flm.config.errors import FlmError
from flm.train.config import ModelConfig


class GrowthError(FlmError, ValueError):
    """The requested growth is impossible (shrinking, head size or key/value layout mismatch, ...)."""


SAME_ARCHITECTURE = ("norm", "norm_eps", "activation", "bias", "tie_embeddings", "position", "rotary_base",
                     "xpos_scale_base", "scale_attn_by_inverse_layer_idx")
SAME_MUP = ("enabled", "input_mult")


@dataclass(frozen=True)
class Dims:
    """The sizes growth can change, in megatron-core's terms."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated: bool
    """SwiGLU: linear_fc1 holds [gate; up], 2 x ffn rows."""

    @classmethod
    def of(cls, cfg: ModelConfig) -> Dims:
        return cls(layers=cfg.layers, hidden=cfg.hidden, heads=cfg.heads, kv_heads=cfg.kv_heads or cfg.heads,
                   head_dim=cfg.head_dim, ffn=cfg.ffn_size, gated=cfg.activation == "swiglu")

    @property
    def heads_per_group(self) -> int:
        return self.heads // self.kv_heads

    def as_dict(self) -> dict[str, int]:
        return {"layers": self.layers, "hidden": self.hidden, "heads": self.heads, "kv_heads": self.kv_heads,
                "head_dim": self.head_dim, "ffn_hidden": self.ffn}


def output_multiplier(cfg: ModelConfig) -> float:
    """The logit multiplier build_model gives FLMModel (μP: output_mult / width_mult)."""
    if not cfg.mup.enabled:
        return 1.0
    return cfg.mup.output_mult * cfg.mup.base_width / cfg.hidden


@dataclass(frozen=True)
class GrowthSpec:
    """A checked growth from `src` to `dst`; `operators` names what grows."""

    src: Dims
    dst: Dims
    logit_scale: float
    """Factor on the final norm's gain and bias that keeps the logits when μP's output multiplier
    changes with width (old multiplier / new multiplier; 1.0 without μP)."""

    @property
    def operators(self) -> list[str]:
        s, d = self.src, self.dst
        grown = {"depth": d.layers > s.layers, "hidden": d.hidden > s.hidden, "heads": d.heads > s.heads,
                 "kv_heads": d.kv_heads > s.kv_heads, "ffn": d.ffn > s.ffn}
        return [name for name, yes in grown.items() if yes]


def check_growth(src: ModelConfig, dst: ModelConfig, *, src_vocab: int | None = None,
                 dst_vocab: int | None = None) -> GrowthSpec:
    """Validate that `dst` is a function-preserving growth of `src`; raises GrowthError saying why not."""
    for name in SAME_ARCHITECTURE:
        if getattr(src, name) != getattr(dst, name):
            raise GrowthError(f"model.{name} differs ({getattr(src, name)!r} -> {getattr(dst, name)!r}): growth "
                              "adds structure but cannot change the architecture")
    for name in SAME_MUP:
        if getattr(src.mup, name) != getattr(dst.mup, name):
            raise GrowthError(f"model.mup.{name} differs ({getattr(src.mup, name)!r} -> "
                              f"{getattr(dst.mup, name)!r}): growth cannot change it")
    sv, dv = src_vocab or src.padded_vocab_size, dst_vocab or dst.padded_vocab_size
    if sv != dv:
        raise GrowthError(f"vocabulary differs (padded {sv} -> {dv}): growth keeps the tokenizer")
    s, d = Dims.of(src), Dims.of(dst)
    for name in ("layers", "hidden", "heads", "kv_heads", "ffn"):
        old, new = getattr(s, name), getattr(d, name)
        if new < old:
            raise GrowthError(f"cannot shrink {name}: {old} -> {new} (growth only adds structure)")
    if s.head_dim != d.head_dim:
        raise GrowthError(f"head size differs: hidden/heads = {src.hidden}/{src.heads} = {s.head_dim} -> "
                          f"{dst.hidden}/{dst.heads} = {d.head_dim}; new heads must have the old head size "
                          f"(grow heads together with hidden, e.g. heads = hidden / {s.head_dim})")
    if d.heads_per_group < s.heads_per_group:
        raise GrowthError(f"key/value layout mismatch: {s.heads} heads over {s.kv_heads} kv heads "
                          f"({s.heads_per_group} per group) -> {d.heads} over {d.kv_heads} "
                          f"({d.heads_per_group} per group); each old kv group must keep all its query heads, "
                          "so heads per kv group cannot fall")
    spec = GrowthSpec(src=s, dst=d, logit_scale=output_multiplier(src) / output_multiplier(dst))
    if not spec.operators:
        raise GrowthError(f"nothing to grow: both shapes are {s.as_dict()}")
    return spec
