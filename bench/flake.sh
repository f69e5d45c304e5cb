#!/usr/bin/env bash
# Runs the test suite N times under load and reports every failure: a flaky
# test is a bug to fix, never one to retry.
#
#   bash bench/flake.sh N [MODE] [PYTEST ARGS...]
#
# MODE is how the machine is loaded while the suite runs:
#   busy     two busy loops (one per core of this 2-core machine); the default
#   onecore  the suite pinned to one core (taskset -c 0), nothing else
#   idle     no load, for a baseline
# Writes each run's log to bench/flake-logs/ and prints one line per run and a
# summary naming every failed test with the runs it failed in.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
mode=${2:-busy}
shift $(( $# > 2 ? 2 : $# ))
logs=bench/flake-logs
mkdir -p "$logs"

busy=()
stop_busy() { for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null; done; busy=(); }
trap stop_busy EXIT

prefix=()
case "$mode" in
  busy) for _ in 1 2; do (while :; do :; done) & busy+=($!); done ;;
  onecore) prefix=(taskset -c 0) ;;
  idle) ;;
  *) echo "flake.sh: unknown mode $mode (busy, onecore, idle)" >&2; exit 2 ;;
esac

failed_runs=0
: > "$logs/failures.txt"
for i in $(seq 1 "$runs"); do
  log="$logs/run-$mode-$i.log"
  start=$(date +%s)
  "${prefix[@]}" python3 -m pytest -q -p no:cacheprovider "$@" > "$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  summary=$(tail -n 1 "$log")
  echo "run $i/$runs ($mode): exit $rc in ${took}s: $summary"
  if [ "$rc" -ne 0 ]; then
    failed_runs=$((failed_runs + 1))
    grep -E '^(FAILED|ERROR) ' "$log" | sed "s/^/run $i: /" >> "$logs/failures.txt"
  fi
done
stop_busy
echo
echo "$failed_runs of $runs runs failed ($mode)"
if [ -s "$logs/failures.txt" ]; then
  echo "failures (test, then the runs it failed in):"
  sed -E 's/^run ([0-9]+): (FAILED|ERROR) ([^ ]+).*/\3 \1/' "$logs/failures.txt" |
    awk '{runs[$1] = runs[$1] " " $2} END {for (t in runs) print "  " t ":" runs[t]}'
fi
[ "$failed_runs" -eq 0 ]
