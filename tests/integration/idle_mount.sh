#!/usr/bin/env bash
# A mount left idle longer than its request timeouts serves the next requests at once, from
# every thread: each FUSE thread keeps its own connection to meta and event loop, which does
# not run while the thread waits for the kernel (its clock must be caught up first).
source "$(dirname "$0")/lib.sh"
# Garbage is collected after 3 s here: a new file's first chunk that no commit has recorded yet
# must survive the idle time all the same.
export CAIRN_GC_GRACE_MS=3000
cluster_up

mkdir -p "$M/idle"
python3 - "$M/idle" <<'PY'
import os, sys, threading
root = sys.argv[1]
def work(d):
    os.makedirs(f"{root}/d{d}")
    for i in range(50):
        with open(f"{root}/d{d}/f{i}", "w") as f: f.write(str(i))
ts = [threading.Thread(target=work, args=(d,)) for d in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
check "400 files written from 8 threads"

# A file created and written, then held open (no commit) through the idle time.
head -c 2M /dev/urandom > "$L/held"
python3 - "$L/held" "$M/held" "$L" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, open(sys.argv[1], "rb").read())
open(sys.argv[3] + "/written", "w").close()
end = time.monotonic() + 120
while not os.path.exists(sys.argv[3] + "/close"):
    assert time.monotonic() < end
    time.sleep(0.1)
os.close(fd)
PY
holder=$!

# Context switches of all the mount's threads: an idle mount must not poll (its change feed's
# watch waits a second at a time; a timer woken every 50 ms made it about 22 a second).
mount_switches() {
  cat /proc/"$(cat "$CL/pids/mount.pid")"/task/*/status 2>/dev/null |
    awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}
sleep 5
sw0=$(mount_switches)
sleep 30  # with the 5 s before: longer than the 30 s bound of one meta request
sw1=$(mount_switches)
rate=$(( (sw1 - sw0) / 30 ))
[ "$sw0" -gt 0 ] && [ "$rate" -le 8 ] || fail "the idle mount woke $rate times a second ($sw0 -> $sw1 in 30 s)"
check "idle for 30 s, the mount woke $rate times a second"
[ -e "$L/written" ] || fail "the held file was never written"
# Recorded by meta meanwhile, though never committed by a close or fsync.
cairn fileinfo /held --json | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if len(d['chunks']) == 1 else 1)" ||
  { cairn fileinfo /held; fail "the held file's first chunk is not recorded after 35 s"; }
start=$(date +%s%N)
python3 - "$M/idle" <<'PY' || fail "requests after the idle time failed"
import os, sys, threading
root = sys.argv[1]
errors = []
def work(d):
    try:
        for i in range(50):
            assert open(f"{root}/d{d}/f{i}").read() == str(i)
            os.unlink(f"{root}/d{d}/f{i}")
        os.rmdir(f"{root}/d{d}")
    except Exception as e:
        errors.append(f"d{d}: {e}")
ts = [threading.Thread(target=work, args=(d,)) for d in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
if errors: sys.exit("; ".join(errors))
PY
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ -z "$(ls -A "$M/idle")" ] || fail "files left after removal"
! grep -q "timed out" "$CL"/logs/mount.log || fail "mount requests timed out after idling: $(grep "timed out" "$CL"/logs/mount.log | head -2)"
check "after 35 s idle: 400 files read and removed from 8 threads in $ms ms, nothing timed out"

touch "$L/close"
wait $holder || fail "the held file's writer failed"
echo 3 > /proc/sys/vm/drop_caches
cmp "$L/held" "$M/held" || fail "a file held open through the idle time reads wrong"
! grep -q "not recorded in time" "$CL"/logs/mount.log || fail "the held file's chunk was taken back"
check "a new file held open 35 s without a commit: its first chunk recorded meanwhile, data intact"
