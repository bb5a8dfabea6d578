"""Gopher's quality rules, as datatrove's GopherQualityFilter decides them, with string methods in C.

datatrove asks, for every word, whether any character lies outside its punctuation set and whether
any is a letter, each with a Python generator over the word's characters: a tenth of the quality
step on the Pile sample. Here a word holds a non-punctuation character exactly when stripping the
punctuation from both ends leaves something, and a word of letters only (most words) needs no
character-by-character look. Every rule, threshold and reason is datatrove's
(tests/test_prepare_speed.py compares the decisions on the sample).
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter
from datatrove.utils.text import PUNCTUATION_SET, split_into_words

PUNCTUATION_CHARS = "".join(sorted(PUNCTUATION_SET))
assert all(len(ch) == 1 for ch in PUNCTUATION_SET), "str.strip below needs single characters"
BULLETS = ("•", "-")
ELLIPSES = ("...", "…")


def has_letter(word: str) -> bool:
    return word.isalpha() or any(ch.isalpha() for ch in word)


class FastGopherQualityFilter(GopherQualityFilter):
    """datatrove's GopherQualityFilter; same settings, same decisions, a fraction of its Python."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        words = split_into_words(text, self.language)
        n_words = len(words)
        lengths = [len(w) for w in words if w.strip(PUNCTUATION_CHARS)]  # words that are not all punctuation
        if self.min_doc_words and len(lengths) < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and len(lengths) > self.max_doc_words:
            return False, "gopher_long_doc"
        mean_length = sum(lengths) / len(lengths) if lengths else float("nan")  # numpy's mean of no words: nan
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
        if self.max_non_alpha_words_ratio and sum(map(has_letter, words)) / n_words < self.max_non_alpha_words_ratio:
            return False, "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True
