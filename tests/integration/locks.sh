#!/usr/bin/env bash
# File locks across clients: fcntl record locks and flock between two mounts and between two
# processes of one mount (non-blocking refused, blocking granted when the holder lets go,
# interruptible), locks surviving a restart of the meta leader, a killed mount's locks released
# when its session expires, and two processes on two mounts updating one sqlite3 database in
# rollback-journal mode with no lost update.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
B="$T/b"
mount_b() { mount_extra "$B"; PID_B=$MOUNT_PID; }
mount_b
echo "shared" > "$M/f"

python3 - "$M/f" "$B/f" <<'PY' || fail "lock semantics between mounts"
import fcntl, os, sys, time, subprocess, signal
a_path, b_path = sys.argv[1], sys.argv[2]

def try_lock(path, kind, length, start, nb=True):
    # In a child process: another lock owner (on the same mount or the other one).
    code = f"""
import fcntl, sys
f = open({path!r}, 'r+')
try:
    fcntl.lockf(f, {kind} | (fcntl.LOCK_NB if {nb} else 0), {length}, {start})
except OSError:
    sys.exit(1)
"""
    return subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0

a = open(a_path, "r+")
fcntl.lockf(a, fcntl.LOCK_EX, 100, 0)
assert not try_lock(b_path, "fcntl.LOCK_EX", 100, 0), "conflicting write lock granted on B"
assert not try_lock(a_path, "fcntl.LOCK_SH", 10, 50), "conflicting lock granted to another process on A"
assert try_lock(b_path, "fcntl.LOCK_EX", 100, 100), "disjoint range refused"
print("ok: fcntl write locks exclude other owners on both mounts, ranges apart do not conflict")
fcntl.lockf(a, fcntl.LOCK_SH, 100, 0)  # downgrade: readers may join
assert try_lock(b_path, "fcntl.LOCK_SH", 100, 0), "read lock refused next to a read lock"
assert not try_lock(b_path, "fcntl.LOCK_EX", 100, 0), "write lock granted over a read lock"
print("ok: read locks are shared, a write lock waits for readers")

# Blocking: B waits in F_SETLKW until A lets go.
fcntl.lockf(a, fcntl.LOCK_EX, 0, 0)
waiter = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, time
f = open({b_path!r}, 'r+')
t = time.time(); fcntl.lockf(f, fcntl.LOCK_EX, 0, 0); print('%.2f' % (time.time() - t))
"""], stdout=subprocess.PIPE, text=True)
time.sleep(1.5)
assert waiter.poll() is None, "the blocking lock did not wait"
fcntl.lockf(a, fcntl.LOCK_UN, 0, 0)
out, _ = waiter.communicate(timeout=20)
assert waiter.returncode == 0 and float(out) >= 1.4, out
print(f"ok: a blocking lock on B waited {out.strip()} s and got the lock once A released it")

# Interruptible: a waiter killed by a signal goes away at once.
fcntl.lockf(a, fcntl.LOCK_EX, 0, 0)
waiter = subprocess.Popen([sys.executable, "-c", f"""
import fcntl
f = open({b_path!r}, 'r+')
fcntl.lockf(f, fcntl.LOCK_EX, 0, 0)
"""])
time.sleep(1)
t = time.time()
waiter.send_signal(signal.SIGINT)
waiter.wait(timeout=10)
assert time.time() - t < 3, "the waiting lock was not interrupted"
print("ok: a waiting lock is interrupted by a signal")
fcntl.lockf(a, fcntl.LOCK_UN, 0, 0)

# flock, and closing releases it.
fa, fb = open(a_path), open(b_path)
fcntl.flock(fa, fcntl.LOCK_EX)
try:
    fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.exit("flock conflict not seen on B")
except BlockingIOError:
    pass
fcntl.lockf(b := open(b_path, "r+"), fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)  # POSIX space is apart
fcntl.lockf(b, fcntl.LOCK_UN, 0, 0)
fa.close()
# The kernel sends a flock's unlock with FUSE RELEASE, which it queues after close() has
# returned (README: what FUSE cannot do), so the lock goes a moment after close, not at it.
t = time.time()
while True:
    try:
        fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        assert time.time() - t < 3, "the flock lock was not released after close"
        time.sleep(0.02)
fb.close()
print("ok: flock locks exclude across mounts, apart from POSIX locks, released after close "
      f"({time.time() - t:.2f} s)")
a.close()
PY

# A lock survives a restart of the meta leader.
python3 - "$M/f" <<'PY' &
import fcntl, sys, time, os
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX, 0, 0)
print("holder: locked", flush=True)
time.sleep(25)
PY
HOLDER=$!
EXTRA_PIDS+=("$HOLDER")
sleep 2
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
lock_nb() {  # lock_nb PATH: can another owner take a write lock now?
  python3 -c "
import fcntl, sys
f = open('$1', 'r+')
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 0, 0)
except OSError:
    sys.exit(1)"
}
end=$((SECONDS + 30))
until cairn status >/dev/null 2>&1 || [ "$(cairn status --json 2>/dev/null | json "d['verdict']")" = degraded ]; do
  [ $SECONDS -lt $end ] || fail "meta did not come back"
  sleep 0.5
done
if lock_nb "$B/f"; then fail "the lock was lost when the meta leader restarted"; fi
check "a lock held on one mount survives a restart of the meta leader"
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true
end=$((SECONDS + 10))
until lock_nb "$B/f"; do
  [ $SECONDS -lt $end ] || fail "the lock was not released when its holder exited"
  sleep 0.2
done
check "the holder's exit releases its lock"

# A mount that dies holding a lock loses it when its session expires.
python3 - "$B/f" <<'PY' &
import fcntl, sys, time
f = open(sys.argv[1], "r+")
fcntl.lockf(f, fcntl.LOCK_EX, 0, 0)
time.sleep(300)
PY
HOLDER=$!
EXTRA_PIDS+=("$HOLDER")
sleep 2
lock_nb "$M/f" && fail "no lock held by the process on B"
kill -KILL "$PID_B"
fusermount3 -uz "$B" 2>/dev/null || umount -l "$B" 2>/dev/null || true
kill -KILL "$HOLDER" 2>/dev/null || true
start=$SECONDS
end=$((SECONDS + 60))
until lock_nb "$M/f"; do
  [ $SECONDS -lt $end ] || fail "the dead mount's lock was never released"
  sleep 0.5
done
check "a killed mount's lock is released when its session expires ($((SECONDS - start)) s)"

# Two processes on two mounts increment one counter in sqlite3 (rollback journal, fcntl locks).
mount_b
sqlite3 "$M/db.sqlite" "PRAGMA journal_mode=DELETE; CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0);" >/dev/null
worker() {  # worker DB N
  python3 - "$1" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
db.execute("PRAGMA journal_mode=DELETE")
for _ in range(int(sys.argv[2])):
    db.execute("BEGIN IMMEDIATE")
    (n,) = db.execute("SELECT n FROM c").fetchone()
    db.execute("UPDATE c SET n = ?", (n + 1,))
    db.execute("COMMIT")
PY
}
worker "$M/db.sqlite" 150 & W1=$!
worker "$B/db.sqlite" 150 & W2=$!
wait $W1 || fail "sqlite worker on A failed"
wait $W2 || fail "sqlite worker on B failed"
[ "$(sqlite3 "$M/db.sqlite" "SELECT n FROM c")" = 300 ] || fail "lost updates: $(sqlite3 "$M/db.sqlite" "SELECT n FROM c") of 300"
[ "$(sqlite3 "$B/db.sqlite" "PRAGMA integrity_check")" = ok ] || fail "integrity_check on B"
check "two processes on two mounts updated one sqlite3 database 300 times: no lost update, integrity ok"
