"""μP per-parameter learning rates (Yang et al. 2021, "Tensor Programs V"; used by FLM-101B).

With Adam, a hidden matrix (both dimensions grow with width) needs its LR divided by width_mult
so that its update changes the next layer's input by O(1) per coordinate at every width. Vectors
and matrices with one finite dimension (embeddings, the output head, biases, norms) keep the base
LR. One rule serves torch AdamW on CPU (`param_groups`) and megatron's optimizer on GPU (the
trainer turns `lr_scale` into megatron config overrides).
"""

from __future__ import annotations

from typing import Any

import torch

from flm.train.config import ModelConfig, OptimConfig

VECTOR_LIKE = ("word_embeddings", "position_embeddings", "output_layer")
"""Matrices with one dimension fixed by the vocabulary: base LR under μP."""


def width_mult(cfg: ModelConfig) -> float:
    return cfg.hidden / cfg.mup.base_width


def is_hidden_matrix(name: str, param: torch.Tensor) -> bool:
    return param.ndim >= 2 and not any(part in name for part in VECTOR_LIKE)


def lr_scale(name: str, param: torch.Tensor, cfg: ModelConfig) -> float:
    """LR multiplier of one parameter: 1/width_mult for hidden matrices under μP, else 1."""
    if cfg.mup.enabled and is_hidden_matrix(name, param):
        return 1.0 / width_mult(cfg)
    return 1.0


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to matrices only (not biases or norm gains), as in megatron."""
    return param.ndim >= 2 and not name.endswith(".bias")


def param_groups(model: torch.nn.Module, model_cfg: ModelConfig, optim_cfg: OptimConfig) -> list[dict[str, Any]]:
    """torch.optim param groups, one per (lr multiplier, decay): `lr` is the base LR times `lr_mult`."""
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (lr_scale(name, param, model_cfg), decays(name, param))
        if key not in groups:
            mult, decay = key
            groups[key] = {"params": [], "lr": optim_cfg.lr * mult, "lr_mult": mult,
                           "weight_decay": optim_cfg.weight_decay if decay else 0.0}
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups, key=lambda k: (-k[0], not k[1]))]
