#!/usr/bin/env bash
# The one install script: `make demo`, `make test`, CI and docker/Dockerfile all call it, so the
# image and CI cannot drift apart.
# Usage: scripts/install.sh [PYTHON]   (PYTHON: the interpreter to install into; default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-}"
if [ -z "$PY" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  PY=.venv/bin/python
fi
stamp="$(dirname "$PY")/../.amm-installed"
# Reinstall only when pyproject.toml changed since the last install into this environment.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
"$PY" -m pip install -q --upgrade pip
# torch first, pinned: 2.14.1 is the newest this project allows (and lies on this machine's disk).
"$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q -e ".[dev]"
touch "$stamp"
