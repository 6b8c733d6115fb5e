#!/usr/bin/env bash
# Run the test suite in the project venv. pytest's "no tests collected" (exit 5) counts as a failure here:
# a suite that silently runs nothing must not look green.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
exec "$VENV/bin/python" -m pytest -q "$@"
