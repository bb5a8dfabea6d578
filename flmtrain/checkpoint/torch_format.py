"""The "torch" checkpoint format (the CPU engine): `model.pt` (the full state dict) and `optimizer.pt` (torch
AdamW's state dict plus each group's parameter names, so growth and export can map moments by name).
Both load with `weights_only=True`: a checkpoint is data, never code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from flm.train.checkpoint.meta import CheckpointError

MODEL_NAME = "model.pt"
OPTIMIZER_NAME = "optimizer.pt"


def save_torch(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    torch.save(model.state_dict(), directory / MODEL_NAME)
    if optimizer is not None:
        torch.save({"state_dict": optimizer.state_dict(), "param_names": optimizer_param_names(model, optimizer)},
                   directory / OPTIMIZER_NAME)


def load_plain(path: Path, *, mmap: bool = False) -> Any:
    """A torch file of tensors and plain data only (`weights_only=True`): anything that would build another
    object, and so could run code, is refused with a CheckpointError naming the file."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: missing; not a complete checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused: holds more than tensors and plain data ({first})") from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable (truncated or corrupt?): {err}") from err


def load_torch_optimizer(directory: Path) -> dict[str, Any]:
    """optimizer.pt as saved: {"state_dict": ..., "param_names": [[name, ...] per group]}."""
    return load_plain(Path(directory) / OPTIMIZER_NAME)


def read_torch_weights(directory: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    return load_plain(Path(directory) / MODEL_NAME, mmap=mmap)


def optimizer_param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Parameter names per optimizer group, in the order of the optimizer's integer state ids."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "") for p in group["params"]] for group in optimizer.param_groups]


def load_torch_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a torch-format checkpoint's model weights, naming any mismatch clearly."""
    weights = read_torch_weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in weights and isinstance(v, torch.Tensor) and weights[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path}: model does not match the checkpoint; missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shape mismatches {wrong[:5]}")
    model.load_state_dict(weights)
