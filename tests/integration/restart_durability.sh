#!/usr/bin/env bash
# Data and metadata survive a full down and up of the cluster; fsync'd data survives kill -9
# of every process; meta's store survives a crash of the machine.
source "$(dirname "$0")/lib.sh"
export CAIRN_SNAPSHOT_EVERY=200  # snapshots (and log compaction) happen during the test
cluster_up

mkdir -p "$M/keep/sub"
for i in 1 2 3; do head -c $((i * 5 * 1024 * 1024 + 17)) /dev/urandom > "$M/keep/f$i"; done
seq 1 1000 > "$M/keep/sub/numbers"
ln -s f1 "$M/keep/link"
(cd "$M/keep" && find . -type f -exec sha256sum {} + | sort -k2) > "$L/before"
servers_before=$(cairn status --json | json "len(d['chunk_servers'])")

bash "$ROOT/tools/cluster.sh" down --dir "$CL"
mountpoint -q "$M" && fail "still mounted after down"
cluster_up
(cd "$M/keep" && find . -type f -exec sha256sum {} + | sort -k2) > "$L/after"
diff "$L/before" "$L/after" || fail "checksums differ after down/up"
[ "$(readlink "$M/keep/link")" = f1 ] || fail "symlink lost"
[ "$(cairn status --json | json "len([s for s in d['chunk_servers'] if s['state']=='online'])")" = "$servers_before" ] \
  || fail "chunk servers did not all come back"
check "down/up keeps every byte"

# kill -9 everything right after fsync: the fsync'd file is complete afterwards.
head -c 20M /dev/urandom > "$L/synced"
python3 - "$L/synced" "$M/synced" <<'PY'
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
os.write(fd, data)
os.fsync(fd)
os.close(fd)
PY
for n in mount meta0 chunk0 chunk1 chunk2; do bash "$ROOT/tools/cluster.sh" kill --dir "$CL" "$n"; done
cluster_up
cmp "$L/synced" "$M/synced" || fail "fsync'd file differs after kill -9 of every process"
check "fsync'd data survives kill -9 of every process"

start_meta() {  # start_meta WHEN: meta0 started again and answering, within 30 s
  bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
  local end=$((SECONDS + 30))
  until cairn status --json > /dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "meta did not answer after $1"
    sleep 0.5
  done
}

# Meta answers a change once it is in the Raft log and commits its store a few milliseconds
# later, many changes in one commit: kill -9 of meta right after a burst of changes must lose
# none of them (the restart applies them again from the log).
mkdir -p "$M/burst"
python3 - "$M/burst" "$CL/pids/meta0.pid" <<'PY'
import os, signal, sys
d = sys.argv[1]
meta = int(open(sys.argv[2]).read())
for i in range(300):
    open(os.path.join(d, f"f{i}"), "w").close()
for i in range(0, 300, 2):
    os.rename(os.path.join(d, f"f{i}"), os.path.join(d, f"r{i}"))
os.mkdir(os.path.join(d, "last"))
os.kill(meta, signal.SIGKILL)  # at once: within the few ms before meta commits its store
PY
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
: > "$CL/logs/meta0.log"
start_meta "kill -9"
grep -q "are applied again" "$CL/logs/meta0.log" ||
  fail "meta's store held every change at kill -9: the test did not catch a commit pending"
[ -d "$M/burst/last" ] || fail "the last change before kill -9 of meta was lost"
n_f=$(find "$M/burst" -name 'f*' | wc -l); n_r=$(find "$M/burst" -name 'r*' | wc -l)
[ "$n_f" = 150 ] && [ "$n_r" = 150 ] || fail "after kill -9 of meta: $n_f f* and $n_r r* (want 150 each)"
check "every change answered before kill -9 of meta is there after its restart"

# A crash of the machine: meta's store is written to the page cache only (the Raft log is what
# is synced), so after a power loss its file may hold any mix of pages. Pretend one: stop meta
# with kill -9, wreck its store file, and make it look opened under another boot. Meta must
# rebuild the store from its last snapshot and the log, and lose nothing it acknowledged.
mkdir -p "$M/crash"
for i in $(seq 1 300); do echo "file $i" > "$M/crash/f$i"; done
mv "$M/crash/f1" "$M/crash/renamed"
rm "$M/crash/f2"
cp "$L/synced" "$M/crash/big"
(cd "$M" && find crash keep -type f -exec sha256sum {} + | sort -k2) > "$L/before-crash"
ino_before=$(stat -c %i "$M/crash/big")
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
[ -f "$CL/meta0/snapshot.mdb" ] || fail "no snapshot was taken (CAIRN_SNAPSHOT_EVERY)"
echo "a-boot-before-the-crash" > "$CL/meta0/open-boot"
size=$(stat -c %s "$CL/meta0/data.mdb")
head -c "$size" /dev/urandom > "$CL/meta0/data.mdb"
start_meta "the rebuild"
grep -q "rebuilt from" "$CL/logs/meta0.log" || fail "meta did not rebuild its store"
(cd "$M" && find crash keep -type f -exec sha256sum {} + | sort -k2) > "$L/after-crash"
diff "$L/before-crash" "$L/after-crash" || fail "files differ after the store was rebuilt"
[ ! -e "$M/crash/f1" ] && [ ! -e "$M/crash/f2" ] || fail "a rename or removal was lost"
echo again > "$M/crash/after" && [ "$(cat "$M/crash/after")" = again ] || fail "no writes after the rebuild"
check "a store wrecked by a machine crash is rebuilt from the snapshot and the log"
# Answers may leave before the leader's log sync; after a crash of its machine the ids of what
# was lost must not be given out again: they jump ahead.
ino_after=$(stat -c %i "$M/crash/after")
[ "$ino_after" -ge $((ino_before + (1 << 24))) ] ||
  fail "inode ids did not jump after the rebuild ($ino_before -> $ino_after)"
grep -q "ids jump" "$CL/logs/meta0.log" || fail "meta did not log the id jump"
check "inode ids jump ahead after the rebuild ($ino_before -> $ino_after)"
