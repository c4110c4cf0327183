#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10), starting from the
# seeds in fuzz/seeds/TARGET; new inputs go to a temporary directory and a
# failing input is left in fuzz/artifacts/TARGET/. Installs cargo-fuzz when
# it is missing.
#   fuzz/run.sh 20         # as CI runs it: 20 s each
#   fuzz/run.sh 3600 api   # one target for an hour
# The targets are built with AddressSanitizer (FUZZ_SANITIZER=address, the
# default): skiff's own code is safe Rust, but its dependencies are not
# (SQLite's C, wasmtime, ring), and ASan catches a bad read or write where
# it happens. `-Zsanitizer` is unstable: the stable toolchain ships the
# sanitizer runtimes, and RUSTC_BOOTSTRAP=1, set for these builds only,
# lets stable rustc take the flag. FUZZ_SANITIZER=none builds without one
# (coverage-guided only; panics, aborts, timeouts and leaks past the RSS
# limit are still caught) and runs several times the inputs a second: each
# sanitizer builds into its own target directory.
# Targets build fast: 16 codegen units, and dependencies unoptimized
# (fuzz/Cargo.toml). For a long run, build for speed instead (several
# times the executions per second, at well over twice the build time):
# remove the opt-level = 0 of `package."*"` in fuzz/Cargo.toml, then
#   FUZZ_CODEGEN_UNITS=1 fuzz/run.sh 3600 api
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(taskdef auth api)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
sanitizer=${FUZZ_SANITIZER:-address}
if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="$PWD/target/sanitizer-$sanitizer"
build=(--sanitizer "$sanitizer" --codegen-units "${FUZZ_CODEGEN_UNITS:-16}")
echo "== [$(date -u +%H:%M:%S)] fuzz build (sanitizer: $sanitizer)"
cargo fuzz build "${build[@]}"
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  log="$work.log"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run "${build[@]}" "$t" "$work" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t found an input that fails; it is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added|peak_rss_mb)" "$log" || true
  rm -rf "$work" "$log"
done
