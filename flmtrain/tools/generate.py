"""Text generation from a checkpoint: temperature / top-k sampling, stopping at end-of-text.

Small models on CPU are the use case (quickstart, smoke checks), so each new token recomputes the
forward pass over the last `seq_len` tokens instead of keeping a KV cache: simple and exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from flm.tokenizer.load import load_tokenizer
from flm.train.checkpoint import CheckpointError, load_checkpoint, read_meta, resolve_checkpoint
from flm.train.distributed.parallel import distributed
from flm.train.growth import resume_ramp
from flm.train.model.fp8 import readable_model
from flm.train.model.gpt import build_model


@dataclass
class Generation:
    prompt: str
    text: str
    """The generated continuation only (the prompt not repeated)."""
    tokens: int


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
    checkpoint = resolve_checkpoint(checkpoint)
    meta = read_meta(checkpoint)
    stage = meta.load_stage()
    tokenizer = load_tokenizer(tokenizer_dir or meta.tokenizer_dir())
    meta.check_tokenizer(tokenizer.content_hash, f"the tokenizer in {tokenizer_dir or meta.tokenizer_dir()}")
    if tokenizer.vocab_size > stage.model.vocab_size:
        raise CheckpointError(f"tokenizer vocabulary {tokenizer.vocab_size} exceeds the model's "
                              f"{stage.model.vocab_size}")
    stage.parallel.tp = stage.parallel.pp = 1
    generator = torch.Generator().manual_seed(seed)
    results = []
    with distributed(stage, seed=seed) as parallel:
        model = build_model(readable_model(stage.model, parallel.device), vocab_size=stage.model.vocab_size,
                            device=parallel.device)
        load_checkpoint(checkpoint, model=model)
        resume_ramp(model, meta.growth_history, meta.step)  # masks of a growth still ramping
        model.eval()
        for prompt in prompts:
            new = sample_tokens(model, tokenizer.encode(prompt), vocab_size=tokenizer.vocab_size,
                                seq_len=stage.model.seq_len, max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                                temperature=temperature, top_k=top_k, generator=generator)
            results.append(Generation(prompt=prompt, text=tokenizer.decode(new), tokens=len(new)))
    return results
