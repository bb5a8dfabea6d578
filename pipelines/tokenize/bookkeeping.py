"""The parent process's books: which pieces and shards are finished, kept so an interrupted run resumes.

`<source>/.progress.jsonl` is append-only (a header line, then one line per finished piece or
shard), so recording costs O(1) however many files a source has; it is rewritten compactly once
per run, at resume, and replaced by manifest.json when the source is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa

from flm.config.atomic import TEMP_SUFFIX, atomic_write_text
from flm.pipelines.token_shards import MANIFEST_NAME, PROGRESS_NAME, SHARD_SUFFIX, Manifest, TokenShardError
from flm.pipelines.tokenize.encode import concatenate_pieces
from flm.pipelines.tokenize.outcome import Outcome
from flm.pipelines.tokenize.plan import OUTCOME_SUFFIX, PIECES_DIR, ShardTask
from flm.tokenizer import Tokenizer


def _rows(path: Path) -> int | None:
    """Rows of an Arrow file, or None when it is missing or unreadable (then it is redone)."""
    try:
        with pa.memory_map(str(path), "r") as source:
            return pa.ipc.open_file(source).read_all().num_rows
    except (OSError, pa.ArrowInvalid):
        return None


class Books:
    """The record of finished pieces and shards; the only writer of progress logs and manifests."""

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
        for path in [*source_dir.glob(f"*{TEMP_SUFFIX}"), *source_dir.glob(f"part-*{SHARD_SUFFIX}")]:
            if path.suffix == TEMP_SUFFIX or path.name not in planned:  # a killed writer's, or another plan's
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
        """Shards and pieces an earlier run recorded (manifest.json, .progress.jsonl, and the outcome files of
        cluster tasks), tokenizer checked."""
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
            for path in sorted((source_dir / PIECES_DIR).glob(f"*{OUTCOME_SUFFIX}")):  # left by cluster tasks
                name = path.name.removesuffix(OUTCOME_SUFFIX)
                pieces.setdefault(name, Outcome.from_json(name, json.loads(path.read_text(encoding="utf-8"))))
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
        atomic_write_text(self._dir(source) / PROGRESS_NAME, "\n".join(lines) + "\n")

    def _append(self, source: str, kind: str, outcome: Outcome) -> None:
        with open(self._dir(source) / PROGRESS_NAME, "a", encoding="utf-8") as log_file:
            log_file.write(json.dumps({"kind": kind, "name": outcome.info.name, **outcome.to_json()},
                                      ensure_ascii=False) + "\n")

    def piece_done(self, task: ShardTask, outcome: Outcome) -> None:
        """Record a finished piece; the last piece of a shard assembles it (and may complete the source)."""
        self.encoded.append(outcome)
        self.pieces[task.source][outcome.info.name] = outcome
        self._append(task.source, "piece", outcome)
        if all(task.piece(i).name in self.pieces[task.source] for i in range(len(task.inputs))):
            self._assemble(task)
            self._finish_if_complete(task.source)

    def _assemble(self, task: ShardTask) -> None:
        """Concatenate a shard's pieces, record the shard, then drop the pieces."""
        paths = [task.piece(i) for i in range(len(task.inputs))]
        written = concatenate_pieces(paths, Path(task.out_dir) / task.name)
        outcome = Outcome.combine(task.name, [self.pieces[task.source].pop(p.name) for p in paths])
        outcome.info.checksum = written.checksum
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
