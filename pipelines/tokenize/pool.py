"""Encoding the pieces left to do: in this process, or in a pool of worker processes.

Workers only encode; every finished piece goes back to the parent, which alone keeps the books.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from flm.config.errors import FlmError
from flm.config.progress import Progress
from flm.pipelines.tokenize.bookkeeping import Books
from flm.pipelines.tokenize.encode import tokenize_file
from flm.pipelines.tokenize.outcome import Outcome
from flm.pipelines.tokenize.plan import ShardTask
from flm.tokenizer import Tokenizer, load_tokenizer


class TokenizeError(FlmError):
    """An input shard could not be tokenized (the message names the source and shard)."""


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


def encode_pieces(todo: list[tuple[ShardTask, int]], tokenizer: Tokenizer, books: Books, workers: int,
                  batch_docs: int, progress: Progress | None) -> None:
    """Encode every (shard, input index) of `todo` into its piece, recording each in `books` as it finishes."""
    total_bytes = sum(task.inputs[i][1] for task, i in todo)
    counters = [0, 0]  # input bytes, tokens

    def report(input_bytes: int, tokens: int) -> None:
        counters[0] += input_bytes
        counters[1] += tokens
        if progress:
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
    """Pass on the progress deltas the workers have queued so far."""
    while True:
        try:
            report(*reports.get_nowait())
        except queue_mod.Empty:
            return
