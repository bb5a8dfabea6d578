"""What both engines do with a loader batch: split it into model inputs and sum the token losses.

Batches are the loader's dicts: `tokens` [b, s+1] (inputs and shifted labels) plus optional
`position_ids`, `attention_mask`, `loss_mask`.
"""

from __future__ import annotations

import torch

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
