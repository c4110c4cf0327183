#!/usr/bin/env bash
# The README's test command: the Rust tests, then the compat suite (the
# real boto3 and aws-cli against a real `skiff server`), in a venv that
# this script makes when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --release

if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c "import boto3, awscli" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/compat/requirements.txt
fi
cargo build --release --bin skiff
SKIFF_BIN="$PWD/target/release/skiff" .venv/bin/python -m pytest -q tests/compat
