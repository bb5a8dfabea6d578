"""What encoding a piece (one input file) or a whole shard produced; the records of the resume log."""

from __future__ import annotations

from dataclasses import dataclass

from flm.pipelines.clean_text import SkipLog
from flm.pipelines.token_shards import ShardInfo


@dataclass
class Outcome:
    """Counts of one piece or shard; JSON in the bookkeeping files, so a rerun need not reread its inputs."""

    info: ShardInfo
    inputs: list[tuple[str, int]]
    docs_read: int
    text_bytes: int
    skips: SkipLog
    subsets: dict[str, list[int]]
    """subset -> [documents, tokens]."""
    seconds: float

    def to_json(self) -> dict:
        checksum = {"checksum": self.info.checksum} if self.info.checksum else {}
        return {"rows": self.info.rows, "tokens": self.info.tokens, **checksum,
                "inputs": [list(i) for i in self.inputs], "docs_read": self.docs_read, "text_bytes": self.text_bytes,
                "skipped": self.skips.counts,
                "skipped_examples": self.skips.examples, "subsets": self.subsets, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, name: str, data: dict) -> Outcome:
        info = ShardInfo(name=name, rows=data["rows"], tokens=data["tokens"], checksum=data.get("checksum"))
        return cls(info=info,
                   inputs=[(f, s) for f, s in data["inputs"]], docs_read=data["docs_read"],
                   text_bytes=data["text_bytes"], skips=SkipLog(dict(data["skipped"]), dict(data["skipped_examples"])),
                   subsets=data["subsets"], seconds=data["seconds"])

    @classmethod
    def combine(cls, name: str, parts: list[Outcome]) -> Outcome:
        """The outcome of `parts` concatenated, in order (a shard from its pieces, a source from its shards)."""
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
