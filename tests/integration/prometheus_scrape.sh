#!/usr/bin/env bash
# Debian's real Prometheus server scrapes a local cluster (3 meta servers, 3 chunk servers and
# the client); its HTTP API must show every target up and the metrics the dashboard uses with
# live values. The shipped Kubernetes scrape configuration and alert rules must pass promtool.
source "$(dirname "$0")/lib.sh"
command -v prometheus > /dev/null || fail "prometheus is not installed (tools/deps.sh installs it)"
promtool check config "$ROOT/k8s/monitoring/prometheus.yml" > "$L/promtool.out" 2>&1 ||
  { cat "$L/promtool.out"; fail "k8s/monitoring/prometheus.yml does not pass promtool"; }
promtool check rules "$ROOT/k8s/monitoring/cairn-alerts.yml" > "$L/promtool.out" 2>&1 ||
  { cat "$L/promtool.out"; fail "k8s/monitoring/cairn-alerts.yml does not pass promtool"; }
check "the Kubernetes scrape configuration and alert rules pass promtool"

export CAIRN_SCRUB_INTERVAL_S=2  # scrub progress must show within the test
cluster_up --metas 3 --chunks 3 --replicas 3

targets=""
for v in $(compgen -v | grep -E '^((META|CHUNK)[0-9]+_|MOUNT_)METRICS$'); do
  targets+="${targets:+, }'127.0.0.1:${!v}'"
done
port=$(free_port)
cat > "$L/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
rule_files:
  - $ROOT/k8s/monitoring/cairn-alerts.yml
scrape_configs:
  - job_name: cairn
    static_configs:
      - targets: [$targets]
EOF
prometheus --config.file="$L/prometheus.yml" --storage.tsdb.path="$L/tsdb" \
  --web.listen-address="127.0.0.1:$port" > "$L/prometheus.log" 2>&1 &
EXTRA_PIDS+=($!)

# Some traffic for the counters.
head -c 20M /dev/urandom > "$L/data"
cp "$L/data" "$M/data"
mkdir "$M/d" && for i in $(seq 1 50); do echo "$i" > "$M/d/$i"; done
sync
cmp "$L/data" "$M/data" || fail "data differs"

cat > "$L/query.py" <<'PY'
import json, sys, time, urllib.parse, urllib.request
base = "http://127.0.0.1:%s/api/v1/" % sys.argv[1]
def get(path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.load(r)
    assert d["status"] == "success", d
    return d["data"]
def value(expr):
    res = get("query", query=expr)["result"]
    return float(res[0]["value"][1]) if res else None
deadline = time.time() + 90
want = {
    "targets up (3 meta, 3 chunk, 1 client)": ("count(up == 1)", lambda v: v == 7),
    "one meta leader": ("sum(cairn_raft_is_leader)", lambda v: v == 1),
    "raft term": ("min(cairn_raft_term)", lambda v: v >= 1),
    "commands applied": ("max(cairn_meta_commands_total)", lambda v: v > 50),
    "meta request latency histogram": ("sum(cairn_meta_request_seconds_count)", lambda v: v > 50),
    "chunk servers online (leader's view)":
        ("max(cairn_meta_chunk_servers_online * on(instance) group_left cairn_raft_is_leader)",
         lambda v: v == 3),
    "bytes written to chunk servers": ("sum(cairn_chunk_written_bytes_total)",
                                       lambda v: v >= 3 * 20 * 2**20),
    "chunk request latency histogram": ("sum(cairn_chunk_request_seconds_count)", lambda v: v > 0),
    "repair queue gauge": ("max(cairn_meta_repair_queue)", lambda v: v == 0),
    "scrubber progress": ("sum(cairn_chunk_scrubbed_bytes_total)", lambda v: v > 0),
    "client request latency histogram": ("sum(cairn_client_request_seconds_count)", lambda v: v > 50),
    "client bytes written": ("sum(cairn_client_written_bytes_total)", lambda v: v >= 20 * 2**20),
    "chunk server capacity and usage": ("min(cairn_chunk_used_bytes / cairn_chunk_capacity_bytes)",
                                        lambda v: 0 < v < 1),
    "rebalance spread (leader)": ("max(cairn_meta_rebalance_spread * on(instance) cairn_raft_is_leader)",
                                  lambda v: 0 <= v < 0.5),
    "rebalance bytes counter": ("sum(cairn_meta_rebalance_bytes_total)", lambda v: v == 0),
    "client chunk cache hit rate": ('sum(cairn_client_chunk_cache_total{result="hit"}) / '
                                    'sum(cairn_client_chunk_cache_total)', lambda v: 0 < v <= 1),
}
while True:
    try:
        bad = {}
        for name, (expr, ok) in want.items():
            v = value(expr)
            if v is None or not ok(v):
                bad[name] = (expr, v)
        if not bad:
            break
    except Exception as e:  # Prometheus still starting
        bad = {"api": str(e)}
    if time.time() > deadline:
        print("not scraped as expected:", json.dumps(bad, indent=1))
        print(json.dumps(get("targets")["activeTargets"], indent=1)[:3000])
        sys.exit(1)
    time.sleep(1)
for name, (expr, _) in want.items():
    print("  %-40s %-90s = %g" % (name, expr, value(expr)))
# The rules loaded from k8s/monitoring/cairn-alerts.yml are evaluated, and none fires on a
# healthy cluster.
rules = [r for g in get("rules")["groups"] for r in g["rules"]]
assert len(rules) >= 4, rules
firing = [r["name"] for r in rules if r.get("state") == "firing"]
assert not firing, firing
PY
python3 "$L/query.py" "$port" || { tail -20 "$L/prometheus.log"; fail "Prometheus did not scrape the cluster"; }
check "Prometheus scraped every daemon; the dashboard's metrics have live values; no alert fires"
