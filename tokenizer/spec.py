"""What every flm tokenizer shares: the pre-tokenization pattern, the special tokens, text canonicalization.

The split pattern is cl100k's with two changes for bilingual text: runs of Han/Kana characters are
their own pre-tokens (Chinese has no spaces, so cl100k's `\\p{L}+` would glue a CJK clause to a
preceding Latin word), and digits split into groups of up to 3. Both the HF tokenizers (Oniguruma)
and the tiktoken (fancy-regex) engines accept the pattern; tokenizer/fast.py checks that they split
identically.
"""

from __future__ import annotations

CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    rf"|[^\r\n\p{{L}}\p{{N}}]?[\p{{L}}&&[^{CJK}]]+"
    rf"|[{CJK}]+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

EOS = "<|endoftext|>"
PAD = "<|pad|>"
UNK = "<unk>"
"""SentencePiece requires an unknown piece; with byte fallback it is never produced."""


def reserved_token(i: int) -> str:
    return f"<|reserved_{i}|>"


def special_tokens(num_reserved: int) -> list[str]:
    """End-of-text, padding, then `num_reserved` tokens kept free for later use (chat, FIM, ...)."""
    return [EOS, PAD, *(reserved_token(i) for i in range(num_reserved))]


def canonical_text(text: str) -> str:
    """The text a tokenizer actually sees: `text` itself when it is valid Unicode (the usual case).

    A Python str may hold surrogate code points, which UTF-8 cannot encode. Surrogate pairs are
    joined into the character they stand for and lone surrogates become U+FFFD, exactly as tiktoken
    does; round trip is defined as decode(encode(t)) == canonical_text(t).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
