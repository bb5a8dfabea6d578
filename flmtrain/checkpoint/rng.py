"""Every RNG that training draws from, per rank, as tensors and plain values so it loads with weights_only."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flm.train.checkpoint.torch_format import load_plain

RNG_DIR = "rng"


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and (on a GPU) CUDA and megatron's tracker states of this rank."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        from megatron.core import tensor_parallel  # its RNG tracker exists on the GPU path only

        state["cuda"] = torch.cuda.get_rng_state()
        state["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        from megatron.core import tensor_parallel

        torch.cuda.set_rng_state(state["cuda"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def rng_path(directory: Path, rank: int) -> Path:
    return Path(directory) / RNG_DIR / f"rank-{rank:05d}.pt"


def save_rng(directory: Path, rank: int) -> None:
    torch.save(rng_state(), rng_path(directory, rank))


def load_rng(directory: Path, rank: int) -> dict[str, Any] | None:
    """This rank's saved RNG state, or None when the checkpoint has none for it (another world size)."""
    path = rng_path(directory, rank)
    return load_plain(path) if path.is_file() else None
