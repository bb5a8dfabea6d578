"""Gopher's repetition counts computed on slices of one joined string: the same numbers, faster.

datatrove's `find_all_duplicate` and `get_n_grams` build every n-gram with `"".join(words[i:i+n])`
(a list slice and a join per position, 6 n-gram sizes per document): a third of the prepare run on
the Pile sample. Joining the words once and slicing the joined string by word offsets gives the
very same strings, so every count, and every keep/drop decision, is unchanged (tests/test_prepare_speed.py
compares them with datatrove's on the sample).
"""

from __future__ import annotations

from collections import Counter
from itertools import accumulate

from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import split_into_words


def word_offsets(words: list[str], sep: str) -> tuple[str, list[int]]:
    """`sep.join(words)` and where each word starts in it (plus the end, as if one more word followed)."""
    joined = sep.join(words)
    starts = [0, *accumulate(len(w) + len(sep) for w in words)]
    return joined, starts


def top_duplicate(words: list[str], n: int) -> int:
    """datatrove's `find_top_duplicate(get_n_grams(words, n))`: characters of the most frequent n-gram x its count."""
    joined, starts = word_offsets(words, " ")
    counts = Counter(joined[starts[i]:starts[i + n] - 1] for i in range(len(words) - n + 1))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    return len(gram) * count


def all_duplicate(units: list[str] | str, n: int) -> int:
    """datatrove's `find_all_duplicate(units, n)`: characters in n-grams seen before (a repeat skips n units).

    `units` may be a string (its characters are the units): Chinese repetition counts character n-grams.
    """
    if isinstance(units, str):
        joined, starts = units, range(len(units) + 1)
    else:
        joined, starts = word_offsets(units, "")
    count = len(units)
    seen: set[str] = set()
    repeated, idx = 0, 0
    while idx < count - n + 1:
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
        words = split_into_words(text, self.language)
        for n, n_frac in self.top_n_grams:
            if len(words) >= n and top_duplicate(words, n) / len(text) > n_frac:
                return False, f"top_{n}_gram"
        for n, n_frac in self.dup_n_grams:
            if all_duplicate(words, n) / len(text) > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True
