#!/usr/bin/env bash
# A random-operation exerciser in the manner of fsx: 100,000 seeded operations on files in the
# mount (pwrite of 1 byte to 300 KiB at any offset, small appends, read, truncate down and up,
# fallocate, punch hole, zero range, SEEK_DATA/SEEK_HOLE, mmap read and write, fsync, close and
# reopen (sometimes with O_TRUNC), and every so often a check of a second mount's view after
# close), each mirrored on a model file on local disk; every read is compared with the model.
# Chunks are 1 MiB here, so that the files (up to 3 MiB) cross chunk boundaries everywhere and
# holes drop whole chunks. A failure prints the seed and the last operations.
source "$(dirname "$0")/lib.sh"
CAIRN_CHUNK_MIB=1 cluster_up --chunks 3 --replicas 3
B="$T/b"
mount_extra "$B"
SEED="${CAIRN_FSX_SEED:-$RANDOM}"
OPS="${CAIRN_FSX_OPS:-100000}"
echo "seed $SEED, $OPS operations"
timeout 780 python3 - "$M" "$L" "$B" "$SEED" "$OPS" <<'PY' || fail "the exerciser found a difference (seed $SEED)"
import collections, ctypes, errno, mmap, os, random, sys, time
libc = ctypes.CDLL(None, use_errno=True)
KEEP_SIZE, PUNCH, ZERO = 0x01, 0x02 | 0x01, 0x10
def fallocate(fd, mode, off, ln):
    if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(ln)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
mnt, local, other, seed, ops = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
MAX = 3 * 1024 * 1024 + 12345        # files span many 4 KiB blocks (the chunk is 64 MiB)
FILES = 3
history = collections.deque(maxlen=30)
paths = [(f"{mnt}/fsx{i}", f"{local}/fsx{i}") for i in range(FILES)]
fds = {}
def open_pair(i, trunc=False):
    p, q = paths[i]
    flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if trunc else 0)
    fds[i] = (os.open(p, flags, 0o644), os.open(q, flags, 0o644))
for i in range(FILES):
    open_pair(i)
def die(msg):
    print("FAIL:", msg, f"(seed {seed})")
    for h in history:
        print("  ", h)
    sys.exit(1)
def size(i):
    return os.fstat(fds[i][1]).st_size
def check_range(i, off, n, what):
    a, b = fds[i]
    got = os.pread(a, n, off)
    want = os.pread(b, n, off)
    if got != want:
        bad = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
        die(f"{what}: file {i} differs at {off + bad} (read {len(got)} bytes, model {len(want)})")
    sa, sb = os.fstat(a).st_size, os.fstat(b).st_size
    if sa != sb:
        die(f"{what}: file {i} size {sa}, model {sb}")
counts = collections.Counter()
start = time.time()
for n in range(ops):
    i = rnd.randrange(FILES)
    a, b = fds[i]
    r = rnd.random()
    cur = size(i)
    if r < 0.30:
        off = rnd.randrange(0, MAX)
        ln = rnd.choice([1, 7, 512, 4096, 4097, 65536, rnd.randrange(1, 300 * 1024)])
        data = rnd.randbytes(ln)
        op = f"pwrite {i} off={off} len={ln}"
        os.pwrite(a, data, off); os.pwrite(b, data, off)
    elif r < 0.45:
        data = rnd.randbytes(rnd.randrange(1, 6000))
        op = f"append {i} at={cur} len={len(data)}"
        os.pwrite(a, data, cur); os.pwrite(b, data, cur)
    elif r < 0.70:
        off = rnd.randrange(0, max(1, cur + 5000))
        ln = rnd.randrange(1, 200 * 1024)
        op = f"read {i} off={off} len={ln}"
        history.append(op)
        check_range(i, off, ln, op)
        counts["read"] += 1
        continue
    elif r < 0.76:
        new = rnd.choice([0, rnd.randrange(0, max(1, cur)), cur + rnd.randrange(1, 100000), rnd.randrange(0, MAX)])
        op = f"truncate {i} {cur}->{new}"
        os.ftruncate(a, new); os.ftruncate(b, new)
    elif r < 0.77:
        off = rnd.randrange(0, MAX); ln = rnd.randrange(1, 100000)
        op = f"fallocate {i} off={off} len={ln}"
        os.posix_fallocate(a, off, ln); os.posix_fallocate(b, off, ln)
    elif r < 0.785:
        # Punch hole (KEEP_SIZE) or zero range (sometimes extending), up to 1.5 chunks long.
        kind = rnd.choice([PUNCH, ZERO, ZERO | KEEP_SIZE])
        off = rnd.randrange(0, max(1, cur + 100000))
        ln = rnd.choice([1, 4096, rnd.randrange(1, 1 << 20), rnd.randrange(1 << 20, 3 << 19)])
        op = f"fallocate {i} mode={kind:#x} off={off} len={ln}"
        fallocate(a, kind, off, ln); fallocate(b, kind, off, ln)
    elif r < 0.79 and cur > 0:
        # SEEK_DATA / SEEK_HOLE: holes may be reported coarser than the model's, never wrong.
        off = rnd.randrange(0, cur)
        op = f"seek {i} off={off}"
        history.append(op)
        try:
            data_at = os.lseek(a, off, os.SEEK_DATA)
        except OSError as e:
            data_at = cur if e.errno == errno.ENXIO else die(f"{op}: SEEK_DATA {e}")
        hole_at = os.lseek(a, off, os.SEEK_HOLE)
        if not off <= data_at <= cur or not off <= hole_at <= cur:
            die(f"{op}: SEEK_DATA {data_at}, SEEK_HOLE {hole_at}, size {cur}")
        if os.pread(b, data_at - off, off).strip(b"\0"):
            die(f"{op}: SEEK_DATA skipped data to {data_at}")
        counts["seek"] += 1
        continue
    elif r < 0.85 and cur > 0:
        off = rnd.randrange(0, cur); ln = rnd.randrange(1, min(cur - off, 100000) + 1)
        write = rnd.random() < 0.5
        op = f"mmap-{'write' if write else 'read'} {i} off={off} len={ln}"
        history.append(op)
        ma = mmap.mmap(a, cur); mb = mmap.mmap(b, cur)
        if write:
            data = rnd.randbytes(ln)
            ma[off:off + ln] = data; mb[off:off + ln] = data
            ma.flush(); mb.flush()
        elif ma[off:off + ln] != mb[off:off + ln]:
            die(op + ": mapped bytes differ")
        ma.close(); mb.close()
        counts[op.split()[0]] += 1
        continue
    elif r < 0.90:
        op = f"fsync {i}"
        os.fsync(a)
    elif r < 0.97:
        trunc = rnd.random() < 0.1
        op = f"reopen {i}" + (" O_TRUNC" if trunc else "")
        os.close(a); os.close(b); open_pair(i, trunc)
    else:
        # Close-to-open on the other mount: close, then read the whole file there.
        op = f"close and read on the other mount {i}"
        os.close(a); os.close(b); open_pair(i)
        try:
            with open(f"{other}/fsx{i}", "rb") as f:
                got = f.read()
        except OSError as e:
            die(op + f": {e} (the other mount lists {sorted(os.listdir(other))})")
        with open(paths[i][1], "rb") as f:
            want = f.read()
        if got != want:
            die(op + f": the other mount reads {len(got)} bytes, model {len(want)}")
    history.append(op)
    counts[op.split()[0]] += 1
    if n % 10000 == 9999:
        for k in range(FILES):
            check_range(k, 0, size(k) + 10, f"full check after {n + 1} operations")
        print(f"  {n + 1} operations, {time.time() - start:.0f} s", flush=True)
for k in range(FILES):
    check_range(k, 0, size(k) + 10, "final full check")
print("ok:", dict(counts))
PY
check "$OPS random operations matched the model file (seed $SEED)"
