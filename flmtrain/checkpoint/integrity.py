"""`checksums.json`: what every file of a checkpoint held when it was saved, so a flipped byte or a cut file is
found before its weights are trained on, grown or exported.

Files of the "torch" format (and state.json, RNG) are hashed (sha256); the shards of the "megatron" format,
many GB at scale, are recorded by size only. A checkpoint saved before checksums existed verifies as is.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flm.train.checkpoint.meta import META_NAME, CheckpointError

CHECKSUMS_NAME = "checksums.json"
SIZE_ONLY_DIRS = ("dist",)
"""Folders whose files are checked by size (megatron dist_checkpointing shards)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    skip = {CHECKSUMS_NAME, META_NAME}
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in skip)


def _record(directory: Path, path: Path) -> dict[str, int | str]:
    rel = path.relative_to(directory)
    entry: dict[str, int | str] = {"bytes": path.stat().st_size}
    if rel.parts[0] not in SIZE_ONLY_DIRS:
        entry["sha256"] = _sha256(path)
    return entry


def write_checksums(directory: Path) -> None:
    """Record every file of a checkpoint being written (before meta.json, which marks it complete)."""
    directory = Path(directory)
    table = {str(p.relative_to(directory)): _record(directory, p) for p in _files(directory)}
    (directory / CHECKSUMS_NAME).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def verify_checkpoint(directory: Path) -> None:
    """CheckpointError naming the first file that is missing or differs from what was saved."""
    directory = Path(directory)
    path = directory / CHECKSUMS_NAME
    if not path.is_file():
        return  # saved by an flm without checksums
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: malformed JSON: {err}") from err
    for name, want in sorted(table.items()):
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; the checkpoint is incomplete")
        if file.stat().st_size != want.get("bytes"):
            raise CheckpointError(f"{file}: {file.stat().st_size} bytes, saved as {want.get('bytes')}; truncated?")
        if "sha256" in want and _sha256(file) != want["sha256"]:
            raise CheckpointError(f"{file}: contents differ from what was saved (sha256); the file is corrupt")
