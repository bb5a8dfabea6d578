"""`flm data tokenize`: clean text (CLEAN/<source>/*.jsonl.zst) -> token shards (TOKENS/<source>/*.arrow).

Each source's input files are grouped, in name order, into output shards of about
`shard_input_bytes` compressed input (~1 GiB of uint32 tokens for zstd'd text). The unit of work is
one input file: a worker process encodes it into a piece (`<source>/.pieces/`), and when every piece
of a shard is done the parent concatenates them, in order, into the shard. So workers stay busy
however few shards a source has, and the output does not depend on the number of workers.

Resuming: files appear under their final names only when complete, and the parent (the only writer
of bookkeeping) records each finished piece and shard in `<source>/.progress.jsonl`. A rerun keeps
what was recorded with the same inputs and tokenizer and redoes the rest; manifest.json is written
once every shard of a source is done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from flm.config.errors import FlmError
from flm.config.progress import Progress
from flm.pipelines.clean_text import SkipLog, list_clean_sources, read_clean_file
from flm.pipelines.token_shards import (
    MANIFEST_NAME,
    PROGRESS_NAME,
    SHARD_SUFFIX,
    Manifest,
    ShardInfo,
    TokenShardError,
    TokenShardWriter,
    documents_to_batch,
)
from flm.tokenizer import Tokenizer, TokenizerMeta, TrainConfig, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)

PIECES_DIR = ".pieces"
VERIFY_CHARS = 100_000
"""Characters of text per source checked for identical ids (tiktoken vs HF tokenizers) before tokenizing."""


class TokenizeError(FlmError):
    """An input shard could not be tokenized (the message names the source and shard)."""


def _no_progress(label: str, completed: float, total: float | None = None) -> None:
    return None


def train_from_clean(input_dir: Path, tokenizer_dir: Path, config: TrainConfig, *, overwrite: bool = False,
                     progress: Progress = _no_progress) -> TokenizerMeta:
    """Train a tokenizer on a byte-budget sample of every clean document (see tokenizer/sample.py)."""
    files = [(name, path) for name, paths in list_clean_sources(input_dir).items() for path in paths]
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


# ---------------------------------------------------------------- plan and outcomes


@dataclass
class ShardTask:
    """One output shard: the input files (name, size) it is made of, in order."""

    source: str
    name: str
    inputs: list[tuple[str, int]]
    input_dir: str
    out_dir: str

    @property
    def input_bytes(self) -> int:
        return sum(size for _, size in self.inputs)

    def piece(self, index: int) -> Path:
        return Path(self.out_dir) / PIECES_DIR / f"{self.name.removesuffix(SHARD_SUFFIX)}.{index:04d}{SHARD_SUFFIX}"


@dataclass
class Outcome:
    """What encoding a piece (one input file) or a whole shard produced; JSON in the bookkeeping files."""

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
    def from_json(cls, name: str, data: dict) -> Outcome:
        return cls(info=ShardInfo(name=name, rows=data["rows"], tokens=data["tokens"]),
                   inputs=[(f, s) for f, s in data["inputs"]], docs_read=data["docs_read"],
                   text_bytes=data["text_bytes"], skips=SkipLog(dict(data["skipped"]), dict(data["skipped_examples"])),
                   subsets=data["subsets"], seconds=data["seconds"])

    @classmethod
    def combine(cls, name: str, parts: list[Outcome]) -> Outcome:
        skips = SkipLog()
        subsets: dict[str, list[int]] = {}
        for part in parts:
            skips.merge(part.skips)
            for subset, (docs, tokens) in part.subsets.items():
                entry = subsets.setdefault(subset, [0, 0])
                entry[0] += docs
                entry[1] += tokens
        return cls(info=ShardInfo(name=name, rows=sum(p.info.rows for p in parts),
                                  tokens=sum(p.info.tokens for p in parts)),
                   inputs=[i for p in parts for i in p.inputs], docs_read=sum(p.docs_read for p in parts),
                   text_bytes=sum(p.text_bytes for p in parts), skips=skips, subsets=subsets,
                   seconds=sum(p.seconds for p in parts))


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


# ---------------------------------------------------------------- encoding one input file


def tokenize_file(source: str, path: Path, out_path: Path, tokenizer: Tokenizer, batch_docs: int = 1024,
                  report: Callable[[int, int], None] | None = None) -> Outcome:
    """Encode one clean file into one Arrow file; `report(input_bytes, tokens)` gives progress deltas."""
    start = time.perf_counter()
    skips = SkipLog()
    subsets: dict[str, list[int]] = {}
    docs_read = text_bytes = last_pos = 0
    batch: list = []

    def flush(writer: TokenShardWriter) -> None:
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
                                              [d.subset for d in batch], append=tokenizer.eos_id))
        batch.clear()
        if report is not None:
            report(0, tokens)

    def position(pos: int) -> None:
        nonlocal last_pos
        if report is not None and pos > last_pos:
            report(pos - last_pos, 0)
            last_pos = pos

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with TokenShardWriter(out_path) as writer:
        for doc in read_clean_file(path, source, skips, position):
            docs_read += 1
            batch.append(doc)
            if len(batch) >= batch_docs:
                flush(writer)
        if batch:
            flush(writer)
    position(path.stat().st_size)
    return Outcome(info=ShardInfo(name=out_path.name, rows=writer.rows, tokens=writer.tokens),
                   inputs=[(path.name, path.stat().st_size)], docs_read=docs_read + skips.total,
                   text_bytes=text_bytes, skips=skips, subsets=subsets, seconds=time.perf_counter() - start)


def _concatenate(pieces: list[Path], out_path: Path) -> None:
    """Copy the record batches of `pieces`, in order, into one shard (memory-mapped, no re-encoding)."""
    with TokenShardWriter(out_path) as writer:
        for piece in pieces:
            with pa.memory_map(str(piece), "r") as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    writer.write_batch(reader.get_batch(i))


_WORKER: dict = {}
"""A worker process's tokenizer and progress queue (set in the parent just before forking)."""


def _init_worker(tokenizer_dir: str | None, fast: bool, reports: mp.Queue) -> None:
    if tokenizer_dir is not None:  # spawned, not forked: load it
        _WORKER["tokenizer"] = load_tokenizer(tokenizer_dir, fast=fast)
    _WORKER["reports"] = reports


def _worker_file(source: str, path: str, out_path: str, batch_docs: int) -> Outcome:
    reports = _WORKER["reports"]
    return tokenize_file(source, Path(path), Path(out_path), _WORKER["tokenizer"], batch_docs,
                         lambda b, t: reports.put((b, t)))


# ---------------------------------------------------------------- bookkeeping and resuming


def _rows(path: Path) -> int | None:
    try:
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all().num_rows
    except (OSError, pa.ArrowInvalid):
        return None


class _Books:
    """The parent's record of finished pieces and shards; it alone writes the progress logs and manifests.

    `<source>/.progress.jsonl` is append-only (a header line, then one line per finished piece or
    shard), so recording costs O(1) however many files a source has; it is rewritten compactly once
    per run, at resume, and replaced by manifest.json when the source is complete.
    """

    def __init__(self, tasks: list[ShardTask], tokenizer: Tokenizer, command: str) -> None:
        self.tokenizer = tokenizer
        self.command = command
        self.by_source: dict[str, list[ShardTask]] = {}
        for task in tasks:
            self.by_source.setdefault(task.source, []).append(task)
        self.shards: dict[str, dict[str, Outcome]] = {s: {} for s in self.by_source}
        self.pieces: dict[str, dict[str, Outcome]] = {s: {} for s in self.by_source}
        self.written = 0
        """Shards assembled by this run."""
        self.encoded: list[Outcome] = []
        """Pieces encoded by this run (not resumed): the base of throughput figures."""

    def _dir(self, source: str) -> Path:
        return Path(self.by_source[source][0].out_dir)

    def resume(self, source: str) -> list[tuple[ShardTask, int]]:
        """Take over what an earlier run recorded for `source`; return the (shard, input index) left to do."""
        source_dir = self._dir(source)
        shards, pieces = self._recorded(source_dir) if source_dir.exists() else ({}, {})
        planned = {t.name for t in self.by_source[source]}
        source_dir.mkdir(parents=True, exist_ok=True)
        for path in [*source_dir.glob("*.tmp"), *source_dir.glob(f"part-*{SHARD_SUFFIX}")]:
            if path.suffix == ".tmp" or path.name not in planned:
                path.unlink()
        todo = []
        for task in self.by_source[source]:
            done = shards.get(task.name)
            if done is not None and done.inputs == task.inputs and _rows(source_dir / task.name) == done.info.rows:
                self.shards[source][task.name] = done
                continue
            for index, item in enumerate(task.inputs):
                piece = pieces.get(task.piece(index).name)
                if piece is not None and piece.inputs == [item] and _rows(task.piece(index)) == piece.info.rows:
                    self.pieces[source][task.piece(index).name] = piece
                else:
                    todo.append((task, index))
        for path in (source_dir / PIECES_DIR).glob("*"):
            if path.name not in self.pieces[source]:
                path.unlink()
        (source_dir / MANIFEST_NAME).unlink(missing_ok=True)
        self._rewrite_log(source)
        for task in self.by_source[source]:  # shards whose pieces were all done before an interruption
            if task.name not in self.shards[source] and not any(t is task for t, _ in todo):
                self._assemble(task)
        self._finish_if_complete(source)
        return todo

    def _recorded(self, source_dir: Path) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
        """Shards and pieces an earlier run recorded (manifest.json or .progress.jsonl), tokenizer checked."""
        shards: dict[str, Outcome] = {}
        pieces: dict[str, Outcome] = {}
        manifest, log_path = source_dir / MANIFEST_NAME, source_dir / PROGRESS_NAME
        try:
            if manifest.exists():
                data = json.loads(manifest.read_text(encoding="utf-8"))
                self._check_tokenizer(source_dir, data["tokenizer_hash"], data["vocab_size"])
                shards.update({n: Outcome.from_json(n, o) for n, o in data["extra"]["shards"].items()})
            if log_path.exists():
                lines = log_path.read_text(encoding="utf-8").splitlines()
                header = json.loads(lines[0])
                self._check_tokenizer(source_dir, header["tokenizer_hash"], header["vocab_size"])
                for number, line in enumerate(lines[1:], 2):
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        if number == len(lines):  # the line being appended when the run died
                            break
                        raise
                    outcome = Outcome.from_json(entry.pop("name"), entry)
                    (shards if entry["kind"] == "shard" else pieces)[outcome.info.name] = outcome
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as err:
            raise TokenShardError(f"{source_dir}: unreadable bookkeeping ({type(err).__name__}: {err}); "
                                  f"remove {source_dir} to redo this source") from err
        return shards, pieces

    def _check_tokenizer(self, source_dir: Path, got_hash: str, got_vocab: int) -> None:
        if got_hash != self.tokenizer.content_hash or got_vocab != self.tokenizer.vocab_size:
            raise TokenShardError(
                f"{source_dir}: holds shards of tokenizer {got_hash[:12]} (vocab {got_vocab}), but this run uses "
                f"{self.tokenizer.content_hash[:12]} (vocab {self.tokenizer.vocab_size}) from "
                f"{self.tokenizer.directory}; choose another --out or remove that directory")

    def _rewrite_log(self, source: str) -> None:
        header = {"tokenizer_hash": self.tokenizer.content_hash, "vocab_size": self.tokenizer.vocab_size}
        lines = [json.dumps(header)]
        for kind, done in (("shard", self.shards[source]), ("piece", self.pieces[source])):
            lines.extend(json.dumps({"kind": kind, "name": n, **o.to_json()}, ensure_ascii=False)
                         for n, o in sorted(done.items()))
        tmp = self._dir(source) / (PROGRESS_NAME + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, self._dir(source) / PROGRESS_NAME)

    def _append(self, source: str, kind: str, outcome: Outcome) -> None:
        with open(self._dir(source) / PROGRESS_NAME, "a", encoding="utf-8") as log_file:
            log_file.write(json.dumps({"kind": kind, "name": outcome.info.name, **outcome.to_json()},
                                      ensure_ascii=False) + "\n")

    def piece_done(self, task: ShardTask, outcome: Outcome) -> None:
        self.encoded.append(outcome)
        self.pieces[task.source][outcome.info.name] = outcome
        self._append(task.source, "piece", outcome)
        if all(task.piece(i).name in self.pieces[task.source] for i in range(len(task.inputs))):
            self._assemble(task)
            self._finish_if_complete(task.source)

    def _assemble(self, task: ShardTask) -> None:
        """Concatenate a shard's pieces, record the shard, then drop the pieces."""
        paths = [task.piece(i) for i in range(len(task.inputs))]
        _concatenate(paths, Path(task.out_dir) / task.name)
        outcome = Outcome.combine(task.name, [self.pieces[task.source].pop(p.name) for p in paths])
        self.shards[task.source][task.name] = outcome
        self.written += 1
        self._append(task.source, "shard", outcome)
        for path in paths:
            path.unlink()

    def _finish_if_complete(self, source: str) -> None:
        """Once every shard of `source` is done: manifest.json, and the progress log and pieces go."""
        if len(self.shards[source]) < len(self.by_source[source]):
            return
        source_dir = self._dir(source)
        outcomes = [self.shards[source][t.name] for t in self.by_source[source]]
        total = Outcome.combine(source, outcomes)
        subsets = {name: {"documents": d, "tokens": t} for name, (d, t) in sorted(total.subsets.items())}
        extra = {"tokenizer_dir": str(self.tokenizer.directory.resolve()), "engine": self.tokenizer.engine,
                 "documents_read": total.docs_read, "text_bytes": total.text_bytes, "skipped": total.skips.counts,
                 "skipped_examples": total.skips.examples, "subsets": subsets,
                 "shards": {o.info.name: o.to_json() for o in outcomes}}
        Manifest(tokenizer_hash=self.tokenizer.content_hash, vocab_size=self.tokenizer.vocab_size,
                 eos_id=self.tokenizer.eos_id, shards=[o.info for o in outcomes], command=self.command,
                 extra=extra).save(source_dir)
        (source_dir / PROGRESS_NAME).unlink(missing_ok=True)
        shutil.rmtree(source_dir / PIECES_DIR, ignore_errors=True)


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
    """Text bytes and tokens this run encoded (resumed work excluded): the throughput base."""
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


def _verify_sample(tasks: list[ShardTask], chars: int) -> list[str]:
    """The first documents of each source (`chars` characters at most), to check the fast path on this corpus."""
    texts: list[str] = []
    for source in sorted({t.source for t in tasks}):
        first = next(t for t in tasks if t.source == source)
        budget = chars
        for doc in read_clean_file(Path(first.input_dir) / first.inputs[0][0], source, SkipLog()):
            texts.append(doc.text[:budget])
            budget -= len(texts[-1])
            if budget <= 0:
                break
    return texts


def tokenize_corpus(input_dir: Path | str, out_dir: Path | str, tokenizer_dir: Path | str, *,
                    workers: int | None = None, shard_input_bytes: int = 256 << 20, batch_docs: int = 1024,
                    verify_chars: int = VERIFY_CHARS, command: str = "",
                    progress: Progress = _no_progress) -> TokenizeResult:
    """Tokenize every clean document into token shards, resuming whatever an earlier run finished.

    Before that, the tiktoken fast path is checked against HF tokenizers on the first `verify_chars`
    characters of each source (about 0.1 s of HF per source); any difference switches the run to HF
    tokenizers, with a warning and `fallback_reason` set.
    """
    start = time.perf_counter()
    input_dir, out_dir, tokenizer_dir = Path(input_dir), Path(out_dir), Path(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    tasks = plan_shards(input_dir, out_dir, shard_input_bytes)
    tokenizer.verify_fast_path(_verify_sample(tasks, verify_chars))
    books = _Books(tasks, tokenizer, command)
    todo = [item for source in books.by_source for item in books.resume(source)]
    _run(todo, tokenizer, books, workers or os.cpu_count() or 1, batch_docs, progress)
    return _result(out_dir, tokenizer, books, len(tasks) - books.written, time.perf_counter() - start)


def _run(todo: list[tuple[ShardTask, int]], tokenizer: Tokenizer, books: _Books, workers: int, batch_docs: int,
         progress: Progress) -> None:
    total_bytes = sum(task.inputs[i][1] for task, i in todo)
    counters = [0, 0]  # input bytes, tokens

    def report(input_bytes: int, tokens: int) -> None:
        counters[0] += input_bytes
        counters[1] += tokens
        progress("input", counters[0], total_bytes)
        progress("tokens", counters[1], None)

    report(0, 0)

    def args(task: ShardTask, index: int) -> tuple[str, str, str, int]:
        return task.source, str(Path(task.input_dir) / task.inputs[index][0]), str(task.piece(index)), batch_docs

    if workers <= 1 or len(todo) <= 1:
        for task, index in todo:
            source, path, out, _ = args(task, index)
            books.piece_done(task, tokenize_file(source, Path(path), Path(out), tokenizer, batch_docs, report))
        return
    # Forked workers inherit the loaded tokenizer (no imports, no reload: ~1 s less per worker). Not when
    # encoding with HF tokenizers: a fork after its thread pool has run disables it, with a printed warning.
    fork = tokenizer.engine != "hf" and sys.platform.startswith("linux")
    ctx = mp.get_context("fork" if fork else "spawn")
    reports = ctx.Queue()
    if fork:
        _WORKER["tokenizer"] = tokenizer
        sys.stdout.flush()  # a forked child flushes its copy of unwritten output when it exits
        sys.stderr.flush()
    initargs = (None if fork else str(tokenizer.directory), tokenizer.engine == "tiktoken", reports)
    pool = ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx, initializer=_init_worker, initargs=initargs)
    futures: dict[Future, ShardTask] = {}
    try:
        futures = {pool.submit(_worker_file, *args(t, i)): t for t, i in todo}
        while futures:
            done, _ = wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(reports, report)
            for future in done:
                task = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as err:
                    raise TokenizeError(f"{task.source}/{task.name}: {type(err).__name__}: {err}") from err
                books.piece_done(task, outcome)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _WORKER.clear()
    _drain(reports, report)


def _drain(reports: mp.Queue, report: Callable[[int, int], None]) -> None:
    while True:
        try:
            report(*reports.get_nowait())
        except queue_mod.Empty:
            return


def _result(out_dir: Path, tokenizer: Tokenizer, books: _Books, skipped_shards: int, seconds: float) -> TokenizeResult:
    sources = {}
    for source, outcomes in books.shards.items():
        total = Outcome.combine(source, list(outcomes.values()))
        sources[source] = SourceSummary(shards=len(outcomes), documents=total.info.rows, tokens=total.info.tokens,
                                        text_bytes=total.text_bytes, skipped=total.skips.counts)
    everything = Outcome.combine("all", [o for outcomes in books.shards.values() for o in outcomes.values()])
    return TokenizeResult(
        out_dir=str(out_dir), tokenizer_dir=str(tokenizer.directory), tokenizer_hash=tokenizer.content_hash,
        vocab_size=tokenizer.vocab_size, engine=tokenizer.engine,
        fallback_reason=getattr(tokenizer, "fallback_reason", ""), shards_written=books.written,
        shards_skipped=skipped_shards, documents=everything.info.rows, tokens=everything.info.tokens,
        text_bytes=everything.text_bytes, skipped=everything.skips.counts, skipped_examples=everything.skips.examples,
        seconds=seconds, run_text_bytes=sum(o.text_bytes for o in books.encoded),
        run_tokens=sum(o.info.tokens for o in books.encoded), sources=sources)
