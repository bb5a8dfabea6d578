"""Any checkpoint's tensors by parameter name, one at a time: what evaluation, generation, export and growth
read, on any machine, whichever engine and parallel layout wrote the checkpoint.

Names are those of the model on one rank (`decoder.layers.3.mlp.linear_fc1.weight`). `weight` is the
fp32 master weight where the checkpoint keeps one (GPU training's distributed optimizer), else the weight
as stored; `moments` are Adam's first and second moments; `adam_step` is Adam's step count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch

from flm.train.checkpoint.dist_tensors import (
    COMMON_NAME,
    DIST_DIR,
    MOMENTS,
    OPTIMIZER_PREFIX,
    STACKED_PREFIX,
    DistReader,
    saved_adam_step,
    stacked_key,
)
from flm.train.checkpoint.meta import CheckpointError, read_meta
from flm.train.checkpoint.torch_format import load_plain, load_torch_optimizer, read_torch_weights

log = logging.getLogger(__name__)


class CheckpointTensors(Protocol):
    shapes: dict[str, tuple[int, ...]]
    """Every model parameter's name and full (unsharded) shape."""
    adam_step: float | None

    def weight(self, name: str) -> torch.Tensor: ...

    def moments(self, name: str) -> dict[str, torch.Tensor] | None: ...


class TorchTensors:
    """A "torch" checkpoint (CPU engine): model.pt and optimizer.pt, memory-mapped."""

    def __init__(self, path: Path) -> None:
        self._weights = read_torch_weights(path, mmap=True)
        self.shapes = {k: tuple(v.shape) for k, v in self._weights.items()
                       if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
        self._state: dict[str, dict] = {}
        self.adam_step = None
        if (Path(path) / "optimizer.pt").is_file():
            saved = load_torch_optimizer(path)
            state_dict = saved["state_dict"]
            for group, names in zip(state_dict["param_groups"], saved["param_names"], strict=True):
                for pid, name in zip(group["params"], names, strict=True):
                    if pid in state_dict["state"]:
                        self._state[name] = state_dict["state"][pid]
            steps = [float(s["step"]) for s in self._state.values() if "step" in s]
            self.adam_step = max(steps) if steps else None

    def weight(self, name: str) -> torch.Tensor:
        return self._weights[name]

    def moments(self, name: str) -> dict[str, torch.Tensor] | None:
        state = self._state.get(name)
        if state is None or not all(k in state for k in MOMENTS):
            return None
        return {k: state[k] for k in MOMENTS}


class MegatronTensors:
    """A "megatron" checkpoint (GPU engine): dist_checkpointing's `dist/`, any TP/PP/DP layout."""

    def __init__(self, path: Path) -> None:
        self.reader = DistReader(Path(path) / DIST_DIR)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for key, md in self.reader.entries().items():
            if key.startswith(OPTIMIZER_PREFIX):
                continue
            shape = tuple(md.size)
            if key.startswith(STACKED_PREFIX):
                rest = key[len(STACKED_PREFIX):]
                for layer in range(shape[0]):
                    self.shapes[f"{STACKED_PREFIX}{layer}.{rest}"] = shape[1:]
            else:
                self.shapes[key] = shape
        self.adam_step = _common_step(Path(path) / DIST_DIR / COMMON_NAME)
        self.shifted: set[str] = set()
        self.bucketed = any(key.startswith("optimizer.distributed.") for key in self.reader.entries())
        """Adam's state stored in megatron's buckets (optimizer_checkpoint dp_reshardable): not per parameter."""

    def weight(self, name: str) -> torch.Tensor:
        """The fp32 master weight; the stored weight where the two disagree (then its Adam state is not used)."""
        if name not in self.shapes:
            raise CheckpointError(f"{self.reader.directory}: no parameter {name!r}")
        base, row = stacked_key(name)
        stored = self.reader.read(base, row)
        master_key = f"{OPTIMIZER_PREFIX}param.{base}"
        if not self.reader.has(master_key):
            return stored
        master = self.reader.read(master_key, row)
        if torch.equal(master.to(stored.dtype), stored):
            return master
        log.warning("%s: its optimizer state does not belong to its weight (megatron-core 0.16.1's shifted "
                    "state, its issue #504, in a checkpoint saved before flm repaired it): using the weight, "
                    "without its Adam moments", name)
        self.shifted.add(name)
        return stored

    def moments(self, name: str) -> dict[str, torch.Tensor] | None:
        base, row = stacked_key(name)
        keys = {k: f"{OPTIMIZER_PREFIX}{k}.{base}" for k in MOMENTS}
        if name in self.shifted or not all(self.reader.has(key) for key in keys.values()):
            return None
        return {k: self.reader.read(key, row) for k, key in keys.items()}


def _common_step(path: Path) -> float | None:
    """Adam's step from common.pt."""
    if not path.is_file():
        return None
    return saved_adam_step(load_plain(path).get("optimizer") or {})


def open_tensors(path: Path) -> CheckpointTensors:
    """The tensors of checkpoint directory `path`, whichever format it is in."""
    meta = read_meta(path)
    if meta.format == "torch":
        return TorchTensors(path)
    if meta.format == "megatron":
        return MegatronTensors(path)
    raise CheckpointError(f"{path}: unknown checkpoint format {meta.format!r}")


@torch.no_grad()
def load_into(tensors: CheckpointTensors, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
              *, source: Path) -> None:
    """Fill a one-rank model (and its torch optimizer's Adam state) from any checkpoint's tensors."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(tensors.shapes))
    unexpected = sorted(set(tensors.shapes) - set(params))
    wrong = [f"{n}: checkpoint {tensors.shapes[n]} vs model {tuple(p.shape)}"
             for n, p in params.items() if n in tensors.shapes and tensors.shapes[n] != tuple(p.shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: model does not match the checkpoint; missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
    for name, param in params.items():
        param.copy_(tensors.weight(name))
    if optimizer is None:
        return
    step = torch.tensor(float(tensors.adam_step or 0.0))
    for name, param in params.items():
        moments = tensors.moments(name)
        if moments is None:
            raise CheckpointError(f"{source}: no Adam state for {name}; cannot resume training from it")
        optimizer.state[param] = {"step": step.clone(),
                                  **{k: v.to(param.dtype).clone() for k, v in moments.items()}}
