"""`flm` commands: tokenize, train-tokenizer, inspect."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.render import not_built


def tokenize(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train (if needed) a byte-level BPE tokenizer and write Arrow token shards."""
    not_built("tokenization", issue=5)


def train_tokenizer(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train a byte-level BPE tokenizer on prepared text (HF tokenizers or SentencePiece)."""
    not_built("tokenizer training", issue=5)


def inspect(
    json_: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Summarize token shards per source and decode a sample document back to text."""
    not_built("token-shard inspection", issue=5)
