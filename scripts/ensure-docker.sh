#!/usr/bin/env bash
# Make sure a Docker engine answers: start dockerd when installed but stopped, install Debian's docker.io when
# missing and we are root, otherwise say what to do. Idempotent; used by `make docker`, `make test` and .ci/run.
set -euo pipefail

answers() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && answers; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: no Docker engine; install one (Debian: sudo apt-get install docker.io) and start it" >&2
    exit 1
  fi
  echo "ensure-docker: installing docker.io from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: dockerd is installed but not running; start it (sudo systemctl start docker)" >&2
  exit 1
fi

log="${DOCKERD_LOG:-/tmp/swcli-dockerd.log}"
echo "ensure-docker: starting dockerd (log: $log)" >&2
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if answers; then
    exit 0
  fi
  sleep 1
done
echo "ensure-docker: dockerd did not answer within 60 s; see $log" >&2
tail -n 5 "$log" >&2 || true
exit 1
