"""Benchmark decontamination: training documents sharing an n-gram with an evaluation item are dropped.

Evaluation sets are local files (JSONL, JSONL.zst, Parquet, CSV) with a field mapping. Each item's
text is simplified (lowercase, punctuation and extra whitespace removed) and cut into 13-word
n-grams (GPT-3's rule), or 20-character n-grams when it is Chinese (no spaces to split words on);
an item shorter than one n-gram is matched whole. The n-grams are hashed to 64 bits and kept in a
sorted array, built once by the process that plans the run and memory-mapped by every task
(`ensure_index`): 100k items cost a few tens of MB. The folder keeps the content hash of the
evaluation files and the settings it was built from, so a rerun reuses it instead of building again.

Hashing is vectorised over a whole text (numpy, no Python loop per word): the code points of the
lowercased text, minus the separators (`simplify`'s punctuation and whitespace), are mixed to 64
bits; a word is a polynomial over its characters and an n-gram one over its units (words, or
characters for Chinese), both read off prefix sums, so every n-gram of a document costs a few array
operations whatever n is. A lookup first tests a bitmap of the index's leading hash bits (one
memory access, ~2% false positives) and binary-searches only the n-grams it lets through. A
document is dropped as `decontam/<benchmark>` (the benchmark with the most matching n-grams), and
each match is logged (`decontam/<rank>.jsonl` in the work folder), from which `report()` says which
items were found in which source and subset.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.text import PUNCTUATION_TRANS

from flm.config import config_to_dict
from flm.config.atomic import atomic_write_text
from flm.config.errors import FlmError
from flm.pipelines.config import BenchmarkConfig, DecontamConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.batching import BATCH_DOCS
from flm.pipelines.prepare.dedup import splitmix64
from flm.pipelines.prepare.filters import CJK
from flm.pipelines.prepare.ngrams import POWERS
from flm.pipelines.prepare.schema import SUBSET

REASON = "decontam"
INDEX_PREFIX = "decontam_index_"
META_FILE = "decontam_index.json"
ITEMS_FILE = "decontam_items.json"
HITS_DIR = "decontam"
REPORT_FILE = "decontamination.json"
WORD, CHAR = "word", "char"
KINDS = (WORD, CHAR)
INDEX_VERSION = 2
"""Part of the cache key: an index built by another hashing scheme is never reused."""
MAX_LOGGED_ITEMS = 20
"""Items recorded per contaminated document (a document copying a whole benchmark matches them all)."""
BATCH_CHARS = 1 << 20
"""Code points hashed at once while building (bounds the build's memory, ~25 MB, and keeps its tables in cache)."""
LENGTH_MIX = 0x9E3779B97F4A7C15
"""Added times the span length, so that spans of different lengths (short items are matched whole) differ."""


class DecontamError(FlmError, ValueError):
    """An evaluation file cannot be read; the message names the file, the line and the field."""


def simplify(text: str) -> str:
    """The text n-grams are read from (the plain-Python definition that `text_units` vectorises)."""
    return " ".join(text.lower().translate(PUNCTUATION_TRANS).split())


def _separator_table() -> np.ndarray:
    """True for every code point `simplify` turns into a word break: whitespace (as str.split) and punctuation."""
    table = np.zeros(0x110000, dtype=bool)
    table[[c for c in range(0x3001) if chr(c).isspace()]] = True  # U+3000 is the last space in Unicode
    table[list(PUNCTUATION_TRANS)] = True
    return table


SEPARATOR = _separator_table()


def _prefix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """prefix[j] = sum of values[i] * BASE**-i for i < j, and the powers BASE**i: a span values[s:e] hashes
    to (prefix[e] - prefix[s]) * BASE**s = sum of values[s + i] * BASE**-i, whatever its length."""
    up, down = POWERS.get(values.size + 1)
    prefix = np.zeros(values.size + 1, dtype=np.uint64)
    np.cumsum(values * down[:values.size], out=prefix[1:])
    return prefix, up


def span_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A hash of each span values[start:end], mixed with its length (spans of different lengths differ)."""
    prefix, up = _prefix(values)
    raw = (prefix[ends] - prefix[starts]) * up[starts]
    return splitmix64(raw + (ends - starts).astype(np.uint64) * np.uint64(LENGTH_MIX))


def ngram_hashes(units: np.ndarray, n: int) -> np.ndarray:
    """One hash per window of `n` units (none when there are fewer units than n): span_hashes, by slices."""
    count = units.size - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    prefix, up = _prefix(units)
    return splitmix64((prefix[n:] - prefix[:count]) * up[:count] + np.uint64(n * LENGTH_MIX % (1 << 64)))


@dataclass
class Units:
    """Word and character units of several texts, flat, with each text's count of each."""

    words: np.ndarray
    word_counts: np.ndarray
    chars: np.ndarray
    char_counts: np.ndarray


def text_units(texts: list[str]) -> Units:
    """The units of simplify(text) for each text: a hash per word, and the code point of each character
    (spaces left out). Vectorised over all texts at once; equal words get equal hashes in any text."""
    lowered = [t.lower() for t in texts]
    codes = np.frombuffer("\n".join(lowered).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    kept = np.flatnonzero(~SEPARATOR[codes])
    chars = codes[kept].astype(np.uint64)
    breaks = np.flatnonzero(kept[1:] != kept[:-1] + 1) + 1  # a separator between two kept characters
    starts = np.concatenate(([0], breaks)) if kept.size else breaks
    ends = np.concatenate((breaks, [kept.size])) if kept.size else breaks
    words = span_hashes(chars, starts, ends)
    if len(texts) == 1:
        return Units(words, np.array([words.size]), chars, np.array([chars.size]))
    text_ends = np.cumsum([len(t) + 1 for t in lowered])  # "\n" after each text: words never cross texts
    text_of = np.searchsorted(text_ends, kept, side="right")
    return Units(words, np.bincount(text_of[starts], minlength=len(texts)),
                 chars, np.bincount(text_of, minlength=len(texts)))


def is_chinese(text: str, threshold: float = 0.3) -> bool:
    chars = "".join(text.split())
    return bool(chars) and len(CJK.findall(chars)) / len(chars) >= threshold


def benchmark_name(cfg: BenchmarkConfig) -> str:
    return cfg.name or Path(cfg.path).name.split(".", 1)[0]


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of each record: its line in a JSONL or CSV file, its row number in a Parquet file."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), 1)
        return
    raw: IO[bytes] = path.open("rb")
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[assignment]
    with io.TextIOWrapper(raw, encoding="utf-8") as text:
        if name.endswith((".csv", ".csv.zst")):
            yield from enumerate(csv.DictReader(text), 2)  # line 1 is the header
            return
        if not name.endswith((".jsonl", ".jsonl.zst", ".json")):
            raise DecontamError(f"{path}: not an evaluation file flm reads (.jsonl, .jsonl.zst, .parquet, .csv)")
        for i, line in enumerate(text, 1):
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                if not line.strip():
                    continue
                raise DecontamError(f"{path}:{i}: not a JSON object ({err.msg})") from err
            if not isinstance(row, dict):
                raise DecontamError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            yield i, row


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_field_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_field_text(v) for v in value.values())
    return "" if value is None else str(value)


def read_items(cfg: BenchmarkConfig) -> Iterator[tuple[str, str]]:
    """(item id, text) of every item of one evaluation file; a missing field is an error naming file and line."""
    path = Path(cfg.path)
    if not path.is_file():
        raise DecontamError(f"decontam benchmark {benchmark_name(cfg)}: {path} does not exist")
    fields, id_field = cfg.fields, cfg.id_field
    for number, (line, row) in enumerate(_rows(path), 1):
        try:
            values = [row[f] for f in fields]
            item_id = str(row[id_field]) if id_field else str(number)
        except KeyError:
            where = f"{path}:row {line}" if path.name.lower().endswith(".parquet") else f"{path}:{line}"
            missing = [f for f in fields if f not in row]
            if missing:
                raise DecontamError(f"{where}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})") from None
            raise DecontamError(f"{where}: no id field {id_field!r}") from None
        yield item_id, "\n".join(map(_field_text, values))


def _chunks(texts: list[str]) -> Iterator[slice]:
    """Consecutive runs of texts of about BATCH_CHARS code points in all."""
    group = np.cumsum([len(t) for t in texts]) // BATCH_CHARS
    bounds = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), len(texts)]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        yield slice(start, end)


def _item_units(texts: list[str], chinese: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each item's units of its own kind (characters for Chinese items, words for the rest), flat per kind
    in item order, and how many units each item has."""
    flat: dict[str, list[np.ndarray]] = {WORD: [], CHAR: []}
    sizes = []
    for part in _chunks(texts):
        units, zh = text_units(texts[part]), chinese[part]
        flat[WORD].append(units.words[np.repeat(~zh, units.word_counts)])
        flat[CHAR].append(units.chars[np.repeat(zh, units.char_counts)])
        sizes.append(np.where(zh, units.char_counts, units.word_counts))
    empty = np.zeros(0, dtype=np.uint64)
    return ({k: np.concatenate([empty, *v]) for k, v in flat.items()},
            np.concatenate([np.zeros(0, dtype=np.int64), *sizes]))


def _index_kind(units: np.ndarray, sizes: np.ndarray, owner: np.ndarray,
                n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sorted n-gram hashes of all items of one kind and the item of each, computed over all items at once.

    `units` holds the items' units one after the other (`sizes` of them each). An item shorter than
    n is one n-gram of its own length; windows that cross from one item into the next are left out.
    """
    hashes, owners, lengths = [], [], []
    for length in sorted({n, *sizes[sizes < n].tolist()}):
        chosen = sizes >= n if length == n else sizes == length
        if not chosen.any():
            continue
        counts = sizes[chosen]
        grams = ngram_hashes(units[np.repeat(chosen, sizes)], length)
        ends = np.repeat(np.cumsum(counts), counts)[:grams.size]
        inside = np.arange(grams.size) + length <= ends  # the window ends in its item
        hashes.append(grams[inside])
        owners.append(np.repeat(owner[chosen], counts)[:grams.size][inside])
        lengths.append(length)
    if not hashes:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int32), []
    h, o = np.concatenate(hashes), np.concatenate(owners).astype(np.int32)
    order = np.lexsort((o, h))  # by hash, then item
    h, o = h[order], o[order]
    first = np.ones(h.size, dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])  # one entry per (n-gram, item)
    return h[first], o[first], lengths


def filter_bits(size: int) -> int:
    """Leading hash bits the bitmap covers: ~32 bits per n-gram, so ~3% of absent n-grams pass it."""
    return min(max(size.bit_length() + 5, 12), 32)


def _bitmap(table: np.ndarray) -> np.ndarray:
    """One bit per value of the leading `filter_bits` bits of the (sorted) hashes: set where an n-gram has them."""
    bits = filter_bits(table.size)
    words = np.zeros(1 << (bits - 6), dtype=np.uint64)
    top = table >> np.uint64(64 - bits)
    word = top >> np.uint64(6)
    first = np.flatnonzero(np.concatenate(([True], word[1:] != word[:-1]))) if table.size else np.zeros(0, np.intp)
    if first.size:
        words[word[first].astype(np.intp)] = np.bitwise_or.reduceat(np.uint64(1) << (top & np.uint64(63)), first)
    return words


@dataclass
class BuildStats:
    items: dict[str, int]
    skipped_short: dict[str, int]
    ngrams: int


def _files(kind: str) -> tuple[str, str, str]:
    return f"{INDEX_PREFIX}{kind}.npy", f"{INDEX_PREFIX}{kind}_owner.npy", f"{INDEX_PREFIX}{kind}_filter.npy"


INDEX_FILES = (*(name for kind in KINDS for name in _files(kind)), ITEMS_FILE, META_FILE)
"""Every file of an index folder, the meta file (holding the cache key) last: it is written last."""


@functools.lru_cache(maxsize=4)
def _read_items_file(path: str, mtime_ns: int, size: int) -> list[tuple[str, str]]:
    """The items of an index (100k take 0.08 s to read): every task of a process shares them; a file written
    again since (another modification time or size) is read again."""
    return [tuple(i) for i in orjson.loads(Path(path).read_bytes())]


class DecontamIndex:
    """Sorted n-gram hashes of every item, per kind (word, char), with the item each belongs to."""

    def __init__(self, hashes: dict[str, np.ndarray], owners: dict[str, np.ndarray], lengths: dict[str, list[int]],
                 benchmarks: list[str], items: list[tuple[str, str]] | None = None, folder: Path | None = None,
                 filters: dict[str, np.ndarray] | None = None) -> None:
        self.hashes, self.owners, self.lengths, self.benchmarks = hashes, owners, lengths, benchmarks
        self.folder = folder
        self.filters = filters or {kind: _bitmap(hashes[kind]) for kind in KINDS}
        self.shifts = {kind: np.uint64(64 - filter_bits(hashes[kind].size)) for kind in KINDS}
        if items is not None:
            self.items = items

    @cached_property
    def items(self) -> list[tuple[str, str]]:
        """items[i] = (benchmark, item id); read from the folder at the first match, once per process."""
        assert self.folder is not None
        path = self.folder / ITEMS_FILE
        stat = path.stat()
        return _read_items_file(str(path), stat.st_mtime_ns, stat.st_size)

    @classmethod
    def build(cls, cfg: DecontamConfig) -> tuple[DecontamIndex, BuildStats]:
        records: list[tuple[str, str]] = []
        texts: list[str] = []
        chinese: list[bool] = []
        counts: dict[str, int] = {}
        for bench in cfg.benchmarks:
            name = benchmark_name(bench)
            counts[name] = 0
            for item_id, text in read_items(bench):
                counts[name] += 1
                records.append((name, item_id))
                texts.append(text)
                chinese.append(bench.language == "zh" or (bench.language == "auto" and is_chinese(text)))
        zh = np.array(chinese, dtype=bool)
        flat, sizes = _item_units(texts, zh)
        minimum = np.where(zh, min(cfg.min_item_units, cfg.char_ngrams), min(cfg.min_item_units, cfg.word_ngrams))
        short = sizes < minimum
        kept = np.flatnonzero(~short)
        item_of = np.full(len(texts), -1, dtype=np.int64)
        item_of[kept] = np.arange(kept.size)  # skipped items are not in the index
        hashes, owners, lengths = {}, {}, {}
        for kind, mine, n in ((WORD, ~zh, cfg.word_ngrams), (CHAR, zh, cfg.char_ngrams)):
            mine_sizes = sizes[mine]
            use = ~short[mine]
            hashes[kind], owners[kind], lengths[kind] = _index_kind(
                flat[kind][np.repeat(use, mine_sizes)], mine_sizes[use], item_of[mine][use], n)
        skipped = {name: 0 for name in counts}
        for i in np.flatnonzero(short).tolist():
            skipped[records[i][0]] += 1
        index = cls(hashes, owners, lengths, [benchmark_name(b) for b in cfg.benchmarks],
                    items=[records[i] for i in kept.tolist()])
        return index, BuildStats(counts, skipped, sum(h.size for h in hashes.values()))

    def save(self, folder: Path, stats: BuildStats, key: str = "") -> None:
        """Into `folder`, replacing only the index's own files (each unlinked first: a copy may be a hard link)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in reversed(INDEX_FILES):  # the meta file first: a half-written index never looks complete
            (folder / name).unlink(missing_ok=True)
        for kind in KINDS:
            for name, array in zip(_files(kind), (self.hashes[kind], self.owners[kind], self.filters[kind]),
                                   strict=True):
                np.save(folder / name, array)
        (folder / ITEMS_FILE).write_bytes(orjson.dumps(self.items))
        meta = {"key": key, "lengths": self.lengths, "benchmarks": self.benchmarks,
                "items_per_benchmark": stats.items, "items_too_short": stats.skipped_short, "ngrams": stats.ngrams}
        atomic_write_text(folder / META_FILE, json.dumps(meta, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> DecontamIndex:
        """Memory-mapped: every task of every worker shares the one copy in the page cache."""
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        arrays = {kind: [np.asarray(np.load(folder / name, mmap_mode="r")) for name in _files(kind)]
                  for kind in KINDS}  # asarray: a plain view of the map, without np.memmap's per-index overhead
        return cls({k: a[0] for k, a in arrays.items()}, {k: a[1] for k, a in arrays.items()}, meta["lengths"],
                   meta["benchmarks"], folder=folder, filters={k: a[2] for k, a in arrays.items()})

    def _hits(self, kind: str, units: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(text, n-gram hash) of every n-gram of the texts found in the index, per n-gram length, in the texts' order.

        `units` holds the texts' units one after the other, `counts` of them each; windows crossing from
        one text into the next are left out.
        """
        table, bits, shift = self.hashes[kind], self.filters[kind], self.shifts[kind]
        text_of = np.repeat(np.arange(counts.size), counts)
        text_end = np.repeat(np.cumsum(counts), counts)
        texts, found = [], []
        for n in self.lengths[kind]:
            grams = ngram_hashes(units, n)
            top = grams >> shift
            maybe = np.flatnonzero((bits[(top >> np.uint64(6)).astype(np.intp)] >> (top & np.uint64(63)))
                                   & np.uint64(1))
            maybe = maybe[maybe + n <= text_end[maybe]]  # the window ends in its text
            if maybe.size:
                pos = np.minimum(np.searchsorted(table, grams[maybe]), table.size - 1)
                hit = maybe[table[pos] == grams[maybe]]
                texts.append(text_of[hit])
                found.append(grams[hit])
        if not found:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.uint64)
        return np.concatenate(texts), np.concatenate(found)

    def matches_batch(self, texts: list[str]) -> list[dict[int, int]]:
        """For each text, item index -> n-grams of the text matching it (empty when the text is clean).

        Vectorised over the batch: a few array operations per batch, not per document.
        """
        counts: list[dict[int, int]] = [{} for _ in texts]
        if not texts:
            return counts
        units = text_units(texts)
        for kind in KINDS:
            table = self.hashes[kind]
            if not table.size:
                continue
            if kind == WORD:
                flat, sizes = units.words, units.word_counts
            else:  # character n-grams only in texts with Chinese in them
                chinese = np.array([CJK.search(t) is not None for t in texts])
                sizes = np.where(chinese, units.char_counts, 0)
                flat = units.chars[np.repeat(chinese, units.char_counts)]
            for text, h in zip(*(a.tolist() for a in self._hits(kind, flat, sizes)), strict=True):
                # equal hashes sit side by side: every item owning this n-gram
                lo, hi = np.searchsorted(table, h, side="left"), np.searchsorted(table, h, side="right")
                for item in self.owners[kind][lo:hi].tolist():
                    counts[text][item] = counts[text].get(item, 0) + 1
        return counts

    def matches(self, text: str) -> dict[int, int]:
        return self.matches_batch([text])[0]


def index_key(cfg: DecontamConfig) -> str:
    """What an index is built from: the hashing scheme, the settings and the evaluation files' content."""
    digest = xxhash.xxh3_128()
    settings = {k: v for k, v in config_to_dict(cfg).items() if k != "enabled"}
    digest.update(json.dumps([INDEX_VERSION, settings], sort_keys=True).encode())
    for bench in cfg.benchmarks:
        path = Path(bench.path)
        if not path.is_file():
            raise DecontamError(f"decontam benchmark {benchmark_name(bench)}: {path} does not exist")
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def stored_key(folder: Path) -> str:
    try:
        return json.loads((folder / META_FILE).read_text(encoding="utf-8")).get("key", "")
    except (OSError, ValueError):
        return ""


def ensure_index(cfg: DecontamConfig, folder: Path, built: dict[str, Path] | None = None) -> bool:
    """Put the index of `cfg` into `folder`; True when it had to be built.

    Reused when the folder already holds an index with the same key (a rerun), or linked from another
    folder of this run that has it (`built`: key -> folder, updated here); otherwise built.
    """
    key = index_key(cfg)
    other = (built or {}).get(key)
    if stored_key(folder) == key:
        made = False
    elif other is not None and stored_key(other) == key:
        folder.mkdir(parents=True, exist_ok=True)
        for name in reversed(INDEX_FILES):
            (folder / name).unlink(missing_ok=True)
        for name in INDEX_FILES:  # the meta file last
            try:
                os.link(other / name, folder / name)
            except OSError:  # another file system
                shutil.copyfile(other / name, folder / name)
        made = False
    else:
        index, stats = DecontamIndex.build(cfg)
        index.save(folder, stats, key)
        made = True
    if built is not None:
        built[key] = folder
    return made


class Decontaminate(BaseFilter):
    """Drops documents sharing an n-gram with an evaluation item, counted as decontam/<benchmark>."""

    name = "🧪 decontaminate"

    def __init__(self, index_dir: str, hits_dir: str, exclusion_writer: DiskWriter | None = None,
                 batch_size: int = BATCH_DOCS) -> None:
        super().__init__(exclusion_writer, batch_size)
        self.index_dir = index_dir
        self.hits_dir = hits_dir
        self._index: DecontamIndex | None = None
        self._log: IO[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_index": None, "_log": None}  # loaded in each worker

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._index = DecontamIndex.load(Path(self.index_dir))
        path = Path(self.hits_dir) / f"{rank:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as self._log:
            yield from super().run(data, rank, world_size)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        assert self._index is not None
        return [self._verdict(doc, found) for doc, found in
                zip(batch, self._index.matches_batch([doc.text for doc in batch]), strict=True)]

    def _verdict(self, doc: Document, found: dict[int, int]) -> bool | tuple[bool, str]:
        """Kept when nothing matched; else dropped as the benchmark with the most matching n-grams, and logged."""
        assert self._index is not None and self._log is not None
        if not found:
            return True
        items = sorted(found.items(), key=lambda kv: -kv[1])
        by_bench: dict[str, int] = {}
        for item, n in items:
            by_bench[self._index.items[item][0]] = by_bench.get(self._index.items[item][0], 0) + n
        bench = max(by_bench, key=lambda b: by_bench[b])
        self._log.write(json.dumps({"doc": doc.id, "subset": doc.metadata[SUBSET], "benchmark": bench,
                                    "items": [[*self._index.items[i], n] for i, n in items[:MAX_LOGGED_ITEMS]]},
                                   ensure_ascii=False) + "\n")
        reason = f"{REASON}/{bench}"
        record_drop(self, doc, reason)
        return False, reason


def report(source: str, work_dir: Path) -> dict[str, Any]:
    """Which items of which benchmark were found in which subsets of `source`, from the tasks' hit logs."""
    meta = json.loads((work_dir / META_FILE).read_text(encoding="utf-8"))
    benchmarks: dict[str, dict[str, Any]] = {
        b: {"items_found": 0, "docs_removed": 0, "docs_removed_by_subset": {}, "items": {}}
        for b in meta["benchmarks"]}
    for path in sorted((work_dir / HITS_DIR).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            hit = json.loads(line)
            entry = benchmarks[hit["benchmark"]]
            entry["docs_removed"] += 1
            by_subset = entry["docs_removed_by_subset"]
            by_subset[hit["subset"]] = by_subset.get(hit["subset"], 0) + 1
            for bench, item_id, ngrams in hit["items"]:
                found = benchmarks[bench]["items"].setdefault(item_id, {"docs": 0, "ngrams": 0, "subsets": {}})
                found["docs"] += 1
                found["ngrams"] += ngrams
                found["subsets"][hit["subset"]] = found["subsets"].get(hit["subset"], 0) + 1
    for entry in benchmarks.values():
        entry["items_found"] = len(entry["items"])
    return {"source": source, "items": meta["items_per_benchmark"], "items_too_short": meta["items_too_short"],
            "benchmarks": benchmarks}
