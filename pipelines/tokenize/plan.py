"""The plan of a tokenize run: which input files, in which order, make each output shard."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flm.pipelines.clean_text import list_clean_sources
from flm.pipelines.token_shards import SHARD_SUFFIX

PIECES_DIR = ".pieces"
"""Per source, where one input file's tokens wait (as a piece) until its shard is assembled."""
OUTCOME_SUFFIX = ".outcome.json"


@dataclass
class ShardTask:
    """One output shard: the input files (name, size) it is made of, in order."""

    source: str
    name: str
    inputs: list[tuple[str, int]]
    input_dir: str
    out_dir: str

    def piece(self, index: int) -> Path:
        """Where the tokens of input file `index` go before the shard is assembled."""
        return Path(self.out_dir) / PIECES_DIR / f"{self.name.removesuffix(SHARD_SUFFIX)}.{index:04d}{SHARD_SUFFIX}"


def outcome_path(piece: Path) -> Path:
    """Where a cluster task leaves the Outcome of `piece` for the parent to record (see cluster.py)."""
    return piece.with_name(f"{piece.name}{OUTCOME_SUFFIX}")


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
