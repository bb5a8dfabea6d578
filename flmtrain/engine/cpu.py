"""The CPU engine (CI, laptops): fp32, torch DDP over gloo when there is more than one rank, torch AdamW with
μP parameter groups, micro-batches accumulated by hand."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flm.config import ConfigError
from flm.train.config import StageConfig
from flm.train.engine.batch import Batch, loss_sum, split_batch
from flm.train.model.gpt import build_model
from flm.train.model.mup import param_groups
from flm.train.model.size import cpu_train_bytes
from flm.train.teacher.objective import teacher_logits, teacher_sums

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")
GIB = 2**30


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can take without swapping (MemAvailable); None off Linux."""
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(stage: StageConfig, *, train: bool) -> None:
    """A model too large for this machine is a message before allocating, not a MemoryError or the OOM killer."""
    need, available = cpu_train_bytes(stage.model, train=train), available_memory()
    if available is None or need <= available:
        return
    what = "weights and Adam state" if train else "weights"
    raise ConfigError(f"stage {stage.name} needs about {need / GIB:,.1f} GiB for {what} on this CPU, "
                      f"{available / GIB:,.1f} GiB is available; choose a smaller model or train on GPUs")


class CpuEngine:
    """fp32 on CPU; torch DDP when the data-parallel group has more than one rank."""

    checkpoint_format = "torch"
    streams_micro_batches = True
    """forward_backward takes its micro-batches one at a time, so the loop may hand it a lazy sequence."""

    def __init__(self, stage: StageConfig, vocab_size: int, *, train: bool = True) -> None:
        if stage.parallel.tp != 1 or stage.parallel.pp != 1:
            raise ConfigError(f"stage {stage.name!r} asks for tp={stage.parallel.tp} pp={stage.parallel.pp}; the CPU "
                              "path is data-parallel only: --set parallel.tp=1 --set parallel.pp=1")
        if stage.train.precision != "fp32":
            log.warning("precision %s asked for; the CPU path trains in fp32", stage.train.precision)
        check_fits(stage, train=train)
        self.device = torch.device("cpu")
        self.module = build_model(stage.model, vocab_size=vocab_size, params_dtype=torch.float32)
        self.precision = "fp32"
        self.model: torch.nn.Module = self.module
        self.optimizer: torch.optim.Optimizer | None = None
        if not train:
            return
        if dist.is_initialized() and dist.get_world_size() > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(self.module)
        groups = param_groups(self.module, stage.model, stage.optim)
        for group in groups:
            group.setdefault("lr_mult", group.get("lr", stage.optim.lr) / stage.optim.lr)
        self.optimizer = torch.optim.AdamW(groups, lr=stage.optim.lr, betas=(stage.optim.beta1, stage.optim.beta2),
                                           eps=stage.optim.eps, weight_decay=stage.optim.weight_decay)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def forward_backward(self, batches: list[Batch]) -> torch.Tensor:
        """Accumulate gradients over the micro-batches; returns this rank's mean token loss."""
        self.model.train()
        total, count = torch.zeros(()), torch.zeros(())
        n = len(batches)
        for i, batch in enumerate(batches):
            inputs = split_batch(batch, self.device)
            sync = i == n - 1 or not isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.model.no_sync():
                summed, tokens = loss_sum(self.model, inputs)
                (summed / tokens / n).backward()
            total += summed.detach()
            count += tokens
        return total / count

    def teacher_forward_backward(self, batches: list[Batch], verdict_ids: torch.Tensor) -> tuple[float, float, int]:
        """Accumulate the teacher loss's gradients (mean over this rank's propositions); returns its summed loss,
        propositions judged right, and propositions."""
        self.model.train()
        count = sum(len(b["label"]) for b in batches)
        total = right = 0.0
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1 or not isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss, hits = teacher_sums(teacher_logits(self.model, batch, verdict_ids, self.device), batch["label"])
                (loss / count).backward()
            total += float(loss.detach())
            right += float(hits)
        return total, right, count

    def grad_norm(self) -> float:
        params = [p for p in self.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))

    def step(self, grad_norm: float, clip: float) -> None:
        if clip > 0:
            params = [p for p in self.module.parameters() if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(params, clip, torch.tensor(grad_norm))
        self.optimizer.step()

    def sync_params(self) -> None:
        """Nothing to finish: each rank's torch DDP replica holds all of its weights after every step."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_sums(self, batches: Iterable[Batch]) -> tuple[float, float]:
        """Sum of token losses and token count over `batches` on this rank."""
        self.model.eval()
        total = count = 0.0
        for batch in batches:
            summed, tokens = loss_sum(self.module, split_batch(batch, self.device))
            total += float(summed)
            count += float(tokens)
        return total, count
