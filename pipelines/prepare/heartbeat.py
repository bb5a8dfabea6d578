"""Progress files: datatrove runs steps in worker processes, so they report through small files.

A step writes `<dir>/<rank>.json` (atomically, at most twice a second); the process that drives
the run sums them up and calls the progress callback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flm.config.atomic import atomic_write_text

INTERVAL_S = 0.5


class Heartbeat:
    def __init__(self, directory: str, rank: int) -> None:
        self.path = Path(directory) / f"{rank:05d}.json"
        self._last = 0.0

    def beat(self, value: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < INTERVAL_S:
            return
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"value": value}))


def read_total(directory: Path) -> float:
    """Sum of the latest values reported by every rank under `directory`."""
    total = 0.0
    for path in Path(directory).glob("*.json"):
        try:
            total += float(json.loads(path.read_text(encoding="utf-8"))["value"])
        except (OSError, ValueError, KeyError):
            continue  # being replaced right now; the next poll reads it
    return total
