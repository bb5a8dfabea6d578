"""A whole tokenize run: plan, check the fast path, resume, encode what is left, and sum up the result."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flm.config.folder_lock import folder_lock
from flm.config.progress import Progress
from flm.pipelines.clean_text import SkipLog, read_clean_file
from flm.pipelines.config import ExecutorConfig
from flm.pipelines.tokenize.bookkeeping import Books
from flm.pipelines.tokenize.cluster import check_not_queued, encode_on_cluster, work_dir
from flm.pipelines.tokenize.outcome import Outcome
from flm.pipelines.tokenize.plan import ShardTask, plan_shards
from flm.pipelines.tokenize.pool import encode_pieces
from flm.tokenizer import Tokenizer, load_tokenizer

VERIFY_CHARS = 100_000
"""Characters of text per source checked for identical ids (tiktoken vs HF tokenizers) before tokenizing."""


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
    executor: str = "local"
    submitted_jobs: list[str] = field(default_factory=list)
    """Slurm job ids when pieces were submitted: the same command, run again once they finish, completes the run."""

    @property
    def mb_per_s(self) -> float:
        return self.run_text_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.run_tokens / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 3), "tokens_per_s": round(self.tokens_per_s, 1)}


def tokenize_corpus(input_dir: Path | str, out_dir: Path | str, tokenizer_dir: Path | str, *,
                    workers: int | None = None, shard_input_bytes: int = 256 << 20, batch_docs: int = 1024,
                    verify_chars: int = VERIFY_CHARS, command: str = "", executor: ExecutorConfig | None = None,
                    progress: Progress | None = None) -> TokenizeResult:
    """Tokenize every clean document into token shards, resuming whatever an earlier run finished.

    Before that, the tiktoken fast path is checked against HF tokenizers on the first `verify_chars`
    characters of each source (about 0.1 s of HF per source); any difference switches the run to HF
    tokenizers, with a warning and `fallback_reason` set.

    `executor` (default local: worker processes of this machine) may send the pieces to Slurm or Ray
    instead, one task per input file (see cluster.py); the output is the same.
    """
    executor = executor or ExecutorConfig()
    with folder_lock(out_dir, "tokenize writes into a folder"):
        if executor.kind == "slurm":
            check_not_queued(Path(out_dir))  # before resume, which removes pieces no run recorded
        return _tokenize(Path(input_dir), Path(out_dir), Path(tokenizer_dir), workers, shard_input_bytes,
                         batch_docs, verify_chars, command, executor, progress)


def _tokenize(input_dir: Path, out_dir: Path, tokenizer_dir: Path, workers: int | None, shard_input_bytes: int,
              batch_docs: int, verify_chars: int, command: str, executor: ExecutorConfig,
              progress: Progress | None) -> TokenizeResult:
    start = time.perf_counter()
    tokenizer = load_tokenizer(tokenizer_dir)
    tasks = plan_shards(input_dir, out_dir, shard_input_bytes)
    tokenizer.verify_fast_path(_fast_path_sample(tasks, verify_chars))
    books = Books(tasks, tokenizer, command)
    todo = [item for source in books.by_source for item in books.resume(source)]
    submitted: list[str] = []
    if executor.kind == "local":
        encode_pieces(todo, tokenizer, books, workers or os.cpu_count() or 1, batch_docs, progress)
    else:
        submitted = encode_on_cluster(todo, books, out_dir, batch_docs, executor, progress)
    if not submitted:
        shutil.rmtree(work_dir(out_dir), ignore_errors=True)  # every piece is recorded: the cluster's files go
    finished_before = sum(map(len, books.shards.values())) - books.written
    result = _summarize(out_dir, tokenizer, books, finished_before, time.perf_counter() - start)
    result.executor, result.submitted_jobs = executor.kind, submitted
    return result


def _fast_path_sample(tasks: list[ShardTask], chars: int) -> list[str]:
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


def _summarize(out_dir: Path, tokenizer: Tokenizer, books: Books, skipped_shards: int,
               seconds: float) -> TokenizeResult:
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
