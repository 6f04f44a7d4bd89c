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

# Add a new, empty meta server (started with --join) as member 6: it catches up and votes.
port=$(free_port)
"$BIN/cairn-meta" --id 6 --join --listen "127.0.0.1:$port" --data "$T/meta6" \
  --secret-file "$CAIRN_SECRET_FILE" --log-file "$T/meta6.log" &
EXTRA_PIDS+=($!)
cairn meta add 6 "127.0.0.1:$port" || fail "meta add"
end=$((SECONDS + 30))
until "$BIN/cairn" --meta "$CAIRN_META,127.0.0.1:$port" --secret-file "$CAIRN_SECRET_FILE" meta status --json \
    | python3 -c "import json,sys; d=json.load(sys.stdin); \
n=[m for m in d if m.get('id')==6]; l=[m for m in d if m.get('role')=='leader']; \
sys.exit(0 if n and l and l[0]['commit']-n[0]['applied']<3 else 1)"; do
  [ $SECONDS -lt $end ] || { cat "$T/meta6.log"; fail "new meta server did not catch up"; }
  sleep 0.5
done
for i in $(seq 1 20); do : > "$M/six$i"; done
"$BIN/cairn" --meta "$CAIRN_META,127.0.0.1:$port" --secret-file "$CAIRN_SECRET_FILE" meta status
check "meta server 6 added and caught up"
