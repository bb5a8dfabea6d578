"""Global sample n -> its seq_len + 1 tokens: blend routing, then a read from one stream.

Two-level blending: sample n goes to a source by the source weights, then, by that source's own
counter, to one of its streams (one per subset when the mixture weights subsets, else one for the
whole source). So source shares are exact whatever the number of subsets, and subset shares are
exact within their source. Sample j of a stream covers its tokens [j*L, j*L + L + 1): consecutive
samples share one token, as in Megatron, so no token is dropped at sample edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flmtrain.data.schedule import Blend
from flmtrain.data.stream import Stream
from pipelines.token_shards import TokenShards


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
            self.streams[s][c].fill(self.shards[s], j * self.seq_len, out[row])
        return out

    def stream_counts(self, num_samples: int) -> list[np.ndarray]:
        """Samples each stream serves among the first num_samples (per source, exact)."""
        per_source = self.sources.counts(num_samples)
        return [blend.counts(int(n)) for blend, n in zip(self.within, per_source, strict=True)]
