"""Hashes of many substrings of one string at once, for counting repeated n-grams without building them.

Gopher's repetition rules compare n-grams as strings ("".join of n words, or n characters). Building
each one is a Python slice and a set or Counter insert per position; here every n-gram is a
(start, end) range of one string, hashed from prefix sums in numpy. A hash only nominates: the
callers compare the strings themselves wherever a decision rests on two n-grams being equal, and
fall back to the string way when two different n-grams share a hash, so results are exact.
"""

from __future__ import annotations

import numpy as np

BASE = 0x100000001B3
"""Odd, so invertible modulo 2**64: the hash of text[s:e] is (P[e] - P[s]) * BASE**s, P the prefix sums below."""
_INVERSE = pow(BASE, -1, 1 << 64)
LENGTH_MIX = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A strong 64-bit mixer, so polynomial n-gram hashes spread over the whole range."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


POWER_BLOCK = 1 << 12


def power_table(base: int, size: int) -> np.ndarray:
    """base**i (mod 2**64) for i < size. A cumulative product is one long chain of dependent multiplies (0.1 s
    for 8M values); here it runs over one block, and each further block is that block times base**(block*j),
    independent multiplies: ten times faster."""
    block = np.cumprod(np.full(POWER_BLOCK, base, dtype=np.uint64))
    block = np.concatenate((np.ones(1, dtype=np.uint64), block[:-1]))  # base**0 .. base**(POWER_BLOCK - 1)
    starts = np.cumprod(np.full(-(-size // POWER_BLOCK), pow(base, POWER_BLOCK, 1 << 64), dtype=np.uint64))
    starts = np.concatenate((np.ones(1, dtype=np.uint64), starts[:-1]))
    return (starts[:, None] * block[None, :]).ravel()[:size]


class _Powers:
    """BASE**i and BASE**-i (mod 2**64) for i < size, grown on demand and kept for the process."""

    def __init__(self) -> None:
        self.up = self.down = np.ones(1, dtype=np.uint64)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The tables, at least `size` long."""
        if size > self.up.size:
            size = max(size, 2 * self.up.size, POWER_BLOCK)
            self.up, self.down = power_table(BASE, size), power_table(_INVERSE, size)
        return self.up, self.down


POWERS = _Powers()


class Substrings:
    """One string, and the hash of any of its substrings by (start, end) code point offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        up, down = POWERS.get(codes.size + 1)
        self.prefix = np.zeros(codes.size + 1, dtype=np.uint64)
        np.cumsum(codes * down[:codes.size], out=self.prefix[1:])
        self.up = up

    def keys(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """uint64 hashes of text[starts[i]:ends[i]]; equal substrings always get equal hashes."""
        raw = (self.prefix[ends] - self.prefix[starts]) * self.up[starts]
        return splitmix64(raw ^ ((ends - starts).astype(np.uint64) * LENGTH_MIX))


class HashCollision(Exception):
    """Two different n-grams share a hash: the caller counts this document the string way."""


class GramSets:
    """Several sets of substrings of one text (the n-grams of several n), hashed and sorted in one numpy pass.

    Set i holds the ranges text[starts[j]:ends[j]] of `ranges[i]`; a hash is tagged with its set, so
    the sets never mix. Equal hashes form runs in the sorted order, which give every n-gram's count.
    """

    def __init__(self, sub: Substrings, ranges: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.sub = sub
        sizes = [s.size for s, _ in ranges]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self.starts = np.concatenate([s for s, _ in ranges])
        self.ends = np.concatenate([e for _, e in ranges])
        tags = np.repeat(np.arange(len(ranges), dtype=np.uint64) * np.uint64(0x5851F42D4C957F2D), sizes)
        self.keys = sub.keys(self.starts, self.ends) ^ tags
        self.order = np.argsort(self.keys)  # quicksort: 2-3x a stable sort's speed on these sizes
        ordered = self.keys[self.order]
        run_starts = np.concatenate([[0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1])
        self.run_starts = run_starts
        self.run_lengths = np.diff(np.append(run_starts, ordered.size))
        self.run_first = np.minimum.reduceat(self.order, run_starts)  # each run's earliest position
        self._repeated: np.ndarray | None = None

    def _same(self, members: np.ndarray) -> bool:
        text, starts, ends = self.sub.text, self.starts[members].tolist(), self.ends[members].tolist()
        gram = text[starts[0]:ends[0]]
        return all(text[a:b] == gram for a, b in zip(starts[1:], ends[1:], strict=True))

    def top(self, i: int) -> tuple[int, int]:
        """(position in set i, count) of its most frequent substring, the earliest on ties, like
        `Counter.most_common(1)`."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        mine = np.flatnonzero((self.run_first >= lo) & (self.run_first < hi))
        lengths = self.run_lengths[mine]
        best = int(lengths.max())
        run = mine[lengths == best][np.argmin(self.run_first[mine[lengths == best]])]
        if best > 1:
            start = int(self.run_starts[run])
            if not self._same(self.order[start:start + best]):
                raise HashCollision
        return int(self.run_first[run]) - lo, best

    def repeated_chars(self, i: int, n: int) -> int:
        """datatrove's `find_all_duplicate` scan over set i (the n-grams of n units): characters in n-grams seen
        before, where a repeat jumps n positions ahead and a jumped-over n-gram is never seen.

        Only n-grams occurring more than once can repeat, so the scan visits just those; the others
        advance it by one.
        """
        lo, hi = self.bounds[i], self.bounds[i + 1]
        if self._repeated is None:  # which entries occur more than once
            self._repeated = np.zeros(self.keys.size, dtype=bool)
            self._repeated[self.order] = np.repeat(self.run_lengths > 1, self.run_lengths)
        candidates = np.flatnonzero(self._repeated[lo:hi]) + lo
        if candidates.size == 0:
            return 0
        text, keys = self.sub.text, self.keys
        seen: dict[int, int] = {}
        total, next_idx = 0, lo
        for pos, key in zip(candidates.tolist(), keys[candidates].tolist(), strict=True):
            if pos < next_idx:
                continue  # jumped over by the last repeat
            first = seen.get(key)
            if first is None:
                seen[key] = pos
                next_idx = pos + 1
                continue
            s, e = int(self.starts[pos]), int(self.ends[pos])
            if text[s:e] != text[int(self.starts[first]):int(self.ends[first])]:
                raise HashCollision
            total += e - s
            next_idx = pos + n
        return total
