"""Gopher's repetition counts with numpy n-gram hashes: the same numbers, faster.

datatrove's `find_all_duplicate` and `get_n_grams` build every n-gram as a string (a list slice
and a join per position, 6 n-gram sizes per document), and the Chinese rules count every
character n-gram in a Counter: together a third of the prepare run on the sample. Here the units
are joined once and every n-gram is a range of that string, hashed in numpy (ngrams.py); the
strings are compared only where a count rests on two n-grams being equal, and a document whose
n-grams collide in the hash is counted the string way. So every count, and every keep/drop
decision, is datatrove's (tests/test_prepare_speed.py compares them on the sample).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import split_into_words

from flm.pipelines.prepare.ngrams import GramSets, HashCollision, Substrings


class Units:
    """One document's units (words, or the characters of a string) joined once, for n-grams of several n."""

    def __init__(self, units: list[str] | str) -> None:
        self.units = units
        self.count = len(units)
        if isinstance(units, str):
            self.offsets = np.arange(self.count + 1, dtype=np.int64)
            self.glued = Substrings(units)
        else:
            self.offsets = np.zeros(self.count + 1, dtype=np.int64)
            np.cumsum(np.fromiter(map(len, units), dtype=np.int64, count=self.count), out=self.offsets[1:])
            self.glued = Substrings("".join(units))

    def _glued_ranges(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.count - n + 1
        return self.offsets[:m], self.offsets[n:n + m]

    def top_duplicates(self, ns: list[int]) -> dict[int, int]:
        """datatrove's `find_top_duplicate(get_n_grams(words, n))` for each n: characters of the most frequent
        n-gram (words joined by spaces) x its count; 0 with fewer than n words."""
        ns = [n for n in ns if self.count >= n]
        if not ns:
            return {}
        spaced = Substrings(" ".join(self.units))
        ranges = []
        for n in ns:
            m = self.count - n + 1
            ranges.append((self.offsets[:m] + np.arange(m),  # word i starts after i spaces
                           self.offsets[n:n + m] + np.arange(n - 1, n - 1 + m)))
        grams = GramSets(spaced, ranges)
        out = {}
        for i, (n, (starts, ends)) in enumerate(zip(ns, ranges, strict=True)):
            try:
                pos, count = grams.top(i)
            except HashCollision:
                out[n] = _top_duplicate_strings(list(self.units), n)
                continue
            out[n] = int(ends[pos] - starts[pos]) * count
        return out

    def top_counts(self, ns: list[int]) -> dict[int, int]:
        """How often the most frequent n-gram of the joined units occurs, for each n (absent with fewer than n)."""
        ns = [n for n in ns if self.count >= n]
        if not ns:
            return {}
        ranges = [self._glued_ranges(n) for n in ns]
        grams = GramSets(self.glued, ranges)
        out = {}
        for i, (n, (starts, ends)) in enumerate(zip(ns, ranges, strict=True)):
            try:
                out[n] = grams.top(i)[1]
            except HashCollision:
                text = self.glued.text
                out[n] = Counter(text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
                                 ).most_common(1)[0][1]
        return out

    def all_duplicates(self, ns: list[int]) -> dict[int, int]:
        """datatrove's `find_all_duplicate(units, n)` for each n: characters in n-grams seen before (a repeat
        skips n units)."""
        out = dict.fromkeys(ns, 0)
        ns = [n for n in ns if self.count >= n]
        if not ns:
            return out
        grams = GramSets(self.glued, [self._glued_ranges(n) for n in ns])
        for i, n in enumerate(ns):
            try:
                out[n] = grams.repeated_chars(i, n)
            except HashCollision:
                out[n] = _all_duplicate_strings(self, n)
        return out


def top_duplicate(words: list[str], n: int) -> int:
    """datatrove's `find_top_duplicate(get_n_grams(words, n))`."""
    return Units(words).top_duplicates([n]).get(n, 0)


def all_duplicate(units: list[str] | str, n: int) -> int:
    """datatrove's `find_all_duplicate(units, n)`; `units` may be a string (its characters are the units)."""
    return Units(units).all_duplicates([n])[n]


def _top_duplicate_strings(words: list[str], n: int) -> int:
    gram, count = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1)).most_common(1)[0]
    return len(gram) * count


def _all_duplicate_strings(units: Units, n: int) -> int:
    joined, starts = units.glued.text, units.offsets.tolist()
    seen: set[str] = set()
    repeated, idx = 0, 0
    while idx < units.count - n + 1:
        gram = joined[starts[idx]:starts[idx + n]]
        if gram in seen:
            repeated += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


class FastGopherRepetitionFilter(GopherRepetitionFilter):
    """datatrove's GopherRepetitionFilter with the n-gram counts above; same settings, same decisions."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        paragraphs = self.paragraph_exp.split(text.strip())
        para_dups, para_chars = find_duplicates(paragraphs)
        if self.dup_para_frac and para_dups / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and para_chars / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = self._line_splitter.split(text)
        line_dups, line_chars = find_duplicates(lines)
        if self.dup_line_frac and line_dups / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and line_chars / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"
        words = Units(split_into_words(text, self.language))
        top = words.top_duplicates([n for n, _ in self.top_n_grams])
        for n, n_frac in self.top_n_grams:
            if top.get(n, 0) / len(text) > n_frac:
                return False, f"top_{n}_gram"
        duplicated = words.all_duplicates([n for n, _ in self.dup_n_grams])
        for n, n_frac in self.dup_n_grams:
            if duplicated[n] / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True
