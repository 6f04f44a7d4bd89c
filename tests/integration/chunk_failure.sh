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

# A new file's first chunk is recorded by meta only at the file's first commit: a replica that
# dies before that commit is handled all the same (the client records the chunk, then meta
# replaces the replica). Two of the four servers die, so the new chunk had one of them.
head -c 8M /dev/urandom > "$L/young"
# (The kill comes from outside: a fork of the writer would close its descriptor and commit. The
# writer's mount records such a chunk by itself only after 8 s, not 2, so the kill comes first.)
mount_extra "$T/late" "record_after_s=8"
python3 - "$L/young" "$T/late/young2" "$L" <<'PY' &
import os, sys, time
src = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, src[:4 << 20])   # whole blocks: written in the background, the chunk not recorded
open(sys.argv[3] + "/half", "w").close()
end = time.monotonic() + 60
while not os.path.exists(sys.argv[3] + "/killed"):
    assert time.monotonic() < end
    time.sleep(0.05)
os.write(fd, src[4 << 20:])
os.close(fd)
PY
writer=$!
end=$((SECONDS + 60))
until [ -e "$L/half" ]; do [ $SECONDS -lt $end ] || fail "the writer never got half way"; sleep 0.1; done
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk1
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk2
touch "$L/killed"
wait $writer || fail "a write to a new file failed when replicas died"
echo 3 > /proc/sys/vm/drop_caches
cmp "$L/young" "$M/young2" || fail "a new file written while replicas died differs"
grep -q "recording it first" "$T/mount-late.log" ||
  fail "the write to the unrecorded chunk never met the dead replicas"
check "a new file's first chunk, not yet recorded, survives the death of its replicas"
