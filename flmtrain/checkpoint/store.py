"""Save and load a checkpoint in either format behind one interface.

Layout of `<run_dir>/checkpoints/step-N/`:
- the weights and optimizer state: `model.pt` + `optimizer.pt` (format "torch", torch_format.py) or `dist/`
  (format "megatron", megatron_format.py);
- `rng/rank-<r>.pt`: every RNG of every rank (rng.py);
- `state.json`: step, scheduler, dataloader state (global consumed samples) and counters;
- `meta.json`: what the checkpoint is (meta.py). Written last, into a temporary directory renamed into place
  (layout.py).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flm.train.checkpoint.dist_tensors import DIST_DIR
from flm.train.checkpoint.integrity import verify_checkpoint, write_checksums
from flm.train.checkpoint.layout import TMP_PREFIX, commit_directory, prune, read_state, write_state
from flm.train.checkpoint.meta import META_NAME, CheckpointError, CheckpointMeta, read_meta, write_meta
from flm.train.checkpoint.rng import RNG_DIR, load_rng, save_rng
from flm.train.checkpoint.tensors import MegatronTensors, load_into
from flm.train.checkpoint.torch_format import load_torch_optimizer, load_torch_weights, save_torch

FORMATS = ("torch", "megatron")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_checkpoint(root: Path, step: int, *, model: torch.nn.Module, optimizer: Any, fmt: str,
                    state: dict[str, Any], meta: CheckpointMeta, keep_last: int = 0,
                    optimizer_sharding: str = "fully_reshardable") -> Path:
    """Save on every rank (collective); returns the final `step-N` path.

    `model` is the unwrapped module (no DDP wrapper). `fmt` is "torch" (rank 0 writes the full
    model and optimizer state) or "megatron" (dist_checkpointing, every rank writes its shards, the
    distributed optimizer's state stored as `optimizer_sharding` says: megatron_format.DEFAULT_SHARDING).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; allowed: {', '.join(FORMATS)}")
    root = Path(root)
    final = root / f"step-{step}"
    tmp = root / f"{TMP_PREFIX}{step}.tmp"
    rank = _rank()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{TMP_PREFIX}*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        (tmp / RNG_DIR).mkdir(parents=True)
    _barrier()
    if fmt == "torch":
        if rank == 0:
            save_torch(tmp, model, optimizer)
    else:
        from flm.train.checkpoint.megatron_format import save_megatron  # CUDA only

        save_megatron(tmp / DIST_DIR, model, optimizer, optimizer_sharding)
    save_rng(tmp, rank)
    _barrier()
    if rank == 0:
        write_state(tmp, state)
        write_checksums(tmp)
        write_meta(tmp, dataclasses.replace(meta, step=step, format=fmt))
        commit_directory(tmp, final)
        if keep_last > 0:
            prune(root, keep_last)
    _barrier()
    return final


def _on_gpu(model: torch.nn.Module) -> bool:
    return any(p.is_cuda for p in model.parameters())


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer: Any | None = None) -> dict[str, Any]:
    """Load model (and optimizer, if given) state in place; returns {"meta", "state", "rng"} (this rank's RNG).

    A GPU (megatron) checkpoint loads into a GPU model through megatron-core, whatever TP/PP/DP layout wrote
    it, and into a CPU model (the CPU engine: evaluation, generation, training) tensor by tensor.

    RNG is returned, not applied: the caller restores it right before the first step, so nothing
    set up in between perturbs it.
    """
    path = Path(path)
    meta = read_meta(path)
    verify_checkpoint(path)
    if meta.format == "torch":
        load_torch_weights(path, model)
        if optimizer is not None:
            optimizer.load_state_dict(load_torch_optimizer(path)["state_dict"])
    elif meta.format == "megatron" and not _on_gpu(model):
        load_into(MegatronTensors(path), model, optimizer, source=path)
    elif meta.format == "megatron":
        from flm.train.checkpoint.megatron_format import load_megatron  # CUDA only

        load_megatron(path / DIST_DIR, model, optimizer)
    else:
        raise CheckpointError(f"{path / META_NAME}: unknown format {meta.format!r}; allowed: {', '.join(FORMATS)}")
    return {"meta": meta, "state": read_state(path), "rng": load_rng(path, _rank())}
