"""The audit trail: dropped documents written beside the clean output with their reason, and read back.

Every step that drops documents is a datatrove filter (`BaseFilter`, or datatrove's dedup filters)
and takes an `exclusion_writer`, datatrove's own mechanism; ours is `AuditWriter`, which writes
`CLEAN/<source>/dropped/<step>/<rank>.jsonl.zst` (a subfolder: never read as clean text), one
`{"id", "reason", "source", "subset", "text", "meta"}` per line. With `audit.sample < 1` a seeded
hash of (reason, id) picks the same share of each reason's drops in every run and on every resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import xxhash
from datatrove.data import Document
from datatrove.pipeline.writers import JsonlWriter

from flm.pipelines.config import AuditConfig
from flm.pipelines.jsonl_zst import FSSPEC_ZSTD, split_lines, zstd_chunks
from flm.pipelines.prepare.schema import META, SOURCE, SUBSET

DROPPED_DIR = "dropped"
REASON_KEY = "filter_reason"
"""Where datatrove's BaseFilter puts the reason of a document it hands its exclusion writer."""


def _audit_record(writer: Any, doc: Document) -> dict[str, Any]:
    md = doc.metadata
    return {"id": doc.id, "reason": md.get(REASON_KEY, ""), "source": md.get(SOURCE, ""),
            "subset": md.get(SUBSET, ""), "text": doc.text, "meta": md.get(META, {})}


def sampled(doc_id: str, reason: str, cfg: AuditConfig) -> bool:
    """Whether this drop is among the `cfg.sample` share written (the same answer in every run)."""
    if cfg.sample >= 1.0:
        return True
    return xxhash.xxh64_intdigest(f"{reason}\0{doc_id}".encode(), seed=cfg.seed) < cfg.sample * 2**64


class AuditWriter(JsonlWriter):
    """datatrove exclusion writer of one step; `reason` names drops whose filter gives none (dedup)."""

    name = "🗂️ dropped documents"

    def __init__(self, clean_dir: str, step: str, cfg: AuditConfig, reason: str = "") -> None:
        super().__init__(f"{clean_dir}/{DROPPED_DIR}/{step}", output_filename="${rank}.jsonl.zst",
                         compression=FSSPEC_ZSTD, adapter=_audit_record)
        self.cfg = cfg
        self.reason = reason

    def write(self, document: Document, rank: int = 0, **kwargs: Any) -> None:
        reason = document.metadata.get(REASON_KEY) or self.reason
        document.metadata[REASON_KEY] = reason
        if sampled(document.id, reason, self.cfg):
            super().write(document, rank, **kwargs)


def dropped_files(folder: Path) -> list[Path]:
    """The audit files of a clean folder (CLEAN or CLEAN/<source>), sorted."""
    folder = Path(folder)
    here = sorted(folder.glob(f"{DROPPED_DIR}/*/*.jsonl.zst"))
    return here or sorted(folder.glob(f"*/{DROPPED_DIR}/*/*.jsonl.zst"))


def iter_dropped(folder: Path, reason: str = "") -> Iterator[dict[str, Any]]:
    """Dropped documents whose reason is `reason` or starts with it (`quality`, `quality/gopher_quality`, ...)."""
    files = dropped_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no {DROPPED_DIR}/<step>/*.jsonl.zst here or in a <source>/ folder; "
                                "prepare with --set audit.enabled=true to write dropped documents")
    for path in files:
        with path.open("rb") as fh:
            for line in split_lines(zstd_chunks(fh, lambda: None)):
                if not line.strip():
                    continue
                item = orjson.loads(line)
                if matches_reason(item["reason"], reason):
                    yield item


def matches_reason(reason: str, wanted: str) -> bool:
    """`wanted` is empty, the reason itself, or a leading part of it ending at a / or : boundary."""
    if not wanted or reason == wanted:
        return True
    stem = wanted.rstrip("/:")
    return reason.startswith((stem + "/", stem + ":"))


def reason_counts(folder: Path) -> dict[str, int]:
    """Dropped documents written per reason (all of them, or the sample)."""
    counts: dict[str, int] = {}
    for item in iter_dropped(folder):
        counts[item["reason"]] = counts.get(item["reason"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
