"""Numbered jsonl.zst shards of a fixed number of documents: what `flm data prepare` reads as raw input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flm.config.errors import FlmError

SHARD_DOCS = 16384
"""Documents per shard (Open-Llama's convention)."""
SHARD_PREFIX = "wudao-"


class ShardWriteError(FlmError, RuntimeError):
    """A shard cannot be written (disk full, no permission): the conversion stops, it is not bad input."""


class ShardWriter:
    """Writes documents to `<out_dir>/wudao-NNNNN.jsonl.zst`, `shard_docs` to a shard, numbered from 0.

    `names`: shards already finished by an interrupted run (numbering goes on after them);
    `on_shard(names)` is called each time a shard is complete on disk (the conversion's checkpoint).
    """

    def __init__(self, out_dir: Path, shard_docs: int, names: list[str] | None = None,
                 on_shard: Callable[[list[str]], None] | None = None) -> None:
        import orjson  # data-path libraries load on use: `flm` must start on a training-only GPU image
        import zstandard

        self.dumps = orjson.dumps
        self.out_dir, self.shard_docs = out_dir, shard_docs
        self.cctx = zstandard.ZstdCompressor(level=3)
        self.names: list[str] = list(names or [])
        """Shard file names written so far, in order."""
        self.on_shard = on_shard
        self.count = 0
        self.stream: Any = None

    def write(self, record: dict[str, Any]) -> None:
        try:
            if self.stream is None:
                name = f"{SHARD_PREFIX}{len(self.names):05d}.jsonl.zst"
                self.names.append(name)
                self.stream = self.cctx.stream_writer(open(self.out_dir / name, "wb"), closefd=True)  # noqa: SIM115
            self.stream.write(self.dumps(record) + b"\n")
        except OSError as err:
            raise self._error(err) from err
        self.count += 1
        if self.count % self.shard_docs == 0:
            self.close()
            if self.on_shard is not None:
                self.on_shard(self.names)

    def close(self) -> None:
        """Finish the current shard (the next write starts a new one)."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            try:
                stream.close()
            except OSError as err:
                raise self._error(err) from err

    def _error(self, err: OSError) -> ShardWriteError:
        done = len(self.names) - 1
        return ShardWriteError(
            f"cannot write {self.out_dir / self.names[-1]}: {err.strerror or err}; the conversion stopped. "
            f"The {done} shard(s) finished before it are kept in {self.out_dir}: run the same command again "
            "(after freeing space) and it resumes from there")
