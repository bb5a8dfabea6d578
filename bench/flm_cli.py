"""Run an `flm` command from a bench script and read its --json result, in one process or under torchrun."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class FlmFailed(RuntimeError):
    """An `flm` command exited non-zero; the message holds the command and the end of its stderr."""


def flm(*args: str, procs: int = 1) -> dict:
    """`flm ARGS --json` run from the repository root (under torchrun with `procs` processes if procs > 1);
    returns the JSON object it printed last."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"] \
        if procs > 1 else [sys.executable]
    cmd = [*launch, "-m", "flm.cli.main", *args, "--json"]
    print("$", shlex.join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FlmFailed(f"{shlex.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
