#!/usr/bin/env bash
# Writes examples/deploy/ from examples/demo.toml: the demo fleet as systemd
# units (installed in /srv/demo) and as Kubernetes manifests (an image with the
# demo in /app).  tests/test_export.py runs this into a scratch directory and
# fails when what is committed here is stale: then run
#     bash examples/deploy/export.sh
# Usage: export.sh [OUT_DIR]   (default: this directory)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"
py="${FORKWELL_PY:-python3}"
demo="$here/../demo.toml"
# The demo's python3 as Debian installs it, whatever this machine's own PATH.
export PATH=/usr/bin:/bin
systemd=(--root /srv/demo --forkwell /usr/local/bin/forkwell)
"$py" -m forkwell export systemd -c "$demo" -o "$out/systemd" "${systemd[@]}" --systemd-version 252
"$py" -m forkwell export systemd -c "$demo" -o "$out/systemd-single" "${systemd[@]}" --single
"$py" -m forkwell export kubernetes -c "$demo" --image demo:latest -o "$out/kubernetes.yaml"
"$py" -m forkwell export kubernetes -c "$demo" --image demo:latest --pod -o "$out/kubernetes-pod.yaml"
