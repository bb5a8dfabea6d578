"""Text generation from a checkpoint: temperature / top-k sampling, stopping at end-of-text.

Small models on CPU are the use case (quickstart, smoke checks), so each new token recomputes the
forward pass over the last `seq_len` tokens instead of keeping a KV cache: simple and exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flm.config import load_config
from flm.train.checkpoint.store import CheckpointError, load_checkpoint, read_meta
from flm.train.config import StageConfig
from flm.train.distributed.runtime import distributed


@dataclass
class Generation:
    prompt: str
    text: str
    """The generated continuation only (the prompt not repeated)."""
    tokens: int


def tokenizer_dir_of(meta: dict[str, Any]) -> Path:
    """The tokenizer that made a checkpoint's training data, from its first source's manifest."""
    from flm.pipelines.token_shards import Manifest

    sources = meta.get("mixture", {}).get("sources") or []
    if not sources:
        raise CheckpointError("the checkpoint records no mixture; pass the tokenizer directory explicitly")
    manifest = Manifest.load(Path(sources[0]["path"]))
    directory = manifest.extra.get("tokenizer_dir")
    if not directory:
        raise CheckpointError(f"{sources[0]['path']}: manifest names no tokenizer_dir; pass the tokenizer explicitly")
    return Path(directory)


@torch.no_grad()
def sample_tokens(model: torch.nn.Module, prompt_ids: list[int], *, vocab_size: int, seq_len: int, max_new_tokens: int,
                  eos_id: int, temperature: float = 0.8, top_k: int = 40,
                  generator: torch.Generator | None = None) -> list[int]:
    """Autoregressive sampling; greedy when temperature is 0. Returns only the new ids (EOS excluded)."""
    ids = list(prompt_ids) or [eos_id]
    new: list[int] = []
    device = next(model.parameters()).device
    for _ in range(max_new_tokens):
        window = torch.tensor([ids[-seq_len:]], dtype=torch.long, device=device)
        positions = torch.arange(window.shape[1], dtype=torch.long, device=device).unsqueeze(0)
        logits = model(window, positions)[0, -1, :vocab_size].float()
        if temperature <= 0:
            next_id = int(torch.argmax(logits))
        else:
            logits = logits / temperature
            if 0 < top_k < vocab_size:
                cutoff = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < cutoff, float("-inf"))
            next_id = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
        if next_id == eos_id:
            break
        ids.append(next_id)
        new.append(next_id)
    return new


def generate(checkpoint: Path, prompts: list[str], *, tokenizer_dir: Path | None = None, max_new_tokens: int = 48,
             temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> list[Generation]:
    """Load a checkpoint (grown ones included) and continue each prompt."""
    from flm.tokenizer.load import load_tokenizer
    from flm.train.growth import resume_ramp
    from flm.train.model.gpt import build_model

    meta = read_meta(checkpoint)
    stage = load_config(StageConfig, meta["stage_config"])
    tokenizer = load_tokenizer(tokenizer_dir or tokenizer_dir_of(meta))
    if tokenizer.vocab_size > stage.model.vocab_size:
        raise CheckpointError(f"tokenizer vocabulary {tokenizer.vocab_size} exceeds the model's "
                              f"{stage.model.vocab_size}")
    stage.parallel.tp = stage.parallel.pp = 1
    generator = torch.Generator().manual_seed(seed)
    results = []
    with distributed(stage, seed=seed):
        model = build_model(stage.model, vocab_size=stage.model.vocab_size)
        load_checkpoint(checkpoint, model=model)
        resume_ramp(model, meta.get("growth_history", []), int(meta["step"]))  # masks of a growth still ramping
        model.eval()
        for prompt in prompts:
            new = sample_tokens(model, tokenizer.encode(prompt), vocab_size=tokenizer.vocab_size,
                                seq_len=stage.model.seq_len, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                                temperature=temperature, top_k=top_k, generator=generator)
            results.append(Generation(prompt=prompt, text=tokenizer.decode(new), tokens=len(new)))
    return results
