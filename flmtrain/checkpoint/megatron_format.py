"""The "megatron" checkpoint format (the GPU engine): megatron-core dist_checkpointing of the sharded model and
distributed-optimizer state under `dist/`, every rank writing its own shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing

from flm.train.checkpoint.dist_tensors import read_dist_metadata


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


DEFAULT_SHARDING = "fully_reshardable"
"""How the distributed optimizer's state is stored (parallel.optimizer_checkpoint): per model parameter
(gathered on DP rank 0 to save), so a checkpoint reshards to any TP/PP/DP layout; "dp_reshardable"
(megatron's buckets as they lie in memory) saves in parallel but reshards across DP only."""


def _metadata(sharding: str) -> dict[str, str]:
    return {"distrib_optim_sharding_type": sharding}


def save_megatron(path: Path, model: torch.nn.Module, optimizer: Any, sharding: str = DEFAULT_SHARDING) -> None:
    model_sd = model.sharded_state_dict()
    metadata = _metadata(sharding)
    sharded = {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, metadata=metadata)}
    if _rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    _barrier()
    dist_checkpointing.save(sharded, str(path), content_metadata=metadata)


def load_megatron(path: Path, model: torch.nn.Module, optimizer: Any | None) -> None:
    """Load into this process's shards, whatever layout wrote the checkpoint (within what its optimizer
    sharding allows: see DEFAULT_SHARDING).

    `.metadata` is a pickle that megatron unpickles as it is: it is first read through flm's restricted
    unpickler, which refuses anything but checkpoint metadata. The optimizer's hyperparameters come from
    this run's config (so a grown checkpoint, whose μP multipliers differ, loads too); the checkpoint
    gives Adam's step and state.
    """
    read_dist_metadata(path)
    model_sd = model.sharded_state_dict()
    sharded: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        _materialize_optimizer_state(optimizer)
        _keep_torch_adam_step(optimizer)
        saved = dist_checkpointing.load_content_metadata(str(path)) or _metadata("dp_reshardable")
        sharded["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=saved)
    loaded = dist_checkpointing.load(sharded, str(path))
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(_own_param_groups(optimizer, loaded["optimizer"]))


def _own_param_groups(optimizer: Any, loaded: dict[str, Any]) -> dict[str, Any]:
    """`loaded` with its param groups replaced by this optimizer's own, at the checkpoint's Adam step."""
    saved = (loaded.get("optimizer") or {}).get("param_groups")
    if not saved or not hasattr(optimizer, "optimizer") or optimizer.optimizer is None:
        return loaded
    steps = {g["step"] for g in saved if "step" in g}
    own = []
    for group in optimizer.optimizer.param_groups:
        mine = {k: v for k, v in group.items() if k != "params"}
        if steps:
            mine["step"] = max(steps)
        own.append(mine)
    return {**loaded, "optimizer": {**loaded["optimizer"], "param_groups": own}}


def _keep_torch_adam_step(optimizer: Any) -> None:
    """Let a fully_reshardable checkpoint load into torch AdamW (megatron-core 0.16.1 without Apex/TE).

    megatron keeps Adam's step in the param groups and restores every parameter's `step` from them first;
    then it copies each state tensor of the parameter from the checkpoint, `step` included, which the
    checkpoint does not hold (KeyError: 'step'). The step it already restored is the right one: keep it.
    """
    for inner in getattr(optimizer, "chained_optimizers", [optimizer]):
        original = getattr(inner, "_set_main_param_and_optimizer_states", None)
        if original is None:
            continue

        def set_states(model_param: torch.nn.Parameter, tensors: dict[str, torch.Tensor], *,
                       inner: Any = inner, original: Any = original) -> None:
            if "step" not in tensors:
                group_index, group_order = inner.model_param_group_index_map[model_param]
                main_param = inner.optimizer.param_groups[group_index]["params"][group_order]
                step = inner.optimizer.state[main_param].get("step")
                if step is not None:
                    tensors = {**tensors, "step": step}
            original(model_param, tensors)

        inner._set_main_param_and_optimizer_states = set_states


@torch.no_grad()
def _materialize_optimizer_state(optimizer: Any) -> None:
    """Give a fresh megatron optimizer's torch AdamW its state tensors (a zero-gradient step at LR 0).

    Without Apex/Transformer Engine, megatron wraps torch AdamW, whose state (step, moments) exists
    only after a first step; the distributed optimizer's sharded_state_dict needs it to exist so the
    checkpoint can be loaded into it. Every value is overwritten by the load.
    """
    for wrapper in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = wrapper.optimizer
        if inner is None or inner.state:
            continue
        lrs = [group["lr"] for group in inner.param_groups]
        for group in inner.param_groups:
            group["lr"] = 0.0
            for param in group["params"]:
                param.grad = torch.zeros_like(param)
        inner.step()
        inner.zero_grad(set_to_none=True)
        for group, lr in zip(inner.param_groups, lrs, strict=True):
            group["lr"] = lr
