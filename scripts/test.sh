#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, type checks, import contracts, the docs build (mkdocs --strict), then pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test: ruff check" >&2
.venv/bin/ruff check .
echo "test: mypy" >&2
.venv/bin/mypy
echo "test: mkdocs build --strict" >&2
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
echo "test: lint-imports" >&2
.venv/bin/lint-imports --no-logo
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
