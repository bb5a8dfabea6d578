"""Tokenizer training, saving, loading, the tiktoken fast path and round trips (tokenizer/)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from bilingual_text import documents

from flm.tokenizer import (
    EOS,
    PAD,
    ByteBPETokenizer,
    SentencePieceTokenizer,
    TokenizerError,
    TrainConfig,
    canonical_text,
    load_tokenizer,
    train_tokenizer,
)
from flm.tokenizer.meta import TokenizerMeta, file_hash
from flm.tokenizer.sample import sample_by_bytes

VOCAB = 1024
ROUND_TRIP = [
    "The quick brown fox jumps over the lazy dog, 1234567 times.\n\n  Indented\tline  ",
    "人工智能是计算机科学的一个分支，它企图了解智能的实质。",
    "混合 mixed 文本：数字 2026 年，English後面の日本語カタカナ 한국어.",
    "emoji 😀👍🏽 flags 🇨🇳 ZWJ 👨‍👩‍👧 combining é (e\u0301) zero-width\u200bspace",
    "<|endoftext|> <|pad|> look special but are text",
    "\x00\x01 control \x7f bytes and \ufffd replacement",
    "",
    " ",
]
SURROGATES = [
    ("lone high \ud800 surrogate", "lone high \ufffd surrogate"),
    ("lone low \udfff at end\udc80", "lone low \ufffd at end\ufffd"),
    ("pair \ud83d\ude00 joined", "pair 😀 joined"),
]


def _docs(n: int = 1500, seed: int = 0) -> list[tuple[str, str]]:
    return [("mixed", text) for text in documents(n, seed)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "hf"
    train_tokenizer(_docs(), out, TrainConfig(vocab_size=VOCAB, sample_bytes=10**7))
    return out


@pytest.fixture(scope="module")
def hf(hf_dir: Path) -> ByteBPETokenizer:
    tok = load_tokenizer(hf_dir)
    assert isinstance(tok, ByteBPETokenizer)
    return tok


def test_exact_vocab_size_and_specials_at_the_end(hf_dir: Path, hf: ByteBPETokenizer) -> None:
    meta = TokenizerMeta.load(hf_dir)
    assert meta.vocab_size == VOCAB == hf.hf.get_vocab_size() == hf._fast.n_vocab
    specials = meta.special_ids
    assert specials[EOS] == VOCAB - 8 and specials[PAD] == VOCAB - 7 and len(specials) == 8
    assert sorted(specials.values()) == list(range(VOCAB - 8, VOCAB))
    assert meta.content_hash == file_hash(hf_dir / "tokenizer.json")
    assert meta.corpus["sample_docs"] == 1500 and meta.corpus["sources"]["mixed"]["docs"] == 1500
    assert meta.trainer["merges"] == VOCAB - 8 - 256


def test_training_is_reproducible(tmp_path: Path, hf_dir: Path) -> None:
    again = train_tokenizer(reversed(_docs()), tmp_path / "again", TrainConfig(vocab_size=VOCAB, sample_bytes=10**7))
    assert again.content_hash == TokenizerMeta.load(hf_dir).content_hash


def test_sample_is_order_independent_and_fits_budget() -> None:
    docs = _docs(400, seed=3)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    a = sample_by_bytes(docs, 20_000, seed=7)
    b = sample_by_bytes(shuffled, 20_000, seed=7)
    c = sample_by_bytes(docs, 20_000, seed=8)
    assert a.texts == b.texts and a.texts != c.texts
    assert 15_000 < a.sample_bytes <= 20_000 and a.seen_docs == 400
    assert sample_by_bytes(docs, 10**9).sample_bytes == a.seen_bytes  # the whole corpus fits


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(hf: ByteBPETokenizer, text: str) -> None:
    ids = hf.encode(text)
    assert hf.decode(ids) == text
    assert hf.hf.decode(hf.hf.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text
    assert hf.eos_id not in ids and hf.pad_id not in ids


@pytest.mark.parametrize(("text", "expected"), SURROGATES)
def test_round_trip_of_surrogates_is_defined_by_canonical_text(hf: ByteBPETokenizer, text: str,
                                                               expected: str) -> None:
    """Lone surrogates cannot be UTF-8: they become U+FFFD; a surrogate pair becomes its character."""
    assert canonical_text(text) == expected
    assert hf.decode(hf.encode(text)) == expected
    assert hf.encode(text) == hf.encode(expected)
    assert [a.tolist() for a in hf.encode_arrays([text])] == [hf.encode(expected)]


def test_fast_path_ids_equal_hf_tokenizers(hf: ByteBPETokenizer) -> None:
    texts = [t for _, t in _docs(300, seed=11)] + ROUND_TRIP + [s for s, _ in SURROGATES]
    assert hf.engine == "tiktoken"
    assert hf.verify_fast_path(texts) is None and hf.engine == "tiktoken"
    fast = hf.encode_batch(texts, num_threads=2)
    reference = [e.ids for e in hf.hf.encode_batch([canonical_text(t) for t in texts], add_special_tokens=False)]
    assert fast == reference
    assert [a.tolist() for a in hf.encode_arrays(texts)] == reference


def test_fast_path_mismatch_falls_back_to_hf_with_a_warning(tmp_path: Path, hf_dir: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Reverse the merge priorities: HF then merges differently, tiktoken (ranks = token ids) does not."""
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    config["model"]["merges"].reverse()
    (broken / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    meta = TokenizerMeta.load(hf_dir)
    meta.content_hash = file_hash(broken / "tokenizer.json")
    meta.save(broken)
    with caplog.at_level(logging.WARNING, logger="flm.tokenizer.load"):
        tok = load_tokenizer(broken)
    assert tok.engine == "hf" and "ids differ" in tok.fallback_reason
    assert "encoding with HF tokenizers" in caplog.text
    text = ROUND_TRIP[0]
    assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids
    assert tok.decode(tok.encode(text)) == text


def test_transformers_loads_the_saved_tokenizer(hf_dir: Path, hf: ByteBPETokenizer) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast.from_pretrained(str(hf_dir))
    assert len(fast) == VOCAB and fast.eos_token_id == hf.eos_id and fast.pad_token_id == hf.pad_id
    text = ROUND_TRIP[2]
    assert fast(text, add_special_tokens=False)["input_ids"] == hf.encode(text)
    assert fast.decode(hf.encode(text)) == text


def test_too_small_corpus_is_a_clear_error_unless_allowed(tmp_path: Path) -> None:
    small = _docs(60)
    with pytest.raises(TokenizerError, match=r"supports a vocabulary of only \d+ .*--allow-smaller"):
        train_tokenizer(small, tmp_path / "a", TrainConfig(vocab_size=50_000))
    assert not (tmp_path / "a" / "meta.json").exists()
    meta = train_tokenizer(small, tmp_path / "b", TrainConfig(vocab_size=50_000, allow_smaller=True))
    assert 300 < meta.vocab_size < 50_000
    assert load_tokenizer(tmp_path / "b").vocab_size == meta.vocab_size


def test_existing_tokenizer_is_not_overwritten(hf_dir: Path) -> None:
    with pytest.raises(TokenizerError, match="already holds a tokenizer"):
        train_tokenizer(_docs(10), hf_dir, TrainConfig(vocab_size=VOCAB))


def test_changed_model_file_is_detected(tmp_path: Path, hf_dir: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("tokenizer.json", "meta.json"):
        (copy / name).write_bytes((hf_dir / name).read_bytes())
    (copy / "tokenizer.json").write_text((hf_dir / "tokenizer.json").read_text() + " ", encoding="utf-8")
    with pytest.raises(TokenizerError, match="content hash .* differs from meta.json"):
        load_tokenizer(copy)
    with pytest.raises(TokenizerError, match="no meta.json"):
        load_tokenizer(tmp_path)


def test_sentencepiece_backend(tmp_path: Path) -> None:
    meta = train_tokenizer(_docs(600), tmp_path / "spm", TrainConfig(vocab_size=800, backend="sentencepiece"))
    tok = load_tokenizer(tmp_path / "spm")
    assert isinstance(tok, SentencePieceTokenizer) and tok.engine == "sentencepiece"
    assert meta.vocab_size == 800 == tok.sp.get_piece_size()
    assert tok.eos_id == meta.special_ids[EOS] and tok.pad_id == meta.special_ids[PAD]
    for text in ROUND_TRIP:
        assert tok.decode(tok.encode(text)) == text, text
    for text, expected in SURROGATES:
        assert tok.decode(tok.encode(text)) == expected
    assert tok.eos_id not in tok.encode("<|endoftext|>")
    with pytest.raises(TokenizerError, match="supports a vocabulary of only"):
        train_tokenizer(_docs(30), tmp_path / "spm-big", TrainConfig(vocab_size=60_000, backend="sentencepiece"))
