"""Checkpoints: one `step-N/` directory per save, written under a temporary name and renamed.

Layout of `<run_dir>/checkpoints/step-N/`:
- `model.pt` + `optimizer.pt` (format "torch", the CPU path: torch.save of the state dicts), or
  `dist/` (format "megatron", the GPU path: megatron-core dist_checkpointing of the sharded model
  and distributed-optimizer state, any TP/PP/DP layout);
- `rng/rank-<r>.pt`: python, numpy, torch, CUDA and megatron RNG-tracker states of every rank;
- `state.json`: step, scheduler, dataloader state (global consumed samples) and counters;
- `meta.json`: stage name and config, shapes, growth history, tokens seen. Written last.

A save goes to `.step-N.tmp/` and is renamed to `step-N/` only when complete, so a crash mid-save
leaves the previous checkpoint as the latest usable one; stale temporary directories are removed
by the next save.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from flm.config.errors import FlmError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
META_NAME = "meta.json"
STATE_NAME = "state.json"
STEP_RE = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".step-"


class CheckpointError(FlmError, RuntimeError):
    """A checkpoint is missing, incomplete, or does not match the model being loaded."""


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (a `step-N` dir holding meta.json), oldest first."""
    found = []
    if Path(root).is_dir():
        for path in Path(root).iterdir():
            match = STEP_RE.match(path.name)
            if match and path.is_dir() and (path / META_NAME).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """`latest` (the run dir's newest checkpoint, if any), `none`, or a checkpoint path."""
    if resume == "none":
        return None
    if resume == "latest":
        return latest_checkpoint(checkpoints_root(run_dir))
    path = Path(resume)
    if not (path / META_NAME).is_file():
        raise CheckpointError(f"{path}: not a checkpoint directory (no {META_NAME})")
    return path


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META_NAME
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: not a checkpoint directory (no {META_NAME})") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: malformed JSON: {err}") from err


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_NAME).read_text(encoding="utf-8"))


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    """Every RNG that training draws from on this rank."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
        from megatron.core import tensor_parallel

        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
        from megatron.core import tensor_parallel

        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


# ---------------------------------------------------------------------------------------- save

def save_checkpoint(root: Path, step: int, *, model: torch.nn.Module, optimizer: Any, fmt: str,
                    state: dict[str, Any], meta: dict[str, Any], keep_last: int = 0) -> Path:
    """Save on every rank (collective); returns the final `step-N` path.

    `model` is the unwrapped module (no DDP wrapper). `fmt` is "torch" (rank 0 writes the full
    model and optimizer state) or "megatron" (dist_checkpointing, every rank writes its shards).
    """
    root = Path(root)
    final = root / f"step-{step}"
    tmp = root / f"{TMP_PREFIX}{step}.tmp"
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    _barrier()
    if fmt == "torch":
        if rank == 0:
            torch.save(model.state_dict(), tmp / "model.pt")
            torch.save({"state_dict": optimizer.state_dict(), "param_names": optimizer_param_names(model, optimizer)},
                       tmp / "optimizer.pt")
    elif fmt == "megatron":
        _save_megatron(tmp / "dist", model, optimizer)
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}; allowed: torch, megatron")
    torch.save(rng_state(), tmp / "rng" / f"rank-{rank:05d}.pt")
    _barrier()
    if rank == 0:
        _write_json(tmp / STATE_NAME, state)
        _write_json(tmp / META_NAME, {**meta, "step": step, "format": fmt})
        if final.exists():  # re-saving the same step (e.g. a resumed run that stopped at once)
            old = root / f"{TMP_PREFIX}{step}.old.tmp"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        if keep_last > 0:
            prune(root, keep_last)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns what was removed."""
    removed = [path for _, path in list_checkpoints(root)[:-keep_last]]
    for path in removed:
        shutil.rmtree(path)
    return removed


def optimizer_param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Parameter names per optimizer group, in the order of the optimizer's integer state ids."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]


MEGATRON_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}
"""Distributed-optimizer state as megatron stores its buckets: fully parallel I/O; reshardable in DP only."""


def _save_megatron(path: Path, model: torch.nn.Module, optimizer: Any) -> None:
    from megatron.core import dist_checkpointing

    model_sd = model.sharded_state_dict()
    sharded = {"model": model_sd, "optimizer": optimizer.sharded_state_dict(model_sd, metadata=MEGATRON_METADATA)}
    if _rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
    _barrier()
    dist_checkpointing.save(sharded, str(path), content_metadata=MEGATRON_METADATA)


# ---------------------------------------------------------------------------------------- load

def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: Any | None = None) -> dict[str, Any]:
    """Load model (and optimizer, if given) state in place; returns state.json plus this rank's RNG.

    RNG is returned, not applied: the caller restores it right before the first step, so nothing
    set up in between perturbs it.
    """
    path = Path(path)
    meta = read_meta(path)
    fmt = meta.get("format")
    if fmt == "torch":
        load_torch_weights(path, model)
        if optimizer is not None:
            opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
            optimizer.load_state_dict(opt["state_dict"])
    elif fmt == "megatron":
        _load_megatron(path / "dist", model, optimizer)
    else:
        raise CheckpointError(f"{path / META_NAME}: unknown format {fmt!r}")
    rng_path = path / "rng" / f"rank-{_rank():05d}.pt"
    rng = torch.load(rng_path, weights_only=False) if rng_path.is_file() else None
    return {"meta": meta, "state": read_state(path), "rng": rng}


def load_torch_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a torch-format checkpoint's model weights, naming any mismatch clearly."""
    weights = torch.load(Path(path) / "model.pt", map_location="cpu", weights_only=True)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in weights and isinstance(v, torch.Tensor) and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: model does not match the checkpoint; missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
    model.load_state_dict(weights)


def _load_megatron(path: Path, model: torch.nn.Module, optimizer: Any | None) -> None:
    from megatron.core import dist_checkpointing

    model_sd = model.sharded_state_dict()
    sharded: dict[str, Any] = {"model": model_sd}
    if optimizer is not None:
        _materialize_optimizer_state(optimizer)
        sharded["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=MEGATRON_METADATA)
    loaded = dist_checkpointing.load(sharded, str(path))
    model.load_state_dict(loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])


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
