#!/usr/bin/env bash
# Installs everything the test suite uses, then nothing else: the project's
# test extra from PyPI, and the real tools the tests compare forkwell with
# (tests/debian-packages.txt) from Debian.  Idempotent and quiet when all is
# there.  Debian packages need root (CI runs as root); without root, the
# tests that need a missing tool skip and name the package to install.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  need=()
  for pkg in $(grep -v '^#' tests/debian-packages.txt); do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "tests/setup.sh: installing ${need[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
pip install -q -e '.[test]'
