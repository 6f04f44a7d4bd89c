#!/usr/bin/env bash
# Promise 8 between mounts: two more mounts of one cluster keep attributes and entries cached
# for 60 s (attr_timeout=60), so only meta's pushed invalidations can make them see each other's
# changes quickly. What one creates, writes and closes, renames, chmods, touches, removes, the
# other sees within 3 s, content included (close-to-open). Each mount holds a session with the
# leader, shown by cairn status; a mount killed with SIGKILL loses it after the session timeout.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
B="$T/b" C="$T/c"
mkdir -p "$B" "$C"
MB="$(free_port)"
MC="$(free_port)"
mount_extra "$B" "attr_timeout=60,metrics=127.0.0.1:$MB"
PID_B=$MOUNT_PID
mount_extra "$C" "attr_timeout=60,metrics=127.0.0.1:$MC"
PID_C=$MOUNT_PID

within() {  # within SECONDS DESCRIPTION COMMAND...: COMMAND succeeds within the time
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "not seen within ${limit} s: $what"
    sleep 0.1
  done
}
same_content() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }
mode_is() { [ "$(stat -c %a "$1" 2>/dev/null)" = "$2" ]; }
size_is() { [ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ]; }
mtime_is() { [ "$(stat -c %Y "$1" 2>/dev/null)" = "$2" ]; }
absent() { ! stat "$1" >/dev/null 2>&1; }
lists() { ls "$1" 2>/dev/null | grep -qx "$2"; }

# Each check first makes the observer cache what is about to change.
stat "$C/x" >/dev/null 2>&1 || true
echo "first version" > "$B/x"
within 3 "a file created on B appears on C" same_content "$C/x" "first version"
stat "$C/x" > /dev/null
echo "second, longer version" > "$B/x"
within 3 "new size and content of a rewritten file" same_content "$C/x" "second, longer version"
size_is "$C/x" 23 || fail "size on C: $(stat -c %s "$C/x")"
check "create, rewrite and close on one mount: the other sees name, size and content"

stat "$C/x" > /dev/null
chmod 600 "$B/x"
within 3 "chmod" mode_is "$C/x" 600
touch -d "2001-02-03 04:05:06 UTC" "$B/x"
within 3 "utimes" mtime_is "$C/x" "$(date -d "2001-02-03 04:05:06 UTC" +%s)"
check "chmod and utimes show up on the other mount"

stat "$C/x" "$C/y" >/dev/null 2>&1 || true
mv "$B/x" "$B/y"
within 3 "rename: old name gone" absent "$C/x"
within 3 "rename: new name present" same_content "$C/y" "second, longer version"
mkdir "$C/d"
ls "$B/d" >/dev/null
touch "$C/d/inside"
within 3 "an entry made in a directory the other mount listed" lists "$B/d" inside
# A directory B holds open and has listed to its end (the kernel may keep that listing): after
# a change on C, listing it again from its start through the same descriptor shows the change.
mkdir "$C/held"
touch "$C/held/one"
python3 - "$B/held" "$C/held" <<'PY' || fail "a held directory's listing missed a change made elsewhere"
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
for _ in range(3): assert os.listdir(fd) == ["one"], os.listdir(fd)
open(sys.argv[2] + "/two", "w").close()
end = time.monotonic() + 3
while sorted(os.listdir(fd)) != ["one", "two"]:
    assert time.monotonic() < end, os.listdir(fd)
    time.sleep(0.1)
PY
rm -r "$C/held"
# A directory B made (B knows all its names, for 60 s here): a name C adds shows on B.
mkdir "$B/made"
stat "$B/made/late" >/dev/null 2>&1 && fail "a name in an empty directory"
touch "$C/made/late"
within 3 "a name added elsewhere to a directory made here" stat "$B/made/late"
rm -r "$B/made"
rm "$B/y"
within 3 "unlink" absent "$C/y"
rm "$B/d/inside"; rmdir "$B/d"
within 3 "rmdir" absent "$C/d"
check "rename, mkdir, unlink and rmdir show up on the other mount"

# A new file's first chunk comes with its creation and is recorded by the creator's first
# commit. Here the other mount writes the file first (its chunk is recorded by the usual
# allocation): the creator's commit finds that chunk there, moves its blocks into it, and both
# writes are in the file.
python3 - "$B/race" "$C/race" <<'PY' || fail "a new file written from two mounts lost a write"
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.pwrite(fd, b"A" * 8192, 0)          # stays in B's kernel cache until the close
end = time.monotonic() + 5
while not os.path.exists(sys.argv[2]):
    assert time.monotonic() < end, "C never saw the file"
    time.sleep(0.05)
other = os.open(sys.argv[2], os.O_WRONLY)
os.pwrite(other, b"B" * 4096, 65536)
os.close(other)                        # C's chunk is recorded first
os.close(fd)                           # B's commit meets it
PY
echo 3 > /proc/sys/vm/drop_caches
python3 - "$M/race" <<'PY' || fail "the file written from two mounts reads wrong"
import sys
d = open(sys.argv[1], "rb").read()
assert len(d) == 69632, len(d)
assert d[:8192] == b"A" * 8192, "the creator's blocks"
assert d[8192:65536] == bytes(65536 - 8192), "the hole"
assert d[65536:] == b"B" * 4096, "the other writer's blocks"
PY
grep -q "recorded by another writer first" "$T/mount-b.log" ||
  fail "the creator's commit did not meet the other chunk (the test raced past it)"
rm "$M/race"
check "a new file written first from another mount: the creator's blocks move into its chunk"

# Data written through mmap reaches the other mount after msync and close.
head -c 65536 /dev/zero > "$B/m"
cat "$C/m" > /dev/null
python3 - "$B/m" <<'PY'
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    m[100:111] = b"mapped data"
    m.flush()
    m.close()
PY
within 3 "mmap write after msync and close" python3 -c "import sys; d=open('$C/m','rb').read(); sys.exit(0 if d[100:111]==b'mapped data' else 1)"
check "an mmap write reaches the other mount after msync and close"

# Pages of an unchanged file stay cached across opens (keep_cache); a change by another mount
# still shows at the next open.
metric() {  # metric PORT NAME: the sum of a metric's series on a mount
  python3 -c "import urllib.request,sys; t=urllib.request.urlopen('http://127.0.0.1:$1/metrics').read().decode(); print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith('$2'))))"
}
head -c 2M /dev/urandom > "$L/k"; cp "$L/k" "$B/k"
# B's writes reach C as invalidations too; one that arrived after C's first read would drop
# pages the second read then fetches again. Wait (up to 5 s) until C has seen them all: its
# invalidation count unchanged for half a second.
last=-1; quiet=0
for _ in $(seq 50); do
  now="$(metric "$MC" cairn_client_invalidations_total)"
  if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi
  [ "$quiet" -ge 5 ] && break
  last="$now"; sleep 0.1
done
cmp "$L/k" "$C/k" || fail "k differs on C"
before="$(metric "$MC" cairn_client_read_bytes_total)"
cmp "$L/k" "$C/k" || fail "k differs on C (second read)"
after="$(metric "$MC" cairn_client_read_bytes_total)"
[ "$after" = "$before" ] || fail "an unchanged file was read again from the cluster ($before -> $after bytes)"
printf 'changed' | dd of="$B/k" bs=1 seek=1000 conv=notrunc status=none
within 3 "a change inside a file cached on C" python3 -c "import sys; sys.exit(0 if open('$C/k','rb').read()[1000:1007]==b'changed' else 1)"
check "an unchanged file is read from the page cache at its next open; a changed one is not"

inval="$(curl -s "http://127.0.0.1:$MC/metrics" 2>/dev/null || python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$MC/metrics').read().decode())")"
n="$(echo "$inval" | awk '/^cairn_client_invalidations_total\{kind="(entry|inode)"\}/ { s += $2 } END { print s + 0 }')"
[ "$n" -gt 5 ] || fail "mount C applied no invalidations ($n)"
check "mount C applied $n invalidations pushed by meta"

clients() { (cairn status --json || true) | json "len(d['clients'])"; }
[ "$(clients)" -ge 3 ] || fail "cairn status does not list three client sessions: $(clients)"
kill -KILL "$PID_C"
fusermount3 -uz "$C" 2>/dev/null || umount -l "$C" 2>/dev/null || true
clients_are() { [ "$(clients)" = "$1" ]; }
within 45 "the killed mount's session to expire" clients_are 2
grep -q "session of client .* expired" "$CL/logs/meta0.log" || fail "no expiry logged"
check "every mount holds a session; a killed mount's session expires"
