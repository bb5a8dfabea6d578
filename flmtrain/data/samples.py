"""Global sample n -> its seq_len + 1 tokens: blend routing, then a read from one stream.

Two-level blending: sample n goes to a source by the source weights, then, by that source's own
counter, to one of its streams (one per subset when the mixture weights subsets, else one for the
whole source). So source shares are exact whatever the number of subsets, and subset shares are
exact within their source. The stream's j-th sample is one of its fixed slices: slice i covers
tokens [i*L, i*L + L + 1) (consecutive slices share one token, as in Megatron, so no token is dropped
at slice edges), and the slices are served in a seeded random order within consecutive blocks of
SHUFFLE_BLOCK slices (one epoch's, when fewer). Like Megatron's sample shuffle, this keeps the slices of
one long document (a book, a large source file) out of the same batch; a block still covers exactly the
tokens it covered in order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flm.pipelines.token_shards import TokenShards
from flm.train.data.blend import Blend
from flm.train.data.stream import Stream

SHUFFLE_BLOCK = 1 << 16
"""Slices per shuffle block: 65,536 samples, 134M tokens at seq_len 2048."""
SHUFFLE_SALT = 0x736C6963  # "slic": the slice order's seed differs from the document order's
PERM_CACHE = 8


class ShardSet:
    """Token-shard directories opened lazily, so a pickled copy (a spawned worker) maps them itself."""

    def __init__(self, paths: list[Path], opened: list[TokenShards] | None = None) -> None:
        self.paths = paths
        self._opened = opened

    def __getitem__(self, i: int) -> TokenShards:
        if self._opened is None:
            self._opened = [TokenShards(p) for p in self.paths]
        return self._opened[i]

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "_opened": None}


class Samples:
    """A blended sample order over streams grouped by source; `tokens(indices)` assembles a batch."""

    def __init__(self, shards: ShardSet, source_weights: list[float], streams: list[list[Stream]],
                 stream_weights: list[list[float]], seq_len: int, length: int | None = None) -> None:
        self.shards = shards
        self.sources = Blend(source_weights)
        self.within = [Blend(w) for w in stream_weights]
        self.streams = streams
        self.seq_len = seq_len
        self.length = length
        """Number of samples for a finite order (validation); None for the infinite training order."""
        self.blocks = [[max(1, min(SHUFFLE_BLOCK, stream.tokens_per_epoch // seq_len)) for stream in group]
                       for group in streams]
        """Shuffle block (in slices) of each stream."""
        self._perms: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_perms"] = OrderedDict()  # recomputed where needed; never shipped to workers
        return state

    def slice_start(self, source: int, stream: int, j: int) -> int:
        """First token of the stream's j-th sample: the slice that its shuffle block serves j-th."""
        size = self.blocks[source][stream]
        block, offset = divmod(j, size)
        key = (source, stream, block)
        perm = self._perms.get(key)
        if perm is None:
            seed = [*self.streams[source][stream].key, SHUFFLE_SALT, block]
            perm = self._perms[key] = np.random.default_rng(seed).permutation(size)
            if len(self._perms) > PERM_CACHE:
                self._perms.popitem(last=False)
        else:
            self._perms.move_to_end(key)
        return (block * size + int(perm[offset])) * self.seq_len

    def route(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, stream within source, sample index within stream) of each global sample."""
        source, at_source = self.sources.route(indices)
        stream = np.zeros_like(source)
        index = np.zeros_like(source)
        for s, blend in enumerate(self.within):
            rows = np.flatnonzero(source == s)
            if rows.size:
                stream[rows], index[rows] = blend.route(at_source[rows])
        return source, stream, index

    def locate(self, n: int) -> tuple[int, int, int]:
        """`route` for one sample, in plain Python: cheaper than numpy for the few samples of a batch."""
        source, at_source = self.sources.locate(n)
        return (source, *self.within[source].locate(at_source))

    def tokens(self, indices: Sequence[int]) -> np.ndarray:
        """int64 [len(indices), seq_len + 1]: the samples' tokens, read from the memory-mapped shards."""
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, n in enumerate(indices):
            if self.length is not None and not 0 <= n < self.length:
                raise IndexError(f"sample {n} outside [0, {self.length})")
            s, c, j = self.locate(int(n))
            self.streams[s][c].fill(self.shards[s], self.slice_start(s, c, j), out[row])
        return out

    def stream_counts(self, num_samples: int) -> list[np.ndarray]:
        """Samples each stream serves among the first num_samples (per source, exact)."""
        per_source = self.sources.counts(num_samples)
        return [blend.counts(int(n)) for blend, n in zip(self.within, per_source, strict=True)]
