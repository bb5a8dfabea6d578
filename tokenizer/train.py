"""Train a tokenizer of an exact vocabulary size on a byte-budget sample and save it with meta.json.

HF tokenizers byte-level BPE by default: no unknown tokens for any UTF-8 input, the bilingual split
pattern of tokenizer/spec.py, special tokens appended after the learned vocabulary (ids
vocab_size - n_special .. vocab_size - 1), so ids 0..255 are the byte alphabet and tiktoken ranks are
contiguous. SentencePiece BPE with byte fallback is the alternative backend. Both train on all cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flm.tokenizer.meta import MODEL_FILES, Backend, TokenizerError, TokenizerMeta, file_hash
from flm.tokenizer.sample import CorpusSample, sample_by_bytes
from flm.tokenizer.spec import EOS, PAD, SPLIT_PATTERN, UNK, canonical_text, special_tokens


@dataclass
class TrainConfig:
    vocab_size: int = 100256
    """Exact size including special tokens (FLM-101B: 100256)."""
    backend: Backend = "hf"
    num_reserved: int = 6
    """Reserved special tokens after end-of-text and padding."""
    sample_bytes: int = 1 << 30
    """Byte budget of the training sample (see tokenizer/sample.py)."""
    seed: int = 0
    min_frequency: int = 2
    """A merge must occur at least this often in the sample (HF backend)."""
    allow_smaller: bool = False
    """Keep a smaller vocabulary when the sample cannot support `vocab_size` instead of failing."""

    def validate(self) -> None:
        if self.backend not in MODEL_FILES:
            raise ValueError(f"backend must be one of {sorted(MODEL_FILES)}, got {self.backend!r}")
        floor = 256 + 2 + self.num_reserved + (1 if self.backend == "sentencepiece" else 0)
        if self.vocab_size <= floor:
            raise ValueError(f"vocab_size must exceed {floor} (256 bytes + special tokens), got {self.vocab_size}")
        if self.num_reserved < 0 or self.sample_bytes <= 0 or self.min_frequency < 1:
            raise ValueError("num_reserved >= 0, sample_bytes > 0 and min_frequency >= 1 are required")


def train_tokenizer(docs: Iterable[tuple[str, str]], out_dir: Path | str, config: TrainConfig, *,
                    corpus_info: dict | None = None, overwrite: bool = False) -> TokenizerMeta:
    """Sample `docs` ((source, text) pairs) by bytes, train, and save tokenizer + meta.json in `out_dir`.

    meta.json is written last, so a directory with meta.json holds a complete tokenizer.
    """
    config.validate()
    out_dir = Path(out_dir)
    if (out_dir / "meta.json").exists() and not overwrite:
        raise TokenizerError(f"{out_dir}: already holds a tokenizer (meta.json); choose another directory "
                             "or overwrite it (--overwrite)")
    sample = sample_by_bytes(docs, config.sample_bytes, config.seed)
    if not sample.texts:
        raise TokenizerError("the training corpus has no documents")
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if config.backend == "hf":
        specials, trainer_info = _train_hf(sample, config, staging)
    else:
        specials, trainer_info = _train_sentencepiece(sample, config, staging)
    model_file = MODEL_FILES[config.backend]
    meta = TokenizerMeta(
        backend=config.backend, vocab_size=trainer_info.pop("vocab_size"), special_ids=specials,
        eos_id=specials[EOS], pad_id=specials[PAD], content_hash=file_hash(staging / model_file),
        model_file=model_file, split_pattern=SPLIT_PATTERN if config.backend == "hf" else "",
        corpus={**(corpus_info or {}), **sample.summary()}, trainer=trainer_info)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)
    for item in staging.iterdir():
        os.replace(item, out_dir / item.name)
    staging.rmdir()
    meta.save(out_dir)
    return meta


def _too_small(sample: CorpusSample, reached: int, config: TrainConfig, why: str) -> TokenizerError:
    mb = sample.sample_bytes / 1e6
    return TokenizerError(
        f"the training sample ({len(sample.texts)} documents, {mb:.2f} MB of {sample.seen_bytes / 1e6:.2f} MB read) "
        f"supports a vocabulary of only {reached} tokens including specials, but {config.vocab_size} were asked "
        f"({why}). Give it more text (a larger corpus or sample budget), ask for a smaller vocabulary, "
        f"or allow a smaller one (--allow-smaller)")


def _batches(texts: list[str], size: int = 1000) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield [canonical_text(t) for t in texts[i:i + size]]


def _train_hf(sample: CorpusSample, config: TrainConfig, out: Path) -> tuple[dict[str, int], dict]:
    import tokenizers
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

    specials = special_tokens(config.num_reserved)
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=config.vocab_size - len(specials), min_frequency=config.min_frequency,
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(_batches(sample.texts), trainer, length=len(sample.texts))
    learned = tok.get_vocab_size()
    if learned + len(specials) < config.vocab_size and not config.allow_smaller:
        raise _too_small(sample, learned + len(specials), config,
                         f"{learned - 256} merges occur at least {config.min_frequency} times")
    tok.add_special_tokens(specials)
    tok.save(str(out / MODEL_FILES["hf"]))
    _write_hf_config(out)
    ids = {s: tok.token_to_id(s) for s in specials}
    info = {"vocab_size": tok.get_vocab_size(), "library": f"tokenizers {tokenizers.__version__}",
            "min_frequency": config.min_frequency, "merges": learned - 256, "num_reserved": config.num_reserved}
    return ids, info


def _write_hf_config(out: Path) -> None:
    """tokenizer_config.json, so transformers' AutoTokenizer / PreTrainedTokenizerFast load the folder."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "bos_token": EOS, "pad_token": PAD,
              "clean_up_tokenization_spaces": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _sentencepiece_chunks(texts: list[str], limit: int) -> Iterator[str]:
    """SentencePiece drops sentences over max_sentence_length bytes: cut long documents at line ends."""
    for text in texts:
        text = canonical_text(text)
        if len(text.encode("utf-8")) <= limit:
            yield text
            continue
        piece: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if piece and size + n > limit:
                yield "".join(piece)
                piece, size = [], 0
            piece.append(line)
            size += n
        if piece:
            yield "".join(piece)


def _train_sentencepiece(sample: CorpusSample, config: TrainConfig, out: Path) -> tuple[dict[str, int], dict]:
    import sentencepiece as spm

    reserved = special_tokens(config.num_reserved)[2:]
    limit = 1 << 16
    options = dict(
        model_type="bpe", vocab_size=config.vocab_size, byte_fallback=True, character_coverage=0.9995,
        split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, max_sentence_length=limit,
        unk_id=0, unk_piece=UNK, eos_id=1, eos_piece=EOS, pad_id=2, pad_piece=PAD, bos_id=-1,
        control_symbols=reserved, hard_vocab_limit=not config.allow_smaller, num_threads=os.cpu_count() or 1,
        input_sentence_size=0, minloglevel=2,
    )
    model_path = out / MODEL_FILES["sentencepiece"]
    try:
        with open(model_path, "wb") as model_writer:
            spm.SentencePieceTrainer.train(sentence_iterator=_sentencepiece_chunks(sample.texts, limit),
                                           model_writer=model_writer, **options)
    except RuntimeError as err:
        if "Vocabulary size is too high" in str(err) or "vocab_size" in str(err):
            raise _too_small(sample, _max_vocab_from(str(err)), config, str(err).strip().splitlines()[-1]) from err
        raise TokenizerError(f"SentencePiece training failed: {err}") from err
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    ids = {UNK: sp.unk_id(), EOS: sp.eos_id(), PAD: sp.pad_id(), **{s: sp.piece_to_id(s) for s in reserved}}
    info = {"vocab_size": sp.get_piece_size(), "library": f"sentencepiece {spm.__version__}",
            "num_reserved": config.num_reserved, "byte_fallback": True, "split_digits": True}
    return ids, info


def _max_vocab_from(message: str) -> int:
    """SentencePiece says 'Please set it to a value <= N'; return N (0 when absent)."""
    found = re.search(r"<=\s*(\d+)", message)
    return int(found.group(1)) if found else 0
