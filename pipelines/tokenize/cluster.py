"""Encoding the pieces left to do as tasks of a datatrove executor (Slurm or Ray): one task per input file.

The parent writes the list of pieces to encode (`OUT/.tokenize/work.json`; task `rank` encodes entry
`rank`) and hands one picklable step to datatrove's SlurmPipelineExecutor or RayPipelineExecutor. A
task encodes its input file into the piece, exactly as a local worker does, then writes the piece's
Outcome beside it (`<piece>.outcome.json`, after the piece, atomically). The parent stays the only
keeper of the books: Ray returns when the tasks are done and the parent records them at once; a Slurm
submission returns at once, and the same command run again records what the finished tasks left
(Books.resume reads the outcome files) and submits only the pieces still missing. So output is
identical to a local run, and a cancelled or failed task is simply redone by the next run.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flm.config.atomic import atomic_write_text
from flm.config.progress import Progress
from flm.pipelines.config import ExecutorConfig
from flm.pipelines.tokenize.bookkeeping import Books
from flm.pipelines.tokenize.encode import tokenize_file
from flm.pipelines.tokenize.outcome import Outcome
from flm.pipelines.tokenize.plan import ShardTask, outcome_path
from flm.pipelines.tokenize.pool import TokenizeError
from flm.tokenizer import load_tokenizer

if TYPE_CHECKING:  # datatrove is imported only when a cluster runs
    from flm.pipelines.prepare.assembly import Stage

WORK_DIR = ".tokenize"
"""Under OUT: work.json, the executor's logs and completions, and the Slurm job record."""
POLL_S = 0.5


@dataclass
class EncodePiece:
    """datatrove pipeline step (a callable): task `rank` encodes entry `rank` of the work list."""

    work_file: str
    tokenizer_dir: str
    fast: bool
    batch_docs: int

    def __call__(self, data: object, rank: int = 0, world_size: int = 1) -> None:
        entries = json.loads(Path(self.work_file).read_text(encoding="utf-8"))
        if len(entries) != world_size:
            raise TokenizeError(f"{self.work_file} lists {len(entries)} pieces, but this run has {world_size} tasks")
        source, path, piece = entries[rank]
        tokenizer = load_tokenizer(self.tokenizer_dir, fast=self.fast)
        outcome = tokenize_file(source, Path(path), Path(piece), tokenizer, self.batch_docs)
        atomic_write_text(outcome_path(Path(piece)), json.dumps(outcome.to_json(), ensure_ascii=False))


def work_dir(out_dir: Path) -> Path:
    return Path(out_dir) / WORK_DIR


def check_not_queued(out_dir: Path) -> None:
    """Refuse to touch OUT while an earlier Slurm submission still runs there (its tasks write the pieces)."""
    from flm.pipelines.prepare.executors import refuse_if_queued

    refuse_if_queued(work_dir(out_dir))


def _stage(todo: list[tuple[ShardTask, int]], out_dir: Path, tokenizer_dir: Path, fast: bool, batch_docs: int,
           cfg: ExecutorConfig) -> Stage:
    from flm.pipelines.prepare.assembly import Stage

    folder = work_dir(out_dir)
    logs = folder / "encode"
    shutil.rmtree(logs, ignore_errors=True)  # the ranks of an earlier submission meant other pieces
    folder.mkdir(parents=True, exist_ok=True)
    work_file = folder / "work.json"
    entries = [(task.source, str(Path(task.input_dir) / task.inputs[i][0]), str(task.piece(i))) for task, i in todo]
    atomic_write_text(work_file, json.dumps(entries, ensure_ascii=False))
    step = EncodePiece(str(work_file.resolve()), str(Path(tokenizer_dir).resolve()), fast, batch_docs)
    workers = cfg.workers or len(todo)
    return Stage("encode", [step], len(todo), min(workers, len(todo)), str(logs.resolve()))


def encode_on_cluster(todo: list[tuple[ShardTask, int]], books: Books, out_dir: Path, batch_docs: int,
                      cfg: ExecutorConfig, progress: Progress | None) -> list[str]:
    """Encode `todo` with the Slurm or Ray executor; returns the Slurm job ids submitted ([] for Ray)."""
    from flm.pipelines.prepare.executors import run_stages
    from flm.pipelines.prepare.source_plan import PrepareError

    if not todo:
        return []
    tokenizer = books.tokenizer
    stage = _stage(todo, out_dir, tokenizer.directory, tokenizer.engine == "tiktoken", batch_docs, cfg)
    total_bytes = sum(task.inputs[i][1] for task, i in todo)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(todo, total_bytes, progress, stop), daemon=True)
    if cfg.kind == "ray":
        watcher.start()
    try:
        with _log_to(work_dir(out_dir) / "submit.log"):
            job_ids = run_stages([stage], cfg, cfg.slurm.job_name)
    except PrepareError as err:
        raise TokenizeError(f"{err}; see {work_dir(out_dir) / 'submit.log'}") from err
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
    if cfg.kind == "slurm":
        return job_ids
    for task, index in todo:
        books.piece_done(task, take_outcome(task, index))
    return []


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """datatrove's log lines (loguru, to stderr by default) go to `path` while a cluster run is submitted or
    driven from here; the console keeps only flm's own output."""
    from datatrove.utils.logging import logger, setup_default_logger

    logger.remove()
    logger.add(path)
    try:
        yield
    finally:
        setup_default_logger()


def take_outcome(task: ShardTask, index: int) -> Outcome:
    """The outcome a task wrote beside piece `index` of `task`; the file goes once read."""
    path = outcome_path(task.piece(index))
    try:
        outcome = Outcome.from_json(task.piece(index).name, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as err:
        raise TokenizeError(f"{task.source}/{task.piece(index).name}: the task reported done but left no readable "
                            f"outcome ({path}: {err})") from err
    path.unlink()
    return outcome


def _watch(todo: list[tuple[ShardTask, int]], total_bytes: int, progress: Progress | None,
           stop: threading.Event) -> None:
    """Report input bytes of the pieces whose outcome is written, until `stop`."""
    while progress is not None:
        done = sum(task.inputs[i][1] for task, i in todo if outcome_path(task.piece(i)).exists())
        progress("input", done, total_bytes)
        if stop.wait(POLL_S):
            return
