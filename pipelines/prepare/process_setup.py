"""Costs datatrove pays again and again in a process although their answer cannot change there: paid once.

Applied in the pipeline process before any stage is built (runner.py). Neither changes what a step
computes; both change only how often the same fact is looked up.
"""

from __future__ import annotations

import functools
import importlib.metadata


def cache_loguru_lib_dirs() -> None:
    """datatrove adds three loguru handlers per task, and loguru rebuilds its list of library folders from
    every sysconfig scheme for each (13 ms of CPU a time, a tenth of a sample-sized prepare run). The list
    cannot change within a process: computed once."""
    from loguru._better_exceptions import ExceptionFormatter

    lib_dirs = ExceptionFormatter._get_lib_dirs
    if not hasattr(lib_dirs, "cache_info"):
        ExceptionFormatter._get_lib_dirs = staticmethod(functools.cache(lib_dirs))  # type: ignore[method-assign]


@functools.cache
def distribution_installed(name: str) -> bool | None:
    """Whether a distribution of this name is installed (True, or None as datatrove says no), found by name."""
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return True


def look_up_distributions_by_name() -> None:
    """datatrove checks each step's dependencies when the step is built, and for each distribution name it
    parses the metadata of every installed distribution (25 ms a name; a MinHash step checks spaCy even
    when it shingles characters). importlib finds a distribution by its name directly."""
    from datatrove.utils import _import_utils

    _import_utils._is_distribution_available = distribution_installed


def set_up_pipeline_process() -> None:
    cache_loguru_lib_dirs()
    look_up_distributions_by_name()
