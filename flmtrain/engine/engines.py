"""The two execution back ends of the one training loop.

`CpuEngine` (CI, laptops): fp32, torch DDP over gloo when there is more than one rank, torch AdamW
with μP parameter groups, micro-batches accumulated by hand.
`MegatronEngine` (GPUs): bf16, megatron-core DDP + distributed optimizer, micro-batches and
pipeline stages scheduled by `get_forward_backward_func`, checkpoints via dist_checkpointing.

Both expose the same steps (forward_backward, grad_norm, step, zero_grad, eval_sums), so the loop in
train.py reads the same for both. Batches are the loader's dicts: `tokens` [b, s+1] (inputs and
shifted labels) plus optional `position_ids`, `attention_mask`, `loss_mask`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist

from flm.config import ConfigError
from flm.train.config import StageConfig

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def split_batch(batch: Batch, device: torch.device) -> dict[str, torch.Tensor | None]:
    """Loader batch -> model inputs: inputs are tokens[:, :-1], labels tokens[:, 1:]."""
    tokens = batch["tokens"].to(device, non_blocking=True)
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    position_ids = batch.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(inputs.shape[1], device=device).unsqueeze(0).expand_as(inputs)
    else:
        position_ids = position_ids[:, : inputs.shape[1]].to(device)
    mask = batch.get("attention_mask")
    loss_mask = batch.get("loss_mask")
    return {"input_ids": inputs, "position_ids": position_ids, "labels": labels,
            "attention_mask": None if mask is None else mask.to(device),
            "loss_mask": None if loss_mask is None else loss_mask[:, : labels.shape[1]].to(device).float()}


def loss_sum(model: torch.nn.Module, inputs: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked sum of the token losses (the model's fused loss where it has one) and the token count."""
    total = model(inputs["input_ids"], inputs["position_ids"], inputs["attention_mask"], labels=inputs["labels"],
                  loss_mask=inputs["loss_mask"], sum_loss=True)
    labels, mask = inputs["labels"], inputs["loss_mask"]
    count = mask.sum() if mask is not None else torch.tensor(float(labels.numel()), device=labels.device)
    return total, count


class CpuEngine:
    """fp32 on CPU; torch DDP when the data-parallel group has more than one rank."""

    checkpoint_format = "torch"

    def __init__(self, stage: StageConfig, vocab_size: int, *, train: bool = True) -> None:
        from flm.train.model.gpt import build_model
        from flm.train.model.mup import param_groups

        if stage.parallel.tp != 1 or stage.parallel.pp != 1:
            raise ConfigError(f"stage {stage.name!r} asks for tp={stage.parallel.tp} pp={stage.parallel.pp}; the CPU "
                             "path is data-parallel only: --set parallel.tp=1 --set parallel.pp=1")
        if stage.train.precision != "fp32":
            log.warning("precision %s asked for; the CPU path trains in fp32", stage.train.precision)
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

    def grad_norm(self) -> float:
        params = [p for p in self.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm([p.grad for p in params]))

    def step(self, grad_norm: float, clip: float) -> None:
        if clip > 0:
            params = [p for p in self.module.parameters() if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(params, clip, torch.tensor(grad_norm))
        self.optimizer.step()

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


class MegatronEngine:
    """bf16 on GPU: megatron-core DDP + distributed optimizer + pipeline schedules."""

    checkpoint_format = "megatron"

    def __init__(self, stage: StageConfig, vocab_size: int, *, train: bool = True) -> None:
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.transformer.module import Float16Module

        from flm.train.engine.multi_tensor import install_multi_tensor_ops
        from flm.train.model.gpt import build_model

        self.stage = stage
        self.device = torch.device("cuda", torch.cuda.current_device())
        precision = stage.train.precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        self.precision = precision
        module = build_model(stage.model, vocab_size=vocab_size, params_dtype=dtype,
                             sequence_parallel=stage.parallel.sequence_parallel).to(self.device)
        config = module.config
        config.bf16, config.fp16 = precision == "bf16", precision == "fp16"
        self.module = module
        wrapped = Float16Module(config, module) if precision != "fp32" else module
        self.model = wrapped
        self.optimizer = None
        if not train:
            return
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, overlap_param_gather=False,
            use_distributed_optimizer=stage.parallel.distributed_optimizer, check_for_nan_in_grad=False)
        self.model = DistributedDataParallel(config, ddp_config, wrapped)
        optim = stage.optim
        opt_config = OptimizerConfig(
            optimizer="adam", lr=optim.lr, min_lr=optim.min_lr, weight_decay=optim.weight_decay,
            adam_beta1=optim.beta1, adam_beta2=optim.beta2, adam_eps=optim.eps, clip_grad=0.0,
            bf16=precision == "bf16", fp16=precision == "fp16", params_dtype=dtype,
            initial_loss_scale=2.0**16,  # fp16: megatron's 2**32 overflows for many steps, each one a skipped step
            use_distributed_optimizer=stage.parallel.distributed_optimizer)
        if optim.fused:
            install_multi_tensor_ops()
        self.optimizer = get_megatron_optimizer(opt_config, [self.model], config_overrides=self._overrides(opt_config))
        for group in self.optimizer.param_groups:  # megatron's own scheduler would apply wd_mult; ours is LR-only
            group["weight_decay"] = optim.weight_decay * group.get("wd_mult", 1.0)
        if optim.fused:
            self._fuse_adam()
        config.no_sync_func = self.model.no_sync
        config.finalize_model_grads_func = finalize_model_grads
        config.grad_scale_func = self.optimizer.scale_loss
        self.config = config

    def _fuse_adam(self) -> None:
        """Switch torch's AdamW (megatron's choice without apex/TE) to its fused kernel before the first step,
        so its `step` state is created on the GPU as the fused kernel wants; checkpoints keep the flag."""
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            inner = getattr(opt, "optimizer", None)
            if isinstance(inner, torch.optim.Adam | torch.optim.AdamW):
                for group in inner.param_groups:
                    group["foreach"], group["fused"] = False, True

    def _overrides(self, opt_config: Any) -> dict:
        """Megatron's standard no-decay rule for biases/norms plus μP per-parameter LR multipliers."""
        from megatron.core.optimizer import ParamKey, ParamWithNamePredicate, get_standard_config_overrides

        from flm.train.model.mup import lr_scale

        overrides = get_standard_config_overrides(opt_config)
        cfg = self.stage.model

        def scale(param: torch.nn.Parameter, name: str) -> float:
            while name.startswith("module."):
                name = name[len("module."):]
            return float(lr_scale(name, param, cfg))

        scales = sorted({scale(p, n) for n, p in self.model.named_parameters()} - {1.0})
        for s in scales:
            key = ParamKey(with_name_predicate=ParamWithNamePredicate(
                name=f"mup_lr_{s!r}", fn=lambda p, n, s=s: scale(p, n) == s))
            overrides[key] = {"lr_mult": s}
        return overrides

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def _forward_step(self, data_iterator, model):  # type: ignore[no-untyped-def]
        summed, tokens = loss_sum(model, split_batch(next(data_iterator), self.device))

        def loss_func(output: torch.Tensor):  # type: ignore[no-untyped-def]
            return output / tokens, {"sum": output.detach(), "count": tokens.detach()}

        return summed, loss_func

    def _run(self, batches: list[Batch], forward_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from megatron.core import parallel_state
        from megatron.core.pipeline_parallel import get_forward_backward_func

        micro, seq = batches[0]["tokens"].shape[0], batches[0]["tokens"].shape[1] - 1
        outputs = get_forward_backward_func()(
            forward_step_func=self._forward_step, data_iterator=iter(batches), model=[self.model],
            num_microbatches=len(batches), seq_length=seq, micro_batch_size=micro, forward_only=forward_only)
        total = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            for out in outputs:
                total += out["sum"]
                count += out["count"]
        return total, count

    def forward_backward(self, batches: list[Batch]) -> torch.Tensor:
        """Mean token loss of this rank's micro-batches (0/0 = NaN-free 0 off the last pipeline stage)."""
        self.model.train()
        total, count = self._run(batches, forward_only=False)
        # Sum over the pipeline so every stage sees the last stage's loss.
        from megatron.core import parallel_state

        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            both = torch.stack([total, count])
            dist.all_reduce(both, group=parallel_state.get_pipeline_model_parallel_group())
            total, count = both[0], both[1]
        return (total / count).float().cpu()

    def grad_norm(self) -> float:
        found_inf = self.optimizer.prepare_grads()
        norm = self.optimizer.get_grad_norm()
        return math.inf if found_inf else float(norm)

    def step(self, grad_norm: float, clip: float) -> None:
        from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

        if clip > 0:
            for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
                params = opt.get_parameters()
                if params and not getattr(opt, "is_stub_optimizer", False):
                    clip_grad_by_total_norm_fp32(params, clip, grad_norm)
        self.optimizer.step_with_ready_grads()

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    @torch.no_grad()
    def eval_sums(self, batches: Iterable[Batch]) -> tuple[float, float]:
        from megatron.core import parallel_state

        self.model.eval()
        batches = list(batches)
        if not batches:
            return 0.0, 0.0
        total, count = self._run(batches, forward_only=True)
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            both = torch.stack([total, count])
            dist.all_reduce(both, group=parallel_state.get_pipeline_model_parallel_group())
            total, count = both[0], both[1]
        return float(total), float(count)


def make_engine(stage: StageConfig, vocab_size: int, *, train: bool = True) -> CpuEngine | MegatronEngine:
    """The GPU path (megatron-core) when the process group is NCCL, else the CPU path (see
    StageConfig.train.device); `train=False` builds no optimizer."""
    from flm.train.distributed.parallel import on_gpu

    engine = MegatronEngine if on_gpu() else CpuEngine
    return engine(stage, vocab_size, train=train)
