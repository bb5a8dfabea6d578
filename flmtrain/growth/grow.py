"""Grow a live model and its optimizer into a freshly built model of the target shape (MSG).

The caller builds the target model and optimizer exactly as training does (same parameter groups,
μP learning rates of the new width); this module writes the old weights and moments into them,
installs the masks at 0, and returns the ramp that brings them to 1 over `ramp_steps` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from flm.train.config import ModelConfig
from flm.train.growth.masks import GrowthMasks
from flm.train.growth.ramp import MaskRamp, growth_record
from flm.train.growth.spec import GrowthSpec, check_growth
from flm.train.growth.transfer import (
    State,
    grow_optimizer_state,
    grow_weights,
    named_optimizer_state,
    source_vocab,
)


@dataclass
class Grown:
    """The outcome of one growth: what grew, the masks' ramp, and the growth_history record."""

    spec: GrowthSpec
    ramp: MaskRamp
    record: dict[str, Any]


def _vocab(model: torch.nn.Module) -> int | None:
    for name, param in model.named_parameters():
        if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
            return int(param.shape[0])
    return None


def grow_model(src_weights: Mapping[str, torch.Tensor], src_cfg: ModelConfig, dst_model: torch.nn.Module,
               dst_cfg: ModelConfig) -> GrowthSpec:
    """Check the growth and write `src_weights` (a state dict of `src_cfg`'s shape) into `dst_model`."""
    spec = check_growth(src_cfg, dst_cfg, src_vocab=source_vocab(src_weights), dst_vocab=_vocab(dst_model))
    grow_weights(src_weights, dst_model, spec)
    return spec


def grow_from_state(src_weights: Mapping[str, torch.Tensor], src_optimizer_state: Mapping[str, State],
                    src_cfg: ModelConfig, dst_model: torch.nn.Module, dst_optimizer: torch.optim.Optimizer | None,
                    dst_cfg: ModelConfig, *, step: int, ramp_steps: int, tokens_seen: int = 0,
                    from_stage: str = "", to_stage: str = "") -> Grown:
    """Grow weights (and optimizer state, keyed by parameter name) into `dst_model`/`dst_optimizer`."""
    spec = grow_model(src_weights, src_cfg, dst_model, dst_cfg)
    counts = {"carried": 0, "zero": 0}
    if dst_optimizer is not None:
        counts = grow_optimizer_state(src_optimizer_state, dst_model, dst_optimizer, spec,
                                      source_vocab(src_weights))
    ramp = MaskRamp(GrowthMasks(dst_model, spec), start_step=step, ramp_steps=ramp_steps)
    record = growth_record(
        spec, src=src_cfg, dst=dst_cfg, from_stage=from_stage, to_stage=to_stage, step=step,
        tokens_seen=tokens_seen, ramp_steps=ramp_steps, optimizer=counts,
        params_before=sum(v.numel() for k, v in src_weights.items()
                          if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")),
        params_after=sum(p.numel() for p in dst_model.parameters()))
    return Grown(spec=spec, ramp=ramp, record=record)


def grow_model_and_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                             dst_model: torch.nn.Module, dst_optimizer: torch.optim.Optimizer | None,
                             src_cfg: ModelConfig, dst_cfg: ModelConfig, *, step: int, ramp_steps: int,
                             **record: Any) -> Grown:
    """In-place growth during training: from a live model/optimizer into freshly built grown ones.

    `record` takes tokens_seen, from_stage and to_stage for the growth_history entry. Call
    `grown.ramp.update(step)` before every following step; the masks fold away at 1.
    """
    weights = {name: param.detach() for name, param in model.named_parameters()}
    state = named_optimizer_state(model, optimizer) if optimizer is not None else {}
    return grow_from_state(weights, state, src_cfg, dst_model, dst_optimizer, dst_cfg, step=step,
                           ramp_steps=ramp_steps, **record)
