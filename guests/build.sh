#!/usr/bin/env bash
# Rebuilds every guest and copies the .wasm files into guests/dist/.
# Needs the rustup targets wasm32-wasip1 and wasm32-wasip2.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 -p echo -p hog -p crash
cargo build --release --target wasm32-wasip2 -p spin -p hello-http
mkdir -p dist
for g in echo hog crash; do cp "target/wasm32-wasip1/release/$g.wasm" "dist/$g.wasm"; done
cp target/wasm32-wasip2/release/spin.wasm dist/spin.wasm
cp target/wasm32-wasip2/release/hello_http.wasm dist/hello-http.wasm
ls -l dist
