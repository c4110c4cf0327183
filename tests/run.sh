#!/usr/bin/env bash
# The README's test command: the Rust tests, then the compat suite (the
# real boto3 and aws-cli against a real `skiff server`), in a venv that
# this script makes when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --release

if [ ! -x .venv/bin/pip ]; then
  python3 -m venv .venv
fi
# Pinned versions: a no-op when they are installed already.
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
cargo build --release --bin skiff
echo "== [$(date -u +%H:%M:%S)] compat suite (boto3, aws-cli, real skiff servers)"
SKIFF_BIN="$PWD/target/release/skiff" .venv/bin/python -m pytest -q tests/compat
