"""One interface over both backends: load a tokenizer directory, encode batches, decode.

`load_tokenizer(dir)` reads meta.json, checks the model file against its content hash, and returns a
`Tokenizer`. For the HF byte-level BPE it also builds the tiktoken fast path and checks it against
HF tokenizers on a probe set; callers add their own sample with `verify_fast_path(texts)`. If any id
differs the tokenizer logs a warning and encodes with HF tokenizers from then on.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flm.tokenizer.meta import TokenizerError, TokenizerMeta, file_hash
from flm.tokenizer.spec import canonical_text

log = logging.getLogger(__name__)

PROBE_TEXTS = (
    "Hello, world! It's 2026-11-23: 1234567 tokens/s, 3.14159.\n\n  indented\tcode()  \r\n",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "人工智能是计算机科学的一个分支。它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。",
    "混合 mixed 文本 text，数字 12345 和标点！English后面紧跟中文。日本語のテキストとカタカナ。한국어 문장입니다.",
    "emoji 😀👍🏽 and flags 🇨🇳🇺🇸 and ZWJ 👨‍👩‍👧 café naïve Ωμέγα Привет",
    "special-looking text <|endoftext|> <|pad|> must stay plain text",
    " leading space, trailing spaces   ",
)


class Tokenizer(ABC):
    """A trained tokenizer: ids for text and text for ids, with the facts of meta.json."""

    def __init__(self, directory: Path, meta: TokenizerMeta) -> None:
        self.directory = directory
        self.meta = meta

    @property
    def vocab_size(self) -> int:
        return self.meta.vocab_size

    @property
    def eos_id(self) -> int:
        return self.meta.eos_id

    @property
    def pad_id(self) -> int:
        return self.meta.pad_id

    @property
    def content_hash(self) -> str:
        return self.meta.content_hash

    @property
    @abstractmethod
    def engine(self) -> str:
        """What actually encodes: "tiktoken", "hf" or "sentencepiece"."""

    @abstractmethod
    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Ids of each text, special-token text encoded as plain text, no EOS added."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; invalid UTF-8 (an id sequence cut mid-character) decodes to U+FFFD."""

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Ids of each text as a uint32 array (what token shards store), on the calling thread."""
        return [np.asarray(ids, dtype=np.uint32) for ids in self.encode_batch(texts)]

    def verify_fast_path(self, texts: Sequence[str]) -> int | None:
        """Check the fast path against the reference engine on `texts`; index of a mismatch or None."""
        return None


class ByteBPETokenizer(Tokenizer):
    """HF tokenizers byte-level BPE, encoding through tiktoken when that gives identical ids."""

    def __init__(self, directory: Path, meta: TokenizerMeta, fast: bool = True) -> None:
        import tokenizers

        super().__init__(directory, meta)
        self.hf = tokenizers.Tokenizer.from_file(str(directory / meta.model_file))
        self.hf.encode_special_tokens = True  # "<|endoftext|>" in a document is text, not EOS
        self._fast = None
        self.fallback_reason = "" if fast else "fast path disabled"
        if fast:
            from flm.tokenizer.fast import tiktoken_encoding

            try:
                self._fast = tiktoken_encoding(self.hf, meta.split_pattern)
            except ValueError as err:
                self._disable_fast(f"cannot build the tiktoken encoding: {err}")
            else:
                self.verify_fast_path(PROBE_TEXTS)

    @property
    def engine(self) -> str:
        return "tiktoken" if self._fast is not None else "hf"

    def _disable_fast(self, reason: str) -> None:
        self._fast = None
        self.fallback_reason = reason
        log.warning("%s: tiktoken fast path off (%s); encoding with HF tokenizers, about 4x slower",
                    self.directory, reason)

    def verify_fast_path(self, texts: Sequence[str]) -> int | None:
        if self._fast is None:
            return None
        from flm.tokenizer.fast import first_mismatch

        bad = first_mismatch(self.hf, self._fast, texts)
        if bad is not None:
            self._disable_fast(f"ids differ from HF tokenizers on sample text {bad}: {texts[bad][:60]!r}")
        return bad

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        if self._fast is not None:
            if num_threads <= 1:
                return [self._fast.encode_ordinary(t) for t in texts]
            return self._fast.encode_ordinary_batch(list(texts), num_threads=num_threads)
        encodings = self.hf.encode_batch([canonical_text(t) for t in texts], add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        if self._fast is None:
            return super().encode_arrays(texts)
        encode = self._fast.encode_to_numpy  # no Python list per document
        out = []
        for text in texts:
            try:
                out.append(encode(text, disallowed_special=()))
            except UnicodeEncodeError:
                out.append(encode(canonical_text(text), disallowed_special=()))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        if self._fast is not None:
            return self._fast.decode(list(ids))
        return self.hf.decode(list(ids), skip_special_tokens=False)


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece BPE with byte fallback (the `--backend sentencepiece` option)."""

    def __init__(self, directory: Path, meta: TokenizerMeta) -> None:
        import sentencepiece as spm

        super().__init__(directory, meta)
        self.sp = spm.SentencePieceProcessor(model_file=str(directory / meta.model_file))

    @property
    def engine(self) -> str:
        return "sentencepiece"

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return self.sp.encode([canonical_text(t) for t in texts], out_type=int, num_threads=max(1, num_threads))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


def load_tokenizer(directory: Path | str, *, fast: bool = True) -> Tokenizer:
    """Load a tokenizer directory written by `train_tokenizer` (either backend)."""
    directory = Path(directory)
    meta = TokenizerMeta.load(directory)
    model = directory / meta.model_file
    if not model.exists():
        raise TokenizerError(f"{model}: missing; meta.json names it as the {meta.backend} model file")
    actual = file_hash(model)
    if actual != meta.content_hash:
        raise TokenizerError(f"{model}: content hash {actual[:12]} differs from meta.json's {meta.content_hash[:12]}; "
                             "the model file was changed after training; retrain or restore it")
    if meta.backend == "sentencepiece":
        return SentencePieceTokenizer(directory, meta)
    return ByteBPETokenizer(directory, meta, fast=fast)
