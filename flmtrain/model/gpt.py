"""The FLM model: megatron-core GPTModel with our layer spec (xPos + SDPA core attention) and μP.

`build_model` turns a `ModelConfig` into a megatron-core `GPTModel` subclass for this process's
tensor/pipeline rank (call `flm.train.distributed.parallel.init_parallel` first). The call is GPTModel's:
`model(input_ids, position_ids, attention_mask=None, labels=None)` returns the per-token loss
[b, s] when labels are given and logits [b, s, vocab] otherwise.

μP (Yang et al. 2021; FLM-101B's μScaling recipe) with width_mult = hidden / base_width:
  - input embeddings are multiplied by `input_mult`;
  - logits are multiplied by `output_mult / width_mult` (applied to the last hidden state, which
    is the same because the output layer has no bias);
  - hidden matrices start with std init_std / sqrt(width_mult), embeddings with init_std;
  - attention is scaled by 1/d_head (flm.train.model.attention); per-parameter LRs are in flm.train.model.mup.

Speed on GPU (`cfg.kernels`, none of which changes the function): compiled RMSNorm, SwiGLU and
xPos, the SDPA kernel order, and `model(..., labels=..., sum_loss=True)`, which returns the
loss-mask-weighted sum of the token losses through flm.train.model.fused_loss (no full logits kept).
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules
from megatron.core.utils import init_method_normal, scaled_init_method_normal

from flm.config import ConfigError
from flm.train.config import ModelConfig
from flm.train.distributed.parallel import seed_everything
from flm.train.model.apex_kernels import wgrad_fusion_available
from flm.train.model.attention import FLMCoreAttention
from flm.train.model.fp8 import check_fp8_device, check_fp8_shapes
from flm.train.model.fp8_layers import Fp8ColumnParallelLinear, Fp8RowParallelLinear
from flm.train.model.fused_loss import linear_cross_entropy_sum
from flm.train.model.mup import width_mult
from flm.train.model.size import padded_vocab
from flm.train.model.teacher_head import verdict_logits


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's "gelu_new"/"gelu_fast": GeLU with the tanh approximation (FLM-101B's activation)."""
    return F.gelu(x, approximate="tanh")


def _rms_norm(x: torch.Tensor, shape: tuple[int, ...], weight: torch.Tensor | None, eps: float | None) -> torch.Tensor:
    return F.rms_norm(x, shape, weight, eps)


_rms_norm_compiled = torch.compile(_rms_norm)


class CompiledRMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm whose forward is compiled: one kernel each way (eager RMSNorm makes several passes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rms_norm_compiled(x, self.normalized_shape, self.weight, self.eps)


class Norm:
    """torch LayerNorm / RMSNorm for megatron's spec, usable with sequence parallelism.

    megatron's WrappedTorchNorm refuses sequence parallelism; the norm itself is per token, so it
    only needs its parameters tagged `sequence_parallel` for megatron to all-reduce their gradients
    over the tensor-parallel group (as its apex and Transformer Engine norms do). `compiled` (GPU)
    gives RMSNorm a compiled forward; LayerNorm is one fused kernel in eager already.
    """

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, *, compiled: bool = False,
                **_: Any) -> torch.nn.Module:
        on_gpu = not config.use_cpu_initialization
        if config.normalization == "RMSNorm":
            norm_cls = CompiledRMSNorm if compiled and on_gpu else torch.nn.RMSNorm
        else:
            norm_cls = torch.nn.LayerNorm
        device = torch.cuda.current_device() if on_gpu else "cpu"
        norm = norm_cls(hidden_size, eps=eps, device=device, dtype=config.params_dtype)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


def hidden_init_std(cfg: ModelConfig) -> float:
    """The init std of hidden matrices (μP: init_std / sqrt(width_mult)); output projections (linear_proj,
    linear_fc2) divide it by sqrt(2 * layers), embeddings use init_std, norms start at 1 and biases at 0."""
    return cfg.init_std / math.sqrt(width_mult(cfg)) if cfg.mup.enabled else cfg.init_std


def transformer_config(cfg: ModelConfig, *, cuda: bool, tp: int = 1, pp: int = 1,
                       params_dtype: torch.dtype = torch.float32,
                       sequence_parallel: bool = False) -> TransformerConfig:
    """megatron-core's TransformerConfig for `cfg`, with the μP init; of megatron's fusions its compiled
    SwiGLU (cfg.kernels.compile) and weight-gradient accumulation (cfg.kernels.fuse_wgrad), on GPU."""
    hidden_std = hidden_init_std(cfg)
    compiled = _compiled(cfg, cuda)
    return TransformerConfig(
        num_layers=cfg.layers,
        hidden_size=cfg.hidden,
        num_attention_heads=cfg.heads,
        num_query_groups=cfg.kv_heads or cfg.heads,
        kv_channels=cfg.head_dim,
        ffn_hidden_size=cfg.ffn_size,
        normalization="RMSNorm" if cfg.norm == "rmsnorm" else "LayerNorm",
        layernorm_epsilon=cfg.norm_eps,
        gated_linear_unit=cfg.activation == "swiglu",
        activation_func=F.silu if cfg.activation == "swiglu" else gelu_tanh,
        add_bias_linear=cfg.bias,
        add_qkv_bias=cfg.bias,
        hidden_dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        init_method_std=hidden_std,
        init_method=init_method_normal(hidden_std),
        output_layer_init_method=scaled_init_method_normal(hidden_std, cfg.layers),
        embedding_init_method_std=cfg.init_std,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        use_cpu_initialization=not cuda,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        bias_activation_fusion=compiled and cfg.activation == "swiglu",
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=(cfg.kernels.fuse_wgrad and params_dtype in (torch.bfloat16, torch.float16)
                                      and wgrad_fusion_available()),
        apply_rope_fusion=False,
        cross_entropy_loss_fusion=False,
        apply_query_key_layer_scaling=False,
    )


def _compiled(cfg: ModelConfig, cuda: bool) -> bool:
    """Whether the model's elementwise pieces run compiled: asked for and on a GPU."""
    return cfg.kernels.compile and cuda


def layer_spec(cfg: ModelConfig, cuda: bool) -> ModuleSpec:
    """One transformer layer: pre-norm attention with our core attention, pre-norm MLP (local modules)."""
    compiled = _compiled(cfg, cuda)
    core_attention = partial(
        FLMCoreAttention, position=cfg.position, rotary_base=cfg.rotary_base, xpos_scale_base=cfg.xpos_scale_base,
        mup=cfg.mup.enabled, inverse_layer_idx=cfg.scale_attn_by_inverse_layer_idx, kernel=cfg.kernels.attention,
        compiled=compiled)
    norm = ModuleSpec(module=Norm, params={"compiled": compiled})
    column, row = (Fp8ColumnParallelLinear, Fp8RowParallelLinear) if cfg.precision == "fp8" \
        else (ColumnParallelLinear, RowParallelLinear)
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=norm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=column, core_attention=core_attention, linear_proj=row,
                    q_layernorm=IdentityOp, k_layernorm=IdentityOp),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=norm,
            mlp=ModuleSpec(module=MLP, params={"ffn_hidden_size": cfg.ffn_size},
                           submodules=MLPSubmodules(linear_fc1=column, linear_fc2=row)),
            mlp_bda=get_bias_dropout_add,
        ),
    )


class FLMModel(GPTModel):
    """GPTModel with μP's input and output multipliers, and `attention_mask` optional (None = causal).

    With labels, `sum_loss=True` returns Σ loss_mask · token loss (a 0-dim fp32 tensor; loss_mask
    None = all ones) instead of the per-token losses: through flm.train.model.fused_loss when
    `fused_loss` and the vocabulary is not split over tensor parallelism, else megatron's loss summed.
    """

    def __init__(self, *args: Any, input_mult: float = 1.0, output_mult: float = 1.0, fused_loss: bool = False,
                 compiled: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.input_mult = input_mult
        self.output_mult = output_mult
        """Effective logit multiplier (μP's output_mult / width_mult); growth keeps it in step with width."""
        self.fused_loss = fused_loss and self.config.tensor_model_parallel_size == 1
        self.compiled = compiled
        self._sum_loss = False
        self._teacher: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None,
                attention_mask: torch.Tensor | None = None, *args: Any, sum_loss: bool = False,
                teacher: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        """`teacher=(judge positions [b], (false, true) ids)` returns the [b, 2] teacher logits
        (flm.train.model.teacher_head) instead of the language output."""
        self._sum_loss, self._teacher = sum_loss, teacher
        try:
            return super().forward(input_ids, position_ids, attention_mask, *args, **kwargs)
        finally:
            self._sum_loss, self._teacher = False, None

    def _preprocess(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        out = super()._preprocess(*args, **kwargs)
        if self.input_mult != 1.0 and kwargs.get("decoder_input") is None and out[0] is not None:
            out = (out[0] * self.input_mult, *out[1:])
        return out

    def _postprocess(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        if self.post_process and self.output_mult != 1.0:
            hidden_states = hidden_states * self.output_mult
        if self._teacher is not None and self.post_process:
            weight = self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights \
                else self.output_layer.weight
            return verdict_logits(hidden_states, weight, *self._teacher,
                                  sequence_parallel=self.config.sequence_parallel)
        labels, loss_mask = kwargs.get("labels"), kwargs.pop("loss_mask", None)
        if not (self._sum_loss and self.post_process and labels is not None):
            return super()._postprocess(hidden_states, *args, **kwargs)
        if self.fused_loss and self.config.mtp_num_layers is None:
            weight = self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights \
                else self.output_layer.weight
            # hidden states are [s, b, h]; labels and mask [b, s]
            return linear_cross_entropy_sum(hidden_states, weight, labels.t(),
                                            None if loss_mask is None else loss_mask.t(), compiled=self.compiled)
        per_token = super()._postprocess(hidden_states, *args, **kwargs).float()
        return per_token.sum() if loss_mask is None else (per_token * loss_mask).sum()


def build_model(cfg: ModelConfig, *, vocab_size: int | None = None, params_dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", sequence_parallel: bool = False,
                seed: int | None = None) -> FLMModel:
    """The model for this process's tensor/pipeline rank, initialised on `device` (a CUDA device: megatron's
    GPU initialisation and, if the config asks, compiled kernels); `seed` (if given) reseeds torch first.

    `sequence_parallel` (the stage's parallel.sequence_parallel) splits norms and dropout along the
    sequence over the tensor-parallel group; it has no effect at tp=1.
    """
    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("megatron parallel state is not initialised: call init_parallel() first")
    cuda = torch.device(device).type == "cuda"
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    if padded_vocab(cfg) % tp:
        raise ConfigError(f"the padded vocabulary ({padded_vocab(cfg)}) must split evenly over tensor parallelism "
                          f"({tp}): make model.vocab_pad_multiple a multiple of {tp}")
    if cfg.layers % pp:
        raise ConfigError(f"model.layers ({cfg.layers}) must be divisible by the pipeline size ({pp})")
    if cfg.precision == "fp8":
        try:
            check_fp8_device(device)
            kv = (cfg.kv_heads or cfg.heads) * cfg.head_dim
            check_fp8_shapes(**{"hidden / tp": cfg.hidden // tp, "qkv out / tp": (cfg.hidden + 2 * kv) // tp,
                                "ffn / tp": cfg.ffn_size // tp})
        except (RuntimeError, ValueError) as err:
            raise ConfigError(str(err)) from err
    if vocab_size is not None:
        cfg = replace(cfg, vocab_size=vocab_size)
    if seed is not None:
        seed_everything(seed, cuda=cuda)
    config = transformer_config(cfg, cuda=cuda, tp=tp, pp=pp, params_dtype=params_dtype,
                                sequence_parallel=sequence_parallel and tp > 1)
    spec = ModuleSpec(module=TransformerBlock, submodules=TransformerBlockSubmodules(
        layer_specs=[layer_spec(cfg, cuda)] * (cfg.layers // pp),
        layer_norm=ModuleSpec(module=Norm, params={"compiled": _compiled(cfg, cuda)})))
    mup = cfg.mup
    return FLMModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab(cfg),
        max_sequence_length=cfg.seq_len,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="none",
        input_mult=mup.input_mult if mup.enabled else 1.0,
        output_mult=mup.output_mult / width_mult(cfg) if mup.enabled else 1.0,
        fused_loss=cfg.kernels.fused_loss,
        compiled=_compiled(cfg, cuda),
    )
