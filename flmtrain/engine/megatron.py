"""The GPU engine: bf16, megatron-core DDP + distributed optimizer, micro-batches and pipeline stages scheduled
by `get_forward_backward_func`, checkpoints via dist_checkpointing."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import (
    OptimizerConfig,
    ParamKey,
    ParamWithNamePredicate,
    get_megatron_optimizer,
    get_standard_config_overrides,
)
from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.transformer.module import Float16Module

from flm.train.config import StageConfig
from flm.train.distributed.parallel import ParallelInfo
from flm.train.engine.batch import Batch, loss_sum, split_batch
from flm.train.model.apex_kernels import install_multi_tensor_ops
from flm.train.model.gpt import build_model
from flm.train.model.mup import lr_scale
from flm.train.teacher.objective import teacher_logits, teacher_sums


class MegatronEngine:
    """bf16 on GPU: megatron-core DDP + distributed optimizer + pipeline schedules."""

    checkpoint_format = "megatron"

    def __init__(self, stage: StageConfig, vocab_size: int, parallel: ParallelInfo, *, train: bool = True) -> None:
        self.stage = stage
        self.device = parallel.device
        precision = stage.train.precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        self.precision = precision
        module = build_model(stage.model, vocab_size=vocab_size, params_dtype=dtype, device=self.device,
                             sequence_parallel=stage.parallel.sequence_parallel).to(self.device)
        config = module.config
        config.bf16, config.fp16 = precision == "bf16", precision == "fp16"
        self.module = module
        wrapped = Float16Module(config, module) if precision != "fp32" else module
        self.model = wrapped
        self.optimizer = None
        if not train:
            return
        par = stage.parallel
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=par.overlap_grad_reduce,
            overlap_param_gather=par.overlap_param_gather, align_param_gather=par.overlap_param_gather and par.pp > 1,
            use_distributed_optimizer=par.distributed_optimizer, check_for_nan_in_grad=False)
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
        if par.overlap_grad_reduce:  # the pipeline schedules start each chunk's reduction when its backward ends
            config.grad_sync_func = self.model.start_grad_sync
        if ddp_config.align_param_gather:  # every pipeline stage starts its gathers at once, as megatron requires
            config.param_sync_func = self.model.start_param_sync
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
        """Mean token loss of this rank's micro-batches, on the GPU (every pipeline stage holds the last's)."""
        self.model.train()
        total, count = self._run(batches, forward_only=False)
        # Sum over the pipeline so every stage sees the last stage's loss.
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            both = torch.stack([total, count])
            dist.all_reduce(both, group=parallel_state.get_pipeline_model_parallel_group())
            total, count = both[0], both[1]
        return (total / count).float()  # stays on the GPU: the loop reads it once, after one collective

    def teacher_forward_backward(self, batches: list[Batch], verdict_ids: torch.Tensor) -> tuple[float, float, int]:
        """The teacher loss's gradients through megatron's schedules (pipeline stages included); returns this
        rank's summed teacher loss, propositions judged right and propositions (the last stage's, on every
        stage)."""
        self.model.train()
        count = sum(len(b["label"]) for b in batches)

        def forward_step(data_iterator, model):  # type: ignore[no-untyped-def]
            batch = next(data_iterator)
            logits = teacher_logits(model, batch, verdict_ids, self.device)

            def loss_func(output: torch.Tensor):  # type: ignore[no-untyped-def]
                loss, right = teacher_sums(output, batch["label"])
                # megatron divides by the number of micro-batches; scale so the step's gradient is the mean
                return loss * len(batches) / count, {"sum": loss.detach(), "right": right.detach()}

            return logits, loss_func

        micro, seq = batches[0]["tokens"].shape
        outputs = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(batches), model=[self.model],
            num_microbatches=len(batches), seq_length=seq, micro_batch_size=micro, forward_only=False)
        both = torch.zeros(2, device=self.device)
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            for out in outputs:
                both += torch.stack([out["sum"], out["right"]])
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            dist.all_reduce(both, group=parallel_state.get_pipeline_model_parallel_group())
        total, right = both.tolist()
        return total, right, count

    def grad_norm(self) -> float:
        found_inf = self.optimizer.prepare_grads()
        norm = self.optimizer.get_grad_norm()
        return math.inf if found_inf else float(norm)

    def step(self, grad_norm: float, clip: float) -> None:
        if clip > 0:
            for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
                params = opt.get_parameters()
                if params and not getattr(opt, "is_stub_optimizer", False):
                    clip_grad_by_total_norm_fp32(params, clip, grad_norm)
        self.optimizer.step_with_ready_grads()

    def sync_params(self) -> None:
        """Finish the weight all-gather that overlap_param_gather defers to the next forward pass, so the module
        holds this step's weights before a checkpoint (or a growth) reads them."""
        if self.optimizer is not None and self.stage.parallel.overlap_param_gather:
            self.model.start_param_sync(force_sync=True)

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    @torch.no_grad()
    def eval_sums(self, batches: Iterable[Batch]) -> tuple[float, float]:
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
