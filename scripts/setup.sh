#!/usr/bin/env bash
# Create .venv and install mamba-kan into it.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh dev      + test/lint tools and the reference packages (mambapy, pykan, ray, selenium)
# Torch: if the venv has no torch yet we install the CPU build first, so that the `torch>=2.3` requirement is
# already satisfied and pip never pulls a multi-GB CUDA build. Override with TORCH_SPEC / TORCH_INDEX_URL, e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh
# GPU users: install a CUDA torch into .venv first (see README), this script then leaves it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    $PIP install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    $PIP install -q "$TORCH_SPEC"
  fi
fi
if [ "$EXTRAS" = "dev" ]; then
  $PIP install -q -e ".[dev]"
else
  $PIP install -q -e .
fi
"$VENV/bin/python" -c "import torch, mamba_kan; print(f'mamba-kan {mamba_kan.__version__} ready (torch {torch.__version__})')"
