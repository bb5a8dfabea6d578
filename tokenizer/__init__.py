"""Byte-level BPE training (HF tokenizers, SentencePiece) and fast batch encoding (tiktoken)."""

from flm.tokenizer.load import ByteBPETokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer
from flm.tokenizer.meta import TokenizerError, TokenizerMeta
from flm.tokenizer.spec import EOS, PAD, SPLIT_PATTERN, canonical_text
from flm.tokenizer.train import TrainConfig, train_tokenizer

__all__ = ["EOS", "PAD", "SPLIT_PATTERN", "ByteBPETokenizer", "SentencePieceTokenizer", "Tokenizer",
           "TokenizerError", "TokenizerMeta", "TrainConfig", "canonical_text", "load_tokenizer", "train_tokenizer"]
