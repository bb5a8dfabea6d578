"""`flm data tokenize`: clean text (CLEAN/<source>/*.jsonl.zst) -> token shards (TOKENS/<source>/*.arrow).

Input files of a source are grouped, in name order, into output shards of about `shard_input_bytes`
compressed input each (~1 GiB of uint32 tokens for zstd'd text). Shards are the unit of work for
the worker processes and of resumption: a shard file appears under its final name only when
complete, the parent records each finished shard in `<source>/.progress.json`, and a rerun skips
shards whose inputs and tokenizer match and rewrites the rest. manifest.json is written when every
shard of a source is done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson
import pyarrow as pa
import zstandard

from pipelines.token_shards import (
    MANIFEST_NAME,
    SHARD_SUFFIX,
    Manifest,
    ShardInfo,
    TokenShardError,
    TokenShardWriter,
    documents_to_batch,
)
from tokenizer import Tokenizer, TokenizerMeta, TrainConfig, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

Progress = Callable[[str, float, float | None], None]
CLEAN_PATTERN = "*.jsonl.zst"
PROGRESS_NAME = ".progress.json"
SKIP_REASONS = ("empty", "non_utf8", "malformed")
MAX_EXAMPLES = 5
VERIFY_BYTES = 512 << 10
"""Characters of text per source checked for identical ids (tiktoken vs HF tokenizers) before tokenizing."""


def _no_progress(label: str, completed: float, total: float | None = None) -> None:
    return None


# ---------------------------------------------------------------- reading clean text


@dataclass
class Document:
    text: str
    doc_id: str
    source: str
    subset: str


@dataclass
class SkipLog:
    """Documents skipped by reason, with the first few locations ("file:line") of each."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < MAX_EXAMPLES:
            seen.append(where)

    def merge(self, other: SkipLog) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        for reason, places in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(places[:MAX_EXAMPLES - len(mine)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _bad_line_reason(line: bytes) -> str:
    """orjson refused the line: invalid UTF-8 or lone-surrogate escapes are 'non_utf8', the rest 'malformed'."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "non_utf8"
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return "malformed"
    return "non_utf8"  # valid JSON that orjson rejects: \ud800-style escapes that are not UTF-8 text


def _document(obj: object, where: str, default_source: str) -> Document | str:
    """A Document, or the skip reason."""
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return "malformed"
    text = obj["text"]
    if not text.strip():
        return "empty"
    meta = obj.get("meta")
    subset = (meta.get("pile_set_name") or meta.get("dataType") or "") if isinstance(meta, dict) else ""
    doc_id = obj.get("id")
    source = obj.get("source")
    return Document(text=text, doc_id=str(doc_id) if doc_id is not None else where,
                    source=source if isinstance(source, str) and source else default_source, subset=str(subset))


def zstd_lines(raw: BinaryIO, path: Path) -> Iterator[bytes]:
    """Lines of a zstd file (one or more frames); a truncated last frame is an error, not a silent EOF."""
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    parts: list[bytes] = []  # the current, unfinished line
    try:
        for chunk in iter(lambda: raw.read(1 << 20), b""):
            while chunk:
                if dobj.eof:
                    dobj = dctx.decompressobj()
                data = dobj.decompress(chunk)
                chunk = dobj.unused_data if dobj.eof else b""
                if b"\n" not in data:
                    parts.append(data)
                    continue
                lines = data.split(b"\n")
                parts.append(lines[0])
                yield b"".join(parts)
                yield from lines[1:-1]
                parts = [lines[-1]]
    except zstandard.ZstdError as err:
        raise TokenShardError(f"{path}: cannot decompress (corrupt or not zstd): {err}") from err
    if not dobj.eof:
        raise TokenShardError(f"{path}: cannot decompress: the zstd stream ends mid-frame (truncated file?)")
    if any(parts):
        yield b"".join(parts)


def read_clean_file(path: Path, source: str, skips: SkipLog,
                    position: Callable[[int], None] | None = None) -> Iterator[Document]:
    """Documents of one clean shard; bad ones are counted in `skips`, never raised.

    `position(compressed_bytes_read)` is called every 256 lines, for progress.
    """
    with open(path, "rb") as raw:
        for line_no, line in enumerate(zstd_lines(raw, path), 1):
            if position is not None and line_no % 256 == 0:
                position(raw.tell())
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                skips.add(_bad_line_reason(line), where)
                continue
            doc = _document(obj, where, source)
            if isinstance(doc, str):
                skips.add(doc, where)
            else:
                yield doc


def list_clean_sources(input_dir: Path) -> dict[str, list[Path]]:
    """source name -> its clean shards, sorted; a clear error when there are none."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: no such directory (expected CLEAN/<source>/{CLEAN_PATTERN})")
    sources = {d.name: sorted(d.glob(CLEAN_PATTERN)) for d in sorted(input_dir.iterdir()) if d.is_dir()}
    sources = {name: files for name, files in sources.items() if files}
    if not sources:
        raise FileNotFoundError(f"{input_dir}: no {CLEAN_PATTERN} files under any <source>/ folder")
    return sources


# ---------------------------------------------------------------- tokenizer training


def train_from_clean(input_dir: Path, tokenizer_dir: Path, config: TrainConfig, *, overwrite: bool = False,
                     progress: Progress = _no_progress) -> TokenizerMeta:
    """Train a tokenizer on a byte-budget sample of every clean document (see tokenizer/sample.py)."""
    sources = list_clean_sources(input_dir)
    files = [(name, path) for name, paths in sources.items() for path in paths]
    total = sum(p.stat().st_size for _, p in files)
    skips = SkipLog()

    def docs() -> Iterator[tuple[str, str]]:
        done = 0
        for name, path in files:
            for doc in read_clean_file(path, name, skips, lambda pos, base=done: progress("read", base + pos, total)):
                yield name, doc.text
            done += path.stat().st_size
            progress("read", done, total)

    info = {"input": str(Path(input_dir).resolve()), "files": len(files)}
    meta = train_tokenizer(docs(), tokenizer_dir, config, corpus_info=info, overwrite=overwrite)
    if skips.total:
        meta.corpus["skipped"] = skips.counts
        meta.save(Path(tokenizer_dir))
    return meta


# ---------------------------------------------------------------- planning and resuming


@dataclass
class ShardTask:
    source: str
    name: str
    inputs: list[tuple[str, int]]
    """(file name, size in bytes) of each input, in order."""
    input_dir: str
    out_dir: str

    @property
    def input_bytes(self) -> int:
        return sum(size for _, size in self.inputs)


@dataclass
class ShardOutcome:
    info: ShardInfo
    inputs: list[tuple[str, int]]
    docs_read: int
    text_bytes: int
    skips: SkipLog
    subsets: dict[str, list[int]]
    """subset -> [documents, tokens]."""
    seconds: float

    def to_json(self) -> dict:
        return {"rows": self.info.rows, "tokens": self.info.tokens, "inputs": [list(i) for i in self.inputs],
                "docs_read": self.docs_read, "text_bytes": self.text_bytes, "skipped": self.skips.counts,
                "skipped_examples": self.skips.examples, "subsets": self.subsets, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, name: str, data: dict) -> ShardOutcome:
        return cls(info=ShardInfo(name=name, rows=data["rows"], tokens=data["tokens"]),
                   inputs=[(f, s) for f, s in data["inputs"]], docs_read=data["docs_read"],
                   text_bytes=data["text_bytes"], skips=SkipLog(dict(data["skipped"]), dict(data["skipped_examples"])),
                   subsets=data["subsets"], seconds=data["seconds"])


def plan_shards(input_dir: Path, out_dir: Path, shard_input_bytes: int) -> list[ShardTask]:
    """Group each source's files, in name order, into shards of about `shard_input_bytes` input."""
    tasks = []
    for source, paths in list_clean_sources(input_dir).items():
        groups: list[list[tuple[str, int]]] = [[]]
        for path in paths:
            size = path.stat().st_size
            if groups[-1] and sum(s for _, s in groups[-1]) + size > shard_input_bytes:
                groups.append([])
            groups[-1].append((path.name, size))
        for i, group in enumerate(groups):
            tasks.append(ShardTask(source=source, name=f"part-{i:05d}{SHARD_SUFFIX}", inputs=group,
                                   input_dir=str(Path(input_dir) / source), out_dir=str(Path(out_dir) / source)))
    return tasks


def _recorded(source_dir: Path, tokenizer: Tokenizer) -> dict[str, ShardOutcome]:
    """Finished shards recorded by an earlier run (manifest or progress file), after a tokenizer check."""
    recorded: dict[str, ShardOutcome] = {}
    for name in (MANIFEST_NAME, PROGRESS_NAME):
        path = source_dir / name
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            got_hash, got_vocab = data["tokenizer_hash"], data["vocab_size"]
            shards = data["extra"]["shards"] if name == MANIFEST_NAME else data["shards"]
            outcomes = {n: ShardOutcome.from_json(n, s) for n, s in shards.items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise TokenShardError(f"{path}: unreadable ({err}); remove {source_dir} to start this source over") from err
        if got_hash != tokenizer.content_hash or got_vocab != tokenizer.vocab_size:
            raise TokenShardError(
                f"{source_dir}: holds shards of tokenizer {got_hash[:12]} (vocab {got_vocab}), but this run uses "
                f"{tokenizer.content_hash[:12]} (vocab {tokenizer.vocab_size}) from {tokenizer.directory}; "
                "choose another --out or remove that directory")
        recorded.update(outcomes)
    return recorded


def _still_valid(task: ShardTask, outcome: ShardOutcome | None) -> bool:
    if outcome is None or [tuple(i) for i in outcome.inputs] != task.inputs:
        return False
    path = Path(task.out_dir) / task.name
    try:
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all().num_rows == outcome.info.rows
    except (OSError, pa.ArrowInvalid):
        return False


def _prepare_source_dir(source_dir: Path, planned: set[str]) -> None:
    """Drop partial (.tmp) shards and shards that are no longer part of the plan."""
    source_dir.mkdir(parents=True, exist_ok=True)
    for path in source_dir.glob("*.tmp"):
        path.unlink()
    for path in source_dir.glob(f"*{SHARD_SUFFIX}"):
        if path.name not in planned:
            path.unlink()


# ---------------------------------------------------------------- encoding one shard


def tokenize_shard(task: ShardTask, tokenizer: Tokenizer, batch_docs: int = 1024,
                   report: Callable[[int, int], None] | None = None) -> ShardOutcome:
    """Encode the documents of `task`'s inputs into one shard; `report(input_bytes, tokens)` gives deltas."""
    start = time.perf_counter()
    skips = SkipLog()
    subsets: dict[str, list[int]] = {}
    docs_read = text_bytes = 0
    eos = tokenizer.eos_id
    out_path = Path(task.out_dir) / task.name
    batch: list[Document] = []

    def flush(writer: TokenShardWriter) -> int:
        nonlocal text_bytes
        ids = tokenizer.encode_arrays([d.text for d in batch])
        tokens = 0
        for doc, doc_ids in zip(batch, ids, strict=True):
            tokens += len(doc_ids) + 1
            entry = subsets.setdefault(doc.subset, [0, 0])
            entry[0] += 1
            entry[1] += len(doc_ids) + 1
            text_bytes += len(doc.text.encode("utf-8", "surrogatepass"))
        writer.write_batch(documents_to_batch(ids, [d.doc_id for d in batch], [d.source for d in batch],
                                              [d.subset for d in batch], append=eos))
        batch.clear()
        return tokens

    last_pos = 0

    def position(pos: int) -> None:
        nonlocal last_pos
        if report is not None and pos > last_pos:
            report(pos - last_pos, 0)
            last_pos = pos

    with TokenShardWriter(out_path) as writer:
        for file_name, size in task.inputs:
            last_pos = 0
            for doc in read_clean_file(Path(task.input_dir) / file_name, task.source, skips, position):
                docs_read += 1
                batch.append(doc)
                if len(batch) >= batch_docs:
                    tokens = flush(writer)
                    if report is not None:
                        report(0, tokens)
            if batch:
                tokens = flush(writer)
                if report is not None:
                    report(0, tokens)
            if report is not None:
                report(size - last_pos, 0)
    docs_read += skips.total
    return ShardOutcome(info=ShardInfo(name=task.name, rows=writer.rows, tokens=writer.tokens), inputs=task.inputs,
                        docs_read=docs_read, text_bytes=text_bytes, skips=skips, subsets=subsets,
                        seconds=time.perf_counter() - start)


_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, fast: bool, reports: mp.Queue) -> None:
    _WORKER["tokenizer"] = load_tokenizer(tokenizer_dir, fast=fast)
    _WORKER["reports"] = reports


def _worker_shard(task: ShardTask, batch_docs: int) -> ShardOutcome:
    reports = _WORKER["reports"]
    return tokenize_shard(task, _WORKER["tokenizer"], batch_docs, lambda b, t: reports.put((b, t)))


# ---------------------------------------------------------------- the whole corpus


@dataclass
class SourceSummary:
    shards: int
    documents: int
    tokens: int
    text_bytes: int
    skipped: dict[str, int]


@dataclass
class TokenizeResult:
    out_dir: str
    tokenizer_dir: str
    tokenizer_hash: str
    vocab_size: int
    engine: str
    """"tiktoken" (fast path), "hf" (fell back, see fallback_reason) or "sentencepiece"."""
    fallback_reason: str
    shards_written: int
    shards_skipped: int
    documents: int
    tokens: int
    text_bytes: int
    skipped: dict[str, int]
    skipped_examples: dict[str, list[str]]
    seconds: float
    run_text_bytes: int
    """Text bytes and tokens of the shards this run wrote (resumed shards excluded): the throughput base."""
    run_tokens: int
    sources: dict[str, SourceSummary]

    @property
    def mb_per_s(self) -> float:
        return self.run_text_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.run_tokens / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 3), "tokens_per_s": round(self.tokens_per_s, 1)}


def _verify_sample(tasks: list[ShardTask]) -> list[str]:
    """The first documents of each source (VERIFY_BYTES of text at most), to check the fast path on this corpus."""
    texts: list[str] = []
    for source in sorted({t.source for t in tasks}):
        first = next(t for t in tasks if t.source == source)
        budget = VERIFY_BYTES
        for doc in read_clean_file(Path(first.input_dir) / first.inputs[0][0], source, SkipLog()):
            texts.append(doc.text[:budget])
            budget -= len(texts[-1])
            if budget <= 0:
                break
    return texts


class _Bookkeeper:
    """The parent's record of finished shards: progress files while running, manifests at the end."""

    def __init__(self, tasks: list[ShardTask], tokenizer: Tokenizer, command: str) -> None:
        self.tokenizer = tokenizer
        self.command = command
        self.by_source: dict[str, list[ShardTask]] = {}
        for task in tasks:
            self.by_source.setdefault(task.source, []).append(task)
        self.done: dict[str, dict[str, ShardOutcome]] = {s: {} for s in self.by_source}
        self.new: set[tuple[str, str]] = set()
        """(source, shard) finished by this run."""

    def finish(self, task: ShardTask, outcome: ShardOutcome, *, new: bool = True) -> None:
        self.done[task.source][task.name] = outcome
        if new:
            self.new.add((task.source, task.name))
            self.save(task.source)

    def save(self, source: str) -> None:
        """manifest.json once every shard of `source` is done; until then .progress.json (and no manifest)."""
        source_dir = Path(self.by_source[source][0].out_dir)
        if len(self.done[source]) == len(self.by_source[source]):
            self._write_manifest(source, source_dir)
            (source_dir / PROGRESS_NAME).unlink(missing_ok=True)
            return
        state = {"tokenizer_hash": self.tokenizer.content_hash, "vocab_size": self.tokenizer.vocab_size,
                 "shards": {n: o.to_json() for n, o in sorted(self.done[source].items())}}
        tmp = source_dir / (PROGRESS_NAME + ".tmp")
        tmp.write_text(json.dumps(state, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, source_dir / PROGRESS_NAME)
        (source_dir / MANIFEST_NAME).unlink(missing_ok=True)

    def _write_manifest(self, source: str, source_dir: Path) -> None:
        outcomes = [self.done[source][t.name] for t in self.by_source[source]]
        skips = SkipLog()
        subsets: dict[str, dict[str, int]] = {}
        for o in outcomes:
            skips.merge(o.skips)
            for name, (docs, tokens) in o.subsets.items():
                entry = subsets.setdefault(name, {"documents": 0, "tokens": 0})
                entry["documents"] += docs
                entry["tokens"] += tokens
        extra = {"tokenizer_dir": str(self.tokenizer.directory.resolve()), "engine": self.tokenizer.engine,
                 "documents_read": sum(o.docs_read for o in outcomes),
                 "text_bytes": sum(o.text_bytes for o in outcomes), "skipped": skips.counts,
                 "skipped_examples": skips.examples, "subsets": dict(sorted(subsets.items())),
                 "shards": {o.info.name: o.to_json() for o in outcomes}}
        Manifest(tokenizer_hash=self.tokenizer.content_hash, vocab_size=self.tokenizer.vocab_size,
                 eos_id=self.tokenizer.eos_id, shards=[o.info for o in outcomes], command=self.command,
                 extra=extra).save(source_dir)


def tokenize_corpus(input_dir: Path | str, out_dir: Path | str, tokenizer_dir: Path | str, *,
                    workers: int | None = None, shard_input_bytes: int = 256 << 20, batch_docs: int = 1024,
                    command: str = "", progress: Progress = _no_progress) -> TokenizeResult:
    """Tokenize every clean document into token shards, resuming whatever an earlier run finished."""
    start = time.perf_counter()
    input_dir, out_dir, tokenizer_dir = Path(input_dir), Path(out_dir), Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    tasks = plan_shards(input_dir, out_dir, shard_input_bytes)
    tokenizer.verify_fast_path(_verify_sample(tasks))
    books = _Bookkeeper(tasks, tokenizer, command)
    pending: list[ShardTask] = []
    for source, source_tasks in books.by_source.items():
        source_dir = out_dir / source
        recorded = _recorded(source_dir, tokenizer) if source_dir.exists() else {}
        _prepare_source_dir(source_dir, {t.name for t in source_tasks})
        for task in source_tasks:
            if _still_valid(task, recorded.get(task.name)):
                books.finish(task, recorded[task.name], new=False)
            else:
                pending.append(task)
        books.save(source)
    pending.sort(key=lambda t: -t.input_bytes)
    _run(pending, tokenizer, books, workers or os.cpu_count() or 1, batch_docs, progress)
    return _result(out_dir, tokenizer, books, len(tasks) - len(pending), time.perf_counter() - start)


def _run(pending: list[ShardTask], tokenizer: Tokenizer, books: _Bookkeeper, workers: int, batch_docs: int,
         progress: Progress) -> None:
    total_bytes = sum(t.input_bytes for t in pending)
    counters = [0, 0]  # input bytes, tokens

    def report(input_bytes: int, tokens: int) -> None:
        counters[0] += input_bytes
        counters[1] += tokens
        progress("input", counters[0], total_bytes)
        progress("tokens", counters[1], None)

    report(0, 0)
    if workers <= 1 or len(pending) <= 1:
        for task in pending:
            books.finish(task, tokenize_shard(task, tokenizer, batch_docs, report))
        return
    ctx = mp.get_context("spawn")  # fork after HF tokenizers' thread pool started is unsafe
    reports = ctx.Queue()
    fast = tokenizer.engine == "tiktoken"
    with ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx, initializer=_init_worker,
                             initargs=(str(tokenizer.directory), fast, reports)) as pool:
        futures: dict[Future, ShardTask] = {pool.submit(_worker_shard, t, batch_docs): t for t in pending}
        try:
            while futures:
                done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(reports, report)
                for future in done:
                    task = futures.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as err:
                        raise RuntimeError(f"{task.source}/{task.name} (inputs {[n for n, _ in task.inputs]}): "
                                           f"{type(err).__name__}: {err}") from err
                    books.finish(task, outcome)
        finally:
            for future in futures:
                future.cancel()
    _drain(reports, report)


def _drain(reports: mp.Queue, report: Callable[[int, int], None]) -> None:
    while True:
        try:
            report(*reports.get_nowait())
        except queue_mod.Empty:
            return


def _result(out_dir: Path, tokenizer: Tokenizer, books: _Bookkeeper, skipped_shards: int,
            seconds: float) -> TokenizeResult:
    sources = {}
    all_skips = SkipLog()
    for source, outcomes in books.done.items():
        skips = SkipLog()
        for o in outcomes.values():
            skips.merge(o.skips)
        all_skips.merge(skips)
        sources[source] = SourceSummary(
            shards=len(outcomes), documents=sum(o.info.rows for o in outcomes.values()),
            tokens=sum(o.info.tokens for o in outcomes.values()),
            text_bytes=sum(o.text_bytes for o in outcomes.values()), skipped=skips.counts)
    new = [books.done[source][name] for source, name in books.new]
    return TokenizeResult(
        out_dir=str(out_dir), tokenizer_dir=str(tokenizer.directory), tokenizer_hash=tokenizer.content_hash,
        vocab_size=tokenizer.vocab_size, engine=tokenizer.engine,
        fallback_reason=getattr(tokenizer, "fallback_reason", ""), shards_written=len(new),
        shards_skipped=skipped_shards, documents=sum(s.documents for s in sources.values()),
        tokens=sum(s.tokens for s in sources.values()), text_bytes=sum(s.text_bytes for s in sources.values()),
        skipped=all_skips.counts, skipped_examples=all_skips.examples, seconds=seconds,
        run_text_bytes=sum(o.text_bytes for o in new), run_tokens=sum(o.info.tokens for o in new), sources=sources)
