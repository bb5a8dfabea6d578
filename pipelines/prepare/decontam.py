"""Benchmark decontamination: training documents sharing an n-gram with an evaluation item are dropped.

Evaluation sets are local files (JSONL, JSONL.zst, Parquet, CSV) with a field mapping. Each item's
text is simplified (lowercase, punctuation and extra whitespace removed) and cut into 13-word
n-grams (GPT-3's rule), or 20-character n-grams when it is Chinese (no spaces to split words on);
an item shorter than one n-gram is matched whole. The n-grams are hashed to 64 bits and kept in a
sorted array, built once (vectorised over all items) by the process that plans the run and
memory-mapped by every task (`DecontamIndex.build` / `load`): 100k items cost a few tens of MB, and
a lookup is one vectorised binary search per document and n-gram length. A document is dropped as
`decontam/<benchmark>` (the benchmark with the most matching n-grams), and each match is logged
(`decontam/<rank>.jsonl` in the work folder), from which `report()` says which items were found in
which source and subset.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.text import PUNCTUATION_TRANS

from flm.config.errors import FlmError
from flm.pipelines.config import BenchmarkConfig, DecontamConfig
from flm.pipelines.prepare.accounting import record_drop
from flm.pipelines.prepare.dedup import splitmix64
from flm.pipelines.prepare.filters import CJK
from flm.pipelines.prepare.schema import SUBSET

REASON = "decontam"
INDEX_PREFIX = "decontam_index_"
ITEMS_FILE = "decontam_items.json"
HITS_DIR = "decontam"
REPORT_FILE = "decontamination.json"
WORD, CHAR = "word", "char"
MAX_LOGGED_ITEMS = 20
"""Items recorded per contaminated document (a document copying a whole benchmark matches them all)."""
MIX = np.uint64(0x100000001B3)


class DecontamError(FlmError, ValueError):
    """An evaluation file cannot be read; the message names the file, the line and the field."""


def simplify(text: str) -> str:
    return " ".join(text.lower().translate(PUNCTUATION_TRANS).split())


def word_units(text: str) -> np.ndarray:
    """64-bit hashes of the simplified words of `text` (stable across processes, unlike `hash`)."""
    return np.fromiter((xxhash.xxh3_64_intdigest(w.encode()) for w in simplify(text).split()), dtype=np.uint64)


def char_units(text: str) -> np.ndarray:
    """Code points of the simplified text without spaces: Chinese n-grams are counted in characters."""
    return np.frombuffer(simplify(text).replace(" ", "").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def ngram_hashes(units: np.ndarray, n: int) -> np.ndarray:
    """One hash per window of `n` units (vectorised rolling polynomial, then mixed)."""
    count = units.size - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * MIX + units[k:k + count]
        return splitmix64(hashes + np.uint64(n))


def is_chinese(text: str, threshold: float = 0.3) -> bool:
    chars = "".join(text.split())
    return bool(chars) and len(CJK.findall(chars)) / len(chars) >= threshold


def benchmark_name(cfg: BenchmarkConfig) -> str:
    return cfg.name or Path(cfg.path).name.split(".", 1)[0]


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of each record: 'file:line' for JSONL and CSV, 'file:row N' for Parquet."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}:row {i + 1}", row
        return
    raw: IO[bytes] = path.open("rb")
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[assignment]
    with io.TextIOWrapper(raw, encoding="utf-8") as text:
        if name.endswith((".csv", ".csv.zst")):
            for i, row in enumerate(csv.DictReader(text)):
                yield f"{path}:{i + 2}", row  # line 1 is the header
            return
        if not name.endswith((".jsonl", ".jsonl.zst", ".json")):
            raise DecontamError(f"{path}: not an evaluation file flm reads (.jsonl, .jsonl.zst, .parquet, .csv)")
        for i, line in enumerate(text):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DecontamError(f"{path}:{i + 1}: not a JSON object ({err.msg})") from err
            if not isinstance(row, dict):
                raise DecontamError(f"{path}:{i + 1}: expected a JSON object, got {type(row).__name__}")
            yield f"{path}:{i + 1}", row


def _field_text(value: Any) -> str:
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
    for number, (where, row) in enumerate(_rows(path), 1):
        missing = [f for f in cfg.fields if f not in row]
        if missing:
            raise DecontamError(f"{where}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})")
        if cfg.id_field and cfg.id_field not in row:
            raise DecontamError(f"{where}: no id field {cfg.id_field!r}")
        item_id = str(row[cfg.id_field]) if cfg.id_field else str(number)
        yield item_id, "\n".join(_field_text(row[f]) for f in cfg.fields)


def _index_kind(units: list[np.ndarray], owner: list[int], n: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sorted n-gram hashes of all items of one kind and the item of each, computed over all items at once.

    An item shorter than n is one n-gram of its own length; windows that cross from one item into the
    next are left out.
    """
    hashes, owners, lengths = [], [], []
    sizes = np.array([u.size for u in units], dtype=np.int64)
    for length in sorted({n, *sizes[sizes < n].tolist()}):
        chosen = np.flatnonzero(sizes >= n) if length == n else np.flatnonzero(sizes == length)
        if not chosen.size:
            continue
        flat = np.concatenate([units[i] for i in chosen])
        ends = np.cumsum(sizes[chosen])
        item_of = np.repeat(np.asarray(owner, dtype=np.int64)[chosen], sizes[chosen])
        grams = ngram_hashes(flat, length)
        start = np.arange(grams.size)
        inside = start + length <= np.repeat(ends, sizes[chosen])[:grams.size]  # the window ends in its item
        hashes.append(grams[inside])
        owners.append(item_of[:grams.size][inside])
        lengths.append(length)
    if not hashes:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), []
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.lexsort((o, h))  # by hash, then item
    h, o = h[order], o[order]
    first = np.ones(h.size, dtype=bool)
    first[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])  # one entry per (n-gram, item)
    return h[first], o[first], lengths


@dataclass
class BuildStats:
    items: dict[str, int]
    skipped_short: dict[str, int]
    ngrams: int


class DecontamIndex:
    """Sorted n-gram hashes of every item, per kind (word, char), with the item each belongs to."""

    def __init__(self, hashes: dict[str, np.ndarray], owners: dict[str, np.ndarray], lengths: dict[str, list[int]],
                 items: list[tuple[str, str]], benchmarks: list[str]) -> None:
        self.hashes, self.owners, self.lengths = hashes, owners, lengths
        self.items, self.benchmarks = items, benchmarks
        """items[i] = (benchmark, item id)."""

    @classmethod
    def build(cls, cfg: DecontamConfig) -> tuple[DecontamIndex, BuildStats]:
        units: dict[str, list[np.ndarray]] = {WORD: [], CHAR: []}
        owner: dict[str, list[int]] = {WORD: [], CHAR: []}
        items: list[tuple[str, str]] = []
        counts: dict[str, int] = {}
        short: dict[str, int] = {}
        for bench in cfg.benchmarks:
            name = benchmark_name(bench)
            counts[name], short[name] = 0, 0
            for item_id, text in read_items(bench):
                counts[name] += 1
                chinese = bench.language == "zh" or (bench.language == "auto" and is_chinese(text))
                kind = CHAR if chinese else WORD
                item_units = char_units(text) if chinese else word_units(text)
                if item_units.size < min(cfg.min_item_units, cfg.char_ngrams if chinese else cfg.word_ngrams):
                    short[name] += 1
                    continue
                units[kind].append(item_units)
                owner[kind].append(len(items))
                items.append((name, item_id))
        hashes, owners, lengths = {}, {}, {}
        for kind, n in ((WORD, cfg.word_ngrams), (CHAR, cfg.char_ngrams)):
            hashes[kind], owners[kind], lengths[kind] = _index_kind(units[kind], owner[kind], n)
        index = cls(hashes, owners, lengths, items, [benchmark_name(b) for b in cfg.benchmarks])
        return index, BuildStats(counts, short, sum(h.size for h in hashes.values()))

    def save(self, folder: Path, stats: BuildStats) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for kind in (WORD, CHAR):
            np.save(folder / f"{INDEX_PREFIX}{kind}.npy", self.hashes[kind])
            np.save(folder / f"{INDEX_PREFIX}{kind}_owner.npy", self.owners[kind])
        meta = {"items": self.items, "lengths": self.lengths, "benchmarks": self.benchmarks,
                "items_per_benchmark": stats.items, "items_too_short": stats.skipped_short, "ngrams": stats.ngrams}
        (folder / ITEMS_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> DecontamIndex:
        """Memory-mapped: every task of every worker shares the one copy in the page cache."""
        meta = json.loads((folder / ITEMS_FILE).read_text(encoding="utf-8"))
        hashes = {k: np.load(folder / f"{INDEX_PREFIX}{k}.npy", mmap_mode="r") for k in (WORD, CHAR)}
        owners = {k: np.load(folder / f"{INDEX_PREFIX}{k}_owner.npy", mmap_mode="r") for k in (WORD, CHAR)}
        return cls(hashes, owners, meta["lengths"], [tuple(i) for i in meta["items"]], meta["benchmarks"])

    def _lookup(self, kind: str, units: np.ndarray) -> np.ndarray:
        table = self.hashes[kind]
        found = []
        for n in self.lengths[kind]:
            grams = ngram_hashes(units, n)
            if not grams.size:
                continue
            pos = np.searchsorted(table, grams)
            pos[pos == table.size] = 0
            hit = table[pos] == grams
            if hit.any():
                found.append(pos[hit])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def matches(self, text: str) -> dict[int, int]:
        """item index -> n-grams of `text` matching it (empty when the text is clean)."""
        counts: dict[int, int] = {}
        for kind, units in ((WORD, word_units), (CHAR, char_units)):
            if not self.hashes[kind].size or (kind == CHAR and not CJK.search(text)):
                continue
            for pos in self._lookup(kind, units(text)):
                # equal hashes sit side by side: every item owning this n-gram
                h = self.hashes[kind][pos]
                lo = np.searchsorted(self.hashes[kind], h, side="left")
                hi = np.searchsorted(self.hashes[kind], h, side="right")
                for item in self.owners[kind][lo:hi].tolist():
                    counts[item] = counts.get(item, 0) + 1
        return counts


class Decontaminate(BaseFilter):
    """Drops documents sharing an n-gram with an evaluation item, counted as decontam/<benchmark>."""

    name = "🧪 decontaminate"

    def __init__(self, index_dir: str, hits_dir: str, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)
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
        assert self._index is not None and self._log is not None
        found = self._index.matches(doc.text)
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
    meta = json.loads((work_dir / ITEMS_FILE).read_text(encoding="utf-8"))
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
