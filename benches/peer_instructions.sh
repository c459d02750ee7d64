#!/usr/bin/env bash
# User-space instructions a spend costs the region that did not make it:
# two release nodes form a cluster over QUIC on loopback (regions 1 and 2),
# region 2 runs under valgrind's callgrind, and one client sends N spends to
# region 1, one after another, each by the next of 500 users (a batch carries
# the latest version of each user's entry, so one user would be one item per
# batch however many spends). Region 2 receives each delta, decodes it,
# merges it, logs it durably and weighs rebalancing; in the SLA run every
# spend is merged so at two peers. Counted: a window around the N spends and
# the time region 2 takes to hold them all, minus an idle window as long
# (timers, gossip), over N. The kernel is left out, as in instructions.sh.
#   benches/peer_instructions.sh              # 1,000 spends
#   MAAS_BIN=/tmp/old/maas benches/peer_instructions.sh 2000
#   MAAS_KEEP_PROFILE=/tmp/prof benches/peer_instructions.sh   # keep cg.out.*
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
# shellcheck source=benches/callgrind_prelude.sh
. benches/callgrind_prelude.sh
base="${MAAS_BENCH_PORT:-18191}"
http_a=$base http_b=$((base + 1)) quic_a=$((base + 2)) quic_b=$((base + 3))
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    [ -n "${MAAS_KEEP_PROFILE:-}" ] && cp "$work"/cg.out.* "$MAAS_KEEP_PROFILE"/ 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

secret=peer-instructions-bench-secret-0123456789
operator=peer-instructions-bench-operator-token-0123456789
"$bin" certs --dir "$work/certs" --name node-1 --name node-2 >/dev/null
# Region $1 on HTTP port $2 and QUIC port $3, joining QUIC port $4.
region_args() {
    echo --region "$1" --genesis-regions 1,2 --listen "127.0.0.1:$2" --data-dir "$work/data-$1" \
        --peer-listen "127.0.0.1:$3" --advertise "127.0.0.1:$3" --join "127.0.0.1:$4" \
        --tls-ca "$work/certs/ca.pem" --tls-cert "$work/certs/node-$1.pem" \
        --tls-key "$work/certs/node-$1.key" --rate-limit 0 --rate-limit-ip 0 --log-level info \
        --jwt-secret "$secret" --operator-token "$operator" --welcome-grant 1000000
}
# shellcheck disable=SC2046
"$bin" $(region_args 1 "$http_a" "$quic_a" "$quic_b") >"$work/out-1" 2>"$work/err-1" &
pids+=($!)
# shellcheck disable=SC2046
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
    "$bin" $(region_args 2 "$http_b" "$quic_b" "$quic_a") >"$work/out-2" 2>"$work/err-2" &
peer=$!
pids+=("$peer")
# Under valgrind the node starts in seconds, not milliseconds.
for _ in $(seq 1 600); do
    grep -q 'listening' "$work/out-2" 2>/dev/null && break
    kill -0 "$peer" 2>/dev/null || { cat "$work/err-2" >&2; exit 1; }
    sleep 0.1
done

python3 - "$http_a" "$http_b" "$secret" "$operator" "$n" "$peer" <<'PY'
import base64, hashlib, hmac, http.client, json, subprocess, sys, time
port_a, port_b, secret, OPERATOR, n, pid = sys.argv[1:7]
port_a, port_b, n = int(port_a), int(port_b), int(n)
conns = {p: http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in (port_a, port_b)}
USERS = 500

def b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

def token(user):
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"

tokens = [token(f"user-{i}") for i in range(USERS)]

def call(port, method, path, body=None, bearer=None):
    headers = {"Authorization": "Bearer " + bearer}
    if body is not None:
        headers["Content-Type"] = "application/json"
    c = conns[port]
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read()

def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def both_up():
    for port in (port_a, port_b):
        status, body = call(port, "GET", "/v1/cluster", bearer=OPERATOR)
        members = json.loads(body).get("members", []) if status == 200 else []
        if sum(m.get("state") == "up" for m in members) != 1:
            return False
    return True

def balance(port, user):
    status, body = call(port, "GET", f"/v1/users/{user}", bearer=OPERATOR)
    assert status == 200, body
    return json.loads(body)["balance"]

def converged(within):
    """Whether region 2 shows every user's balance as region 1 does."""
    deadline = time.time() + within
    for i in range(USERS):
        user = f"user-{i}"
        while balance(port_a, user) != balance(port_b, user):
            if time.time() > deadline:
                return False
            time.sleep(0.2)
    return True

def spends(count):
    return sum(call(port_a, "GET", spend, bearer=tokens[i % USERS])[0] == 200
               for i in range(count))

deadline = time.time() + 120
while not both_up():
    assert time.time() < deadline, "the two regions did not see each other within 120 s"
    time.sleep(0.5)
spend = "/memes?lat=40.73&lon=-73.93&query=food"
# Warm-up: every user known to both regions, the peer's caches and log files.
assert spends(USERS) == USERS
assert converged(60), "region 2 did not catch up after the warm-up"
# Region 2 holds every spend within a second or two even under valgrind; the
# window stays open that long after the last one, and the idle window is as
# long as the spends' window.
TAIL = 3.0
time.sleep(TAIL)
started = time.time()
control("-i", "on")
ok = spends(n)
time.sleep(TAIL)
control("-d")
control("-i", "off")
took = time.time() - started
assert ok == n, f"{ok} of {n} spends answered 200"
assert converged(60), "region 2 did not hold every spend"
time.sleep(TAIL)
control("-i", "on")
time.sleep(took)
control("-d")
control("-i", "off")
PY

parts=$(ls "$work"/cg.out.* | sort -t. -k3 -n)
read -r spends idle < <(for f in $parts; do awk '/^totals:/ {print $2}' "$f"; done | paste -sd' ')
first=$(echo "$parts" | head -1)
callgrind_annotate --inclusive=yes --tree=calling "$first" >"$work/tree" 2>/dev/null
python3 - "$n" "$spends" "$idle" "$work/tree" <<'PY'
import re, sys
n, spends, idle = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tree = open(sys.argv[4]).read()

def inclusive(name):
    # A function's own line in the tree (marked `*`): its inclusive count.
    m = re.search(r"^\s*([\d,]+) \([ \d.]+%\)  \*  \S*" + re.escape(name) + r" ", tree, re.M)
    return int(m.group(1).replace(",", "")) if m else 0

calls = re.search(r">\s+\S*Replica::merge_item \(([\d,]+)x\)", tree)
items = int(calls.group(1).replace(",", "")) if calls else 0
print(f"user-space instructions at the peer region per spend made elsewhere ({n} spends, callgrind):")
print(f"  window with the spends: {spends / n:,.0f} per spend")
print(f"  idle window as long:    {idle / n:,.0f} per spend")
print(f"  a spend merged:         {(spends - idle) / n:,.0f}")
print(f"of which, per spend ({items:,} entries merged: the spends, and rights moved between the two):")
for label, name in [("receiving and merging", "Replica::handle_peer"),
                    ("  the merges alone", "Replica::merge_item"),
                    ("group commit", "Engine::commit"),
                    ("checkpoint into sled", "Store::checkpoint")]:
    print(f"  {label + ':':24}{inclusive(name) / n:,.0f}")
PY
