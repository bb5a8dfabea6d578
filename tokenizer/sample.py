"""Byte-budget sampling of a training corpus that does not depend on reading order.

Each document gets a pseudo-random key, a seeded hash of its text. The sample is the set of
documents with the smallest keys whose texts fit in the byte budget (bottom-k by key), kept with
a max-heap while streaming. The result depends only on the corpus, the seed and the budget: not on
file order, worker count or how the corpus is sharded, so training is reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class CorpusSample:
    texts: list[str]
    budget_bytes: int
    seed: int
    seen_docs: int = 0
    seen_bytes: int = 0
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """source -> {"docs", "bytes"} of the sample."""

    @property
    def sample_bytes(self) -> int:
        return sum(v["bytes"] for v in self.per_source.values())

    def summary(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "seed": self.seed, "seen_docs": self.seen_docs,
                "seen_bytes": self.seen_bytes, "sample_docs": len(self.texts),
                "sample_bytes": self.sample_bytes, "sources": self.per_source}


def sample_by_bytes(docs: Iterable[tuple[str, str]], budget_bytes: int, seed: int = 0) -> CorpusSample:
    """Keep the documents with the smallest seeded-hash keys that fit in `budget_bytes`.

    `docs` yields (source, text). Once a document has been evicted, no document with a larger key
    can enter again; that rule is what makes the result order-independent. Kept texts are returned
    in key order, which is a seeded shuffle of the corpus.
    """
    import xxhash  # here, not at the top: the GPU image lacks it, and training (not loading) needs it

    if budget_bytes <= 0:
        raise ValueError(f"byte budget must be positive, got {budget_bytes}")
    heap: list[tuple[int, int, str, str]] = []  # (-key, size, source, text): a max-heap on key
    total = 0
    threshold = 1 << 64  # keys at or above this can never be in the sample
    seen_docs = seen_bytes = 0
    for source, text in docs:
        data = text.encode("utf-8", "surrogatepass")
        seen_docs += 1
        seen_bytes += len(data)
        key = xxhash.xxh64_intdigest(data, seed=seed)
        if key >= threshold:
            continue
        heapq.heappush(heap, (-key, len(data), source, text))
        total += len(data)
        while total > budget_bytes:
            neg_key, size, _, _ = heapq.heappop(heap)
            total -= size
            threshold = -neg_key
    heap.sort(key=lambda item: -item[0])
    per_source: dict[str, dict[str, int]] = {}
    for _, size, source, _ in heap:
        entry = per_source.setdefault(source, {"docs": 0, "bytes": 0})
        entry["docs"] += 1
        entry["bytes"] += size
    return CorpusSample(texts=[item[3] for item in heap], budget_bytes=budget_bytes, seed=seed,
                        seen_docs=seen_docs, seen_bytes=seen_bytes, per_source=dict(sorted(per_source.items())))
