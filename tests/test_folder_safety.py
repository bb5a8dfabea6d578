"""One process per output folder, and --fresh deletes only what flm wrote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flm.cli.main import app
from flm.config import find_config, load_config
from flm.config.folder_lock import LOCK_NAME, FolderInUse, folder_lock
from flm.pipelines.config import PipelineConfig
from flm.pipelines.prepare.run import prepare
from flm.recipe.run import RESULTS_DIR, RecipeError, fresh

HOLD = """
import sys, time
from flm.config.folder_lock import folder_lock
with folder_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(60)
"""


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A second process that holds `folder`'s lock until the block ends (then it is killed with SIGKILL)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    with (folder_lock(tmp_path / "run", "test"), pytest.raises(FolderInUse, match=r"in use by pid \d+ on "),
          folder_lock(tmp_path / "run", "test")):
        pass
    with folder_lock(tmp_path / "run", "test"):  # released: taken again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    with (held_by_another_process(tmp_path) as child, pytest.raises(FolderInUse, match=f"pid {child.pid} "),
          folder_lock(tmp_path, "test")):
        pass
    assert (tmp_path / LOCK_NAME).exists()  # left behind by kill -9, and not in the way:
    with folder_lock(tmp_path, "test"):
        pass


def test_a_forked_child_does_not_keep_its_parents_folder(tmp_path: Path) -> None:
    """The prepare pipeline runs in a forked process (and Ray or datatrove may fork more): once the parent
    lets go of the folder, the folder is free, though a child forked while it was held still runs."""
    ready, started = os.pipe()
    with folder_lock(tmp_path, "testing"):
        child = os.fork()
        if child == 0:
            os.write(started, b"1")  # past fork's hooks: running Python code
            time.sleep(5)
            os._exit(0)
        assert os.read(ready, 1) == b"1"
    try:
        with folder_lock(tmp_path, "testing"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(started)


def test_prepare_refuses_an_output_folder_in_use(tmp_path: Path, sample_dir: Path) -> None:
    cfg = load_config(PipelineConfig, find_config("pile", "pipelines"))
    out = tmp_path / "clean"
    with held_by_another_process(out), pytest.raises(FolderInUse, match="prepare writes into a folder"):
        prepare([cfg], sample_dir, out)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written


def test_train_refuses_a_run_directory_in_use(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with held_by_another_process(run_dir):
        started = time.perf_counter()
        result = CliRunner().invoke(app, ["train", "--stage", "tiny", "--mixture", "configs/mixtures/sample.yaml",
                                          "--run-dir", str(run_dir), "--steps", "1"])
    assert result.exit_code == 1 and "is in use by pid" in result.stderr, result.output
    assert time.perf_counter() - started < 60


def test_fresh_removes_only_the_recipes_outputs(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    (out / RESULTS_DIR).mkdir(parents=True)
    for name in ("raw/pile", "runs/tiny/checkpoints"):
        (out / name).mkdir(parents=True)
    (out / "mixture.yaml").write_text("sources: []\n")
    (out / "notes.txt").write_text("mine\n")
    assert sorted(fresh(out)) == sorted([RESULTS_DIR, "mixture.yaml", "raw", "runs"])
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, "notes.txt"])


def test_fresh_refuses_a_folder_flm_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}\n")
    with pytest.raises(RecipeError, match="flm did not write it"):
        fresh(tmp_path)
    result = CliRunner().invoke(app, ["run", "quickstart", "--out", str(tmp_path), "--fresh", "--stages", "raw"])
    assert result.exit_code == 1 and "flm did not write it" in result.stderr
    assert (tmp_path / "thesis.tex").exists()
