"""Stage configuration: model shape, optimizer, training schedule and parallel plan.

A stage (tiny, 125m, 1b, 16b, 51b, 101b, ...) is one YAML file under configs/stages/ loaded into
`StageConfig` by flmconfig's generic loader. Defaults follow FLM-101B's released config.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class MupConfig:
    """μP (arXiv 2304.06875): multipliers and per-group LR derived from width / base_width."""

    enabled: bool = False
    """μP on: width-dependent multipliers, init and per-group LRs (else standard parametrisation)."""
    base_width: int = 256
    """The hidden size the hyperparameters were tuned at; width_mult = hidden / base_width."""
    input_mult: float = 1.0
    """Multiplier on the input embeddings' output."""
    output_mult: float = 2.0
    """Multiplier on the output logits (divided by width_mult under μP)."""

    def validate(self) -> None:
        if self.base_width <= 0:
            raise ValueError(f"mup.base_width must be positive, got {self.base_width}")


@dataclass
class KernelConfig:
    """How the model's step runs on a GPU: none of it changes the function the model computes.

    `compile` and `attention` apply on CUDA only (the CPU path runs the same code eagerly).
    """

    compile: bool = True
    """torch.compile the elementwise pieces: RMSNorm, SwiGLU (megatron's fused swiglu), xPos, the loss's softmax."""
    fused_loss: bool = True
    """Output layer + cross-entropy in token chunks, gradients taken in the forward pass, so the
    [tokens, vocab] logits are never kept (flm.train.model.fused_loss); megatron's loss when tp > 1."""
    fuse_wgrad: bool = True
    """bf16 weight gradients accumulated into megatron's fp32 main_grad by the GEMM itself (torch.addmm with
    out_dtype, standing in for apex's fused_weight_gradient_mlp_cuda): no bf16 gradient + add per micro-batch.
    Used only where this torch can do it (checked once on the GPU)."""
    attention: Literal["auto", "cudnn", "flash", "efficient", "math"] = "auto"
    """SDPA kernel: auto tries cuDNN, then flash, memory-efficient and math (the first that accepts the inputs)."""


@dataclass
class ModelConfig:
    """The model's shape and architecture (what a checkpoint's weights fix, but vocab_size and seq_len)."""

    layers: int = 2
    """Transformer blocks."""
    hidden: int = 64
    """Model width (hidden size); must divide by `heads`."""
    heads: int = 4
    """Attention heads; head size = hidden / heads."""
    kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means as many as `heads`."""
    ffn_hidden: int | None = None
    """FFN width; None means 4 x hidden (FLM-101B's n_inner)."""
    vocab_size: int = 100256
    """Token ids; replaced at train time by the token shards' vocabulary when it differs."""
    vocab_pad_multiple: int = 128
    """The embedding is padded to a multiple of this (the same under every TP size; a multiple of tp)."""
    seq_len: int = 2048
    """Tokens per sample; a mixture's own seq_len wins."""
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """LayerNorm (FLM-101B) or RMSNorm (Tele-FLM, Llama)."""
    norm_eps: float = 1e-5
    """Epsilon of the norms."""
    activation: Literal["gelu_tanh", "swiglu"] = "gelu_tanh"
    """FFN activation: GeLU with the tanh approximation (FLM-101B) or SwiGLU (gated; Tele-FLM, Llama)."""
    bias: bool = True
    """Biases in the linear layers and norms."""
    tie_embeddings: bool = True
    """The output layer shares the input embedding's weights."""
    position: Literal["xpos", "rope", "none"] = "xpos"
    """Positions: xPos (rotary with decay, FLM-101B), plain rotary (RoPE), or none."""
    rotary_base: float = 10000.0
    """Rotary frequency base (theta) of xPos and RoPE."""
    xpos_scale_base: float = 512.0
    """xPos's decay scale base."""
    scale_attn_by_inverse_layer_idx: bool = True
    """Attention scores of layer i scaled by 1/i (GPT-2's option, FLM-101B's config)."""
    dropout: float = 0.1
    """Dropout probability of attention and hidden states, in [0, 1)."""
    init_std: float = 0.02
    """Init std of embeddings and (divided by sqrt(width_mult) under μP) hidden matrices."""
    mup: MupConfig = field(default_factory=MupConfig)
    kernels: KernelConfig = field(default_factory=KernelConfig)
    precision: Literal["default", "fp8"] = "default"
    """The transformer layers' GEMMs (QKV, attention output, FFN in and out). default: in train.precision;
    fp8: float8 with per-tensor current scaling (flm.train.model.fp8), on GPUs of compute capability >= 8.9
    only. Embedding, output head, norms, attention and optimizer stay in train.precision either way."""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def ffn_size(self) -> int:
        return self.ffn_hidden if self.ffn_hidden is not None else 4 * self.hidden

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_pad_multiple
        return (self.vocab_size + m - 1) // m * m

    def validate(self) -> None:
        if min(self.layers, self.hidden, self.heads, self.vocab_size, self.seq_len) <= 0:
            raise ValueError("layers, hidden, heads, vocab_size and seq_len must be positive")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.kv_heads is not None and self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.position != "none" and self.head_dim % 2:
            raise ValueError(f"{self.position} needs an even head size, got hidden/heads = {self.head_dim}")
        if self.precision == "fp8":
            bad = {k: v for k, v in (("hidden", self.hidden), ("ffn_hidden", self.ffn_size),
                                     ("kv_heads x head size", (self.kv_heads or self.heads) * self.head_dim))
                   if v % 16}
            if bad:
                raise ValueError("precision fp8 needs multiples of 16 (float8 GEMMs), not: "
                                 + ", ".join(f"{k} = {v}" for k, v in bad.items()))


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (linear warmup, then decay to min_lr)."""

    lr: float = 3e-4
    """Peak learning rate (AdamW), reached after warmup."""
    min_lr: float = 3e-5
    """The LR at the end of the decay."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup: cosine or linear down to min_lr, or constant at lr."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    decay_steps: int | None = None
    """Steps over which the LR decays to min_lr; None means the run's total steps."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay."""
    beta1: float = 0.9
    """AdamW's first-moment decay."""
    beta2: float = 0.95
    """AdamW's second-moment decay."""
    eps: float = 1e-8
    """AdamW's epsilon."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    fused: bool = True
    """torch's fused AdamW kernel on GPU (one pass over the state instead of ~10 foreach passes), and
    multi-tensor kernels for megatron's grad norm and clipping (flm.train.model.apex_kernels); without apex or
    Transformer Engine megatron-core uses torch's AdamW and per-tensor loops with a host sync each."""

    def validate(self) -> None:
        if not (math.isfinite(self.lr) and math.isfinite(self.min_lr)) or not 0 <= self.min_lr <= self.lr \
                or self.lr <= 0:
            raise ValueError(f"need finite 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive (or null: the run's steps), got {self.decay_steps}")
        if not (math.isfinite(self.clip_grad) and self.clip_grad >= 0):
            raise ValueError(f"clip_grad must be >= 0 (0: no clipping), got {self.clip_grad}")
        if not (0 <= self.weight_decay < math.inf and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError("need weight_decay >= 0, 0 <= beta1, beta2 < 1 and eps > 0; got "
                             f"{self.weight_decay}, {self.beta1}, {self.beta2}, {self.eps}")


@dataclass
class TrainConfig:
    """The training run: steps, batch, precision, and how often it logs, evaluates and saves."""

    steps: int = 1000
    """Optimizer steps the run trains to in all (`flm train --steps` overrides it)."""
    global_batch: int = 8
    """Sequences per optimizer step (gradient accumulation fills it from micro-batches)."""
    micro_batch: int = 8
    """Sequences per forward/backward pass on one data-parallel rank."""
    seed: int = 1234
    """Seed of the weights' init and dropout (the data order is the mixture's seed)."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Compute precision on the GPU path (the CPU path trains in fp32)."""
    log_every: int = 10
    """Steps between the step lines `flm train` prints; metrics.jsonl gets every step."""
    eval_every: int = 100
    """Validation loss every N steps and at the end (0: never)."""
    eval_batches: int = 8
    """Micro-batches of the held-out split per validation, over all data-parallel ranks."""
    save_every: int = 500
    """A checkpoint every N steps (0: only at the end, and on a signal)."""
    keep_last: int = 3
    """Checkpoints kept; older ones are pruned (0: keep all)."""
    max_bad_steps: int = 5
    """Stop after this many consecutive steps with a NaN/inf loss or gradient."""
    peak_tflops: float | None = None
    """Peak TFLOP/s per device for MFU; None: looked up from the GPU's name (unknown on CPU)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the GPU path (megatron-core, NCCL, megatron-format checkpoints) when CUDA is available, else the
    CPU path (fp32, gloo, torch-format checkpoints); cpu forces the CPU path on a GPU machine too."""

    def validate(self) -> None:
        if self.global_batch <= 0 or self.micro_batch <= 0:
            raise ValueError("global_batch and micro_batch must be positive")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {self.max_bad_steps}")
        for key in ("save_every", "keep_last", "eval_every", "log_every", "eval_batches"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0 (0: never / keep all), got {getattr(self, key)}")
        if self.peak_tflops is not None and not (0 < self.peak_tflops < math.inf):
            raise ValueError(f"peak_tflops must be a positive number, got {self.peak_tflops}")
        if self.global_batch % self.micro_batch:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of "
                             f"micro_batch ({self.micro_batch})")


@dataclass
class ParallelConfig:
    """The parallel plan; tp * pp * dp GPUs in all."""

    tp: int = 1
    """Tensor-parallel size (GPU path)."""
    pp: int = 1
    """Pipeline-parallel size (GPU path)."""
    dp: int = 1
    """Data-parallel size."""
    distributed_optimizer: bool = True
    """Shard the optimizer state over data parallelism (megatron-core's distributed optimizer)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism (with tp > 1): norms and dropout split over the sequence."""
    optimizer_checkpoint: Literal["fully_reshardable", "dp_reshardable"] = "fully_reshardable"
    """How a GPU checkpoint stores the distributed optimizer: per parameter (fully_reshardable: resumes under
    any TP/PP/DP) or as megatron's DP buckets (dp_reshardable: DP only). megatron-core 0.16.1's
    fully_sharded_model_space cannot be saved ("ShardedTensor.flattened_range is not supported")."""
    overlap_grad_reduce: bool = False
    """GPU engine: reduce each gradient bucket while the backward pass still computes the earlier layers'
    (megatron DDP's overlap_grad_reduce). The CPU engine's torch DDP always overlaps its all-reduce."""
    overlap_param_gather: bool = False
    """GPU engine, distributed optimizer: all-gather each bucket's updated weights during the next forward
    pass instead of at the end of the optimizer step (megatron DDP's overlap_param_gather)."""
    gpus_per_node: int = 8
    """For the torchrun launch line: nodes = ceil(tp * pp * dp / gpus_per_node)."""

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp

    def validate(self) -> None:
        if min(self.tp, self.pp, self.dp, self.gpus_per_node) <= 0:
            raise ValueError("tp, pp, dp and gpus_per_node must be positive")
        if self.overlap_param_gather and not self.distributed_optimizer:
            raise ValueError("overlap_param_gather needs distributed_optimizer: true (without it every rank "
                             "holds all weights and nothing is gathered)")


@dataclass
class GrowthStepConfig:
    """A growth scheduled during training (MSG): once `at_tokens` tokens are trained, grow into stage `to`."""

    at_tokens: int
    """Grow once this many tokens have been trained (counted from the run's start)."""
    to: str
    """Target stage: a bundled stage name (configs/stages/) or a YAML path."""
    ramp_steps: int = 100
    """Steps over which the masks of the new structure ramp from 0 to 1."""

    def validate(self) -> None:
        if self.at_tokens < 0 or self.ramp_steps < 1:
            raise ValueError(f"need at_tokens >= 0 and ramp_steps >= 1, got {self.at_tokens}, {self.ramp_steps}")


@dataclass
class LoggingConfig:
    """Where training metrics go besides RUN/metrics.jsonl, which rank 0 always writes."""

    tensorboard: bool = True
    """TensorBoard event files under RUN/tensorboard/ (off, with a warning, where the package is missing)."""
    wandb: bool = False
    """Also log to Weights & Biases (`pip install 'flm[wandb]'`); its files go under RUN/wandb/, and
    WANDB_MODE=offline keeps them there (`wandb sync` uploads them later)."""
    wandb_project: str = "flm"
    """The W&B project the run logs to."""
    wandb_name: str | None = None
    """The run's name in W&B; None: the run folder's name. A resumed run continues the same W&B run."""
    wandb_entity: str | None = None
    """The W&B team or user; None: the logged-in user's default."""


@dataclass
class StageConfig:
    name: str = "tiny"
    """The stage's name: recorded in checkpoints, and the run folder `flm train --dry-run` suggests."""
    description: str = ""
    """One line for `flm config list`."""
    batch_tokens: int | None = None
    """The paper's batch in tokens, for reference and dry runs (global_batch x seq_len when None)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    growth: list[GrowthStepConfig] = field(default_factory=list)
    """Growths `flm train` makes in place when their token counts are reached (the target stage may
    schedule the next one)."""
