#!/usr/bin/env bash
# Create .venv and install the client (with its gateway extra), training and serving packages plus the test tools.
# Idempotent: re-installs only when a pyproject.toml or requirements-dev.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.emotion-ai-installed
if [ ! -f "$stamp" ] || [ -n "$(find client/pyproject.toml training/pyproject.toml serving/pyproject.toml \
     requirements-dev.txt -newer "$stamp")" ]; then
  echo "setup: installing packages into .venv (TensorFlow is large; first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e './client[gateway]' -e './training[quantize]' -e ./serving -r requirements-dev.txt
  touch "$stamp"
fi
