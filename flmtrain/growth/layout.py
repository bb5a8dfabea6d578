"""Where every old weight goes in the grown model (megatron-core GPTModel's parameter layout).

megatron-core stores, per layer: `linear_qkv` rows grouped by key/value group, each group
[q of its heads; k; v] (head_dim rows each); `linear_proj` columns in head order (group-major);
`linear_fc1` rows [gate; up] for SwiGLU, else the FFN units; `linear_fc2` columns the FFN units.
A `Placement` maps one grown parameter to its source: for each dimension, the new positions of the
old entries. Old entries keep their values (and Adam moments); the rest come from the grown
model's own initialization, and the masks (flm.train.growth.masks) hide them until they ramp in.

Depth follows MSG's default (bert2BERT's "stack"): new layers go on top, so old layers keep their
index (and with it FLM's 1/layer attention scale), and start as copies of old layers.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch

from flm.train.config import ModelConfig
from flm.train.growth.spec import Dims, GrowthError, GrowthSpec

LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")

# Per-dimension kind of each parameter, by name (layer-relative for decoder layers).
LAYER_PARAMS: dict[str, tuple[str, ...]] = {
    "input_layernorm.weight": ("hidden",),
    "input_layernorm.bias": ("hidden",),
    "self_attention.linear_qkv.weight": ("qkv", "hidden"),
    "self_attention.linear_qkv.bias": ("qkv",),
    "self_attention.linear_proj.weight": ("hidden", "context"),
    "self_attention.linear_proj.bias": ("hidden",),
    "pre_mlp_layernorm.weight": ("hidden",),
    "pre_mlp_layernorm.bias": ("hidden",),
    "mlp.linear_fc1.weight": ("fc1", "hidden"),
    "mlp.linear_fc1.bias": ("fc1",),
    "mlp.linear_fc2.weight": ("hidden", "ffn"),
    "mlp.linear_fc2.bias": ("hidden",),
}
MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "embedding.word_embeddings.weight": ("vocab", "hidden"),
    "decoder.final_layernorm.weight": ("hidden",),
    "decoder.final_layernorm.bias": ("hidden",),
    "output_layer.weight": ("vocab", "hidden"),
}
FINAL_NORM = "decoder.final_layernorm."


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape in build_model(cfg) on one rank, without allocating anything."""
    dims = Dims.of(cfg)
    vocab = cfg.padded_vocab_size
    size = {"hidden": dims.hidden, "qkv": (dims.heads + 2 * dims.kv_heads) * dims.head_dim,
            "context": dims.heads * dims.head_dim, "fc1": 2 * dims.ffn if dims.gated else dims.ffn,
            "ffn": dims.ffn, "vocab": vocab}

    def wanted(name: str) -> bool:
        return (cfg.bias or not re.search(r"linear_\w+\.bias$", name)) and (
            cfg.norm == "layernorm" or not name.endswith("layernorm.bias"))

    shapes: dict[str, tuple[int, ...]] = {"embedding.word_embeddings.weight": (vocab, dims.hidden)}
    for i in range(dims.layers):
        for rest, kinds in LAYER_PARAMS.items():
            if wanted(rest):
                shapes[f"decoder.layers.{i}.{rest}"] = tuple(size[k] for k in kinds)
    for name in ("decoder.final_layernorm.weight", "decoder.final_layernorm.bias"):
        if wanted(name):
            shapes[name] = (dims.hidden,)
    if not cfg.tie_embeddings:
        shapes["output_layer.weight"] = (vocab, dims.hidden)
    return shapes


def _qkv_index(s: Dims, d: Dims) -> torch.Tensor:
    """New row of each old linear_qkv row: group g keeps its q heads first, then its k and v."""
    hd, m, n = s.head_dim, s.heads_per_group, d.heads_per_group
    t = torch.arange(hd)
    parts = []
    for g in range(s.kv_heads):
        base = g * (n + 2) * hd
        parts += [base + j * hd + t for j in range(m)]
        parts += [base + n * hd + t, base + (n + 1) * hd + t]
    return torch.cat(parts)


def context_index(s: Dims, d: Dims) -> torch.Tensor:
    """New position of each old attention-output (linear_proj input) column: head (g, j) -> (g, j)."""
    hd, m, n = s.head_dim, s.heads_per_group, d.heads_per_group
    t = torch.arange(hd)
    return torch.cat([(g * n + j) * hd + t for g in range(s.kv_heads) for j in range(m)])


def _fc1_index(s: Dims, d: Dims) -> torch.Tensor:
    old = torch.arange(s.ffn)
    return torch.cat([old, d.ffn + old]) if s.gated else old


@dataclass(frozen=True)
class Placement:
    """Where an old parameter's entries go in a grown one."""

    source: str
    index: tuple[torch.Tensor, ...]
    """Per dimension: the positions in the grown tensor of the source's entries, in order."""
    scale: float = 1.0
    """Multiplies the carried values (the final norm under μP); Adam moments scale by 1/scale, 1/scale²."""
    new_layer: bool = False
    """The parameter belongs to a new layer: its values are copied, its optimizer state starts at zero."""


@functools.lru_cache(maxsize=4)
def _indices(spec: GrowthSpec, vocab: int) -> dict[str, torch.Tensor]:
    """Every dimension kind's old-to-new positions (shared by all parameters; never modified)."""
    s, d = spec.src, spec.dst
    return {"hidden": torch.arange(s.hidden), "qkv": _qkv_index(s, d), "context": context_index(s, d),
            "fc1": _fc1_index(s, d), "ffn": torch.arange(s.ffn), "vocab": torch.arange(vocab)}


def placement(name: str, spec: GrowthSpec, vocab: int) -> Placement:
    """The Placement of grown parameter `name`; GrowthError if no rule covers it."""
    s, d = spec.src, spec.dst
    index = _indices(spec, vocab)
    match = LAYER_RE.match(name)
    if match:
        layer, rest = int(match.group(1)), match.group(2)
        if rest not in LAYER_PARAMS:
            raise GrowthError(f"parameter {name!r} has no growth rule (known: {', '.join(LAYER_PARAMS)})")
        new = layer >= s.layers
        source = new_layer_source(layer, s, d) if new else layer
        return Placement(source=f"decoder.layers.{source}.{rest}", new_layer=new,
                         index=tuple(index[k] for k in LAYER_PARAMS[rest]))
    if name not in MODEL_PARAMS:
        raise GrowthError(f"parameter {name!r} has no growth rule")
    return Placement(source=name, index=tuple(index[k] for k in MODEL_PARAMS[name]),
                     scale=spec.logit_scale if name.startswith(FINAL_NORM) else 1.0)


def new_layer_source(layer: int, s: Dims, d: Dims) -> int:
    """The old layer that new top layer `layer` starts as (MSG's default, bert2BERT's "stack"): the old
    stack repeated whole as often as it fits, then copies of its top layers for the rest."""
    whole = list(range(s.layers)) * (d.layers // s.layers - 1)
    top = list(range(s.layers - d.layers % s.layers, s.layers)) if d.layers % s.layers else []
    return (whole + top)[layer - s.layers]
