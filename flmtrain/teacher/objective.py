"""The teacher objective: cross-entropy of the (false, true) verdict at the judge token, and its accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def teacher_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor], verdict_ids: torch.Tensor,
                   device: torch.device) -> torch.Tensor:
    """[b, 2] (false, true) logits of a collated teacher batch (on the last pipeline stage)."""
    tokens = batch["tokens"].to(device, non_blocking=True)
    positions = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
    return model(tokens, positions, None, teacher=(batch["judge"].to(device), verdict_ids.to(device)))


def teacher_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy, number right) over a batch; one loss term per proposition, none per token."""
    labels = labels.to(logits.device)
    loss = F.cross_entropy(logits.float(), labels, reduction="sum")
    right = (logits.argmax(dim=-1) == labels).sum().float()
    return loss, right
