"""The teacher head (FreeLM): a true/false verdict read at a proposition's judge token.

FreeLM classifies the final hidden state of a special token that closes each proposition. flm reads that
classifier off the output layer itself: the teacher logits are the (μP-scaled) logits of two reserved
verdict tokens, <false> and <true>, at the judge position. So the head adds no parameter: it is resumed,
resharded, grown (function-preservingly, as the output layer is) and exported with the language model, and an
exported model scores a proposition with its ordinary logits.

Only the two weight rows are multiplied (not the whole vocabulary); under tensor parallelism each verdict row
lives on one rank and a differentiable all-reduce adds the parts; under sequence parallelism the hidden states
are gathered first.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.mappings import (
    gather_from_sequence_parallel_region,
    reduce_from_tensor_model_parallel_region,
)


def verdict_logits(hidden: torch.Tensor, weight: torch.Tensor, judge: torch.Tensor, verdict_ids: torch.Tensor, *,
                   sequence_parallel: bool) -> torch.Tensor:
    """[b, 2] fp32 logits of (false, true) at each row's judge position.

    hidden: the last hidden states [s, b, h] (final norm and μP output multiplier applied); weight: this
    rank's output-layer rows [vocab / tp, h]; judge: [b] positions; verdict_ids: the (false, true) token ids.
    """
    if sequence_parallel:
        hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
    picked = hidden[judge, torch.arange(hidden.shape[1], device=hidden.device)]  # [b, h]
    tp = parallel_state.get_tensor_model_parallel_world_size()
    start = parallel_state.get_tensor_model_parallel_rank() * weight.shape[0]
    local = verdict_ids.to(hidden.device) - start
    here = (local >= 0) & (local < weight.shape[0])
    rows = weight[local.clamp(0, weight.shape[0] - 1)] * here.unsqueeze(1).to(weight.dtype)  # [2, h]
    logits = (picked @ rows.t()).float()
    return reduce_from_tensor_model_parallel_region(logits) if tp > 1 else logits
