"""Parameter and FLOP arithmetic of a model config, without allocating a weight.

The parameter count is exact for what `flm.train.model.gpt.build_model` builds (a test holds them
equal). FLOPs per token follow the convention the benchmarks use: 6·N + 12·L·h·s, with N the
weights of every matrix a token passes through (output head included, embedding lookup not).
"""


from __future__ import annotations

from flm.train.config import ModelConfig


def padded_vocab(cfg: ModelConfig) -> int:
    """The embedding's rows: the vocabulary rounded up to model.vocab_pad_multiple, the same under every
    tensor-parallel size, so a checkpoint's shapes do not depend on the layout that wrote it."""
    step = cfg.vocab_pad_multiple
    return (cfg.vocab_size + step - 1) // step * step


def kv_heads(cfg: ModelConfig) -> int:
    return cfg.kv_heads or cfg.heads


def layer_matrix_params(cfg: ModelConfig) -> int:
    """Weights of the matrices in one transformer layer (QKV, output projection, FFN)."""
    h, d = cfg.hidden, cfg.head_dim
    qkv = h * (cfg.heads + 2 * kv_heads(cfg)) * d
    proj = cfg.heads * d * h
    fc1 = h * cfg.ffn_size * (2 if cfg.activation == "swiglu" else 1)
    fc2 = cfg.ffn_size * h
    return qkv + proj + fc1 + fc2


def _norm_params(cfg: ModelConfig) -> int:
    # torch LayerNorm always has a bias; RMSNorm has only a gain.
    return cfg.hidden * (2 if cfg.norm == "layernorm" else 1)


def layer_params(cfg: ModelConfig) -> int:
    """All parameters of one transformer layer."""
    biases = 0
    if cfg.bias:
        f1 = cfg.ffn_size * (2 if cfg.activation == "swiglu" else 1)
        biases = (cfg.heads + 2 * kv_heads(cfg)) * cfg.head_dim + cfg.hidden + f1 + cfg.hidden
    return layer_matrix_params(cfg) + biases + 2 * _norm_params(cfg)


def param_count(cfg: ModelConfig) -> int:
    """Exact parameter count of the whole model (all ranks; a tied embedding counted once)."""
    embedding = padded_vocab(cfg) * cfg.hidden
    head = 0 if cfg.tie_embeddings else embedding
    return embedding + cfg.layers * layer_params(cfg) + _norm_params(cfg) + head


CPU_TRAIN_BYTES_PER_PARAM = 16
"""What training holds per parameter on the CPU engine: the fp32 weight, its gradient and AdamW's two moments."""


def cpu_train_bytes(cfg: ModelConfig, *, train: bool = True) -> int:
    """Host memory the CPU engine's weights (and, to train, gradients and Adam state) take, activations aside."""
    return param_count(cfg) * (CPU_TRAIN_BYTES_PER_PARAM if train else 4)


def stage_params_per_gpu(cfg: ModelConfig, tp: int, pp: int) -> int:
    """Parameters held by one GPU of the heaviest pipeline stage (vectors counted whole; close enough)."""
    layers = cfg.layers // pp * layer_params(cfg) // tp
    vocab = padded_vocab(cfg) * cfg.hidden // tp
    first = layers + vocab
    # The last stage holds the output head (a copy of the embedding when tied, on its own stage).
    last = layers + _norm_params(cfg) + (vocab if (pp > 1 or not cfg.tie_embeddings) else 0)
    return max(first, last) if pp > 1 else first + last - layers


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, *, recompute: bool = False) -> float:
    """Training FLOPs per token: 6·N + 12·L·h·s (8·N + 16·L·h·s when the forward is recomputed)."""
    s = seq_len or cfg.seq_len
    n = cfg.layers * layer_matrix_params(cfg) + padded_vocab(cfg) * cfg.hidden
    attention = 4 * cfg.layers * cfg.heads * cfg.head_dim * s  # QK^T and AV: 2·s·h each, forward, per token
    passes = 4 if recompute else 3
    return passes * (2 * n + attention)
