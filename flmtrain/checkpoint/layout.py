"""Where checkpoints live: `<run_dir>/checkpoints/step-N/`, complete only once renamed into place.

A save goes to `.step-N.tmp/` and is renamed to `step-N/` only when complete (meta.json written last), so a
crash mid-save leaves the previous checkpoint as the latest usable one; stale temporary directories are
removed by the next save.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from flm.train.checkpoint.integrity import verify_checkpoint
from flm.train.checkpoint.meta import META_NAME, CheckpointError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_NAME = "state.json"
STEP_RE = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".step-"


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (a `step-N` dir holding meta.json), oldest first."""
    found = []
    if Path(root).is_dir():
        for path in Path(root).iterdir():
            match = STEP_RE.match(path.name)
            if match and path.is_dir() and (path / META_NAME).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def latest_intact_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose files match their checksums; newer broken ones are skipped with a warning
    that names each and why (their folders stay, for the user to look at)."""
    for _, path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            log.warning("skipping %s for resume: %s", path, err)
            continue
        return path
    return None


def resolve_checkpoint(path: Path | str) -> Path:
    """What a user names as a checkpoint: a `step-N` folder, or a run directory (or its checkpoints/ folder),
    meaning its newest intact checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: does not exist")
    if (path / META_NAME).is_file():
        return path
    for root in (checkpoints_root(path), path):
        if root.is_dir() and list_checkpoints(root):
            found = latest_intact_checkpoint(root)
            if found is None:
                raise CheckpointError(f"{root}: every checkpoint fails its checksums")
            return found
    raise CheckpointError(f"{path}: neither a checkpoint (no {META_NAME}) nor a run directory with checkpoints")


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """`latest` (the run dir's newest checkpoint, if any), `none`, or a checkpoint path (or another run dir:
    its newest intact checkpoint)."""
    if resume == "none":
        return None
    if resume == "latest":
        return latest_intact_checkpoint(checkpoints_root(run_dir))
    return resolve_checkpoint(resume)


def read_state(path: Path) -> dict[str, Any]:
    """state.json: step, LR schedule, data position and counters."""
    return json.loads((Path(path) / STATE_NAME).read_text(encoding="utf-8"))


def write_state(directory: Path, state: dict[str, Any]) -> None:
    (Path(directory) / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def commit_directory(tmp: Path, final: Path) -> None:
    """Rename a completely written temporary checkpoint directory into place (replacing one of the same step)."""
    if final.exists():  # re-saving the same step (e.g. a resumed run that stopped at once)
        old = final.parent / f"{TMP_PREFIX}{final.name}.old.tmp"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


def discard_partial(root: Path, step: int) -> None:
    """Remove the temporary folder a failed save of `step` left, so a full disk gets back the space the
    half-written checkpoint took; complete checkpoints are never touched."""
    shutil.rmtree(Path(root) / f"{TMP_PREFIX}{step}.tmp", ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns what was removed."""
    removed = [path for _, path in list_checkpoints(root)[:-keep_last]]
    for path in removed:
        shutil.rmtree(path)
    return removed
