"""Run the stages in a child process and report progress from the files its steps write.

datatrove and the libraries under it write to the console (loguru handlers re-added after every
task, tqdm bars in the dedup stages); the child sends its stdout and stderr to a log file instead,
so the console holds only the caller's progress. On Linux the child is forked, so it starts with the
caller's imports (a spawned interpreter spent 0.4 s importing datatrove again, per prepare). It leads its own
process group: an interrupt or SIGTERM of the caller stops the group (every datatrove worker under
it), and a child whose caller died (kill -9) stops itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from flm.config.progress import Progress
from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.accounting import collect, total
from flm.pipelines.prepare.assembly import FILTER, WRITE, Stage, build_stages
from flm.pipelines.prepare.executors import completed_tasks
from flm.pipelines.prepare.heartbeat import read_total
from flm.pipelines.prepare.process_setup import set_up_pipeline_process
from flm.pipelines.prepare.resume import run_source
from flm.pipelines.prepare.source_plan import PrepareError, SourcePlan

Job = tuple[PipelineConfig, SourcePlan]
POLL_S = 0.25


def _watch_parent(parent: int) -> None:
    """Stop this process group when the parent is gone (it cannot report progress or results any more)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _log_to(log_path: str) -> None:
    """Send this process's output to the log. Its stdout and stderr are new file objects on the log: the ones
    fork copied from the caller may have been mid-write in another of its threads (the progress bars'), and
    their locks would then stay taken here for ever."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


def _child(jobs: list[Job], log_path: str, conn: Connection, parent: int) -> None:
    _log_to(log_path)
    os.setpgrp()
    set_up_pipeline_process()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        job_ids = {}
        for cfg, plan in jobs:
            job_ids[plan.source] = run_source(cfg, plan, build_stages(cfg, plan))
        conn.send(("ok", job_ids))
    except BaseException as err:  # reported to the parent, which raises it
        traceback.print_exc()
        message = str(err) if isinstance(err, PrepareError) else f"{type(err).__name__}: {err}"
        conn.send(("error", message))
        raise SystemExit(1) from err


class Monitor:
    """Turns progress files and completion markers into `progress(label, done, total)` calls."""

    def __init__(self, jobs: list[Job], progress: Progress) -> None:
        self.progress = progress
        self.sources = [(plan, build_stages(cfg, plan)) for cfg, plan in jobs]
        self.after_filter: dict[str, int] = {}

    def docs_after_filter(self, plan: SourcePlan, filter_stage: Stage) -> int | None:
        if plan.source not in self.after_filter:
            if completed_tasks(filter_stage) < filter_stage.tasks:
                return None
            tally = total(collect(Path(filter_stage.logging_dir, "stats").glob("*.json")).get(plan.source, {}))
            self.after_filter[plan.source] = tally.docs_in - tally.docs_dropped
        return self.after_filter[plan.source]

    def poll(self) -> None:
        for plan, stages in self.sources:
            src = plan.source
            self.progress(f"{src} read+filter (MB)", read_total(Path(plan.progress_dir("read"))) / 1e6,
                          plan.input_bytes / 1e6)
            dedup = [s for s in stages if s.name not in (FILTER, WRITE)]
            if dedup:
                self.progress(f"{src} dedup (tasks)", sum(map(completed_tasks, dedup)), sum(s.tasks for s in dedup))
            by_name = {s.name: s for s in stages}
            last = by_name.get(WRITE, by_name[FILTER])
            written = read_total(Path(plan.progress_dir("write")))
            if completed_tasks(last) == last.tasks:
                total_docs: float | None = written
            else:  # an upper bound until dedup has run
                total_docs = self.docs_after_filter(plan, by_name[FILTER]) if WRITE in by_name else None
            self.progress(f"{src} write (docs)", written, total_docs)


def _stop(proc: multiprocessing.process.BaseProcess) -> None:
    """Stop the child and its datatrove workers (its process group)."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _raise_on_sigterm() -> signal.Handlers | None:
    """While the child runs, SIGTERM unwinds like Ctrl-C so the child's group is stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def execute(jobs: list[Job], log_path: Path, progress: Progress | None = None) -> dict[str, list[str]]:
    """Run every job's stages in a child process; returns submitted Slurm job ids per source."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    monitor = Monitor(jobs, progress) if progress else None
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")  # macOS: fork is unsafe
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(jobs, str(log_path), sender, os.getpid()), name="flm-prepare")
    proc.start()
    sender.close()
    on_term = _raise_on_sigterm()
    try:
        while proc.is_alive():
            if monitor:
                monitor.poll()
            proc.join(POLL_S)
        if monitor:
            monitor.poll()
    except BaseException:
        _stop(proc)
        raise
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    message = receiver.recv() if receiver.poll() else None
    if message is None:
        raise PrepareError(f"the pipeline process ended without a result (exit code {proc.exitcode}); see {log_path}")
    if message[0] == "error":
        raise PrepareError(f"{message[1]} (details: {log_path})")
    return message[1]
