"""The "megatron" checkpoint format (the GPU engine): megatron-core dist_checkpointing of the sharded model and
distributed-optimizer state under `dist/`, every rank writing its own shards.

The optimizer state is stored per model parameter by default (parallel.optimizer_checkpoint
"fully_reshardable", megatron's own layout): `optimizer.state.{param,exp_avg,exp_avg_sq}.<key>`, fp32, with the
parameter's global shape and sharding, and Adam's step in the param groups of common.pt. Any TP/PP/DP layout
loads it, and so does flm's CPU reader (checkpoint/tensors.py). "dp_reshardable" keeps megatron's buckets
as they lie in memory: parallel to save, but it reshards across DP only.

megatron-core 0.16.1 gathers that per-parameter state through buffers whose padding it miscounts (its issue
#504): a parameter past the padding gets its state shifted (seen on the tied output layer of a pipeline's
last stage). flm checks every parameter's saved master weight against the model's own weight and gathers the
state of any that differ itself, so the checkpoint holds the right values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state

from flm.train.checkpoint.dist_tensors import read_dist_metadata, saved_adam_step

log = logging.getLogger(__name__)

DEFAULT_SHARDING = "fully_reshardable"
STATE_KEYS = ("param", "exp_avg", "exp_avg_sq")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _optimizers(optimizer: Any) -> list[Any]:
    return [o for o in getattr(optimizer, "chained_optimizers", [optimizer]) if getattr(o, "optimizer", None)]


def _metadata(sharding: str) -> dict[str, str]:
    return {"distrib_optim_sharding_type": sharding}


def save_megatron(path: Path, model: torch.nn.Module, optimizer: Any, sharding: str = DEFAULT_SHARDING) -> None:
    model_sd = model.sharded_state_dict()
    metadata = _metadata(sharding)
    optimizer_sd = optimizer.sharded_state_dict(model_sd, metadata=metadata)
    if sharding == "fully_reshardable":
        _repair_shifted_state(optimizer, optimizer_sd)
    if _rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    _barrier()
    dist_checkpointing.save({"model": model_sd, "optimizer": optimizer_sd}, str(path), content_metadata=metadata)


@torch.no_grad()
def _repair_shifted_state(optimizer: Any, optimizer_sd: dict[str, Any]) -> None:
    """Replace the state megatron sliced wrongly (master weight != the model's weight) with the right one.

    megatron builds the per-parameter state on every DP rank alike, so every rank repairs the same
    parameters and the gathers below match up.
    """
    param_state = optimizer_sd.get("param_state")
    if not hasattr(optimizer, "buffers") or not isinstance(param_state, dict):
        return  # not one distributed optimizer (megatron's chained ones nest their state otherwise)
    index = 0
    for buffer in optimizer.buffers:
        for model_param in buffer.param_index_map:
            tensors = param_state.get(index, {})
            index += 1
            saved = tensors.get("param")
            if saved is None:
                continue
            weight = model_param.detach().to(device=saved.data.device)
            if torch.equal(saved.data.to(weight.dtype), weight):
                continue
            log.warning("%s: megatron-core's gathered optimizer state is shifted (its issue #504); saving the "
                        "state flm gathered itself", saved.key)
            for key, value in _param_state(optimizer, model_param).items():
                tensors[key].data = value.to(tensors[key].data.device).view_as(tensors[key].data)


def _param_state(opt: Any, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """`param`'s full (this TP/PP shard's) fp32 master weight and moments, gathered over DP."""
    full = torch.zeros((len(STATE_KEYS), param.numel()), dtype=torch.float32, device=param.device)
    if param in opt.model_param_group_index_map:
        where = opt._get_model_param_range_map(param)["param"]
        tensors = opt._get_main_param_and_optimizer_states(param)
        for row, key in enumerate(STATE_KEYS):
            full[row, where.start:where.end] = tensors[key].detach().float()
    dist.all_reduce(full, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    return {key: full[row].view(param.shape) for row, key in enumerate(STATE_KEYS)}


def load_megatron(path: Path, model: torch.nn.Module, optimizer: Any | None) -> None:
    """Load into this process's shards, whatever layout wrote the checkpoint (within what its optimizer
    sharding allows: see DEFAULT_SHARDING).

    `.metadata` is a pickle that megatron unpickles as it is: it is first read through flm's restricted
    unpickler, which refuses anything but checkpoint metadata. The optimizer's hyperparameters come from
    this run's config (a grown checkpoint's μP multipliers differ from its source's); the checkpoint gives
    Adam's step and state.
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
    step = saved_adam_step(loaded)
    own = [{**{k: v for k, v in group.items() if k != "params"}, "step": step}
           for group in optimizer.optimizer.param_groups]
    return {**loaded, "optimizer": {**loaded["optimizer"], "param_groups": own}}


def _keep_torch_adam_step(optimizer: Any) -> None:
    """Let a dp_reshardable checkpoint load into torch AdamW (megatron-core 0.16.1 without Apex/TE).

    megatron keeps Adam's step in the param groups and restores every parameter's `step` from them first;
    then it copies each state tensor of the parameter from the checkpoint, `step` included, which the
    checkpoint does not hold (KeyError: 'step'). The step it already restored is the right one: keep it.
    """
    for inner in _optimizers(optimizer):
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
    only after a first step; loading writes into that state. Every value is overwritten by the load.
    """
    for wrapper in _optimizers(optimizer):
        inner = wrapper.optimizer
        if inner.state:
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
