#!/usr/bin/env bash
# Build the wheel, install it into a clean venv (dependencies pinned by requirements.lock) and run the entrypoint
# tests against that venv's `swcli`: an editable install hides packaging bugs (missing templates, a dependency
# imported but not declared), a clean venv shows them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
work="$(mktemp -d /tmp/swcli-wheel.XXXXXX)"
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -c requirements.lock "$work"/dist/swcli-*.whl
"$work/venv/bin/pip" check
echo "wheel-test: $(ls "$work"/dist) installed into a clean venv"
SWCLI_BIN="$work/venv/bin/swcli" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m entrypoint tests/cli/test_entrypoint.py
