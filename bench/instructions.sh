#!/usr/bin/env bash
# Instructions per HTTP request in process (examples/http_loop), counted by
# callgrind: unlike time, the count does not move with what else the machine
# runs, so it shows small changes to the request path. Prints the count for
# a fresh instance per request and for a reused one (skiff.instance-reuse).
#
#   bench/instructions.sh
#
# Needs valgrind (apt-get install valgrind). Each count is the difference
# of runs of 1200 and 200 requests over 1000, with the compiled guest from a
# disk cache, so that compiling is in neither.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
cargo build --release -p skiff-runtime --example http_loop 2>/dev/null
bin=target/release/examples/http_loop
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export SKIFF_CACHE_DIR="$work/cache"
count() { # N: instructions callgrind collected for N requests
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$bin" "$1" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for reuse in 1 1000; do
  export SKIFF_REUSE=$reuse
  count 10 >/dev/null # fills the cache (valgrind's CPU features key it)
  a=$(count 200)
  b=$(count 1200)
  echo "instance reuse $reuse: $(( (b - a) / 1000 )) instructions per request"
done
