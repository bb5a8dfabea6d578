"""torch.distributed + megatron-core parallel state, for torchrun jobs and for one plain process.

Under torchrun (RANK/WORLD_SIZE/MASTER_ADDR in the environment) the process group comes from the
environment; otherwise a one-process group is made over a TCP store on a free port, so the same code path (and
megatron's parallel_state) works in a test, on a laptop and on a cluster.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from flm.config import ConfigError

_owned_group = False
_excepthook_before = sys.excepthook
"""torch wraps sys.excepthook at every init_process_group (a "[rankN]:" prefix); restored on destroy."""
"""True when init_parallel created the process group (and so destroy_parallel ends it)."""


@dataclass(frozen=True)
class ParallelInfo:
    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    backend: str
    device: torch.device


def on_gpu() -> bool:
    """Whether this process computes on its GPU: its process group is NCCL (init_parallel picks gloo for the
    CPU path, also on a machine with GPUs when the stage says train.device=cpu)."""
    return dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl"


def seed_everything(seed: int) -> None:
    """Seed Python, torch and (on GPU) megatron's model-parallel CUDA RNG tracker.

    Each pipeline stage gets seed + 100 * stage (megatron's convention) so stages draw different
    weights; data-parallel replicas draw the same ones.
    """
    if parallel_state.model_parallel_is_initialized():
        seed += 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    torch.manual_seed(seed)
    if on_gpu() and parallel_state.model_parallel_is_initialized():
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)


def _init_process_group(backend: str) -> None:
    global _owned_group, _excepthook_before
    _excepthook_before = sys.excepthook
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend)
    else:  # one process: a store on a free localhost port
        store = dist.TCPStore("127.0.0.1", 0, world_size=1, is_master=True)
        dist.init_process_group(backend=backend, store=store, rank=0, world_size=1)
    _owned_group = True


def init_parallel(tp: int = 1, pp: int = 1, *, backend: str | None = None, seed: int = 1234) -> ParallelInfo:
    """Initialise (or reuse) the process group and megatron's TP/PP/DP groups, then seed the RNGs."""
    cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if cuda else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        _init_process_group(backend)
    world = dist.get_world_size()
    if world % (tp * pp):
        raise ConfigError(f"world size {world} is not divisible by tp * pp = {tp} * {pp}")
    if parallel_state.model_parallel_is_initialized() and (
            parallel_state.get_tensor_model_parallel_world_size() != tp
            or parallel_state.get_pipeline_model_parallel_world_size() != pp):
        parallel_state.destroy_model_parallel()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    seed_everything(seed)
    return ParallelInfo(rank=dist.get_rank(), world_size=world, local_rank=local_rank, tp=tp, pp=pp,
                        dp=world // (tp * pp), backend=dist.get_backend(),
                        device=torch.device("cuda", local_rank) if cuda else torch.device("cpu"))


def destroy_parallel() -> None:
    """Tear down megatron's groups, and the process group if init_parallel made it."""
    global _owned_group
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if _owned_group and dist.is_initialized():
        dist.destroy_process_group()
        sys.excepthook = _excepthook_before
    _owned_group = False
