#!/usr/bin/env bash
# Files unlinked while open (POSIX, and promise 8 between mounts): a file whose last name goes
# stays readable and writable through every descriptor still open on it, on this mount and on
# others, also when it is replaced by a rename and across a restart of the meta leader; meta
# reclaims it after the last close, or when the client holding it dies (its session expires).
# fsck counts such a file as neither orphan nor damage.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
B="$T/b"
mount_extra "$B"
PID_B=$MOUNT_PID
unlinked() { cairn status --json | json "d['unlinked_open']"; }
wait_unlinked() {  # wait_unlinked N SECONDS WHAT
  local end=$((SECONDS + $2))
  until [ "$(unlinked)" = "$1" ]; do
    [ $SECONDS -lt $end ] || fail "$3: $(unlinked) files kept, expected $1"
    sleep 0.5
  done
}

# One program holds descriptors on both mounts and checks what it reads through them.
python3 - "$M" "$B" "$BIN/cairn" "$CAIRN_META" "$CAIRN_SECRET_FILE" <<'PY' &
import json, os, subprocess, sys, time
A, B, cairn, meta, secret = sys.argv[1:6]

def unlinked():
    out = subprocess.run([cairn, "--meta", meta, "--secret-file", secret, "status", "--json"],
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)["unlinked_open"]

def wait_for(n, what, limit=20):
    end = time.time() + limit
    while unlinked() != n:
        assert time.time() < end, f"{what}: {unlinked()} files kept, expected {n}"
        time.sleep(0.3)

def read_all(fd):
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)

# On the mount that unlinks it.
data = os.urandom(3 << 20)
with open(f"{A}/a", "wb") as f:
    f.write(data)
fa = os.open(f"{A}/a", os.O_RDWR)
os.unlink(f"{A}/a")
assert not os.path.exists(f"{A}/a")
assert os.fstat(fa).st_nlink == 0, os.fstat(fa).st_nlink
assert read_all(fa) == data, "content changed after unlink"
os.pwrite(fa, b"after unlink", 1 << 20)
data = data[:1 << 20] + b"after unlink" + data[(1 << 20) + 12:]
os.fsync(fa)
assert read_all(fa) == data, "a write after unlink was not read back"
wait_for(1, "the unlinked open file is kept")
print("ok: a file unlinked while open reads, writes and fsyncs through its descriptor, nlink 0")

# Open on the other mount, unlinked here.
other = os.urandom(1 << 20)
with open(f"{A}/b", "wb") as f:
    f.write(other)
fb = os.open(f"{B}/b", os.O_RDWR)
os.unlink(f"{A}/b")
end = time.time() + 5
while os.path.exists(f"{B}/b"):
    assert time.time() < end, "the name is still seen on B"
    time.sleep(0.1)
assert read_all(fb) == other, "B lost the content of a file unlinked on A"
os.pwrite(fb, b"B wrote", 0)
assert os.pread(fb, 7, 0) == b"B wrote"
wait_for(2, "both unlinked files are kept")
print("ok: a file open on another mount stays readable and writable there after unlink")

# Replaced by a rename while open on B.
with open(f"{A}/c", "wb") as f:
    f.write(b"old c")
with open(f"{A}/d", "wb") as f:
    f.write(b"new c")
fc = os.open(f"{B}/c", os.O_RDONLY)
os.rename(f"{A}/d", f"{A}/c")
assert os.pread(fc, 100, 0) == b"old c", "the replaced file's content changed"
with open(f"{A}/c", "rb") as f:
    assert f.read() == b"new c"
wait_for(3, "the replaced file is kept")
os.close(fc)
wait_for(2, "the replaced file is reclaimed after its close")
print("ok: a file replaced by rename stays readable where open, reclaimed after close")

os.close(fb)
wait_for(1, "the file closed on B is reclaimed")
print("ok: the last close on the other mount reclaims its file")
# Keep `fa` open across a meta restart (driven by the shell): hand over.
sys.stdout.flush()
with open(f"{A}/.held", "w") as f:
    f.write("ready")
end = time.time() + 120
while not os.path.exists(f"{A}/.restarted"):
    assert time.time() < end, "the shell did not restart meta"
    time.sleep(0.2)
assert read_all(fa) == data, "an unlinked open file lost its content across a meta restart"
os.pwrite(fa, b"after restart", 0)
data = b"after restart" + data[13:]
assert read_all(fa) == data
wait_for(1, "the unlinked file is still kept after the restart", 40)
os.close(fa)
wait_for(0, "the file is reclaimed after its last close, after the restart", 40)
print("ok: an unlinked open file survives a restart of the meta leader, reclaimed after close")
PY
DRIVER=$!
EXTRA_PIDS+=("$DRIVER")
end=$((SECONDS + 120))
until [ -f "$M/.held" ] || ! kill -0 "$DRIVER" 2>/dev/null; do
  [ $SECONDS -lt $end ] || fail "the driver did not reach the restart"
  sleep 0.2
done
[ -f "$M/.held" ] || { wait "$DRIVER"; fail "the driver ended early"; }
cairn fsck >"$T/fsck.out" 2>&1 || { cat "$T/fsck.out"; fail "fsck found problems while a file was unlinked but open"; }
check "fsck is clean while a file is unlinked but open"
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
end=$((SECONDS + 60))
until cairn status >/dev/null 2>&1; do
  [ $SECONDS -lt $end ] || fail "meta did not come back"
  sleep 0.5
done
touch "$M/.restarted"
wait "$DRIVER" || fail "files unlinked while open"

# A mount that dies holding an unlinked file: reclaimed when its session expires.
head -c 1048576 /dev/urandom > "$M/e"
python3 -c "
import os, sys, time
fd = os.open('$B/e', os.O_RDONLY)
print('held', flush=True)
time.sleep(300)" > "$T/holder.out" &
HOLDER=$!
EXTRA_PIDS+=("$HOLDER")
end=$((SECONDS + 20))
until grep -q held "$T/holder.out"; do [ $SECONDS -lt $end ] || fail "holder did not start"; sleep 0.2; done
rm "$M/e"
sleep 6  # the holder's open reached meta with B's watch long ago; the unlink keeps the file
[ "$(unlinked)" = 1 ] || fail "the file held open on B was not kept ($(unlinked))"
kill -KILL "$PID_B" "$HOLDER"
fusermount3 -uz "$B" 2>/dev/null || umount -l "$B" 2>/dev/null || true
start=$SECONDS
wait_unlinked 0 70 "a dead client's unlinked file is reclaimed when its session expires"
check "a killed mount's unlinked open file is reclaimed when its session expires ($((SECONDS - start)) s)"

# Removing files nobody holds open reclaims them promptly.
for i in $(seq 1 50); do echo "$i" > "$M/x$i"; done
rm "$M"/x*
start=$SECONDS
wait_unlinked 0 15 "removed files are reclaimed"
check "50 removed files reclaimed within $((SECONDS - start)) s"
