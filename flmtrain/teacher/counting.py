"""Counting data: a language corpus and a teacher task that need no tokenizer, for checks of the teacher signal.

The language shards hold runs of counting (next token = token + 1 mod 64, then EOS). The teacher task is a
run of counting (true) beside the same run broken (false), one instance of two propositions, so a model that
has learned to count can judge them. `broken_by` says how: "swap" exchanges two neighbours somewhere in the run
(a local slip the judge token must find anywhere), "reverse" counts the run down (visible at every position,
so a small model learns it in tens of teacher steps). tests/test_freelm.py and
bench/freelm_gpu.py train on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flm.pipelines.propositions.shards import KIND, write_shard
from flm.pipelines.token_shards import Manifest, documents_to_batch
from flm.pipelines.token_shards import write_shard as write_token_shard

EOS, JUDGE, FALSE, TRUE = 64, 65, 66, 67
VOCAB = 68
TOKEN_IDS = {"judge": JUDGE, "false": FALSE, "true": TRUE}
TOKENIZER_HASH = "counting-v1"


def write_counting_data(root: Path, *, documents: int, doc_len: tuple[int, int], splits: dict[str, int],
                        run_len: tuple[int, int], mixture: dict[str, Any], seed: int = 0,
                        broken_by: str = "swap") -> Path:
    """Write ROOT/lang (language shards), ROOT/<split> (proposition shards, `splits[split]` instances each) and
    ROOT/mixture.yaml; returns the mixture's path.

    `mixture` holds the mixture's other keys (seq_len, valid_fraction, the teacher block's every/batch/
    micro_batch under "teacher"); its sources, cache and the teacher source (ROOT/train) are filled in here.
    Lengths are drawn in [low, high)."""
    if broken_by not in ("swap", "reverse"):
        raise ValueError(f"broken_by must be 'swap' or 'reverse', got {broken_by!r}")
    rng = np.random.default_rng(seed)
    lang = root / "lang"
    lang.mkdir(parents=True, exist_ok=True)
    docs = [np.append((rng.integers(0, 64) + np.arange(rng.integers(*doc_len))) % 64, EOS).astype(np.uint32)
            for _ in range(documents)]
    info = write_token_shard(lang / "part-00000.arrow", [documents_to_batch(
        docs, [str(i) for i in range(len(docs))], ["count"] * len(docs), [""] * len(docs))])
    Manifest(tokenizer_hash=TOKENIZER_HASH, vocab_size=VOCAB, eos_id=EOS, shards=[info]).save(lang)
    for split, n in splits.items():
        tokens, labels, groups = [], [], []
        for i in range(n):
            run = (rng.integers(0, 64) + np.arange(rng.integers(*run_len))) % 64
            broken = _broken(run, broken_by, rng)
            for ids, label in ((run, 1), (broken, 0)):
                tokens.append(np.append(ids, JUDGE).astype(np.uint32))
                labels.append(label)
                groups.append(f"count:{split}-{i}")
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        shard = write_shard(folder / "propositions-00000.arrow", tokens, labels, ["count"] * len(labels), groups,
                            ["en"] * len(labels))
        Manifest(tokenizer_hash=TOKENIZER_HASH, vocab_size=VOCAB, eos_id=EOS, shards=[shard],
                 extra={"kind": KIND, "token_ids": TOKEN_IDS}).save(folder)
    teacher = {**mixture.get("teacher", {}), "sources": [{"name": "count", "path": str(root / "train")}]}
    path = root / "mixture.yaml"
    path.write_text(json.dumps({"seed": 1, "cache_dir": str(root / "cache"), **mixture,
                                "sources": [{"name": "count", "path": str(lang)}], "teacher": teacher}),
                    encoding="utf-8")
    return path


def _broken(run: np.ndarray, broken_by: str, rng: np.random.Generator) -> np.ndarray:
    """The false proposition's run: two neighbours swapped, or the run counted down."""
    if broken_by == "reverse":
        return run[::-1].copy()
    broken = run.copy()
    j = rng.integers(1, len(run) - 1)
    broken[[j, j + 1]] = broken[[j + 1, j]]
    return broken
