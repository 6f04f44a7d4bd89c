#!/usr/bin/env bash
# A mount left idle longer than its request timeouts serves the next requests at once, from
# every thread: each FUSE thread keeps its own connection to meta and event loop, which does
# not run while the thread waits for the kernel (its clock must be caught up first).
source "$(dirname "$0")/lib.sh"
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

sleep 35  # longer than the 30 s bound of one meta request
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
