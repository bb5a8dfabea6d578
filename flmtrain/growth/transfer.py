"""Carry weights and Adam moments from a model into its grown shape.

The grown model arrives freshly initialized (build_model of the target shape, so new entries get
the target's own init, μP included); old entries are written over it where `layout.placement`
says. Optimizer state is keyed by parameter name: old moments land in the same positions of
zero tensors of the grown shape, so new entries start with zero moments, and new layers start
with zero moments everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flm.train.growth.layout import Placement, placement
from flm.train.growth.spec import GrowthError, GrowthSpec

State = dict[str, Any]


def grid_index(index: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Advanced-indexing tuple that addresses the outer product of per-dimension positions."""
    if len(index) == 1:
        return index
    if len(index) == 2:
        return index[0][:, None], index[1][None, :]
    raise GrowthError(f"no growth rule for {len(index)}-d tensors")


def _check_source(name: str, where: Placement, old: torch.Tensor) -> None:
    want = tuple(len(i) for i in where.index)
    if tuple(old.shape) != want:
        raise GrowthError(f"{where.source}: shape {tuple(old.shape)} in the source does not match the source "
                          f"config's {want} (needed for {name}); is the checkpoint of that stage?")


def source_vocab(src: Mapping[str, torch.Tensor]) -> int:
    return int(src["embedding.word_embeddings.weight"].shape[0])


@torch.no_grad()
def grow_weights(src: Mapping[str, torch.Tensor], dst_model: torch.nn.Module, spec: GrowthSpec) -> list[str]:
    """Write the source weights (a state dict of the source shape) into `dst_model` in place.

    Returns the source names used; every source parameter must be used exactly where the layout says.
    """
    vocab = source_vocab(src)
    used: set[str] = set()
    for name, param in dst_model.named_parameters():
        where = placement(name, spec, vocab)
        if where.source not in src:
            raise GrowthError(f"source has no {where.source!r} (needed for {name})")
        old = src[where.source]
        _check_source(name, where, old)
        param[grid_index(where.index)] = old.to(device=param.device, dtype=param.dtype) * where.scale
        used.add(where.source)
    unused = sorted(k for k, v in src.items() if isinstance(v, torch.Tensor) and k not in used
                    and not k.endswith("_extra_state"))
    if unused:
        raise GrowthError(f"source parameters with no place in the grown model: {unused[:5]}")
    return sorted(used)


def named_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, State]:
    """A live torch optimizer's per-parameter state keyed by parameter name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: state for p, state in optimizer.state.items() if id(p) in names}


def named_state_from_saved(saved: Mapping[str, Any]) -> dict[str, State]:
    """Per-parameter state keyed by name from checkpoint.py's optimizer.pt ({state_dict, param_names})."""
    state_dict, names = saved["state_dict"], saved["param_names"]
    out: dict[str, State] = {}
    for group, group_names in zip(state_dict["param_groups"], names, strict=True):
        for pid, name in zip(group["params"], group_names, strict=True):
            if pid in state_dict["state"]:
                out[name] = state_dict["state"][pid]
    return out


def _scalar_step(states: Mapping[str, State]) -> Any:
    steps = [s["step"] for s in states.values() if "step" in s]
    if not steps:
        return None
    best = max(steps, key=float)
    return best.clone() if isinstance(best, torch.Tensor) else best


@torch.no_grad()
def grow_optimizer_state(src_state: Mapping[str, State], dst_model: torch.nn.Module,
                         dst_optimizer: torch.optim.Optimizer, spec: GrowthSpec, vocab: int) -> dict[str, int]:
    """Fill `dst_optimizer.state` for every grown parameter from the source's named state.

    Tensor state of the parameter's shape (Adam's exp_avg, exp_avg_sq, ...) is carried into zeros of
    the grown shape; a carried parameter scaled by c has its moments scaled by 1/c (squared moments
    by 1/c²), which is what its gradients become. Scalars (`step`) are kept; new layers get the
    newest step so every parameter shares one bias-correction clock. Returns counts for the report.
    """
    if not src_state:
        return {"carried": 0, "zero": 0}
    step = _scalar_step(src_state)
    owned = {id(p) for group in dst_optimizer.param_groups for p in group["params"]}
    carried = zero = 0
    for name, param in dst_model.named_parameters():
        if id(param) not in owned:
            continue
        where = placement(name, spec, vocab)
        old = None if where.new_layer else src_state.get(where.source)
        template = old if old is not None else next(iter(src_state.values()))
        new: State = {}
        for key, value in template.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                grown = torch.zeros_like(param, dtype=value.dtype)
                if old is not None:
                    _check_source(name, where, value)
                    power = 2 if "sq" in key else 1
                    grown[grid_index(where.index)] = value.to(grown.device) / where.scale ** power
                new[key] = grown
            elif key == "step":
                value = value if old is not None else step
                new[key] = value.clone() if isinstance(value, torch.Tensor) else value
            else:
                new[key] = value
        dst_optimizer.state[param] = new
        carried += old is not None
        zero += old is None
    return {"carried": carried, "zero": zero}
