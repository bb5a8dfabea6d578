"""The "megatron" checkpoint format (the GPU engine): megatron-core dist_checkpointing of the sharded model and
distributed-optimizer state under `dist/`, every rank writing its own shards.

The optimizer state is stored per model parameter (parallel.optimizer_checkpoint "fully_reshardable", the
default): `optimizer.state.{param,exp_avg,exp_avg_sq}.<key>`, fp32, with the parameter's own global shape
and sharding, and Adam's step in common.pt. flm gathers and scatters it itself, parameter by parameter over
the data-parallel group: megatron-core 0.16.1's own fully reshardable layout shifts a parameter's state by
the buffer's padding (its issue #504; seen on the tied output layer of a pipeline's last stage), which
corrupts the checkpoint silently. Any TP/PP/DP layout loads it, and so does flm's CPU reader
(checkpoint/tensors.py). "dp_reshardable" keeps megatron's bucket layout: parallel to save, but it reshards
across DP only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedTensor

from flm.train.checkpoint.dist_tensors import OPTIMIZER_PREFIX, read_dist_metadata, saved_adam_step
from flm.train.checkpoint.meta import CheckpointError

DEFAULT_SHARDING = "fully_reshardable"
STATE_KEYS = ("param", "exp_avg", "exp_avg_sq")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _optimizers(optimizer: Any) -> list[Any]:
    return [o for o in getattr(optimizer, "chained_optimizers", [optimizer]) if getattr(o, "optimizer", None)]


def _params_with_keys(model_sd: dict[str, Any], model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, Any]]:
    """Each model parameter with the ShardedTensor that stores it (matched by storage)."""
    by_ptr = {p.data_ptr(): p for p in model.parameters()}
    out = []
    for sh in model_sd.values():
        if isinstance(sh, ShardedTensor) and sh.data is not None and sh.data.data_ptr() in by_ptr:
            out.append((by_ptr[sh.data.data_ptr()], sh))
    return out


def _owner(optimizer: Any, param: torch.nn.Parameter) -> tuple[Any, Any] | None:
    """(distributed optimizer, this rank's range of `param`) when this DP rank holds part of its state."""
    for opt in _optimizers(optimizer):
        if param in opt.model_param_group_index_map:
            return opt, opt._get_model_param_range_map(param)["param"]
    return None


def _adam_step(optimizer: Any) -> float:
    for opt in _optimizers(optimizer):
        for state in opt.optimizer.state.values():
            if "step" in state:
                return float(state["step"])
    return 0.0


def _param_state(optimizer: Any, param: torch.nn.Parameter) -> dict[str, torch.Tensor]:
    """The full (this TP/PP shard's) fp32 master weight and moments of `param`, gathered over DP."""
    full = torch.zeros((len(STATE_KEYS), param.numel()), dtype=torch.float32, device=param.device)
    owner = _owner(optimizer, param)
    if owner is not None:
        opt, where = owner
        tensors = opt._get_main_param_and_optimizer_states(param)
        for row, key in enumerate(STATE_KEYS):
            full[row, where.start:where.end] = tensors[key].detach().float()
    dist.all_reduce(full, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    full = full.cpu()  # host memory, as megatron's own gathered layout: the GPU keeps room for training
    return {key: full[row].view(param.shape) for row, key in enumerate(STATE_KEYS)}


def _state_tensors(sh: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {f"{OPTIMIZER_PREFIX}{k}.{sh.key}": replace(sh, key=f"{OPTIMIZER_PREFIX}{k}.{sh.key}", data=v,
                                                      dtype=torch.float32)
            for k, v in tensors.items()}


def save_megatron(path: Path, model: torch.nn.Module, optimizer: Any, sharding: str = DEFAULT_SHARDING) -> None:
    model_sd = model.sharded_state_dict()
    if sharding == "dp_reshardable":
        metadata = {"distrib_optim_sharding_type": sharding}
        sharded = {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, metadata=metadata)}
    else:
        if not all(hasattr(o, "model_param_group_index_map") for o in _optimizers(optimizer)):
            raise CheckpointError("the fully_reshardable optimizer checkpoint needs parallel.distributed_optimizer: "
                                  "true (or set parallel.optimizer_checkpoint: dp_reshardable)")
        metadata = None
        state: dict[str, Any] = {"adam_step": _adam_step(optimizer)}
        for param, sh in _params_with_keys(model_sd, model):
            state.update(_state_tensors(sh, _param_state(optimizer, param)))
        sharded = {"model": model_sd, "optimizer": state}
    if _rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    _barrier()
    dist_checkpointing.save(sharded, str(path), content_metadata=metadata)


def load_megatron(path: Path, model: torch.nn.Module, optimizer: Any | None) -> None:
    """Load into this process's shards, whatever layout wrote the checkpoint.

    `.metadata` is a pickle that megatron unpickles as it is: it is first read through flm's restricted
    unpickler, which refuses anything but checkpoint metadata. The optimizer's hyperparameters come from
    this run's config (a grown checkpoint's μP multipliers differ from its source's); the checkpoint gives
    Adam's step and state.
    """
    read_dist_metadata(path)
    model_sd = model.sharded_state_dict()
    saved = dist_checkpointing.load_content_metadata(str(path)) or {}
    if optimizer is not None and saved.get("distrib_optim_sharding_type") == "dp_reshardable":
        _materialize_optimizer_state(optimizer)
        _keep_torch_adam_step(optimizer)
        sharded = {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True,
                                                                               metadata=saved)}
        loaded = dist_checkpointing.load(sharded, str(path))
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        return
    pairs = _params_with_keys(model_sd, model) if optimizer is not None else []
    state: dict[str, Any] = {}
    for param, sh in pairs:
        empty = {k: torch.empty(param.shape, dtype=torch.float32) for k in STATE_KEYS}
        state.update(_state_tensors(sh, empty))
    loaded = dist_checkpointing.load({"model": model_sd, "optimizer": state}, str(path))
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        _set_optimizer_state(optimizer, pairs, loaded["optimizer"])


@torch.no_grad()
def _set_optimizer_state(optimizer: Any, pairs: list[tuple[torch.nn.Parameter, Any]], loaded: dict[str, Any]) -> None:
    """Scatter the loaded per-parameter state into this DP rank's part of the distributed optimizer."""
    _materialize_optimizer_state(optimizer)
    step = saved_adam_step(loaded)
    for param, sh in pairs:
        owner = _owner(optimizer, param)
        if owner is None:
            continue
        opt, where = owner
        tensors = opt._get_main_param_and_optimizer_states(param)
        for key in STATE_KEYS:
            full = loaded[f"{OPTIMIZER_PREFIX}{key}.{sh.key}"].reshape(-1)
            tensors[key].copy_(full[where.start:where.end].view_as(tensors[key]))
        if "step" in tensors and isinstance(tensors["step"], torch.Tensor):
            tensors["step"].fill_(step)
    for opt in _optimizers(optimizer):  # megatron keeps Adam's step in the groups without Apex/TE
        for group in opt.optimizer.param_groups:
            if "step" in group:
                group["step"] = step


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
