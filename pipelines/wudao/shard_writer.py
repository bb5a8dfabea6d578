"""Numbered jsonl.zst shards of a fixed number of documents: what `flm data prepare` reads as raw input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SHARD_DOCS = 16384
"""Documents per shard (Open-Llama's convention)."""
SHARD_PREFIX = "wudao-"


class ShardWriter:
    """Writes documents to `<out_dir>/wudao-NNNNN.jsonl.zst`, `shard_docs` to a shard, numbered from 0."""

    def __init__(self, out_dir: Path, shard_docs: int) -> None:
        import orjson  # data-path libraries load on use: `flm` must start on a training-only GPU image
        import zstandard

        self.dumps = orjson.dumps
        self.out_dir, self.shard_docs = out_dir, shard_docs
        self.cctx = zstandard.ZstdCompressor(level=3)
        self.names: list[str] = []
        """Shard file names written so far, in order."""
        self.count = 0
        self.stream: Any = None

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is None:
            name = f"{SHARD_PREFIX}{len(self.names):05d}.jsonl.zst"
            self.names.append(name)
            self.stream = self.cctx.stream_writer(open(self.out_dir / name, "wb"), closefd=True)  # noqa: SIM115
        self.stream.write(self.dumps(record) + b"\n")
        self.count += 1
        if self.count % self.shard_docs == 0:
            self.close()

    def close(self) -> None:
        """Finish the current shard (the next write starts a new one)."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
