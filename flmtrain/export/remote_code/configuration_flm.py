"""Configuration of an FLM model exported by `flm export` (loaded by transformers as remote code).

Every hyperparameter that the function depends on is here; this file imports nothing from flm.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class FLMConfig(PretrainedConfig):
    """FLM decoder: pre-norm blocks, xPos / RoPE / no positions, μP multipliers, optional GQA.

    - `norm_type`: "layernorm" (with bias) or "rmsnorm"; `norm_eps` for both.
    - `hidden_act`: "gelu_tanh" (FFN up -> GeLU-tanh -> down) or "swiglu" (silu(gate) * up -> down).
    - `use_bias`: biases on every linear layer but the output head.
    - `position_embedding`: "xpos" (rotary with xPos decay, `xpos_scale_base`), "rope" or "none";
      `rotary_base` is the rotary theta.
    - `mup_attention_scale`: attention scores scaled by 1/head_dim (μP) instead of 1/sqrt(head_dim);
      `scale_attn_by_inverse_layer_idx` further divides layer i's (0-based) scale by i + 1.
    - `embedding_multiplier` multiplies the input embeddings, `logit_multiplier` the final hidden
      state before the output head (μP's input_mult and output_mult / width_mult; 1.0 without μP).
    - `vocab_size` is the padded embedding size; ids from `tokenizer_vocab_size` up are padding.
    """

    model_type = "flm"

    def __init__(
        self,
        vocab_size: int = 100352,
        tokenizer_vocab_size: int | None = None,
        hidden_size: int = 64,
        intermediate_size: int = 256,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 2048,
        norm_type: str = "layernorm",
        norm_eps: float = 1e-5,
        hidden_act: str = "gelu_tanh",
        use_bias: bool = True,
        position_embedding: str = "xpos",
        rotary_base: float = 10000.0,
        xpos_scale_base: float = 512.0,
        scale_attn_by_inverse_layer_idx: bool = True,
        mup_attention_scale: bool = False,
        embedding_multiplier: float = 1.0,
        logit_multiplier: float = 1.0,
        attention_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        if norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_type must be layernorm or rmsnorm, got {norm_type!r}")
        if hidden_act not in ("gelu_tanh", "swiglu"):
            raise ValueError(f"hidden_act must be gelu_tanh or swiglu, got {hidden_act!r}")
        if position_embedding not in ("xpos", "rope", "none"):
            raise ValueError(f"position_embedding must be xpos, rope or none, got {position_embedding!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                             f"{num_attention_heads}")
        self.vocab_size = vocab_size
        self.tokenizer_vocab_size = tokenizer_vocab_size if tokenizer_vocab_size is not None else vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.hidden_act = hidden_act
        self.use_bias = use_bias
        self.position_embedding = position_embedding
        self.rotary_base = rotary_base
        self.xpos_scale_base = xpos_scale_base
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.mup_attention_scale = mup_attention_scale
        self.embedding_multiplier = embedding_multiplier
        self.logit_multiplier = logit_multiplier
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.initializer_range = initializer_range
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
