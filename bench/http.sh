#!/usr/bin/env bash
# HTTP throughput: skiff's ingress vs `wasmtime serve` 48.0.8 vs native hyper,
# with wrk at 32 connections in alternating rounds. See bench/throughput.py.
#
#   bench/http.sh [SERVER_CPUS] [LOAD_CPUS] [ROUNDS] [DURATION_SECONDS]
#
# Needs wrk (apt-get install wrk) and wasmtime-cli 48.0.8
# (cargo install wasmtime-cli --version 48.0.8 --locked, once).
set -euo pipefail
exec python3 "$(dirname "$0")/throughput.py" "$@"
