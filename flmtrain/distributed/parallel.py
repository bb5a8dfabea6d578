"""torch.distributed + megatron-core parallel state, for torchrun jobs and for one plain process.

Under torchrun (RANK/WORLD_SIZE/MASTER_ADDR in the environment) the process group comes from the
environment; otherwise a one-process group is made over a TCP store on a free port, so the same code path (and
megatron's parallel_state) works in a test, on a laptop and on a cluster. What was set up is returned as a
`ParallelInfo` and passed down to whatever needs to know the device or the layout.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from flm.config import ConfigError
from flm.train.config import StageConfig

_owned_group = False
"""True when init_parallel created the process group (and so destroy_parallel ends it)."""
_excepthook_before = sys.excepthook
"""torch wraps sys.excepthook at every init_process_group (a "[rankN]:" prefix); restored on destroy."""


@dataclass(frozen=True)
class ParallelInfo:
    """This process's place in the job and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    backend: str
    device: torch.device

    @property
    def cuda(self) -> bool:
        """Whether this process computes on its GPU (NCCL); False on the CPU path, also on a GPU machine."""
        return self.device.type == "cuda"

    @property
    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device) if self.cuda else "cpu"


def seed_everything(seed: int, *, cuda: bool) -> None:
    """Seed Python, torch and (on GPU) megatron's model-parallel CUDA RNG tracker.

    Each pipeline stage gets seed + 100 * stage (megatron's convention) so stages draw different
    weights; data-parallel replicas draw the same ones.
    """
    if parallel_state.model_parallel_is_initialized():
        seed += 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    torch.manual_seed(seed)
    if cuda and parallel_state.model_parallel_is_initialized():
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # calls CUDA at import time

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
    cuda = dist.get_backend() == "nccl"  # a group made earlier decides
    world = dist.get_world_size()
    if world % (tp * pp):
        raise ConfigError(f"world size {world} is not divisible by tp * pp = {tp} * {pp}")
    if parallel_state.model_parallel_is_initialized() and (
            parallel_state.get_tensor_model_parallel_world_size() != tp
            or parallel_state.get_pipeline_model_parallel_world_size() != pp):
        parallel_state.destroy_model_parallel()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    seed_everything(seed, cuda=cuda)
    return current_parallel()


def current_parallel() -> ParallelInfo:
    """The process group and megatron groups as they are now (one CPU process when none is set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ParallelInfo(rank=0, world_size=1, local_rank=0, tp=1, pp=1, dp=1, backend="none",
                            device=torch.device("cpu"))
    groups = parallel_state.model_parallel_is_initialized()
    tp = parallel_state.get_tensor_model_parallel_world_size() if groups else 1
    pp = parallel_state.get_pipeline_model_parallel_world_size() if groups else 1
    world = dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = dist.get_backend() == "nccl"
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


def fit_layout(stage: StageConfig) -> StageConfig:
    """`stage` with the TP x PP that this launch can run: the stage's own when the world size (torchrun's
    WORLD_SIZE, else 1) divides by it, else one rank per model copy (e.g. evaluating a TP=2 checkpoint
    in one process). Loading reshards either way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world % (stage.parallel.tp * stage.parallel.pp):
        stage.parallel.tp = stage.parallel.pp = 1
    return stage


@contextmanager
def distributed(stage: StageConfig, seed: int) -> Iterator[ParallelInfo]:
    """The process group and megatron's groups for `stage` (torchrun's environment or one process), torn down
    on exit unless they existed before; train.device picks NCCL on the GPU or gloo on the CPU. The RNGs are
    seeded with `seed` either way: a run in a process whose groups already exist draws the same weights and
    dropout masks as in a fresh one."""
    device = stage.train.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is visible to this process")
    already = dist.is_available() and dist.is_initialized()
    if already:
        info = current_parallel()
        seed_everything(seed, cuda=info.cuda)
    else:
        info = init_parallel(stage.parallel.tp, stage.parallel.pp, backend="gloo" if device == "cpu" else None,
                             seed=seed)
    try:
        yield info
    finally:
        if not already:
            destroy_parallel()
