#!/usr/bin/env bash
# Installs what the benchmarks compare against.  Idempotent; needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e '.[test]'
# Bytecode for forkwell itself, as a regular install has: this machine sets
# PYTHONDONTWRITEBYTECODE=1, which would make every CLI start compile from source.
python3 -m compileall -q src >/dev/null
# Peers from PyPI (one per line in bench/requirements.txt).
pip install -q -r bench/requirements.txt
# Peers from Debian.
if command -v apt-get >/dev/null; then
  need=()
  for pkg in $(grep -v '^#' bench/debian-packages.txt); do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
