#!/usr/bin/env bash
# A meta leader cut off from the others (its own network namespace loses its link) steps down
# by itself (check-quorum), the others elect a new leader, the mount carries on, and no
# acknowledged change is lost; healed, the old leader rejoins as a follower.
source "$(dirname "$0")/lib.sh"
command -v ip >/dev/null || fail "iproute2 is missing"

# Three hosts for the meta servers: network namespaces on a bridge, the test's own addresses.
tag="c$$"
br="cbr$$"
NET=10.231.$(( $$ % 200 )).                                    # netns-only subnet
ip link add "$br" type bridge
ip addr add "${NET}254/24" dev "$br"                            # netns bridge side
ip link set "$br" up
nsdown() {
  for i in 1 2 3; do ip netns del "$tag$i" 2>/dev/null || true; done
  ip link del "$br" 2>/dev/null || true
}
trap 'rc=$?; nsdown; (exit $rc); cleanup' EXIT
for i in 1 2 3; do
  ip netns add "$tag$i"
  ip link add "v$tag$i" type veth peer name eth0 netns "$tag$i"
  ip link set "v$tag$i" master "$br" up
  ip -n "$tag$i" addr add "${NET}$i/24" dev eth0                # netns address
  ip -n "$tag$i" link set eth0 up
  ip -n "$tag$i" link set lo up
done

mkdir -p "$CL/logs"
head -c 32 /dev/urandom | xxd -p -c 64 > "$CL/secret"
head -c 32 /dev/urandom > "$CL/key"
PEERS="1=${NET}1:7000,2=${NET}2:7000,3=${NET}3:7000"
METAS="${NET}1:7000,${NET}2:7000,${NET}3:7000"
for i in 1 2 3; do
  ip netns exec "$tag$i" "$BIN/cairn-meta" --id $i --peers "$PEERS" --listen "${NET}$i:7000" \
    --data "$CL/meta$i" --secret-file "$CL/secret" --log-file "$CL/logs/meta$i.log" &
  EXTRA_PIDS+=($!)
done
for i in 0 1 2; do
  port=$(free_port)
  "$BIN/cairn-chunk" --listen "127.0.0.1:$port" --meta "$METAS" --secret-file "$CL/secret" \
    --data "$CL/chunk$i" --host "chunk$i" --log-file "$CL/logs/chunk$i.log" &
  EXTRA_PIDS+=($!)
done
mkdir -p "$M"
timeout 60 "$BIN/mount.cairn" "$METAS:/" "$M" -o "secretfile=$CL/secret,keyfile=$CL/key,log=$CL/logs/mount.log" \
  || fail "mount"
EXTRA_MOUNTS+=("$M")
export CAIRN_META="$METAS" CAIRN_SECRET_FILE="$CL/secret"

leader() {
  "$BIN/cairn" meta status --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); \
l=[m['id'] for m in d if m.get('role')=='leader']; print(l[0] if l else '')"
}
end=$((SECONDS + 30))
until [ -n "$(leader)" ]; do [ $SECONDS -lt $end ] || fail "no leader"; sleep 0.3; done
old=$(leader)
echo "leader is meta server $old"

mkdir "$M/p"
(
  for i in $(seq 1 1500); do
    if echo "v$i" > "$M/p/f$i"; then echo "$i"; fi
  done
) > "$L/acked" 2> "$L/errors" &
work=$!
sleep 3
ip -n "$tag$old" link set eth0 down                             # cut the leader off (netns)
echo "cut off meta server $old"
# Isolated, it must step down by itself within a few election timeouts.
end=$((SECONDS + 20))
until grep -q "node $old is \(follower\|pre-candidate\|candidate\)" "$CL/logs/meta$old.log"; do
  [ $SECONDS -lt $end ] || fail "the cut-off leader did not step down"
  sleep 0.2
done
check "cut-off leader stepped down"
wait $work || true
[ -s "$L/errors" ] && { head "$L/errors"; fail "operations failed during the partition"; }
[ "$(wc -l < "$L/acked")" = 1500 ] || fail "only $(wc -l < "$L/acked") of 1500 creates acknowledged"
new=$(leader)
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no new leader"
check "meta server $new leads; 1500 creates acknowledged through the partition"

ip -n "$tag$old" link set eth0 up                               # heal (netns)
end=$((SECONDS + 30))
until "$BIN/cairn" meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
a=[m['applied'] for m in d if 'applied' in m]; sys.exit(0 if len(a)==3 and max(a)-min(a)<3 else 1)"; do
  [ $SECONDS -lt $end ] || { "$BIN/cairn" meta status; fail "old leader did not catch up"; }
  sleep 0.3
done
while read -r i; do
  [ "$(cat "$M/p/f$i")" = "v$i" ] || fail "acknowledged create $i lost"
done < "$L/acked"
[ "$(ls "$M/p" | wc -l)" = 1500 ] || fail "entries: $(ls "$M/p" | wc -l)"
"$BIN/cairn" meta status
check "healed: old leader caught up as a follower, every acknowledged change present"
