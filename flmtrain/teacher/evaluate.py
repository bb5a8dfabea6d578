"""`flm eval --propositions`: how well a checkpoint judges propositions, per task.

Each proposition's score is its teacher margin, logit(<true>) - logit(<false>) at the judge token. Two
figures per task, and the same over all propositions:
- `accuracy`: propositions whose verdict (score > 0) matches the label; the majority label's share is the
  figure to beat (`majority`).
- `choice_accuracy` (multiple choice and classification, where an instance has several propositions of which
  one is true): zero-shot choice, the instance's highest-scoring proposition is the true one; chance is
  `chance` (the mean of 1 / options).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flm.config import ConfigError, Progress
from flm.pipelines.propositions import PropositionShards
from flm.train.checkpoint import load_checkpoint, read_meta, resolve_checkpoint
from flm.train.distributed.parallel import distributed
from flm.train.engine import make_engine
from flm.train.growth import resume_ramp
from flm.train.model.fp8 import readable_model
from flm.train.teacher.data import PAD_MULTIPLE, collate
from flm.train.teacher.objective import teacher_logits


@dataclass
class PropositionEval:
    checkpoint: str
    step: int
    propositions: str
    count: int
    accuracy: float
    """All propositions: verdict right."""
    majority: float = 0.0
    """All propositions: the majority label's share (what a constant verdict scores)."""
    choice_accuracy: float | None = None
    """All instances with one true proposition among several: zero-shot choice right; None without such."""
    chance: float | None = None
    """choice_accuracy by random choice (the mean of 1 / options)."""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


@torch.no_grad()
def score_propositions(model: torch.nn.Module, shards: PropositionShards, device: torch.device, *,
                       micro_batch: int = 32, progress: Progress | None = None) -> np.ndarray:
    """The teacher margin (true minus false logit) of every proposition, in shard order."""
    model.eval()
    verdicts = torch.tensor([shards.token_ids["false"], shards.token_ids["true"]])
    scores = np.zeros(len(shards), dtype=np.float64)
    for start in range(0, len(shards), micro_batch):
        rows = range(start, min(start + micro_batch, len(shards)))
        tokens = [shards.tokens(i) for i in rows]
        longest = max(len(t) for t in tokens)
        batch = collate(tokens, [int(shards.labels[i]) for i in rows], -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
        logits = teacher_logits(model, batch, verdicts, device).float().cpu()
        scores[start: start + len(tokens)] = (logits[:, 1] - logits[:, 0]).numpy()
        if progress is not None:
            progress("propositions", start + len(tokens), len(shards))
    return scores


def figures(shards: PropositionShards, scores: np.ndarray, idx: list[int]) -> dict[str, Any]:
    """Verdict accuracy and majority baseline of propositions `idx`; choice accuracy and chance over their
    instances with exactly one true proposition among several."""
    labels = shards.labels[idx]
    right = (scores[idx] > 0) == (labels == 1)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in idx:
        groups[shards.groups[i]].append(i)
    choices = [g for g in groups.values() if len(g) > 1 and int(shards.labels[g].sum()) == 1]
    result: dict[str, Any] = {"propositions": len(idx), "accuracy": float(right.mean()),
                              "majority": float(max(labels.mean(), 1 - labels.mean())), "instances": len(groups)}
    if choices:
        hits = [shards.labels[g[int(np.argmax(scores[g]))]] == 1 for g in choices]
        result.update(choice_accuracy=float(np.mean(hits)), choice_instances=len(choices),
                      chance=float(np.mean([1 / len(g) for g in choices])))
    return result


def task_accuracy(shards: PropositionShards, scores: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per task: propositions, verdict accuracy and majority baseline; instances, choice accuracy and chance."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(shards.tasks):
        rows[task].append(i)
    return {task: {"lang": shards.langs[idx[0]], **figures(shards, scores, idx)} for task, idx in rows.items()}


def evaluate_propositions(path: Path, propositions: Path, *, micro_batch: int = 32,
                          progress: Progress | None = None) -> PropositionEval:
    """Load a checkpoint (in one process) and score a proposition-shard directory with it."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    stage = meta.load_stage()
    stage.parallel.tp = stage.parallel.pp = 1  # one process reads any layout; the scores need no pipeline
    started = time.perf_counter()
    shards = PropositionShards(propositions, tokenizer_hash=meta.tokenizer_hash, vocab_size=stage.model.vocab_size)
    if shards.max_tokens > stage.model.seq_len:
        raise ConfigError(f"{propositions}: propositions of {shards.max_tokens} tokens exceed the model's seq_len "
                         f"{stage.model.seq_len}")
    with distributed(stage, seed=stage.train.seed) as parallel:
        stage.model = readable_model(stage.model, parallel.device)
        engine = make_engine(stage, stage.model.vocab_size, parallel, train=False)
        load_checkpoint(path, model=engine.module)
        resume_ramp(engine.module, meta.growth_history, meta.step)
        scores = score_propositions(engine.module, shards, engine.device, micro_batch=micro_batch, progress=progress)
    pooled = figures(shards, scores, list(range(len(shards)))) if len(shards) else {}
    return PropositionEval(checkpoint=str(path), step=meta.step, propositions=str(propositions), count=len(shards),
                           accuracy=pooled.get("accuracy", 0.0), majority=pooled.get("majority", 0.0),
                           choice_accuracy=pooled.get("choice_accuracy"), chance=pooled.get("chance"),
                           tasks=task_accuracy(shards, scores), seconds=time.perf_counter() - started)
