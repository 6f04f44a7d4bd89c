#!/usr/bin/env bash
# A chunk server killed in the middle of a large write: the write completes without an error
# and the file reads back byte-identical.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 4 --replicas 3

head -c 600M /dev/urandom > "$L/big"
(cp "$L/big" "$M/big") &
cp_pid=$!
sleep 2
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk1
wait $cp_pid || fail "the write failed when a chunk server died"
cmp "$L/big" "$M/big" || fail "data differs"
check "600 MiB write survived the death of a chunk server"
python3 - <<PY || fail "replicas"
import json, subprocess
d = json.loads(subprocess.check_output(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file",
    "$CAIRN_SECRET_FILE", "fileinfo", "/big", "--json"]))
for c in d["chunks"]:
    assert len(c["replicas"]) >= 2, c
PY
check "every chunk kept at least two replicas"

# Re-replication: back to 3 copies on live servers without anyone's help, in bounded time.
# Chunks written before the kill still list the dead server until meta declares it dead
# (--dead-after-ms), which a fast write can finish before.
t0=$SECONDS
end=$((SECONDS + 60))
until { cairn status --json || true; } | python3 -c "import json,sys; d=json.load(sys.stdin); \
sys.exit(0 if any(s['addr'].endswith(':$CHUNK1_PORT') and s['state'] == 'dead' for s in d['chunk_servers']) else 1)"; do
  [ $SECONDS -lt $end ] || { cairn status; fail "the killed chunk server was never declared dead"; }
  sleep 0.5
done
end=$((SECONDS + 180))
until [ "$(cairn status --json | json "d['chunks']['under_replicated']")" = 0 ]; do
  [ $SECONDS -lt $end ] || { cairn status; fail "still under-replicated after 180 s"; }
  sleep 1
done
echo "re-replicated in $((SECONDS - t0)) s after the write finished"
python3 - <<PY || fail "replica sets after repair"
import json, subprocess
# (status exits 1 while a server is dead: read its output regardless)
run = lambda *a: json.loads(subprocess.run(["$BIN/cairn", "--meta", "$CAIRN_META",
    "--secret-file", "$CAIRN_SECRET_FILE"] + list(a), stdout=subprocess.PIPE).stdout)
st = run("status", "--json")
online = {s["id"] for s in st["chunk_servers"] if s["state"] == "online"}
d = run("fileinfo", "/big", "--json")
for c in d["chunks"]:
    ids = [r["server"] for r in c["replicas"]]
    assert len(ids) == 3 and len(set(ids)) == 3, c
    assert set(ids) <= online, (c, online)
PY
cmp "$L/big" "$M/big" || fail "data differs after repair"
check "every chunk back at 3 replicas on live servers, data identical"

# The dead server comes back with stale copies: they are never served, and they are deleted.
bash "$ROOT/tools/cluster.sh" start --dir "$CL" chunk1
end=$((SECONDS + 60))
until [ "$(find "$CL/chunk1/data/chunks" -name '*.chk' | wc -l)" = 0 ]; do
  [ $SECONDS -lt $end ] || { ls "$CL/chunk1/data/chunks" | head; fail "stale replicas not removed"; }
  sleep 1
done
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
cmp "$L/big" "$M/big" || fail "data differs after the stale server returned"
check "returning server's stale replicas deleted"
