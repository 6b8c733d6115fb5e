#!/usr/bin/env bash
# Tools some tests use to check our outputs independently: skopeo (saved and pushed images), umoci (unpacks our OCI
# layouts as a second reader), Chromium (the HTML report
# in a real browser) and a real registry (docker-registry, served on 127.0.0.1 by the tests, plain and with htpasswd
# auth over TLS: htpasswd and openssl). Installed from Debian packages when missing and we are root; otherwise those tests skip.
set -uo pipefail
missing=()
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)  # the registry's htpasswd auth
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # a self-signed CA for the TLS registry
[ -x /usr/bin/time ] || missing+=(time)  # GNU time: a child swcli's peak memory (tests/distribute/test_pull_bounds.py)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-test-tools: ${missing[*]} missing; the tests that need them will skip (sudo apt-get install ${missing[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
