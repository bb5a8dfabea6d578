"""Document boundaries inside packed samples, for trainers that reset positions or mask attention.

Every document ends with EOS, so a new document starts right after each EOS in the input tokens
(a sample's first L of its L + 1 tokens). Vectorised over the whole batch, like Megatron's
`reset_position_ids` / `reset_attention_mask`, which FLM-101B left off.
"""

from __future__ import annotations

import numpy as np


def document_starts(inputs: np.ndarray, eos_id: int) -> np.ndarray:
    """bool [B, L]: True where a document starts (position 0 and every position after an EOS)."""
    starts = np.zeros(inputs.shape, dtype=bool)
    starts[:, 0] = True
    starts[:, 1:] = inputs[:, :-1] == eos_id
    return starts


def position_ids(inputs: np.ndarray, eos_id: int) -> np.ndarray:
    """int64 [B, L]: each token's position within its document (0 at every document start)."""
    arange = np.broadcast_to(np.arange(inputs.shape[1], dtype=np.int64), inputs.shape)
    last_start = np.maximum.accumulate(np.where(document_starts(inputs, eos_id), arange, 0), axis=1)
    return arange - last_start


def attention_mask(inputs: np.ndarray, eos_id: int) -> np.ndarray:
    """bool [B, 1, L, L]: True where query i must NOT attend to key j (j > i, or another document).

    Megatron's convention (GPTModel's `attention_mask`, masked_fill where True), which the model's
    call takes; torch's scaled_dot_product_attention convention is its negation.
    """
    doc = np.cumsum(document_starts(inputs, eos_id), axis=1)
    length = inputs.shape[1]
    causal = np.tril(np.ones((length, length), dtype=bool))
    return ~((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]
