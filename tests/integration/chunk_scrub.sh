#!/usr/bin/env bash
# Promise 4: bytes flipped in one replica's chunk files never reach a reader; the scrubber finds
# every damaged copy and the chunk is repaired from a good one. Then two of four chunk servers
# die and every file still reads back correctly.
source "$(dirname "$0")/lib.sh"
export CAIRN_SCRUB_INTERVAL_S=1  # a new verification pass every second
cluster_up --chunks 4 --replicas 3

for i in 1 2 3; do head -c 30M /dev/urandom > "$L/f$i"; cp "$L/f$i" "$M/f$i"; done
sync

victim=""
for c in chunk1 chunk2 chunk3 chunk0; do
  if [ -n "$(ls "$CL/$c/data/chunks")" ]; then victim=$c; break; fi
done
[ -n "$victim" ] || fail "no chunk server holds a chunk file"
python3 - "$CL/$victim/data/chunks" > "$L/flipped" <<'PY'
import os, random, sys
d = sys.argv[1]
data_offset = 4096 + (64 * 1024 * 1024 // 4096) * 64   # header + block table of a 64 MiB chunk
rnd = random.Random(7)
for name in sorted(os.listdir(d)):
    path = os.path.join(d, name)
    size = os.path.getsize(path)
    if size <= data_offset:
        continue
    with open(path, "r+b") as f:
        for _ in range(5):
            off = rnd.randrange(data_offset, size)
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x5A]))
    print(name.split(".")[0])
PY
[ -s "$L/flipped" ] || fail "no chunk file to damage on $victim"
echo "flipped bytes in $(wc -l < "$L/flipped") chunk files of $victim"
# The scrubber finds damage on its own (before any reader touches it) ...
end=$((SECONDS + 60))
until grep -q "scrub: chunk" "$CL/logs/$victim.log"; do
  [ $SECONDS -lt $end ] || fail "the scrubber did not find the damage within 60 s"
  sleep 0.2
done
check "the scrubber found a damaged copy"
# ... and readers never get a damaged byte while other damaged copies are still there.
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for i in 1 2 3; do cmp "$L/f$i" "$M/f$i" || fail "damaged replica reached a reader (f$i)"; done
check "every read correct despite the damaged replica"

victim_id=$( (cairn status --json || true) | json "[s['id'] for s in d['chunk_servers'] if s['host']=='$victim'][0]")
end=$((SECONDS + 180))
until python3 - "$victim_id" <<PY
import json, subprocess, sys
victim = int(sys.argv[1])
run = lambda *a: json.loads(subprocess.run(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file",
    "$CAIRN_SECRET_FILE"] + list(a), stdout=subprocess.PIPE).stdout)
bad = set(int(x, 16) for x in open("$L/flipped").read().split())
for f in ("/f1", "/f2", "/f3"):
    for c in run("fileinfo", f, "--json")["chunks"]:
        ids = [r["server"] for r in c["replicas"]]
        if len(ids) != 3 or len(set(ids)) != 3:
            sys.exit(1)
        # A damaged copy is dropped (version +1) and the chunk re-replicated (version +1): a
        # copy on the damaged server is acceptable only as a fresh one from the repair.
        if c["id"] in bad and victim in ids and c["version"] < 3:
            sys.exit(1)
sys.exit(0 if run("status", "--json")["chunks"]["under_replicated"] == 0 else 1)
PY
do
  [ $SECONDS -lt $end ] || { cairn status; for f in /f1 /f2 /f3; do cairn fileinfo $f; done; grep -h "repair" "$CL"/logs/meta0.log | tail; fail "damaged copies not replaced"; }
  sleep 2
done
grep -q "scrub: chunk" "$CL/logs/$victim.log" || fail "the scrubber did not report the damage"
# cairn status shows each server's scrub progress: the damage found, and full passes done.
end=$((SECONDS + 60))
until (cairn status --json || true) | python3 -c "
import json, sys
d = json.load(sys.stdin)
s = {x['host']: x['scrub'] for x in d['chunk_servers']}
assert s['$victim']['corrupt_found'] >= 1, s
holding = [x['host'] for x in d['chunk_servers'] if x['replicas'] > 0]
assert holding and all(s[h]['last_pass_end'] > 0 for h in holding), s
"; do
  [ $SECONDS -lt $end ] || { cairn status; fail "scrub progress not shown in cairn status"; }
  sleep 1
done
cairn status | grep "^scrub:" || true
check "scrubber found the damaged copies; each chunk repaired to 3 good replicas"
for i in 1 2 3; do cmp "$L/f$i" "$M/f$i" || fail "f$i differs after repair"; done

bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk0
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk2
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for i in 1 2 3; do cmp "$L/f$i" "$M/f$i" || fail "f$i unreadable with two chunk servers dead"; done
check "two of four chunk servers dead: every file reads back correctly"
