#!/usr/bin/env bash
# Promises 1 and 6 with real processes: the meta leader killed with SIGKILL in the middle of a
# workload of creates, writes and renames; every acknowledged operation is there exactly once
# and the mount carries on by itself. A follower left behind past a compaction catches up by
# snapshot. Five meta servers survive losing two.
source "$(dirname "$0")/lib.sh"
export CAIRN_SNAPSHOT_EVERY=500
cluster_up --metas 3

leader_name() {
  local i
  for i in 0 1 2 3 4; do
    local p="META${i}_PORT"
    [ -n "${!p:-}" ] || continue
    if cairn meta status --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); \
sys.exit(0 if any(m.get('role')=='leader' and m['addr'].endswith(':${!p}') for m in d) else 1)"; then
      echo "meta$i"; return 0
    fi
  done
  return 1
}

mkdir "$M/w"
# Workload: create, write and rename; log each acknowledged operation.
(
  for i in $(seq 1 5000); do
    if echo "content $i" > "$M/w/f$i"; then echo "create $i"; fi
    if [ $((i % 10)) = 0 ] && mv "$M/w/f$i" "$M/w/r$i"; then echo "rename $i"; fi
  done
) > "$L/acked" 2> "$L/errors" &
work=$!
sleep 4
victim=$(leader_name) || fail "no leader"
t0=$(date +%s.%N)
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" "$victim"
echo "killed leader $victim"
# Time to the first served request after the kill.
until echo probe > "$M/probe" 2>/dev/null; do sleep 0.05; done
t1=$(date +%s.%N)
wait $work || true
echo "failover: first request served $(python3 -c "print(round($t1 - $t0, 2))") s after the kill"
[ -s "$L/errors" ] && { head "$L/errors"; fail "operations failed during failover"; }
created=$(grep -c '^create' "$L/acked")
[ "$created" = 5000 ] || fail "only $created of 5000 creates succeeded"
for i in $(seq 1 5000); do
  if [ $((i % 10)) = 0 ]; then
    [ -f "$M/w/r$i" ] && [ ! -e "$M/w/f$i" ] || fail "rename $i lost or doubled"
  else
    [ -f "$M/w/f$i" ] || fail "acknowledged create $i missing"
  fi
done
[ "$(ls "$M/w" | wc -l)" = 5000 ] || fail "$(ls "$M/w" | wc -l) entries instead of 5000"
[ "$(cat "$M/w/f4999")" = "content 4999" ] || fail "content"
check "leader killed mid-workload: 5000 creates and 500 renames, each exactly once"

# The killed server comes back far behind (the log was compacted meanwhile) and catches up.
bash "$ROOT/tools/cluster.sh" start --dir "$CL" "$victim"
for i in $(seq 1 1200); do : > "$M/w/more$i"; done
end=$((SECONDS + 60))
until cairn meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
a=[m['applied'] for m in d if 'applied' in m]; sys.exit(0 if len(a)==3 and max(a)-min(a)<5 else 1)"; do
  [ $SECONDS -lt $end ] || { cairn meta status; fail "restarted server did not catch up"; }
  sleep 0.5
done
# It was down while thousands of entries were applied and the log compacted every 500: it can
# only have caught up from a streamed snapshot.
grep -q "installed snapshot" "$CL/logs/$victim.log" || fail "the restarted server did not install a snapshot"
cairn meta status
check "restarted meta server caught up"
