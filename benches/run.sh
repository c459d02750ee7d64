#!/usr/bin/env bash
# Runs one load benchmark in release, installing Redis (the seed and
# primary-region baselines) from Debian's packages if it is missing.
#   benches/run.sh http_load                       # scenarios 1 and 2
#   benches/run.sh http_load MAAS_BENCH_SCALE=1000000  # scale
#   benches/run.sh regions                         # scenario 3
#   benches/run.sh regions MAAS_BENCH_SLA=1        # scenario 4
#   benches/run.sh regions MAAS_BENCH_RIGHTS=1     # scenario 8
# Arguments after the bench name are environment settings.
set -euo pipefail
cd "$(dirname "$0")/.."
bench="${1:?which bench: http_load or regions}"
shift
if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
env "$@" cargo bench --locked --bench "$bench"
