#!/usr/bin/env bash
# Tools some tests use to check our outputs independently: skopeo (saved images) and Chromium (the HTML report
# in a real browser). Installed from Debian packages when missing and we are root; otherwise those tests skip.
set -uo pipefail
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-test-tools: ${missing[*]} missing; the tests that need them will skip (sudo apt-get install ${missing[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
