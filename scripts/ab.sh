#!/bin/sh
# Ingest at two commits, measured in turn on this machine: the A/B behind the
# "before and after" ingest tables of docs/performance.md. Runs `eventpipe
# bench` from a checkout of each commit (the current virtualenv, the commit's
# own source first on PYTHONPATH), alternating BEFORE and AFTER so that drift
# in the machine's load hits both alike, and prints each run's drain ratio and
# its publish -> queryable p50 and p99 per rate. Every output is kept.
#
#   scripts/ab.sh BEFORE AFTER [RUNS]            RUNS of each, default 4
#   scripts/ab.sh c340249 HEAD 2 -- --rates 500  bench options after --
#
# The bench runs with --only drain,latency --count 300000 --rates 2000
# --latency-seconds 90 (900 samples a run: with 150, runs of one commit
# differed by 20 to 40 ms at p99); options after -- come after these, and the
# last value of an option wins. Keep the machine otherwise idle.
set -eu

if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
before=$1 after=$2
shift 2
runs=4
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  runs=$1
  shift
fi
case $runs in
  '' | *[!0-9]* | 0)
    echo "RUNS must be a positive integer, not '$runs' (bench options go after --)" >&2
    exit 2
    ;;
esac
if [ $# -gt 0 ]; then
  if [ "$1" != "--" ]; then
    echo "unexpected '$1': bench options go after --" >&2
    exit 2
  fi
  shift
fi
set -- --only drain,latency --count 300000 --rates 2000 --latency-seconds 90 "$@"

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
out=$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-ab.XXXXXX")
bench=
cleanup() {
  for side in before after; do
    git -C "$repo" worktree remove --force "$out/$side" 2>/dev/null || true
  done
  git -C "$repo" worktree prune
}
# Stopped, it stops the bench it runs and removes the checkouts: a run after
# that would import the installed eventpipe instead of a commit's.
stop() {
  [ -n "$bench" ] && kill "$bench" 2>/dev/null
  exit "$1"
}
trap cleanup EXIT
trap 'stop 130' INT
trap 'stop 143' TERM

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
    # services the bench starts (they inherit the environment). In the
    # background, so that a TERM is handled at once, not after the run.
    PYTHONPATH="$out/$side/src" "$python" -m eventpipe.cli.main bench "$@" >"$log" 2>&1 &
    bench=$!
    if ! wait "$bench"; then
      echo "$side run $run failed: see $log" >&2
      exit 1
    fi
    bench=
    # One line per run: the drain ratio, then for each latency rate its
    # samples, p50, p99 and lost messages (the bench prints 1,204.2 ms or nan ms too).
    awk -v side="$side" -v run="$run" '
      /worker \/ bare paho:/ { ratio = $5 }
      /^ +[0-9,]+ +[0-9,]+ +[0-9]+ +([0-9.,]+|nan) ms +([0-9.,]+|nan) ms/ {
        lat = lat sprintf("  %s msg/s: %s samples, p50 %s p99 %s ms, %s lost", $1, $3, $4, $6, $10)
      }
      END { printf "%-6s run %d  drain %s%s\n", side, run, (ratio == "" ? "-" : ratio), lat }
    ' "$log"
  done
  run=$((run + 1))
done
