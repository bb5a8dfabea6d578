"""The two execution back ends of the one training loop, with the same steps (forward_backward, grad_norm,
step, zero_grad, eval_sums), so the loop in flm.train.trainer reads the same for both:

- `CpuEngine` (engine/cpu.py): fp32, gloo, torch DDP and AdamW; torch-format checkpoints.
- `MegatronEngine` (engine/megatron.py): bf16 on GPUs, megatron-core DDP, distributed optimizer, pipeline
  schedules; megatron dist_checkpointing. Imported only on a GPU process.
"""

from __future__ import annotations

from typing import Any

from flm.train.config import StageConfig
from flm.train.distributed.parallel import ParallelInfo
from flm.train.engine.cpu import CpuEngine


def make_engine(stage: StageConfig, vocab_size: int, parallel: ParallelInfo, *, train: bool = True) -> Any:
    """The GPU path (megatron-core) when this process computes on its GPU, else the CPU path (see
    StageConfig.train.device); `train=False` builds no optimizer."""
    if parallel.cuda:
        from flm.train.engine.megatron import MegatronEngine  # megatron's optimizer and DDP need CUDA

        return MegatronEngine(stage, vocab_size, parallel, train=train)
    return CpuEngine(stage, vocab_size, train=train)


__all__ = ["CpuEngine", "make_engine"]
