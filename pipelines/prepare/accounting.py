"""Every document accounted for: docs in = kept + dropped, per source, subset, stage and reason.

Steps record events as datatrove stats: one document counter and one byte counter per (event,
source, subset, reason). datatrove saves a task's stats beside its completion marker, so the
accounting of a resumed run is rebuilt from disk (`collect`) and never counts a task twice.
Kept and dropped bytes are both measured at input size (before normalisation), so bytes in = kept + dropped bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from flm.pipelines.prepare.schema import BYTES_IN, SOURCE, SUBSET

PREFIX = "flm"
SEP = "|"
IN, DROP, KEPT, REDACT = "in", "drop", "kept", "redact"
NO_REASON = "-"


def _key(kind: str, event: str, source: str, subset: str, reason: str) -> str:
    return SEP.join((PREFIX, kind, event, source, subset.replace(SEP, "/"), reason))


def record(step: PipelineStep, event: str, source: str, subset: str, nbytes: int, reason: str = NO_REASON) -> None:
    """Count one document (and its bytes) for an event on `step`'s stats."""
    step.stat_update(_key("docs", event, source, subset, reason))
    step.stat_update(_key("bytes", event, source, subset, reason), value=nbytes, unit="bytes")


def record_redactions(step: PipelineStep, source: str, subset: str, counts: dict[str, int]) -> None:
    """Count replacements per PII kind (documents are kept; these add to no balance)."""
    for kind, n in counts.items():
        step.stat_update(_key("count", REDACT, source, subset, kind), value=n)


def record_drop(step: PipelineStep, doc: Document, reason: str) -> None:
    md = doc.metadata
    record(step, DROP, md[SOURCE], md[SUBSET], md[BYTES_IN], reason)


@dataclass
class Tally:
    """Documents and bytes in, kept and dropped (by "stage/reason") for one source or subset."""

    docs_in: int = 0
    bytes_in: int = 0
    docs_kept: int = 0
    bytes_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_bytes: dict[str, int] = field(default_factory=dict)
    redacted: dict[str, int] = field(default_factory=dict)
    """PII replacements per kind (email, ip, phone, id_number)."""

    @property
    def docs_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        return self.docs_in == self.docs_kept + self.docs_dropped

    def add(self, kind: str, event: str, reason: str, value: int) -> None:
        if event == IN:
            attr = "docs_in" if kind == "docs" else "bytes_in"
            setattr(self, attr, getattr(self, attr) + value)
        elif event == KEPT:
            attr = "docs_kept" if kind == "docs" else "bytes_kept"
            setattr(self, attr, getattr(self, attr) + value)
        elif event == DROP:
            target = self.dropped if kind == "docs" else self.dropped_bytes
            target[reason] = target.get(reason, 0) + value
        elif event == REDACT:
            self.redacted[reason] = self.redacted.get(reason, 0) + value

    def merge(self, other: Tally) -> None:
        self.docs_in += other.docs_in
        self.bytes_in += other.bytes_in
        self.docs_kept += other.docs_kept
        self.bytes_kept += other.bytes_kept
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for reason, n in other.dropped_bytes.items():
            self.dropped_bytes[reason] = self.dropped_bytes.get(reason, 0) + n
        for kind, n in other.redacted.items():
            self.redacted[kind] = self.redacted.get(kind, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {"docs_in": self.docs_in, "docs_kept": self.docs_kept, "docs_dropped": self.docs_dropped,
                "bytes_in": self.bytes_in, "bytes_kept": self.bytes_kept,
                "bytes_dropped": sum(self.dropped_bytes.values()),
                "dropped": dict(sorted(self.dropped.items())),
                "dropped_bytes": dict(sorted(self.dropped_bytes.items())),
                "redacted": dict(sorted(self.redacted.items()))}


def _total(value: Any) -> int:
    return int(value["total"] if isinstance(value, dict) else value)


def collect(stats_files: Iterable[Path]) -> dict[str, dict[str, Tally]]:
    """Merge saved per-task datatrove stats into source -> subset -> Tally."""
    tallies: dict[str, dict[str, Tally]] = {}
    for path in stats_files:
        for step in json.loads(Path(path).read_text(encoding="utf-8")):
            for key, value in step.get("stats", {}).items():
                parts = key.split(SEP)
                if len(parts) != 6 or parts[0] != PREFIX:
                    continue
                _, kind, event, source, subset, reason = parts
                tally = tallies.setdefault(source, {}).setdefault(subset, Tally())
                tally.add(kind, event, reason, _total(value))
    return tallies


def total(subsets: dict[str, Tally]) -> Tally:
    out = Tally()
    for tally in subsets.values():
        out.merge(tally)
    return out
