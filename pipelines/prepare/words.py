"""A fast word and sentence splitter for datatrove's word-based filters (Gopher, C4).

datatrove's default English tokenizer is spaCy inside a `memory_zone`, which rebuilds the lexeme of
every word of every document: it took about half of the prepare run on the Pile sample. This
splitter follows spaCy's English rules where the filters' thresholds feel them (the share of
tokens holding a letter, stop words): text is split on whitespace; quotes and brackets in front and
punctuation behind become tokens of their own ("..." and "--" stay whole); clitics are split off
(do n't, it 's); a hyphen inside a word, and a slash or equals sign between letters, are split out;
URLs, flags (--force), decimals, initials and abbreviations (e.g.) stay whole.
`quality.word_tokenizer: spacy` restores spaCy.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize, strip_strings

URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)\S+", re.IGNORECASE)
PREFIX = re.compile(r"^[\"'(\[{<$#*“‘«]")
SUFFIX = re.compile(r"(?:\.\.\.|--|[.,;:!?%\"')\]}>”’»])$")
CLITIC = re.compile(r"(?i)(?<=\w)(n't|'s|'re|'m|'ll|'d|'ve)$")
INFIX = re.compile(r"(?<=\w)(-)(?=\w)|(?<=[^\W\d_])([/=])(?=[^\W\d_])")
KEEP_WHOLE = re.compile(r"^(?:(?:[A-Za-z]\.){2,}|[A-Za-z]\.)$")
SPECIAL = {"cannot": ["can", "not"], "Cannot": ["Can", "not"]}
SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?。！？])|(?<=[.!?。！？][\"'”’)\]]))\s+")


def split_chunk(chunk: str, out: list[str]) -> None:
    """Append the tokens of one whitespace-free chunk to `out`."""
    while len(chunk) > 1 and PREFIX.match(chunk):
        out.append(chunk[0])
        chunk = chunk[1:]
    suffixes: list[str] = []
    if not KEEP_WHOLE.match(chunk):
        while len(chunk) > 1 and (m := SUFFIX.search(chunk)) and m.start() > 0:
            suffixes.append(m.group(0))
            chunk = chunk[:m.start()]
        if not URL.match(chunk) and (m := CLITIC.search(chunk)):
            suffixes.append(m.group(0))
            chunk = chunk[:m.start()]
    if chunk in SPECIAL:
        out.extend(SPECIAL[chunk])
    elif not URL.match(chunk) and INFIX.search(chunk):
        out.extend(part for part in INFIX.split(chunk) if part)
    else:
        out.append(chunk)
    out.extend(reversed(suffixes))


CHUNK_CACHE = 1 << 17
"""Split chunks remembered (then forgotten all at once): a few tens of MB at most."""


class FastWordTokenizer(WordTokenizer):
    """The splitter above, with two memories.

    The last text it split: a document's chain of word-based filters (Gopher repetition, Gopher
    quality, C4) shares one tokenizer and asks for the same text in turn; the list returned is shared
    too, and no filter changes it. And the chunks that needed the rules ("it's", "end.", "(see"):
    text repeats them (two thirds of them on the Pile sample, more as a corpus goes on), and each
    costs half a dozen regex calls.
    """

    def __init__(self, language: str = "en") -> None:
        super().__init__(language)
        self._last: tuple[str, list[str]] | None = None
        self._chunks: dict[str, list[str]] = {}

    def word_tokenize(self, text: str) -> list[str]:
        if self._last is not None and self._last[0] is text:
            return self._last[1]
        words = self._split(text)
        self._last = (text, words)
        return words

    def _split(self, text: str) -> list[str]:
        out: list[str] = []
        for chunk in text.split():
            if chunk.isalpha() and chunk not in SPECIAL:  # most words: no rule below can apply
                out.append(chunk)
                continue
            parts = self._chunks.get(chunk)
            if parts is None:
                if len(self._chunks) == CHUNK_CACHE:
                    self._chunks.clear()
                parts = self._chunks[chunk] = []
                split_chunk(chunk, parts)
            out.extend(parts)
        return out

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(SENTENCE_BREAK.split(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        sentences = [s for s in SENTENCE_BREAK.split(text) if s]
        return list(simple_span_tokenize(text, sentences)) if sentences else []
