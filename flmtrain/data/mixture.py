"""`Mixture`: a MixtureConfig opened over its token shards, handing out training and validation loaders.

Opening checks what needs the data (paths, subsets, one tokenizer for all sources) with errors that
name the source; builds or loads each source's cached index; and lays out the streams and the blend.
"""

from __future__ import annotations

import difflib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flm.config import ConfigError
from flm.config.progress import Progress
from flm.pipelines.token_shards import TokenShardError, TokenShards
from flm.train.data.config import DEFAULT_SEQ_LEN, MixtureConfig, SourceConfig
from flm.train.data.index import VALID_SALT, SourceIndex, index_dir, load_index
from flm.train.data.loader import EvalLoader, MixtureDataset, TrainLoader
from flm.train.data.samples import Samples, ShardSet
from flm.train.data.stream import Stream

log = logging.getLogger(__name__)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@dataclass
class _Part:
    """One blended stream of a source: one subset, or the whole source (subset None)."""

    subset: str | None
    share: float          # target share within the source
    train: Stream
    valid: Stream | None


@dataclass
class _Source:
    config: SourceConfig
    shards: TokenShards
    index: SourceIndex
    parts: list[_Part]

    @property
    def train_tokens(self) -> int:
        return sum(p.train.tokens_per_epoch for p in self.parts)


def _open_source(position: int, source: SourceConfig) -> TokenShards:
    where = f"sources[{position}] ({source.name})"
    path = Path(source.path).expanduser()
    if not path.exists():
        raise ConfigError(f"{where}: path {path} does not exist (relative paths resolve against the current "
                          f"directory, {Path.cwd()})")
    try:
        shards = TokenShards(path)
    except TokenShardError as err:
        raise ConfigError(f"{where}: {err}") from err
    if shards.num_docs == 0:
        raise ConfigError(f"{where}: {path} holds no documents")
    return shards


def _check_subsets(position: int, source: SourceConfig, index: SourceIndex) -> None:
    for subset in source.subsets:
        if subset not in index.subset_names:
            close = difflib.get_close_matches(subset, index.subset_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"sources[{position}] ({source.name}): unknown subset {subset!r}{hint}; "
                              f"{source.path} has: {', '.join(repr(n) for n in index.subset_names)}")


class Mixture:
    """Token-shard sources blended by weight into one deterministic, resumable sample order."""

    def __init__(self, cfg: MixtureConfig, *, seq_len: int | None = None, progress: Progress | None = None) -> None:
        """Open the sources; `seq_len` overrides the config's (which, when unset, defaults to DEFAULT_SEQ_LEN)."""
        if not cfg.sources:
            raise ConfigError("the mixture has no sources; list at least one under `sources:`")
        self.cfg = cfg
        self.seq_len = int(next(n for n in (seq_len, cfg.seq_len, DEFAULT_SEQ_LEN) if n is not None))
        if self.seq_len <= 0:
            raise ConfigError(f"seq_len must be positive, got {self.seq_len}")
        self.sources: list[_Source] = []
        for position, source in enumerate(cfg.sources):
            if progress:
                progress("index sources", position, len(cfg.sources))
            shards = _open_source(position, source)
            try:
                index = load_index(shards, cfg.valid_fraction, cfg.cache_dir)
            except TokenShardError as err:  # a corrupt shard or a token id beyond the vocabulary
                raise ConfigError(f"sources[{position}] ({source.name}): {err}") from err
            _check_subsets(position, source, index)
            self.sources.append(_Source(source, shards, index, self._parts(source, shards, index)))
        if progress:
            progress("index sources", len(cfg.sources), len(cfg.sources))
        self._check_tokenizers()
        first = self.sources[0].shards.manifest
        self.vocab_size, self.eos_id, self.tokenizer_hash = first.vocab_size, first.eos_id, first.tokenizer_hash
        shard_set = ShardSet([s.shards.directory for s in self.sources], [s.shards for s in self.sources])
        self.train_samples = Samples(shard_set, [s.config.weight for s in self.sources],
                                     [[p.train for p in s.parts] for s in self.sources],
                                     [[p.share for p in s.parts] for s in self.sources], self.seq_len)
        self.valid_samples = self._valid_samples(shard_set)

    def _parts(self, source: SourceConfig, shards: TokenShards, index: SourceIndex) -> list[_Part]:
        """One stream per subset when the source weights subsets, else one stream for all of it."""
        if not source.subsets:
            return [_Part(None, 1.0, self._stream(index, shards, index.docs(held_out=False), source.name, "*"),
                          self._held_out(index, shards, index.docs(held_out=True), "*"))]
        parts = []
        subsets = zip(index.docs_by_subset(held_out=False), index.docs_by_subset(held_out=True), strict=True)
        for name, (train, valid) in zip(index.subset_names, subsets, strict=True):
            stream = self._stream(index, shards, train, source.name, name)
            share = source.subsets.get(name, 1.0) * stream.tokens_per_epoch
            parts.append(_Part(name, share, stream, self._held_out(index, shards, valid, name)))
        total = sum(p.share for p in parts)
        for part in parts:
            part.share /= total
        return parts

    def _held_out(self, index: SourceIndex, shards: TokenShards, docs: np.ndarray, subset: str) -> Stream | None:
        return self._stream(index, shards, docs, None, subset) if len(docs) else None

    def _stream(self, index: SourceIndex, shards: TokenShards, docs: np.ndarray, source: str | None,
                subset: str) -> Stream:
        """A training stream (reshuffled every epoch by the seed), or with source None the held-out stream
        (one fixed order that no training seed moves)."""
        key = (self.cfg.seed, _crc(source), _crc(subset)) if source is not None else (VALID_SALT, _crc(subset))
        cache = index_dir(self.cfg.cache_dir) / "epochs" / f"{index.key}-{'-'.join(map(str, key))}"
        return Stream(docs, shards.doc_lengths[docs], key, reshuffle=source is not None, cache=cache)

    def _check_tokenizers(self) -> None:
        first = self.sources[0]
        for source in self.sources[1:]:
            a, b = first.shards.manifest, source.shards.manifest
            if (a.tokenizer_hash, a.vocab_size, a.eos_id) != (b.tokenizer_hash, b.vocab_size, b.eos_id):
                raise ConfigError(
                    f"sources {first.config.name!r} and {source.config.name!r} were tokenized differently "
                    f"(tokenizer {a.tokenizer_hash[:12]} vocab {a.vocab_size} eos {a.eos_id} vs "
                    f"{b.tokenizer_hash[:12]} vocab {b.vocab_size} eos {b.eos_id}); re-tokenize one of them")

    def _held_out_sources(self) -> list[tuple[_Source, list[_Part]]]:
        """The sources with held-out documents, and those parts of each, in the validation blend's order."""
        kept = [(s, [p for p in s.parts if p.valid is not None]) for s in self.sources]
        return [(s, parts) for s, parts in kept if parts]

    def valid_composition(self, samples: int) -> dict[str, dict[str, int]]:
        """{source: {"samples": its share of the first `samples` validation samples, "held_out_tokens": its
        held-out split's size}}: how the blend draws on each source (by weight, a small split repeating)."""
        kept = self._held_out_sources()
        if self.valid_samples is None or not kept:
            return {}
        counts = self.valid_samples.sources.counts(samples)
        return {s.config.name: {"samples": int(n), "held_out_tokens": sum(p.valid.tokens_per_epoch for p in parts)}
                for (s, parts), n in zip(kept, counts, strict=True)}

    def _valid_samples(self, shard_set: ShardSet) -> Samples | None:
        """The held-out streams blended by the same weights: as many samples as the held-out tokens fill,
        in one fixed order; a stream with little held-out text wraps around (repeats) within them."""
        kept = self._held_out_sources()
        held_out_tokens = sum(p.valid.tokens_per_epoch for _, parts in kept for p in parts)
        length = held_out_tokens // self.seq_len
        if not kept or length == 0:
            return None
        streams = [[p.valid for p in parts] for _, parts in kept]
        shares = [[p.share for p in parts] for _, parts in kept]
        return Samples(ShardSet([s.shards.directory for s, _ in kept], [s.shards for s, _ in kept]),
                       [s.config.weight for s, _ in kept], streams, shares, self.seq_len, length)

    def _dataset(self, samples: Samples) -> MixtureDataset:
        return MixtureDataset(samples, self.eos_id, reset_position_ids=self.cfg.reset_position_ids,
                              reset_attention_mask=self.cfg.reset_attention_mask)

    def train_loader(self, micro_batch: int, dp_rank: int = 0, dp_size: int = 1, consumed_samples: int = 0,
                     num_workers: int = 0, pin_memory: bool = False) -> TrainLoader:
        """Endless batches {"tokens": int64 [micro_batch, seq_len + 1], ...} of this rank's slice."""
        return TrainLoader(self._dataset(self.train_samples), micro_batch=micro_batch, dp_rank=dp_rank,
                           dp_size=dp_size, consumed_samples=consumed_samples, seed=self.cfg.seed,
                           num_workers=num_workers, pin_memory=pin_memory)

    def valid_loader(self, micro_batch: int, dp_rank: int = 0, dp_size: int = 1, num_workers: int = 0,
                     pin_memory: bool = False) -> EvalLoader:
        """The held-out samples, in a fixed order, as whole global batches (finite, re-iterable)."""
        if self.valid_samples is None:
            raise ConfigError(f"no validation data: valid_fraction is {self.cfg.valid_fraction} and the held-out "
                             f"documents fill no sample of {self.seq_len} tokens")
        return EvalLoader(self._dataset(self.valid_samples), micro_batch=micro_batch, dp_rank=dp_rank,
                          dp_size=dp_size, num_workers=num_workers, pin_memory=pin_memory)

    @property
    def num_valid_samples(self) -> int:
        return 0 if self.valid_samples is None else int(self.valid_samples.length or 0)


def open_mixture(mixture_cfg: MixtureConfig, default_seq_len: int | None = None) -> Mixture:
    """The mixture's loader; its sequence length is the mixture's, else `default_seq_len` (the stage's).

    A mixture's seq_len that differs from the stage's still wins (the documented rule, which sweeps over
    context length rely on), but loudly: the model then trains at a length its stage file does not show.
    """
    if mixture_cfg.seq_len is not None and default_seq_len is not None and mixture_cfg.seq_len != default_seq_len:
        log.warning("the mixture's seq_len (%d) overrides the stage's model.seq_len (%d): samples and the model's "
                    "context are %d tokens; remove seq_len from the mixture to use the stage's",
                    mixture_cfg.seq_len, default_seq_len, mixture_cfg.seq_len)
    return Mixture(mixture_cfg, seq_len=default_seq_len if mixture_cfg.seq_len is None else None)
