#!/usr/bin/env bash
# Close-to-open without the change feed's help: mount C caches attributes for 60 s and gets the
# feed's changes 4 s late (a failpoint), so its kernel still holds a file's old size and pages
# when it opens the file right after mount B has rewritten and closed it. Every open on C must
# still read exactly what B closed: grown, shrunk, rewritten at the same size, and emptied.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
B="$T/b" C="$T/c"
mount_extra "$B"
CAIRN_FAILPOINT_FEED_DELAY_MS=4000 mount_extra "$C" "attr_timeout=60"

timeout 120 python3 - "$B" "$C" <<'PY' || fail "an open on C read something other than what B closed"
import os, random, sys, time
b, c = sys.argv[1], sys.argv[2]
rnd = random.Random(11)
def write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
def read(path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    chunks = []
    while True:
        got = os.read(fd, 1 << 20)
        if not got:
            break
        chunks.append(got)
    os.close(fd)
    return size, b"".join(chunks)
# Sizes in turn: grow, grow across blocks, same size with other bytes, shrink, empty, grow.
sizes = [100, 5000, 300000, 300000, 4096, 0, 70000]
write(f"{b}/f", b"")
read(f"{c}/f")
for n, size in enumerate(sizes):
    read(f"{c}/f")  # C caches the old attributes and pages
    data = rnd.randbytes(size)
    write(f"{b}/f", data)
    t0 = time.monotonic()
    got_size, got = read(f"{c}/f")
    took = time.monotonic() - t0
    if took > 3:
        sys.exit(f"round {n}: the read on C took {took:.1f} s, so the feed may have helped")
    if got_size != size or got != data:
        sys.exit(f"round {n}: C opened a file of {size} bytes and saw size {got_size}, "
                 f"read {len(got)} bytes" + (", other bytes" if len(got) == size else ""))
    print(f"round {n}: {size} bytes read back on C at once", flush=True)
PY
check "every open on C read what B had closed, with the feed 4 s late"
