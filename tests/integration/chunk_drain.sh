#!/usr/bin/env bash
# Placement over failure domains, drain, surplus removal, orphan collection and the loss of two
# of five chunk servers, on one cluster of 5 chunk servers labelled with 3 zones and 4 racks.
source "$(dirname "$0")/lib.sh"
export CAIRN_ZONES=z1,z1,z2,z2,z3 CAIRN_RACKS=r1,r2,r3,r3,r4 CAIRN_GC_GRACE_MS=3000
cluster_up --chunks 5 --replicas 3

# Each file is one 64 MiB chunk (the last one 2): 12 chunks in all.
for i in $(seq 1 12); do head -c $(( i == 12 ? 2 : 40 ))M /dev/urandom > "$L/f$i"; done
for i in $(seq 1 12); do cp "$L/f$i" "$M/f$i"; done
sync

# state.py prints facts about the cluster as JSON-derived text; every check below uses it.
cat > "$L/state.py" <<PY
import json, subprocess, sys
def run(*a):
    # cairn status exits 1 while the cluster is degraded: read its output regardless.
    out = subprocess.run(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file",
                          "$CAIRN_SECRET_FILE"] + list(a), stdout=subprocess.PIPE).stdout
    return json.loads(out)
status = run("status", "--json")
servers = {s["id"]: s for s in status["chunk_servers"]}
chunks = []
for i in range(1, 13):
    chunks += run("fileinfo", "/f%d" % i, "--json")["chunks"]
def replica_sets():
    return [[r["server"] for r in c["replicas"]] for c in chunks]
PY
state() { python3 -c "exec(open('$L/state.py').read()); $1"; }

# 1. Placement: three distinct zones per chunk (three zones exist), weighted by free space.
state "
for ids in replica_sets():
    zones = {servers[s]['zone'] for s in ids}
    hosts = {servers[s]['host'] for s in ids}
    assert len(ids) == 3 and len(zones) == 3 and len(hosts) == 3, (ids, zones)
" || fail "replicas not spread over three zones"
check "every chunk has 3 replicas in 3 distinct zones"

# 2. Drain a server that holds replicas: everything moves off while it keeps serving; files
#    stay readable during the drain; zones stay distinct where the remaining servers allow.
victim=$(state "print(max(servers.values(), key=lambda s: s['replicas'])['id'])")
victim_name=$(state "print(servers[$victim]['host'])")
before=$(state "print(servers[$victim]['replicas'])")
[ "$before" -gt 0 ] || fail "the chosen server holds no replica"
(for i in $(seq 1 12); do cmp -s "$L/f$i" "$M/f$i" || echo "f$i"; done > "$L/drain_reads") &
reader=$!
timeout 300 "$BIN/cairn" --meta "$CAIRN_META" --secret-file "$CAIRN_SECRET_FILE" \
  chunk drain "$victim" --wait --timeout 240 > "$L/drain.out" 2> "$L/drain.err" ||
  { cat "$L/drain.out" "$L/drain.err"; cairn status; fail "drain did not finish"; }
wait $reader
[ ! -s "$L/drain_reads" ] || fail "files read wrong during the drain: $(cat "$L/drain_reads")"
grep -q "can be stopped and removed" "$L/drain.out" || fail "drain did not report the end"
state "
assert servers[$victim]['state'] == 'draining', servers[$victim]
assert servers[$victim]['replicas'] == 0, servers[$victim]
for ids in replica_sets():
    assert len(ids) == 3 and $victim not in ids and len({servers[s]['host'] for s in ids}) == 3, ids
    assert len({servers[s]['zone'] for s in ids}) >= 2, ids
assert status['chunks']['under_replicated'] == 0
" || fail "replicas left on the drained server"
echo "drained server $victim ($victim_name): $before replicas moved"
check "drain moved every replica off server $victim while files stayed readable"
cairn status | grep -q "drained: can be removed" || fail "status does not say the server is removable"
# The drained server deletes its old copies after the grace period.
end=$((SECONDS + 60))
until [ -z "$(ls "$CL/$victim_name/data/chunks" 2>/dev/null)" ]; do
  [ $SECONDS -lt $end ] || fail "old copies still on the drained server: $(ls "$CL/$victim_name/data/chunks")"
  sleep 1
done
check "the drained server deleted its copies after the grace period"
cairn chunk undrain "$victim" > /dev/null || fail "undrain"
[ "$(state "print(servers[$victim]['state'])")" = online ] || fail "server still draining"

# 3. Surplus: with R lowered to 2 every chunk is trimmed to 2 copies on distinct zones, and the
#    dropped copies are deleted from disk; R back to 3 adds a copy again.
used() { (cairn status --json || true) | json "sum(s['used_bytes'] for s in d['chunk_servers'])"; }
used0=$(used)
cairn replicas set 2 > /dev/null || fail "replicas set 2"
end=$((SECONDS + 120))
until state "
assert status['chunks']['over_replicated'] == 0 and status['replicas'] == 2
for ids in replica_sets():
    assert len(ids) == 2 and len({servers[s]['zone'] for s in ids}) == 2, ids
" 2>/dev/null; do
  [ $SECONDS -lt $end ] || { cairn status; fail "surplus replicas not removed"; }
  sleep 1
done
end=$((SECONDS + 60))
until [ "$(find "$CL"/chunk*/data/chunks -name '*.chk' | wc -l)" -eq 24 ]; do
  [ $SECONDS -lt $end ] || fail "surplus copies not deleted: $(find "$CL"/chunk*/data/chunks -name '*.chk' | wc -l) files for 24 replicas"
  sleep 1
done
end=$((SECONDS + 30))
until [ "$(used)" -lt $((used0 * 4 / 5)) ]; do
  [ $SECONDS -lt $end ] || fail "space not given back: $(used) bytes used, $used0 before the trim"
  sleep 1
done
echo "space used on chunk servers: $((used0 >> 20)) MiB at R=3, $(( $(used) >> 20 )) MiB at R=2"
for i in $(seq 1 12); do cmp "$L/f$i" "$M/f$i" || fail "f$i differs after the trim"; done
check "R=2: every chunk trimmed to 2 copies in 2 zones, surplus files deleted"
cairn replicas set 3 > /dev/null || fail "replicas set 3"
end=$((SECONDS + 120))
until state "
for ids in replica_sets():
    assert len(ids) == 3 and len({servers[s]['zone'] for s in ids}) == 3, ids
" 2>/dev/null; do
  [ $SECONDS -lt $end ] || { cairn status; fail "not back to 3 replicas"; }
  sleep 1
done
check "R=3 again: every chunk back to 3 copies in 3 zones"

# 4. Orphans: a copy no file refers to (planted while its server was down) is deleted once it
#    has been seen for the grace period; real copies on that server stay.
orphan_host=chunk4
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" $orphan_host
some=$(ls "$CL/$orphan_host/data/chunks" | head -1)
[ -n "$some" ] || some=$(ls "$CL"/chunk0/data/chunks | head -1)
src=$(ls -d "$CL"/chunk*/data/chunks/"$some" | head -1)
python3 - "$src" "$CL/$orphan_host/data/chunks/00000000deadbeef.chk" <<'PY'
import struct, sys, zlib
data = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<Q", data, 24, 0xdeadbeef)                 # header: chunk id
struct.pack_into("<I", data, 40, zlib.crc32(bytes(data[:40])))  # header checksum
open(sys.argv[2], "wb").write(data)
PY
bash "$ROOT/tools/cluster.sh" start --dir "$CL" $orphan_host
end=$((SECONDS + 30))
until [ "$(state "print([s['state'] for s in servers.values() if s['host'] == '$orphan_host'][0])")" = online ]; do
  [ $SECONDS -lt $end ] || { cat "$CL/logs/$orphan_host.out"; fail "$orphan_host did not come back"; }
  sleep 0.5
done
end=$((SECONDS + 90))
while [ -e "$CL/$orphan_host/data/chunks/00000000deadbeef.chk" ]; do
  [ $SECONDS -lt $end ] || fail "orphan not collected"
  sleep 1
done
grep -q "orphaned copies on chunk server" "$CL/logs/meta0.log" || fail "orphan collection not logged"
# Every copy meta counts on that server is still on its disk (if the server was slow to come
# back and declared dead meanwhile, its copies were replaced and deleted as garbage instead).
end=$((SECONDS + 120))
until state "assert status['chunks']['under_replicated'] == 0" 2>/dev/null; do
  [ $SECONDS -lt $end ] || { cairn status; fail "under-replicated after the orphan test"; }
  sleep 1
done
kept=$(state "
import os
sid = [s['id'] for s in servers.values() if s['host'] == '$orphan_host'][0]
listed = [c['id'] for c in chunks if sid in [r['server'] for r in c['replicas']]]
missing = [i for i in listed if not os.path.exists('$CL/$orphan_host/data/chunks/%016x.chk' % i)]
assert not missing, missing
print(len(listed))
") || fail "real copies were deleted with the orphan"
check "an orphaned copy was deleted after the grace period, the server's $kept real copies kept"

# 5. Two of five chunk servers die: every file reads back, and repairs restore 3 copies on the
#    three that are left.
bytes0=$( (cairn status --json || true) | json "d['repair']['repaired_bytes']")
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk0
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk2
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for i in $(seq 1 12); do cmp "$L/f$i" "$M/f$i" || fail "f$i unreadable with two servers dead"; done
check "two of five chunk servers dead: every file reads back correctly"
t0=$SECONDS
end=$((SECONDS + 180))
until state "
dead = {s['id'] for s in servers.values() if s['state'] == 'dead'}
assert len(dead) == 2, dead
assert status['chunks']['under_replicated'] == 0 and status['chunks']['lost'] == 0
for ids in replica_sets():
    assert len(ids) == 3 and not (set(ids) & dead), ids
" 2>/dev/null; do
  [ $SECONDS -lt $end ] || { cairn status; fail "not repaired after two servers died"; }
  sleep 2
done
bytes1=$( (cairn status --json || true) | json "d['repair']['repaired_bytes']")
secs=$((SECONDS - t0))
echo "repaired to 3 copies on the 3 remaining servers in ${secs} s after the reads:" \
  "$(( (bytes1 - bytes0) >> 20 )) MiB copied server to server, about" \
  "$(( (bytes1 - bytes0) / (secs > 0 ? secs : 1) >> 20 )) MiB/s (including the 5 s until the servers were declared dead)"
for i in $(seq 1 12); do cmp "$L/f$i" "$M/f$i" || fail "f$i differs after repair"; done
check "two of five servers lost: every chunk back at 3 replicas"
