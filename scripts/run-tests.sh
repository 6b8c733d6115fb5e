#!/usr/bin/env bash
# Run the test suite in the project venv. pytest's "no tests collected" (exit 5) counts as a failure here:
# a suite that silently runs nothing must not look green.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
# The suite peaks at ~3 GB under the temp folder (a passing test's tmp_path goes when it ends; see pyproject.toml):
# say what is free first, so a full disk reads as that and not as 400 failing tests.
tmp="${TMPDIR:-/tmp}"
free_gb=$(df -Pk "$tmp" | awk 'NR==2 {print int($4 / 1048576)}')
echo "run-tests: ${free_gb} GB free under $tmp (the suite needs about 3 GB there, plus the engine's images)"
if [ "$free_gb" -lt 4 ]; then
    echo "run-tests: warning: under 4 GB free; image and registry tests may fail with 'No space left on device'" >&2
fi
exec "$VENV/bin/python" -m pytest -q "$@"
