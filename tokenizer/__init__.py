"""Byte-level BPE training (HF tokenizers, SentencePiece) and fast batch encoding (tiktoken)."""
