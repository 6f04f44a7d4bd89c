#!/usr/bin/env bash
# Data and metadata survive a full down and up of the cluster; fsync'd data survives kill -9
# of every process.
source "$(dirname "$0")/lib.sh"
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
