"""A stream: one set of documents packed end to end, epoch after epoch, read at any token position.

Epoch e is the stream's documents in the order of a permutation seeded by (key, e) (or one fixed
order when `reshuffle` is off); epochs follow each other with no gap, so a read may cross document
and epoch boundaries. Position t lies in epoch t // tokens_per_epoch, so any position is found from
the position alone: that is what makes resume exact and data-parallel slicing trivial.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flm.config.atomic import atomic_write
from flm.pipelines.token_shards import TokenShards

log = logging.getLogger(__name__)

EPOCH_CACHE = 2
"""Epoch orders kept in memory per stream (a read spans consecutive epochs)."""
DISK_EPOCH_DOCS = 1 << 20
"""Streams of at least this many documents keep epoch orders in memory-mapped .npy files, so the
ranks and workers of a node share one copy in the page cache instead of computing and holding one each."""


class Stream:
    """Documents `docs` of one token-shard directory (their `lengths` given), packed into one stream."""

    def __init__(self, docs: np.ndarray, lengths: np.ndarray, key: Sequence[int], *, reshuffle: bool = True,
                 cache: Path | None = None) -> None:
        if len(docs) == 0:
            raise ValueError("a stream needs at least one document")
        int32 = np.iinfo(np.int32).max
        self.docs = np.asarray(docs, dtype=np.int32 if int(np.max(docs)) < int32 else np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int32 if int(np.max(lengths)) < int32 else np.int64)
        self.key = tuple(int(k) for k in key)
        self.reshuffle = reshuffle
        self.tokens_per_epoch = int(self.lengths.sum(dtype=np.int64))
        self.cache = cache if cache is not None and len(self.docs) >= DISK_EPOCH_DOCS else None
        """File prefix of the on-disk epoch orders (must identify docs and key); None keeps them in memory."""
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_epochs"] = OrderedDict()  # recomputed where needed; never shipped to workers
        return state

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(document ids in epoch e's order, end position of each within the epoch)."""
        e = e if self.reshuffle else 0
        cached = self._epochs.get(e)
        if cached is not None:
            self._epochs.move_to_end(e)
            return cached
        cached = self._load(e) if self.cache is not None else None
        if cached is None:
            perm = np.random.default_rng([*self.key, e]).permutation(len(self.docs))
            cached = (self.docs[perm], np.cumsum(self.lengths[perm], dtype=np.int64))
            if self.cache is not None:
                self._save(e, cached)
        self._epochs[e] = cached
        if len(self._epochs) > EPOCH_CACHE:
            self._epochs.popitem(last=False)
        return cached

    def _paths(self, e: int) -> tuple[Path, Path]:
        return Path(f"{self.cache}-e{e}-order.npy"), Path(f"{self.cache}-e{e}-ends.npy")

    def _load(self, e: int) -> tuple[np.ndarray, np.ndarray] | None:
        order, ends = self._paths(e)
        if not (order.exists() and ends.exists()):
            return None
        try:
            loaded = np.load(order, mmap_mode="r"), np.load(ends, mmap_mode="r")
        except (OSError, ValueError) as err:
            log.warning("%s: unreadable epoch order (%s); recomputing", order, err)
            return None
        return loaded if len(loaded[0]) == len(loaded[1]) == len(self.docs) else None

    def _save(self, e: int, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        """Ends first, order last: a reader needs both, so it never pairs an order with missing ends.

        An unwritable cache is a warning, not an error: a miss only costs recomputing the order.
        """
        order_path, ends_path = self._paths(e)
        try:
            ends_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(ends_path, lambda f: np.save(f, arrays[1]))
            atomic_write(order_path, lambda f: np.save(f, arrays[0]))
        except OSError as err:
            log.warning("cannot cache the order of epoch %d under %s: %s", e, ends_path.parent, err)

    def fill(self, shards: TokenShards, start: int, out: np.ndarray) -> None:
        """Write the stream's tokens [start, start + len(out)) into `out` (one copy, no Python lists)."""
        epoch, offset = divmod(start, self.tokens_per_epoch)
        done, need = 0, len(out)
        document = shards.document
        while done < need:
            order, ends = self.epoch(epoch)
            k = int(ends.searchsorted(offset, side="right"))
            within = offset - int(ends[k - 1]) if k else offset
            while done < need and k < len(order):
                doc = document(int(order[k]))
                take = min(need - done, len(doc) - within)
                out[done:done + take] = doc[within:within + take]
                done += take
                within = 0
                k += 1
            epoch, offset = epoch + 1, 0

    def tokens_by_code(self, codes: np.ndarray, num_codes: int, end: int) -> np.ndarray:
        """Tokens per document class (`codes`, indexed by document id) among the stream's first `end` tokens."""
        full, rest = divmod(end, self.tokens_per_epoch)
        total = np.bincount(codes[self.docs], weights=self.lengths, minlength=num_codes) * full
        if rest:
            order, ends = self.epoch(full)
            k = int(ends.searchsorted(rest, side="right"))
            starts = np.concatenate([[0], ends[:-1]])
            total += np.bincount(codes[order[:k]], weights=ends[:k] - starts[:k], minlength=num_codes)
            if k < len(order):
                total[codes[order[k]]] += rest - int(starts[k])
        return np.rint(total).astype(np.int64)
