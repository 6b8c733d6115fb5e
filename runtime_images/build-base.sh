#!/usr/bin/env bash
# Build swcli's default base image from Debian packages, with no registry: Debian bookworm (minbase) + python3
# 3.11 + a non-root user `swcli` (uid 1000). Skips the work when the image exists (FORCE=1 rebuilds).
#
# The rootfs tar comes from `python -m builder.images.base` (mmdebstrap with a fixed SOURCE_DATE_EPOCH: the same
# packages give a byte-identical tar), cached under $BASE_CACHE, so FORCE=1 with an unchanged package list only
# re-imports it. MIRROR pins the archive (e.g. a dated http://snapshot.debian.org/archive/debian/... URL).
#
# Users with registry access can build on any image with python3 of the env's minor version instead
# (`base_image: python:3.11-slim`, CUDA images...).
set -euo pipefail

IMAGE="${BASE_IMAGE:-swcli/base:bookworm-py3.11}"
SUITE="${SUITE:-bookworm}"
BASE_CACHE="${SWCLI_BASE_CACHE:-$HOME/.cache/swcli-base}"  # shared by every store: content-keyed
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"


if ! command -v mmdebstrap >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-base: mmdebstrap is missing (sudo apt-get install mmdebstrap)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
fi

SWCLI_PYTHON="${SWCLI_PYTHON:-$ROOT/.venv/bin/python}"
if [ -x "$SWCLI_PYTHON" ] && [ "$IMAGE" = swcli/base:bookworm-py3.11 ]; then
  # the base as swcli writes it (the rootfs tar as a layer, a config of ours) into the store, loaded into the
  # engine: the engine then runs the very base every build writes on, with the same id on every machine
  SWCLI_BASE_CACHE="$BASE_CACHE" "$SWCLI_PYTHON" -m builder.images.base_image --load --tag "$IMAGE"
  docker run --rm "$IMAGE" python3 -c 'import sys; print("base image ready: python", sys.version.split()[0])'
  exit 0
fi

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image $IMAGE exists"
  exit 0
fi


echo "build-base: mmdebstrap $SUITE (minbase + python3) ..."
mirror_args=()
if [ -n "${MIRROR:-}" ]; then mirror_args=(--mirror "$MIRROR"); fi
tar="$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m builder.images.base --quiet \
  --out "$BASE_CACHE" --suite "$SUITE" "${mirror_args[@]}")"
docker import \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "swcli base: debian $SUITE minbase + python3" \
  "$tar" "$IMAGE" >/dev/null
docker run --rm "$IMAGE" python3 -c 'import sys; print("base image ready: python", sys.version.split()[0])'
