"""The wheel: it ships every module and data file, and the installed `flm` works outside the repository.

The editable install hides packaging mistakes (a sub-package missing from pyproject's explicit `packages` list,
data files left out of package-data, paths relative to the checkout), so this builds the wheel from a copy of
the sources, installs it with --no-deps into a fresh venv and runs its console script from a temporary folder.
The fresh venv finds the dependencies (torch, datatrove, ...) through a plain path to this interpreter's
site-packages in a .pth file: a path line is only appended to sys.path, so the .pth files there, the editable
install's finder among them, never run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SOURCE_PACKAGES = {"cli": "flm/cli", "pipelines": "flm/pipelines", "tokenizer": "flm/tokenizer",
                   "flmtrain": "flm/train", "flmconfig": "flm/config", "recipe": "flm/recipe"}
"""Source folder -> where its modules land in the wheel (pyproject's [tool.setuptools.package-dir])."""
DATA_PACKAGES = {"configs": "flm/configs", "data/sample": "flm/sample"}
BUILD_INPUTS = ("pyproject.toml", "README.md", *SOURCE_PACKAGES, *DATA_PACKAGES)

# Cheap enough for CI (about 15 s on 2 cores); the mark lets a local run skip it with -m "not wheel".
pytestmark = pytest.mark.wheel


def expected_wheel_files() -> set[str]:
    """Every module under the mapped source folders, every bundled config, the sample corpus and its licence."""
    expected = {f"{dst}/{path.relative_to(REPO / src).as_posix()}"
                for src, dst in SOURCE_PACKAGES.items() for path in (REPO / src).rglob("*.py")}
    expected |= {f"flm/configs/{path.relative_to(REPO / 'configs').as_posix()}"
                 for path in (REPO / "configs").rglob("*.yaml")}
    sample = REPO / "data" / "sample"
    expected |= {f"flm/sample/{path.relative_to(sample).as_posix()}"
                 for path in (sample / "raw").rglob("*") if path.is_file()}
    expected.add("flm/sample/LICENSE.md")
    return expected


def run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with an environment that cannot point Python back at the repository; fail with its output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FLM_CONFIG_DIR")}
    env["PYTHONNOUSERSITE"] = "1"
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (building in the checkout would rewrite its build/ and
    flm.egg-info/, which the editable install and a stale build/lib could then leak into the wheel)."""
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", dist, src], cwd=src)
    (built,) = dist.glob("flm-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (from the base interpreter) with the wheel installed and the test venv's packages on a path."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=root.parent)
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=root.parent).stdout.strip())
    dep_dirs = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "deps.pth").write_text("".join(f"{d}\n" for d in dep_dirs), encoding="utf-8")  # after the install
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory outside the repository, so nothing resolves relative to the checkout."""
    assert not tmp_path.resolve().is_relative_to(REPO)
    return tmp_path


def site_packages(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site.resolve()


def test_wheel_ships_every_module_and_data_file(wheel: Path) -> None:
    """A sub-package missing from pyproject's `packages` list, or a data pattern that misses files, fails here."""
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_wheel_files() - names)
    assert not missing, f"{wheel.name} lacks {len(missing)} file(s): {missing}"
    strays = sorted(n for n in names if not n.startswith(("flm/", "flm-")))
    assert not strays, f"{wheel.name} ships files outside the flm namespace: {strays}"


def test_installed_package_is_the_wheel_not_the_checkout(venv: Path, outside: Path) -> None:
    code = ("import json, flm, flm.train, flm.cli.main, flm.config.bundled as b; "
            "print(json.dumps([*flm.__path__, flm.train.__file__, flm.cli.main.__file__, "
            "str(b.configs_dir()), str(b.sample_dir())]))")
    paths = json.loads(run([venv / "bin" / "python", "-c", code], cwd=outside).stdout)
    site = site_packages(venv)
    assert all(Path(p).resolve().is_relative_to(site) for p in paths), paths


def test_installed_flm_config_show(venv: Path, outside: Path) -> None:
    """The console script starts and finds the bundled stage configs as package data."""
    cfg = json.loads(run([venv / "bin" / "flm", "config", "show", "tiny", "--json"], cwd=outside).stdout)
    assert cfg["name"] == "tiny" and cfg["model"]["layers"] > 0


def test_installed_flm_runs_quickstart_raw_and_prepare(venv: Path, outside: Path) -> None:
    """The quickstart's first stages read the bundled sample and pipeline configs from the installed package.

    prepare is cut to 100 documents per input file, one worker and one minhash bucket (about 7 s instead of 35 s):
    this checks packaging, tests/test_quickstart.py checks the full run.
    """
    out = outside / "qs"
    proc = run([venv / "bin" / "flm", "run", "quickstart", "--stages", "raw,prepare", "--out", out, "--json",
                "--set", "data.workers=1",
                "--set", "data.pipeline_overrides=[reader.limit=100, minhash.num_buckets=1]"], cwd=outside)
    summary = json.loads(proc.stdout)
    assert set(summary["seconds"]) == {"raw", "prepare"}

    site = site_packages(venv)
    sample = REPO / "data" / "sample" / "raw"
    raw = json.loads((out / ".recipe" / "raw.json").read_text(encoding="utf-8"))
    links = sorted((out / "raw" / "pile").iterdir())
    assert raw["pile_files"] == len(links) == len(list((sample / "pile").glob("*.jsonl.zst")))
    assert all(link.resolve().is_relative_to(site / "flm" / "sample") for link in links), links
    assert [Path(p).resolve().is_relative_to(site) for p in raw["wudao"]["inputs"]] == [True]
    assert raw["wudao"]["files"] == len(list((sample / "wudao").glob("*.json"))) and raw["wudao"]["docs"] > 0

    docs = summary["documents"]
    assert 0 < docs["docs_kept"] < docs["docs_in"]
    assert docs["docs_in"] == docs["docs_kept"] + sum(summary["dropped"].values())
    for source in ("pile", "wudao"):
        assert list((out / "clean" / source).glob("*.jsonl.zst")), f"prepare wrote no {source} shards"
