#!/usr/bin/env bash
# Five meta servers keep serving after losing any two; membership changes one at a time.
source "$(dirname "$0")/lib.sh"
cluster_up --metas 5 --chunks 3

echo before > "$M/a"
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta1
for i in $(seq 1 200); do echo "$i" > "$M/after$i" || fail "write $i with two metas down"; done
[ "$(cat "$M/a")" = before ] || fail "old data"
[ "$(ls "$M" | wc -l)" = 201 ] || fail "entries"
check "5 meta servers: two killed, service goes on"
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta1
sleep 2
# Transfer leadership to meta server 1 and check it leads.
cairn meta transfer-leader 1 >/dev/null
end=$((SECONDS + 20))
until cairn meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
sys.exit(0 if any(m.get('id')==1 and m.get('role')=='leader' for m in d) else 1)"; do
  [ $SECONDS -lt $end ] || { cairn meta status; fail "leadership transfer"; }
  sleep 0.3
  cairn meta transfer-leader 1 >/dev/null 2>&1 || true
done
echo after-transfer > "$M/b"
check "leadership transferred to meta server 1"
# Remove meta server 5, keep serving with four.
cairn meta remove 5 || fail "meta remove"
for i in $(seq 1 50); do : > "$M/four$i"; done
cairn meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
l=[m for m in d if m.get('role')=='leader'][0]; print('members after remove:', l)"
check "meta server removed, cluster serving"
