"""Validation loss on the mixture's held-out split, during training and for a saved checkpoint."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flm.config import ConfigError
from flm.train.checkpoint import CheckpointError, load_checkpoint, read_meta, resolve_checkpoint
from flm.train.data.config import MixtureConfig
from flm.train.data.mixture import open_mixture
from flm.train.distributed.collectives import all_reduce_sum, data_parallel
from flm.train.distributed.parallel import distributed, fit_layout
from flm.train.engine import make_engine
from flm.train.growth import resume_ramp
from flm.train.model.fp8 import readable_model

CHUNK = 64
"""Micro-batches per forward-only pass (bounds the memory of a pipeline-parallel evaluation)."""


def validation_loss(engine: Any, mixture: Any, micro_batch: int, max_batches: int | None = None) -> tuple[float, int]:
    """Mean token loss over the held-out split, or over its first `max_batches` micro-batches.

    `max_batches` counts micro-batches over all data-parallel ranks (each evaluates its share of the
    same leading samples), so the figure does not depend on the number of ranks. Returns (loss,
    tokens counted). Every rank must call it (it all-reduces).
    """
    dp_rank, dp_size = data_parallel()
    batches = iter(mixture.valid_loader(micro_batch, dp_rank=dp_rank, dp_size=dp_size))
    if max_batches is not None:
        batches = itertools.islice(batches, max(1, math.ceil(max_batches / dp_size)))
    total = count = 0.0
    while chunk := list(itertools.islice(batches, CHUNK)):
        chunk_total, chunk_count = engine.eval_sums(chunk)
        total += chunk_total
        count += chunk_count
    total, count = all_reduce_sum([total, count])
    if count == 0:
        raise ConfigError("the mixture's validation split is empty (valid_fraction too small for these shards?)")
    return total / count, int(count)


@dataclass
class EvalResult:
    checkpoint: str
    step: int
    val_loss: float
    tokens: int
    seconds: float
    by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per mixture source (e.g. pile, wudao), when asked for: val_loss and tokens of its own held-out split
    evaluated alone; held_out_tokens, that split's size; blend_tokens, how many of the blended figure's tokens
    came from it (by the mixture's weight, so a small split repeats and a large one is only partly read)."""
    micro_batch_tokens: int = 0
    """Tokens per micro-batch: every figure counts whole micro-batches, dropping a split's remainder."""


def evaluated_samples(mixture: Any, micro_batch: int, max_batches: int | None) -> int:
    """How many leading validation samples `validation_loss` reads (whole micro-batches, on every rank)."""
    dp_rank, dp_size = data_parallel()
    per_rank = len(mixture.valid_loader(micro_batch, dp_rank=dp_rank, dp_size=dp_size))
    if max_batches is not None:
        per_rank = min(per_rank, max(1, math.ceil(max_batches / dp_size)))
    return per_rank * micro_batch * dp_size


def evaluate_checkpoint(path: Path, mixture_cfg: MixtureConfig | None = None, *, micro_batch: int | None = None,
                        max_batches: int | None = None, by_source: bool = False) -> EvalResult:
    """Load a checkpoint's weights into its stage's model and compute the validation loss.

    The stage (shapes included, so grown checkpoints work) and, unless given, the mixture come from
    the checkpoint's meta.json. `by_source` also evaluates each source's held-out documents on their own
    (the same documents the blend holds out), e.g. English and Chinese apart; `max_batches` applies to each.
    """
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    stage = fit_layout(meta.load_stage())
    mixture_cfg = mixture_cfg or meta.load_mixture()
    start = time.perf_counter()
    with distributed(stage, seed=stage.train.seed) as parallel:
        mixture = open_mixture(mixture_cfg, stage.model.seq_len)
        meta.check_tokenizer(mixture.tokenizer_hash, "the mixture's token shards")
        if mixture.vocab_size > stage.model.vocab_size:
            raise CheckpointError(f"{path}: the mixture's vocabulary ({mixture.vocab_size}) is larger than the "
                             f"checkpoint's model ({stage.model.vocab_size}); wrong tokenizer?")
        stage.model.seq_len = mixture.seq_len
        stage.model = readable_model(stage.model, parallel.device)
        engine = make_engine(stage, stage.model.vocab_size, parallel, train=False)
        load_checkpoint(path, model=engine.module)
        resume_ramp(engine.module, meta.growth_history, meta.step)  # masks of a recent growth
        micro = micro_batch or stage.train.micro_batch
        loss, tokens = validation_loss(engine, mixture, micro, max_batches)
        sources = {}
        blend = mixture.valid_composition(evaluated_samples(mixture, micro, max_batches)) if by_source else {}
        drawn = sum(part["samples"] for part in blend.values())
        for source in mixture_cfg.sources if by_source else []:
            alone = open_mixture(replace(mixture_cfg, sources=[replace(source, weight=1.0)]), stage.model.seq_len)
            source_loss, source_tokens = validation_loss(engine, alone, micro, max_batches)
            part = blend.get(source.name, {"samples": 0, "held_out_tokens": 0})
            sources[source.name] = {"val_loss": source_loss, "tokens": source_tokens,
                                    "held_out_tokens": part["held_out_tokens"],
                                    "blend_tokens": round(tokens * part["samples"] / drawn) if drawn else 0}
    return EvalResult(checkpoint=str(path), step=meta.step, val_loss=loss, tokens=tokens,
                      seconds=time.perf_counter() - start, by_source=sources,
                      micro_batch_tokens=micro * mixture.seq_len)
