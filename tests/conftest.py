"""Shared fixtures: paths to the repository, its configs and the bundled sample corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled sample corpus: data/sample/raw/{pile,wudao}/ in the published formats."""
    return REPO / "data" / "sample" / "raw"
