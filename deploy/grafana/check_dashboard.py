#!/usr/bin/env python3
"""Checks the Grafana dashboard's queries: each must parse as PromQL (through
`promtool check rules`, as recording rules) and name only metric families the
node exports (listed in crates/node/src/shell/metrics.rs) or the recording
rules of deploy/prometheus/rules.yml. Run from the repository root."""
import json, re, subprocess, sys, tempfile

dashboard = json.load(open("deploy/grafana/dashboards/maas.json"))
exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
known = set(re.findall(r'"(maas_[a-z_]+)"', open("crates/node/src/shell/metrics.rs").read()))
known |= set(re.findall(r"record: (\S+)", open("deploy/prometheus/rules.yml").read()))
suffixes = ("_bucket", "_count", "_sum")
errors = []
for e in exprs:
    for name in re.findall(r"\b(maas[_:][a-z0-9_:]+)", e):
        base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
        if name not in known and base not in known:
            errors.append(f"unknown metric {name} in: {e}")
with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        f.write(f"      - record: dashboard:q{i}\n        expr: {json.dumps(e)}\n")
check = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
if check.returncode != 0:
    errors.append(check.stdout + check.stderr)
if errors:
    sys.exit("\n".join(errors))
print(f"dashboard: {len(exprs)} queries parse and name known metrics")
