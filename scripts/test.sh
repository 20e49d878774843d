#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine: a virtualenv (.venv), PyTorch 2.13.0 (the CPU
# build on CPU-only machines), the project with its test extras, Debian's Chromium for the browser
# tests (installed when run as root with apt-get; otherwise those tests skip with a reason), then
# pytest. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
# keep the torch build installed above (CPU or CUDA): the test extras must not replace it
TORCH_PIN=$(python -c "import torch; print(torch.__version__.split('+')[0])")
python -m pip install -q -c <(echo "torch==$TORCH_PIN") -e ".[test]"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser tests..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium not found and not root: browser tests will be skipped" >&2
  fi
fi
# No `ray stop` here: it would stop every Ray instance on the machine, a user's live sweep
# included. Each test session starts Ray only in its own temp dir (tests/conftest.py sets
# RAY_TMPDIR and drops RAY_ADDRESS) and stops only what it started.
exec python -m pytest -q -ra "$@"
