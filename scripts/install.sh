#!/usr/bin/env bash
# Creates .venv and installs Graft into it: the CPU build of torch first (pinned, so nothing
# pulls a multi-GB CUDA build), then the project. `--dev` adds the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${GRAFT_TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==$TORCH_VERSION"
fi
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
# The constraint keeps the torch installed above: no dependency may replace it.
.venv/bin/python -m pip install --quiet --constraint <(echo "torch==$TORCH_VERSION") -e ".$extras"
