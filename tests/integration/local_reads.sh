#!/usr/bin/env bash
# A mount reads the chunk copies that live on its own host from their files (Chunk.locate,
# fs/local_chunks.h) instead of through their chunk servers, and keeps every promise of reads
# through the servers: exactly the bytes written, holes as zeros (promise 4); a damaged copy
# is never returned but read again through the servers, which report it; damage on every copy
# is an error, never wrong bytes. A mount that cannot open the files (another mount namespace,
# as on another host) or is told not to (-o nolocal_reads) reads through the servers.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3

metric() {  # metric PORT NAME: the sum of the series of NAME; fails when there is none
  local v
  v=$(curl -s "127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $2; seen = 1}
        END {if (seen) printf "%d\n", s}')
  [ -n "$v" ] || fail "no metric $2 on port $1"
  echo "$v"
}
served() {  # block bytes the chunk servers read for clients
  local t=0 p
  for p in $CHUNK0_METRICS $CHUNK1_METRICS $CHUNK2_METRICS; do
    t=$((t + $(metric "$p" cairn_chunk_read_bytes_total)))
  done
  echo $t
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Two chunks (64 MiB each) of data, a hole of never-written blocks inside the first chunk and a
# chunk never allocated, and a last block only partly used.
head -c 40M /dev/urandom > "$L/f"
dd if=/dev/urandom of="$L/f" bs=1M seek=56 count=30 conv=notrunc status=none
dd if=/dev/urandom of="$L/f" bs=1 seek=$((200 * 1048576 + 12345)) count=777 conv=notrunc status=none
cp --sparse=always "$L/f" "$M/f"
size=$(stat -c %s "$L/f")

drop
local0=$(metric "$MOUNT_METRICS" cairn_client_local_read_bytes_total)
served0=$(served)
cmp "$L/f" "$M/f" || fail "a local read returned other bytes than were written"
local1=$(metric "$MOUNT_METRICS" cairn_client_local_read_bytes_total)
served1=$(served)
echo "local reads: $((local1 - local0)) bytes from the files, $((served1 - served0)) through the servers"
[ $((local1 - local0)) -ge $((70 * 1048576)) ] || fail "the data was not read from the files on this host"
[ $((served1 - served0)) -lt 1048576 ] || fail "the chunk servers served $((served1 - served0)) bytes of it"
check "a cold read on the chunk servers' host comes from their files, byte for byte"

# -o nolocal_reads: everything through the servers.
p2=$(free_port)
mount_extra "$T/m2" "nolocal_reads,metrics=127.0.0.1:$p2"
drop
served0=$(served)
cmp "$L/f" "$T/m2/f" || fail "a read through the servers returned other bytes"
served1=$(served)
[ "$(metric "$p2" cairn_client_local_read_bytes_total)" -eq 0 ] || fail "nolocal_reads read files"
[ $((served1 - served0)) -ge $((70 * 1048576)) ] || fail "nolocal_reads: servers served only $((served1 - served0)) bytes"
grep -q "local reads off" "$T/mount-m2.log" || fail "nolocal_reads not logged"
check "-o nolocal_reads reads through the chunk servers"

# A mount that cannot see the files (its own mount namespace hides the chunk directories, as
# another host would) falls back to the servers at once and reads correctly.
p3=$(free_port)
export CL T L BIN
mkdir -p "$T/m3"
unshare -m --propagation private bash -c '
  set -e
  for c in chunk0 chunk1 chunk2; do mount -t tmpfs hidden "$CL/$c/data"; done
  "$BIN/mount.cairn" "$CAIRN_META:/" "$T/m3" -f \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,log=$T/mount-m3.log,metrics=127.0.0.1:'"$p3"'" &
  pid=$!
  for i in $(seq 1 150); do mountpoint -q "$T/m3" && break; sleep 0.2; done
  rc=0
  cmp "$L/f" "$T/m3/f" || rc=1
  curl -s "127.0.0.1:'"$p3"'/metrics" > "$T/m3.metrics"
  fusermount3 -u "$T/m3" || umount -l "$T/m3"
  wait $pid || true
  exit $rc
' || fail "a mount that cannot open the chunk files read wrong bytes"
grep -q "^cairn_client_local_read_bytes_total 0$" "$T/m3.metrics" ||
  fail "a mount that cannot see the files counted local reads: $(grep local_read "$T/m3.metrics")"
grep -q "cannot be read from here" "$T/mount-m3.log" || fail "the fallback was not logged"
check "a mount that cannot open the files (as on another host) reads through the servers"

# Damage: bytes flipped in block 5 of the first chunk on the head replica and the next one. The
# local read of the head's copy fails its check; the servers' read reports both damaged copies
# and answers from the third.
chunk_file() {  # chunk_file SERVER_NAME CHUNK_ID_HEX
  echo "$CL/$1/data/chunks/$(printf '%016x' "0x$2").chk"
}
flip() {  # flip FILE BLOCK
  python3 - "$1" "$2" <<'PY'
import sys
path, block = sys.argv[1], int(sys.argv[2])
data_offset = 4096 + (64 * 1024 * 1024 // 4096) * 64   # header + block table of a 64 MiB chunk
with open(path, "r+b") as f:
    f.seek(data_offset + block * 4096 + 100)
    b = f.read(1)
    f.seek(data_offset + block * 4096 + 100)
    f.write(bytes([b[0] ^ 0xFF]))
PY
}
names=$(cairn status --json | python3 -c "import json,sys; d=json.load(sys.stdin); print(' '.join(f\"{s['id']}={s['host']}\" for s in d['chunk_servers']))")
name_of() { local kv; for kv in $names; do if [ "${kv%%=*}" = "$1" ]; then echo "${kv#*=}"; fi; done; }
read -r cid s1 s2 s3 < <(cairn fileinfo /f --json | python3 -c "
import json, sys
c = json.load(sys.stdin)['chunks'][0]
print('%x' % c['id'], *[r['server'] for r in c['replicas']])")
head=$(name_of "$s1") second=$(name_of "$s2")
[ -n "$head" ] && [ -n "$second" ] || fail "no replica names for chunk $cid ($names)"
corrupt0=$(metric "$(eval echo "\$${head^^}_METRICS")" cairn_chunk_corrupt_blocks_total)
retried0=$(metric "$MOUNT_METRICS" cairn_client_local_reads_retried_total)
flip "$(chunk_file "$head" "$cid")" 5
flip "$(chunk_file "$second" "$cid")" 5
drop
cmp "$L/f" "$M/f" || fail "a damaged copy reached a reader"
corrupt1=$(metric "$(eval echo "\$${head^^}_METRICS")" cairn_chunk_corrupt_blocks_total)
[ "$corrupt1" -gt "$corrupt0" ] || fail "the head's damaged copy was not found by its server"
retried1=$(metric "$MOUNT_METRICS" cairn_client_local_reads_retried_total)
[ "$retried1" -gt "$retried0" ] || fail "the damaged block was not read from the head's file first"
grep -q "returned a bad block; reported" "$CL/logs/mount.log" || fail "the damage was not reported to meta"
check "damage in the head's copy: read again through the servers, reported, correct bytes"

# Damage on every copy of a block of another file: an error, never wrong bytes.
head -c 3M /dev/urandom > "$L/g"
cp "$L/g" "$M/g"
gid=$(cairn fileinfo /g --json | python3 -c "import json,sys; print('%x' % json.load(sys.stdin)['chunks'][0]['id'])")
for c in chunk0 chunk1 chunk2; do flip "$(chunk_file "$c" "$gid")" 9; done
drop
if dd if="$M/g" of="$L/g.read" bs=4096 skip=9 count=1 status=none 2> "$L/g.err"; then
  fail "a block damaged on every copy was read: $(cmp "$L/g.read" <(dd if="$L/g" bs=4096 skip=9 count=1 status=none) && echo same || echo different) bytes"
fi
grep -q "Input/output error" "$L/g.err" || fail "expected EIO, got: $(cat "$L/g.err")"
dd if="$M/g" of="$L/g.first" bs=4096 count=9 status=none || fail "undamaged blocks before it unreadable"
cmp "$L/g.first" <(head -c $((9 * 4096)) "$L/g") || fail "undamaged blocks read wrong"
check "a block damaged on every copy reads as EIO; the blocks beside it read correctly"

# A copy whose server has stopped is not read from its file: the chain may have left it behind.
# A reader holds a file open (its chunk's location cached, head first) while the head's server
# dies and another mount rewrites the file (the chain drops the dead server and raises the
# version); the reader must come to the new bytes, never keep reading the dead head's copy.
head -c 4M /dev/urandom > "$L/h"
cp "$L/h" "$M/h"
head -c 1M /dev/urandom > "$L/h.new"
read -r hid h1 < <(cairn fileinfo /h --json | python3 -c "
import json, sys
c = json.load(sys.stdin)['chunks'][0]
print('%x' % c['id'], c['replicas'][0]['server'])")
hhead=$(name_of "$h1")
python3 - "$M/h" "$L/h" "$L/h.new" "$L/ready" "$L/go" > "$L/reader.out" 2>&1 <<'PY' &
import os, sys, time
path, old, new, ready, go = sys.argv[1:]
old, new = open(old, "rb").read(), open(new, "rb").read()
with open(path, "rb", buffering=0) as f:
    assert f.read() == old, "first read differs"
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.05)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        f.seek(0)
        got = f.read(len(new))
        if got == new:
            print("new bytes after", round(20 - (end - time.monotonic()), 2), "s")
            sys.exit(0)
        if got != old[:len(new)]:
            print("neither the old nor the new bytes"); sys.exit(1)
        time.sleep(0.2)
    print("still the old bytes after 20 s"); sys.exit(1)
PY
reader=$!
EXTRA_PIDS+=("$reader")
end=$((SECONDS + 20))
until [ -e "$L/ready" ]; do [ $SECONDS -lt $end ] || fail "reader not ready"; sleep 0.1; done
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" "$hhead"
dd if="$L/h.new" of="$T/m2/h" bs=1M conv=notrunc status=none || fail "rewrite with the head dead failed"
touch "$L/go"
wait "$reader" || fail "reader: $(cat "$L/reader.out")"
cat "$L/reader.out"
check "a dead server's copy is not read from its file: the reader comes to the rewritten bytes"
