#!/bin/sh
# Ingest at two commits, measured in turn on this machine: the A/B behind the
# "before and after" ingest tables of docs/performance.md. Runs `eventpipe
# bench` from a checkout of each commit (the current virtualenv, the commit's
# own source first on PYTHONPATH), alternating BEFORE and AFTER so that drift
# in the machine's load hits both alike, and prints each run's drain ratio and
# its publish -> queryable p50 and p99 per rate. Every output is kept.
#
#   scripts/ab.sh BEFORE AFTER [RUNS]            RUNS of each, default 4
#   scripts/ab.sh c340249 HEAD 2 -- --rates 500  other bench options after --
#
# Default bench options: --only drain,latency --count 300000 --rates 2000
# --latency-seconds 90 (900 samples a run: with 150, runs of one commit
# differed by 20 to 40 ms at p99). Keep the machine otherwise idle.
set -eu

if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
before=$1 after=$2
shift 2
runs=4
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  runs=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
  set -- --only drain,latency --count 300000 --rates 2000 --latency-seconds 90
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
out=$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-ab.XXXXXX")
cleanup() {
  for side in before after; do
    git -C "$repo" worktree remove --force "$out/$side" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

git -C "$repo" worktree add --quiet --detach "$out/before" "$before"
git -C "$repo" worktree add --quiet --detach "$out/after" "$after"
for side in before after; do
  # An install that shadowed PYTHONPATH would measure one commit twice.
  found=$(PYTHONPATH="$out/$side/src" "$python" -c 'import eventpipe; print(eventpipe.__file__)')
  case $found in
    "$out/$side/src/"*) ;;
    *) echo "$side: python imports eventpipe from $found, not from its checkout" >&2; exit 1 ;;
  esac
done
echo "outputs in $out; bench options: $*"

run=1
while [ "$run" -le "$runs" ]; do
  for side in before after; do
    log="$out/$side-$run.txt"
    # The commit's source ahead of the installed one, for this process and the
    # services the bench starts (they inherit the environment).
    PYTHONPATH="$out/$side/src" "$python" -m eventpipe.cli.main bench "$@" >"$log" 2>&1 || {
      echo "$side run $run failed: see $log" >&2
      exit 1
    }
    # One line per run: the drain ratio, then rate p50 p99 for each latency rate.
    awk -v side="$side" -v run="$run" '
      /worker \/ bare paho:/ { ratio = $5 }
      /^ +[0-9,]+ +[0-9,]+ +[0-9]+ +[0-9.]+ ms +[0-9.]+ ms/ { lat = lat sprintf("  %s msg/s p50 %s p99 %s ms", $1, $4, $6) }
      END { printf "%-6s run %d  drain %s%s\n", side, run, (ratio == "" ? "-" : ratio), lat }
    ' "$log"
  done
  run=$((run + 1))
done
