#!/usr/bin/env bash
# Runs the HTTP load benchmark with every target, installing Redis (for the seed
# design baseline) from Debian's packages if it is missing. Extra arguments are
# environment settings, e.g. MAAS_BENCH_RATES=1000,4000.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
env "$@" cargo bench --bench http_load
