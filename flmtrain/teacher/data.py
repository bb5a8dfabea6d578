"""Teacher batches: propositions from weighted sources in a seeded order that depends only on the position.

Position p of the global order picks a source (a seeded draw by weight, in blocks of BLOCK positions) and that
source's next proposition in a per-epoch permutation. So resuming needs the consumed count alone, and
data-parallel ranks read disjoint slices of one order, as the language loader does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from flm.config import ConfigError
from flm.pipelines.propositions import PropositionShards
from flm.train.teacher.config import TeacherConfig

BLOCK = 4096
PAD_MULTIPLE = 8
"""Teacher sequences are padded to a multiple of 8 (sequence parallelism splits them over up to 8 ranks)."""


class TeacherOrder:
    """Which (source, row) sits at each position of the global proposition order."""

    def __init__(self, sizes: list[int], weights: list[float], seed: int) -> None:
        self.sizes = sizes
        self.p = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.seed = seed
        self._block_counts: list[np.ndarray] = [np.zeros(len(sizes), dtype=np.int64)]
        """Per block b: how many positions of blocks before b each source took."""
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """A block's source per position, and each position's rank among its source's positions in the block."""
        if self._cached is None or self._cached[0] != block:
            choices = np.random.default_rng([self.seed, 7, block]).choice(len(self.sizes), size=BLOCK, p=self.p)
            rank = np.zeros(BLOCK, dtype=np.int64)
            for source in range(len(self.sizes)):
                where = choices == source
                rank[where] = np.arange(int(where.sum()))
            self._cached = (block, choices, rank)
        return self._cached[1], self._cached[2]

    def _before(self, block: int) -> np.ndarray:
        while len(self._block_counts) <= block:
            b = len(self._block_counts) - 1
            counts = np.bincount(self._block(b)[0], minlength=len(self.sizes))
            self._block_counts.append(self._block_counts[-1] + counts)
        return self._block_counts[block]

    def _row(self, source: int, k: int) -> int:
        n = self.sizes[source]
        epoch = k // n
        if self._perms.get(source, (None,))[0] != epoch:
            self._perms[source] = (epoch, np.random.default_rng([self.seed, source, epoch]).permutation(n))
        return int(self._perms[source][1][k % n])

    def items(self, start: int, count: int) -> list[tuple[int, int]]:
        """(source, row) at positions start .. start + count - 1."""
        out = []
        for pos in range(start, start + count):
            block, offset = divmod(pos, BLOCK)
            before = self._before(block)
            choices, rank = self._block(block)
            source = int(choices[offset])
            out.append((source, self._row(source, int(before[source] + rank[offset]))))
        return out


class TeacherData:
    """The teacher sources of a mixture, their order, and batches for a step."""

    def __init__(self, cfg: TeacherConfig, *, seed: int, tokenizer_hash: str, vocab_size: int, max_seq: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.shards = [PropositionShards(Path(s.path), tokenizer_hash=tokenizer_hash, vocab_size=vocab_size)
                       for s in cfg.sources]
        for source, shards in zip(cfg.sources, self.shards, strict=True):
            if len(shards) == 0:
                raise ConfigError(f"teacher source {source.name!r} ({source.path}) holds no propositions")
        ids = {tuple(sorted(s.token_ids.items())) for s in self.shards}
        if len(ids) > 1:
            raise ConfigError("teacher sources disagree on the judge/verdict token ids; rebuild with one tokenizer")
        self.token_ids = self.shards[0].token_ids
        longest = max(s.max_tokens for s in self.shards)
        self.seq_len = _padded(longest)
        """The longest teacher step; each step is padded to its own longest proposition only."""
        if self.seq_len > max_seq:
            raise ConfigError(f"teacher propositions run to {longest} tokens, more than the model's seq_len {max_seq}")
        self.order = TeacherOrder([len(s) for s in self.shards], [s.weight for s in cfg.sources], seed)
        self.consumed = 0
        self.step_tokens = 0

    def micro_batches_per_step(self, dp_size: int) -> int:
        per_pass = self.cfg.micro_batch * dp_size
        if self.cfg.batch % per_pass:
            raise ConfigError(f"teacher.batch ({self.cfg.batch}) must be a multiple of teacher.micro_batch x "
                              f"data-parallel size ({self.cfg.micro_batch} x {dp_size})")
        return self.cfg.batch // per_pass

    def step_batches(self, dp_rank: int, dp_size: int) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of the next teacher step (advances the position by the global batch)."""
        per_rank = self.cfg.batch // dp_size
        items = self.order.items(self.consumed + dp_rank * per_rank, per_rank)
        self.consumed += self.cfg.batch
        tokens = [self.shards[s].tokens(r) for s, r in items]
        labels = [int(self.shards[s].labels[r]) for s, r in items]
        length = _padded(max(len(t) for t in tokens))  # one length per step: pipeline stages exchange fixed shapes
        self.step_tokens = length * self.cfg.batch
        """Token positions the last step computed (this rank's padded length, over the global batch)."""
        m = self.cfg.micro_batch
        return [collate(tokens[i: i + m], labels[i: i + m], length) for i in range(0, per_rank, m)]

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "seed": self.seed, "sources": [s.name for s in self.cfg.sources]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.consumed = 0
            return
        if state.get("seed") != self.seed or state.get("sources") != [s.name for s in self.cfg.sources]:
            raise ConfigError(f"the checkpoint's teacher data (seed {state.get('seed')}, sources "
                              f"{state.get('sources')}) differs from the mixture's (seed {self.seed}, sources "
                              f"{[s.name for s in self.cfg.sources]}); resume with the mixture it was trained on")
        self.consumed = int(state["consumed"])


def _padded(length: int) -> int:
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def collate(token_lists: list[np.ndarray], labels: list[int], seq_len: int) -> dict[str, torch.Tensor]:
    """Right-padded tokens [b, seq_len], judge positions [b] (each proposition's last token) and labels [b].

    Padding sits after the judge token, which a causal model never attends to from the judge position: it is
    masked out of the teacher loss by construction."""
    tokens = np.zeros((len(token_lists), seq_len), dtype=np.int64)
    for i, ids in enumerate(token_lists):
        tokens[i, : len(ids)] = ids
    judge = np.array([len(ids) - 1 for ids in token_lists], dtype=np.int64)
    return {"tokens": torch.from_numpy(tokens), "judge": torch.from_numpy(judge),
            "label": torch.tensor(labels, dtype=torch.long)}
