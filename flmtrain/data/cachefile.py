"""Atomic cache files: written under a temporary name and renamed, so readers never see half a file."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> bool:
    """Write `path` through `write(file)`; False (logged) when the cache is not writable: a miss only costs time."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        return True
    except OSError as err:
        log.warning("cannot write cache file %s: %s", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False
