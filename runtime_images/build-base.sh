#!/usr/bin/env bash
# Build swcli's default base image from Debian packages, with no registry: Debian bookworm (minbase) + python3
# 3.11 + a non-root user `swcli` (uid 1000). Skips the work when the image exists (FORCE=1 rebuilds).
#
# Users with registry access can build on any image with python3 of the env's minor version instead
# (`base_image: python:3.11-slim`, CUDA images...).
set -euo pipefail

IMAGE="${BASE_IMAGE:-swcli/base:bookworm-py3.11}"
SUITE="${SUITE:-bookworm}"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists"
  exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-base: mmdebstrap is missing (sudo apt-get install mmdebstrap)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "build-base: mmdebstrap $SUITE (minbase + python3) ..."
mmdebstrap --quiet --variant=minbase --include=python3,ca-certificates \
  --customize-hook='chroot "$1" useradd --uid 1000 --create-home --shell /bin/sh swcli' \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
  "$SUITE" "$work/rootfs.tar"
docker import \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "swcli base: debian $SUITE minbase + python3" \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
docker run --rm "$IMAGE" python3 -c 'import sys; print("base image ready: python", sys.version.split()[0])'
