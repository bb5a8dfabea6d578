"""Where the files that ship with flm are: the bundled configs and the sample corpus.

They are package data (`flm.configs`, `flm.sample`), so the same lookup works in a source checkout,
an editable install and an installed wheel, from any working directory.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def _package_dir(package: str) -> Path:
    return Path(str(files(package)))


def configs_dir() -> Path:
    """The bundled configs folder (stages/, pipelines/, mixtures/, recipes/); FLM_CONFIG_DIR overrides it."""
    env = os.environ.get("FLM_CONFIG_DIR")
    return Path(env) if env else _package_dir("flm.configs")


def sample_dir() -> Path:
    """The bundled sample corpus: raw/pile/*.jsonl.zst and raw/wudao/*.json (licences in LICENSE.md)."""
    return _package_dir("flm.sample")
