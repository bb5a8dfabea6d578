"""Gopher's quality rules, as datatrove's GopherQualityFilter decides them, with string methods in C.

datatrove asks, for every word, whether any character lies outside its punctuation set and whether
any is a letter, each with a Python generator over the word's characters: a tenth of the quality
step on the Pile sample. Here a word holds a non-punctuation character exactly when stripping the
punctuation from both ends leaves something, and a word of letters only (most words) needs no
character-by-character look. Every rule, threshold and reason is datatrove's
(tests/test_prepare_speed.py compares the decisions on the sample).
"""

from __future__ import annotations

from itertools import filterfalse

from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter
from datatrove.utils.text import PUNCTUATION_SET, split_into_words

PUNCTUATION_CHARS = "".join(sorted(PUNCTUATION_SET))
assert all(len(ch) == 1 and not ch.isalpha() for ch in PUNCTUATION_SET), \
    "str.strip below needs single characters, and a word of letters must never be all punctuation"
BULLETS = ("•", "-")
ELLIPSES = ("...", "…")


class FastGopherQualityFilter(GopherQualityFilter):
    """datatrove's GopherQualityFilter; same settings, same decisions, a fraction of its Python."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        words = split_into_words(text, self.language)
        n_words = len(words)
        letters_only = list(filter(str.isalpha, words))  # most words; none of them is all punctuation
        others = list(filterfalse(str.isalpha, words))
        symbolic = [w for w in others if w.strip(PUNCTUATION_CHARS)]  # not all punctuation
        n_content = len(letters_only) + len(symbolic)
        lengths = sum(map(len, letters_only)) + sum(map(len, symbolic))
        if self.min_doc_words and n_content < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_content > self.max_doc_words:
            return False, "gopher_long_doc"
        mean_length = lengths / n_content if n_content else float("nan")  # numpy's mean of no words: nan
        if self.min_avg_word_length and mean_length < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and mean_length > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and sum(map(text.count, ELLIPSES)) / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if self.max_bullet_lines_ratio and (
                sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > self.max_bullet_lines_ratio):
            return False, "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio and (
                sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines) > self.max_ellipsis_lines_ratio):
            return False, "gopher_too_many_end_ellipsis"
        if self.max_non_alpha_words_ratio:
            with_letters = len(letters_only) + sum(any(ch.isalpha() for ch in w) for w in others)
            if with_letters / n_words < self.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True
