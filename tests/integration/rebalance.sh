#!/usr/bin/env bash
# cairn rebalance: two empty chunk servers join a filled cluster; --dry-run prints a plan and
# changes nothing; the rebalance evens the used fractions out within the tolerance while a
# workload writes and reads, survives the meta leader's restart in the middle (it is a
# replicated setting and goes on), never leaves a chunk with fewer than R copies, and every file
# stays byte-identical. Then automatic rebalancing starts by itself when another server joins.
source "$(dirname "$0")/lib.sh"
export CAIRN_CHUNK_CAPACITY=$((512 << 20))   # each server offers 512 MiB of the shared disk
cluster_up --chunks 3 --replicas 3
TOL=0.08

for i in $(seq 1 48); do head -c 4M /dev/urandom > "$L/f$i"; done
for i in $(seq 1 48); do cp "$L/f$i" "$M/f$i"; done
sync
status_json() { cairn status --json || true; }
fractions() {  # the assigned fraction of every online server, "host=fraction ..."
  status_json | json "' '.join('%s=%.3f' % (s['host'], s['assigned_bytes'] / s['capacity_bytes']) for s in d['chunk_servers'] if s['capacity_bytes'])"
}
echo "before: $(fractions)"
bash "$ROOT/tools/cluster.sh" add-chunk --dir "$CL"
bash "$ROOT/tools/cluster.sh" add-chunk --dir "$CL"
source "$CL/cluster.env"
echo "two servers added: $(fractions)"

layout() { for i in $(seq 1 48); do cairn fileinfo "/f$i" --json | json "[(c['id'], c['version'], sorted(r['server'] for r in c['replicas'])) for c in d['chunks']]"; done; }
layout > "$L/layout.before"
cairn rebalance --dry-run --tolerance $TOL | tee "$L/plan.txt"
cairn rebalance --dry-run --tolerance $TOL --json > "$L/plan.json"
[ "$(json "len(d['moves']) > 0 and all(m['to'] in [s['id'] for s in d['servers'] if s['assigned_bytes'] == 0] for m in d['moves'])" < "$L/plan.json")" = True ] \
  || fail "the plan does not move replicas to the new servers: $(head -c 500 "$L/plan.json")"
python3 - "$L/plan.json" "$TOL" <<'PY' || fail "the plan does not reach the tolerance"
import json, sys
d = json.load(open(sys.argv[1])); tol = float(sys.argv[2])
s = [x for x in d["servers"] if x["capacity_bytes"]]
mean = sum(x["assigned_after"] for x in s) / sum(x["capacity_bytes"] for x in s)
worst = max(abs(x["assigned_after"] / x["capacity_bytes"] - mean) for x in s) / mean
print(f"planned: {len(d['moves'])} moves, farthest server after {worst:.3f} of the mean away")
assert worst <= tol
PY
sleep 2
layout > "$L/layout.after-dry-run"
cmp -s "$L/layout.before" "$L/layout.after-dry-run" || fail "--dry-run changed the chunk table"
check "--dry-run prints a plan within the tolerance and changes nothing"

# The workload: writes new files and reads old ones for the whole rebalance.
(
  n=0
  while [ ! -f "$L/stop" ] && [ $n -lt 400 ]; do
    n=$((n + 1))
    head -c 300K /dev/urandom > "$L/w$n"
    cp "$L/w$n" "$M/w$n" || { echo "write w$n failed" > "$L/workload.err"; exit 1; }
    i=$(( (n % 48) + 1 ))
    cmp -s "$L/f$i" "$M/f$i" || { echo "f$i differs during the rebalance" > "$L/workload.err"; exit 1; }
    echo "$n" > "$L/written"
  done
) &
WORKLOAD=$!
EXTRA_PIDS+=("$WORKLOAD")
# Watches every chunk's replica list in the chunk table through the whole run: never fewer than
# 3 servers, never two on one server.
python3 - "$L" <<PY &
import json, os, subprocess, sys, time
L = sys.argv[1]
def info(path):
    r = subprocess.run(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file", "$CAIRN_SECRET_FILE",
                        "fileinfo", path, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return json.loads(r.stdout) if r.returncode == 0 else None   # meta restarting: try again
rounds = 0
while not os.path.exists(L + "/stop") and rounds < 2000:
    rounds += 1
    for i in range(1, 49):
        d = info(f"/f{i}")
        for c in (d or {}).get("chunks", []):
            ids = [r["server"] for r in c["replicas"]]
            if len(ids) < 3 or len(set(ids)) != len(ids):
                open(L + "/watch.err", "a").write(f"/f{i} chunk {c['id']}: replicas {ids}\n")
print(f"watched {rounds} rounds of 48 files")
PY
WATCH=$!
EXTRA_PIDS+=("$WATCH")

cairn rebalance --tolerance $TOL --no-wait
[ "$(status_json | json "d['rebalance']['active']")" = True ] || fail "rebalance not shown as running"
end=$((SECONDS + 120))
until [ "$(status_json | json "d['rebalance']['moves_done']")" -ge 3 ]; do
  [ $SECONDS -lt $end ] || fail "no replica moved within 120 s"
  sleep 0.3
done
cairn status | grep "^rebalance: running" || fail "cairn status does not show the rebalance"
# Interrupted: the meta leader restarts in the middle of it.
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
end=$((SECONDS + 60))
until [ "$(status_json | json "d.get('rebalance', {}).get('active', 'x')")" != x ]; do
  [ $SECONDS -lt $end ] || fail "meta did not come back"
  sleep 0.3
done
[ "$(status_json | json "d['rebalance']['active']")" = True ] || fail "the rebalance did not survive the meta restart"
# Following it again (after an interruption) waits for the end.
timeout 300 "$BIN/cairn" --meta "$CAIRN_META" --secret-file "$CAIRN_SECRET_FILE" rebalance --tolerance $TOL --timeout 280 \
  > "$L/rebalance.out" 2> "$L/rebalance.err" || { cat "$L/rebalance.out" "$L/rebalance.err"; fail "rebalance did not converge"; }
cat "$L/rebalance.out"
touch "$L/stop"
wait "$WORKLOAD" || fail "workload failed: $(cat "$L/workload.err" 2>/dev/null)"
wait "$WATCH" || true
[ ! -s "$L/watch.err" ] || fail "a chunk had fewer than 3 replicas during the rebalance: $(head -3 "$L/watch.err")"
echo "after: $(fractions)"
python3 - "$TOL" <<PY || fail "not within the tolerance"
import json, subprocess, sys
tol = float(sys.argv[1])
d = json.loads(subprocess.run(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file", "$CAIRN_SECRET_FILE", "status", "--json"], stdout=subprocess.PIPE).stdout)
s = [x for x in d["chunk_servers"] if x["state"] == "online"]
assert len(s) == 5, s
mean = sum(x["assigned_bytes"] for x in s) / sum(x["capacity_bytes"] for x in s)
for x in s:
    f = x["assigned_bytes"] / x["capacity_bytes"]
    print(f"  {x['host']}: {f:.3f} (mean {mean:.3f}), {x['replicas']} replicas")
    assert abs(f - mean) <= tol * mean + 1e-9, x
    assert x["replicas"] > 0
assert d["chunks"]["under_replicated"] == 0 and d["chunks"]["lost"] == 0
PY
check "rebalanced within $TOL of the mean while a workload ran ($(cat "$L/written") files written), through a meta restart"

# The moved-from copies are deleted after the grace period, so the disks even out too.
end=$((SECONDS + 60))
until [ "$(status_json | json "d['chunks']['garbage_pending']")" = 0 ]; do
  [ $SECONDS -lt $end ] || fail "old copies not collected"
  sleep 1
done
for c in chunk3 chunk4; do
  [ -n "$(ls "$CL/$c/data/chunks")" ] || fail "$c holds no chunk file"
done
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for i in $(seq 1 48); do cmp "$L/f$i" "$M/f$i" || fail "f$i differs after the rebalance"; done
for i in $(seq 1 "$(cat "$L/written")"); do cmp "$L/w$i" "$M/w$i" || fail "w$i differs after the rebalance"; done
check "every file byte-identical after the rebalance; old copies collected"

# Automatic: a new server starts a rebalance by itself.
cairn rebalance --auto on --tolerance $TOL
bash "$ROOT/tools/cluster.sh" add-chunk --dir "$CL"
source "$CL/cluster.env"
end=$((SECONDS + 180))
until [ "$(status_json | json "[s['replicas'] for s in d['chunk_servers'] if s['host']=='chunk5'][0] > 0 and not d['rebalance']['active']")" = True ]; do
  [ $SECONDS -lt $end ] || { cairn status; fail "no automatic rebalance onto the new server"; }
  sleep 1
done
echo "after chunk5 joined: $(fractions)"
check "a joining server started a rebalance by itself"
for i in $(seq 1 48); do cmp "$L/f$i" "$M/f$i" || fail "f$i differs after the automatic rebalance"; done
