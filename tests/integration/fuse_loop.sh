#!/usr/bin/env bash
# The mount's FUSE loop: one reading thread answers a lone caller, and its workers join in when
# requests come in company. A lone rm -rf leaves the workers parked; eight threads at once wake
# them; a blocking lock request from a lone caller, which waits for another process's unlock,
# never stops the reader from taking that unlock; the mount ends promptly when told to stop
# (SIGTERM) with a lock request still waiting in a worker.
source "$(dirname "$0")/lib.sh"
cluster_up
metric() {  # metric NAME: the mount's value of a metric
  python3 -c "import urllib.request; t=urllib.request.urlopen('http://127.0.0.1:$MOUNT_METRICS/metrics').read().decode(); print(int(sum(float(l.split()[-1]) for l in t.splitlines() if l.startswith('$1'))))"
}

# A lone caller: 2,000 files made, then removed by one rm -rf.
mkdir -p "$M/lone"
python3 - "$M/lone" <<'PY' || fail "making 2,000 files"
import os, sys
for d in range(20):
    os.makedirs(f"{sys.argv[1]}/d{d}")
    for i in range(100):
        with open(f"{sys.argv[1]}/d{d}/f{i}", "w") as f:
            f.write("x")
PY
sleep 1
before="$(metric cairn_client_fuse_company_total)"
rm -rf "$M/lone" || fail "rm -rf of 2,000 files"
[ ! -e "$M/lone" ] || fail "rm -rf left the tree behind"
after="$(metric cairn_client_fuse_company_total)"
echo "workers woken during a lone rm -rf of 2,000 files: $((after - before)) times"
[ $((after - before)) -le 3 ] || fail "a lone rm -rf woke the workers $((after - before)) times"
check "a lone rm -rf is answered by the reader alone"

# Eight callers at once: the workers join in, and every answer is right.
before="$(metric cairn_client_fuse_company_total)"
python3 - "$M/many" <<'PY' || fail "eight threads of creates and stats"
import os, sys, threading
root = sys.argv[1]
os.makedirs(root)
errors = []
def work(t):
    try:
        os.makedirs(f"{root}/t{t}")
        for i in range(300):
            p = f"{root}/t{t}/f{i}"
            with open(p, "w") as f:
                f.write(str(i))
            assert os.stat(p).st_size == len(str(i))
    except Exception as e:
        errors.append(e)
ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errors, errors
for t in range(8):
    assert len(os.listdir(f"{root}/t{t}")) == 300
PY
after="$(metric cairn_client_fuse_company_total)"
[ "$after" -gt "$before" ] || fail "eight threads at once never woke the workers"
check "eight callers at once wake the workers ($((after - before)) times)"

# A lone caller's blocking lock request waits for an unlock that only the reader can take in.
sleep 0.2  # the workers park after 50 ms alone
echo data > "$M/lockfile"
python3 - "$M/lockfile" <<'PY' || fail "a blocking lock request and the unlock it waits for"
import fcntl, os, subprocess, sys, time
path = sys.argv[1]
holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, sys, time
f = open({path!r}, "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(1.5)
fcntl.lockf(f, fcntl.LOCK_UN)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == "held"
t0 = time.monotonic()
with open(path, "r+") as f:
    fcntl.lockf(f, fcntl.LOCK_EX)  # waits for the holder's unlock
    waited = time.monotonic() - t0
    fcntl.lockf(f, fcntl.LOCK_UN)
holder.kill(); holder.wait()
print(f"the blocking lock was granted after {waited:.2f} s")
assert 1.0 < waited < 20, waited
PY
check "a blocking lock request is granted when the holder unlocks"

# Told to stop with a lock request still waiting: the mount process ends within seconds.
python3 - "$M/lockfile" "$T/waiter.pid" "$T/holder.pid" <<'PY' &
import fcntl, os, subprocess, sys, time
path = sys.argv[1]
holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, time
f = open({path!r}, "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
time.sleep(60)
"""])
with open(sys.argv[3], "w") as p:
    p.write(str(holder.pid))
time.sleep(1)
with open(sys.argv[2], "w") as p:
    p.write(str(os.getpid()))
try:
    with open(path, "r+") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
    print("the waiting lock request was granted")
except OSError as e:
    # ENOLCK from the mount as it stops, or ENOTCONN once it is gone; never the kernel's
    # restart code (512), which an EINTR without a signal would hand over.
    print(f"the waiting lock request ended: {e}")
    assert e.errno != 512, e
PY
waiter=$!
for _ in $(seq 100); do [ -s "$T/waiter.pid" ] && break; sleep 0.1; done
sleep 1
mount_pid="$(cat "$CL/pids/mount.pid")"
[ -n "$mount_pid" ] || fail "no mount process for $M"
t0=$(date +%s)
kill -TERM "$mount_pid"
for _ in $(seq 300); do kill -0 "$mount_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$mount_pid" 2>/dev/null; then
  # Where each of its threads waits, and what it logged, for the failure report.
  for t in /proc/"$mount_pid"/task/*; do
    echo "thread $(basename "$t") $(cat "$t/comm" 2>/dev/null): $(cat "$t/wchan" 2>/dev/null)"
    cat "$t/stack" 2>/dev/null | head -8
  done
  tail -n 60 "$CL/logs/mount.log"
  fail "the mount process still runs 30 s after SIGTERM"
fi
echo "the mount ended $(( $(date +%s) - t0 )) s after SIGTERM"
kill "$(cat "$T/holder.pid")" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$waiter" 2>/dev/null || break; sleep 0.1; done
kill "$waiter" 2>/dev/null || true
wait "$waiter" || fail "the waiting lock request ended with the kernel's restart code"
check "told to stop with a lock request waiting, the mount ends"

# Told to stop while meta is gone: the mount ends at once, not after the 120 s its requests
# ride out, nor after the 10 s its watch of the change feed retries (the watch is given up as
# the mount stops).
mount_extra "$T/x"
x_pid=$MOUNT_PID
ls "$T/x" >/dev/null || fail "the extra mount does not answer"
kill -KILL "$(cat "$CL/pids/meta0.pid")"
sleep 1
t0=$(date +%s.%N)
kill -TERM "$x_pid"
for _ in $(seq 300); do kill -0 "$x_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$x_pid" 2>/dev/null && fail "with meta gone, the mount still runs 30 s after SIGTERM"
took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
python3 -c "import sys; sys.exit(0 if $took < 3 else 1)" || fail "with meta gone, the mount took $took s to end"
check "told to stop while meta is gone, the mount ends after $took s"
