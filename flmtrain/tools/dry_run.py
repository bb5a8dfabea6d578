"""`flm train --dry-run`: a stage's plan without allocating a weight: parameters, memory per GPU, FLOPs, the
torchrun launch line.

Memory per GPU is an estimate for megatron-core with the distributed optimizer: bf16 weights,
fp32 gradient buffer, fp32 master weights and Adam moments sharded over data parallelism, and
activations after Korthikanti et al. 2022 ("Reducing Activation Recomputation"), with flash
attention (no s² term).
"""

from __future__ import annotations

import math
from typing import Any

from flm.config import ConfigError
from flm.train.config import ModelConfig, StageConfig
from flm.train.model.size import flops_per_token, kv_heads, padded_vocab, param_count, stage_params_per_gpu

GIB = 1024**3


def activation_bytes_per_layer(cfg: ModelConfig, micro_batch: int, seq_len: int, tp: int,
                               sequence_parallel: bool) -> float:
    """Bytes one layer keeps for backward, per micro-batch, 16-bit activations, flash attention."""
    sbh = seq_len * micro_batch * cfg.hidden
    sb = seq_len * micro_batch
    qkv = (cfg.heads + 2 * kv_heads(cfg)) * cfg.head_dim
    fc1 = cfg.ffn_size * (2 if cfg.activation == "swiglu" else 1)
    masks = 2 * sbh if cfg.dropout > 0 else 0  # one byte per element, after attention and after the MLP
    replicated = 2 * 2 * sbh + 2 * 2 * sbh + masks  # norm inputs, QKV and FC1 inputs, dropout masks
    sharded = 2 * sb * qkv + 2 * sbh + 2 * sb * fc1 + 2 * sb * cfg.ffn_size  # q/k/v, proj input, FC1 out, act out
    return (replicated + sharded) / tp if sequence_parallel else replicated + sharded / tp


def memory_per_gpu(stage: StageConfig) -> dict[str, float]:
    """GiB per GPU of the heaviest pipeline stage, with and without full activation recomputation."""
    cfg, par, train = stage.model, stage.parallel, stage.train
    params = stage_params_per_gpu(cfg, par.tp, par.pp)
    weight_bytes = 4 if train.precision == "fp32" else 2
    optim_bytes = 8 if train.precision == "fp32" else 12  # (master +) Adam m and v, fp32
    sharding = par.dp if par.distributed_optimizer else 1
    b, s = train.micro_batch, cfg.seq_len
    per_layer = activation_bytes_per_layer(cfg, b, s, par.tp, par.sequence_parallel)
    recompute_layer = 2 * s * b * cfg.hidden / (par.tp if par.sequence_parallel else 1)
    # With 1F1B the first stage holds pp micro-batches of L/pp layers: L layers' worth in all.
    logits = s * b * padded_vocab(cfg) / par.tp * (weight_bytes + 4)  # logits + fp32 softmax
    out = {
        "weights": params * weight_bytes,
        "grads": params * 4,
        "optimizer": params * optim_bytes / sharding,
        "activations": cfg.layers * per_layer + logits,
        "activations_recompute": cfg.layers * recompute_layer + per_layer + logits,
    }
    static = out["weights"] + out["grads"] + out["optimizer"]
    out["total"] = static + out["activations"]
    out["total_recompute"] = static + out["activations_recompute"]
    return {key: round(value / GIB, 2) for key, value in out.items()}


def torchrun_command(stage: StageConfig) -> str:
    par = stage.parallel
    world = par.world_size
    per_node = min(world, par.gpus_per_node)
    nodes = math.ceil(world / per_node)
    launch = (f"torchrun --standalone --nproc-per-node {per_node}" if nodes == 1 else
              f"torchrun --nnodes {nodes} --nproc-per-node {per_node} --rdzv-backend c10d "
              "--rdzv-endpoint $MASTER_ADDR:29500")
    return f"{launch} --no-python flm train --stage {stage.name} --mixture MIXTURE.yaml --run-dir runs/{stage.name}"


def check_plan(stage: StageConfig) -> None:
    """Raise ConfigError naming the field when the parallel plan cannot hold the model or batch."""
    cfg, par, train = stage.model, stage.parallel, stage.train
    if cfg.heads % par.tp or kv_heads(cfg) % par.tp:
        raise ConfigError(f"parallel.tp ({par.tp}) must divide model.heads ({cfg.heads}) "
                          f"and model.kv_heads ({kv_heads(cfg)})")
    if padded_vocab(cfg) % par.tp:
        raise ConfigError(f"parallel.tp ({par.tp}) must divide the padded vocabulary ({padded_vocab(cfg)}): make "
                          f"model.vocab_pad_multiple a multiple of {par.tp}")
    if cfg.layers % par.pp:
        raise ConfigError(f"parallel.pp ({par.pp}) must divide model.layers ({cfg.layers})")
    if train.global_batch % (train.micro_batch * par.dp):
        raise ConfigError(f"train.global_batch ({train.global_batch}) must be a multiple of "
                         f"train.micro_batch x parallel.dp ({train.micro_batch} x {par.dp})")


def dry_run(stage: StageConfig) -> dict[str, Any]:
    """Everything `flm train --dry-run` reports for a stage; nothing is allocated."""
    check_plan(stage)
    cfg, par, train = stage.model, stage.parallel, stage.train
    params = param_count(cfg)
    embedding = padded_vocab(cfg) * cfg.hidden
    tokens_per_step = train.global_batch * cfg.seq_len
    fpt = flops_per_token(cfg)
    return {
        "stage": stage.name,
        "params": params,
        "params_billion": round(params / 1e9, 3),
        "non_embedding_params": params - embedding * (1 if cfg.tie_embeddings else 2),
        "shape": {"layers": cfg.layers, "hidden": cfg.hidden, "heads": cfg.heads, "kv_heads": kv_heads(cfg),
                  "head_dim": cfg.head_dim, "ffn": cfg.ffn_size, "vocab": cfg.vocab_size,
                  "padded_vocab": padded_vocab(cfg), "seq_len": cfg.seq_len},
        "flops_per_token": fpt,
        "flops_per_token_recompute": flops_per_token(cfg, recompute=True),
        "tokens_per_step": tokens_per_step,
        "flops_per_step": fpt * tokens_per_step,
        "parallel": {"tp": par.tp, "pp": par.pp, "dp": par.dp, "gpus": par.world_size,
                     "nodes": math.ceil(par.world_size / par.gpus_per_node),
                     "micro_batch": train.micro_batch,
                     "grad_accumulation": train.global_batch // (train.micro_batch * par.dp),
                     "sequence_parallel": par.sequence_parallel,
                     "distributed_optimizer": par.distributed_optimizer},
        "params_per_gpu": stage_params_per_gpu(cfg, par.tp, par.pp),
        "memory_per_gpu_gib": memory_per_gpu(stage),
        "torchrun": torchrun_command(stage),
    }
