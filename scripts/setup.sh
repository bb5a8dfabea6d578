#!/usr/bin/env bash
# Create .venv and install flm with its dev and ray extras (CPU torch). Idempotent: rerunning is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0   # CPU wheel; on a GPU box install your CUDA torch first
.venv/bin/python -m pip install -q -e '.[dev,ray]'   # ray: for the --executor ray tests (~35 s)
