#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: ruff check" >&2
.venv/bin/ruff check .
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
