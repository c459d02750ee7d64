#!/usr/bin/env bash
# User-space instructions per request, counted: the release node runs under
# valgrind's callgrind, and one client sends N spends (`GET /memes`), then N
# `/health` calls, one after another on one connection. Instructions are
# counted only while each loop runs and for 1.5 s after it (the checkpoint's
# share of the work comes later), so startup, the warm-up and shutdown are
# left out. Unlike CPU time on a shared VM these counts repeat to within about
# 1 %, which makes them the instrument for small changes; they leave out the
# kernel (syscalls, context switches, fsync), about half of a spend's CPU.
#   benches/instructions.sh                    # 1,000 of each
#   benches/instructions.sh 3000               # 3,000 of each
#   MAAS_BIN=/tmp/old/maas benches/instructions.sh   # another build, for an A/B
#   MAAS_LOG_LEVEL=warn benches/instructions.sh      # another log level
# The node runs at the default log level (info), as deployed.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
# shellcheck source=benches/callgrind_prelude.sh
. benches/callgrind_prelude.sh
port="${MAAS_BENCH_PORT:-18181}"
work=$(mktemp -d)
node=""
cleanup() {
    if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
    [ -n "${MAAS_KEEP_PROFILE:-}" ] && cp "$work"/cg.out.* "$MAAS_KEEP_PROFILE"/ 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
    "$bin" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --rate-limit 0 --rate-limit-ip 0 --log-level "${MAAS_LOG_LEVEL:-info}" >"$work/out" 2>"$work/err" &
node=$!
# Under valgrind the node starts in seconds, not milliseconds.
for _ in $(seq 1 600); do
    grep -q 'demo token' "$work/out" 2>/dev/null && break
    kill -0 "$node" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
    sleep 0.1
done
token=$(awk '/demo token/ {print $3}' "$work/out")
[ -n "$token" ] || { echo "the node printed no demo token" >&2; exit 1; }

python3 - "$port" "$token" "$n" "$node" <<'PY'
import http.client, subprocess, sys, time
port, token, n, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

def call(method, path, body=None, bearer=token):
    headers = {"Authorization": "Bearer " + bearer}
    if body is not None:
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    return r.status

def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

credit = '{"user_id":"demo-user","amount":100000000}'
assert call("POST", "/update-token-balance", credit, "maas-DEV-ONLY-operator-token") == 200
spend = "/memes?lat=40.73&lon=-73.93&query=food"
for _ in range(200):  # warm-up: caches, the first log files, the token cache
    assert call("GET", spend) == 200
    assert call("GET", "/health") == 200
# A spend's work does not all happen before its answer: the checkpoint merges
# its statement lines into sled within the next second. So each window stays
# open for TAIL seconds after its last request, and the next one starts only
# after as long again, counting nothing, so that neither counts the other's.
TAIL = 1.5
for path in (spend, "/health"):
    time.sleep(TAIL)
    control("-i", "on")
    ok = sum(call("GET", path) == 200 for _ in range(n))
    time.sleep(TAIL)
    control("-d")  # one dump per loop; a dump starts the counts again
    control("-i", "off")
    assert ok == n, f"{path}: {ok} of {n} answered 200"
PY

# Dump parts in order: the spends' loop, then /health's.
parts=$(ls "$work"/cg.out.* | sort -t. -k3 -n)
read -r spend health < <(for f in $parts; do awk '/^totals:/ {print $2}' "$f"; done | paste -sd' ')
python3 - "$n" "$spend" "$health" <<'PY'
import sys
n, spend, health = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
print(f"user-space instructions per request over {n} sequential requests (callgrind):")
print(f"  GET /memes (a spend): {spend / n:,.0f}")
print(f"  GET /health:          {health / n:,.0f}")
print(f"  ratio:                {spend / health:.2f}x")
PY
