#!/usr/bin/env bash
# The one install script: `make demo`, `make test`, CI and docker/Dockerfile all call it, so the
# image and CI cannot drift apart.
# Usage: scripts/install.sh [PYTHON]   (PYTHON: the interpreter to install into; default: .venv)
# One line per phase; pip's own output goes to a log file beside the environment, printed only
# when a phase fails. AMM_TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU-only
# torch (no CUDA libraries: about 0.9 GB instead of 6.5 GB; README.md, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-}"
if [ -z "$PY" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "install: creating .venv"
    python3 -m venv .venv
  fi
  PY=.venv/bin/python
fi
stamp="$(dirname "$PY")/../.amm-installed"
# Reinstall only when pyproject.toml changed since the last install into this environment.
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
log="$(cd "$(dirname "$PY")/.." && pwd)/amm-install.log"
: >"$log"

phase() {  # phase "what" command...: one line, the command's output into the log
  local what="$1"
  shift
  echo "install: $what"
  if ! "$@" >>"$log" 2>&1; then
    echo "install: FAILED: $what; the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

torch_index=()
if [ -n "${AMM_TORCH_INDEX:-}" ]; then
  torch_index=(--index-url "$AMM_TORCH_INDEX")
fi
phase "pip (upgrade)" "$PY" -m pip install -q --upgrade pip
# torch first, pinned: 2.14.1 is the newest this project allows (and lies on this machine's disk).
phase "torch 2.14.1, torchvision 0.29.1 (the default wheel brings ~3.2 GB of CUDA libraries)" \
  "$PY" -m pip install -q "${torch_index[@]}" "torch==2.14.1" "torchvision==0.29.1"
phase "amm-sweeps and its dependencies (ray, mlflow, optuna, pandas, ...)" \
  "$PY" -m pip install -q -e ".[dev]"
touch "$stamp"
echo "install: done (pip's output: $log)"
