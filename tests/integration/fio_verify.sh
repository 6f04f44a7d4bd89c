#!/usr/bin/env bash
# fio writes and verifies random and sequential patterns (crc32c) through the mount.
source "$(dirname "$0")/lib.sh"
cluster_up
command -v fio >/dev/null || fail "fio is not installed"
timeout 600 fio --name=rand --directory="$M" --rw=randwrite --bs=4k --size=64m --numjobs=2 --direct=0 \
  --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --group_reporting \
  --output="$L/rand.out" || { cat "$L/rand.out"; fail "fio random write/verify"; }
grep -q "err= 0" "$L/rand.out" || { cat "$L/rand.out"; fail "fio reported errors"; }
check "fio randwrite 4k x2 jobs verified"
timeout 600 fio --name=seq --directory="$M" --rw=write --bs=1m --size=256m \
  --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
  --output="$L/seq.out" || { cat "$L/seq.out"; fail "fio sequential write/verify"; }
grep -q "err= 0" "$L/seq.out" || { cat "$L/seq.out"; fail "fio reported errors"; }
check "fio sequential 1m verified"
timeout 600 fio --name=mixed --directory="$M" --rw=randrw --bs=16k --size=32m --ioengine=psync \
  --verify=md5 --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output="$L/mixed.out" \
  || { cat "$L/mixed.out"; fail "fio randrw"; }
check "fio randrw 16k verified"

# Direct 4 KiB writes go out in the background, many at once: overlapping ones must still land
# in the order they were written. Rewrites of a few blocks, direct and async (16 in flight),
# read back against a model, by one process and then by four on disjoint blocks of one file.
timeout 300 python3 - "$M/order" <<'PY' || fail "overlapping direct writes landed out of order"
import mmap, os, random, sys, threading
path = sys.argv[1]
BLOCKS = 16
fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
os.ftruncate(fd, BLOCKS * 4096)
buf = mmap.mmap(-1, 4096)
model = [b"\0" * 4096] * BLOCKS
rnd = random.Random(3)
for i in range(3000):
    b = rnd.randrange(BLOCKS)
    data = (i.to_bytes(4, "little") * 1024)
    buf.seek(0); buf.write(data)
    assert os.pwrite(fd, buf, b * 4096) == 4096
    model[b] = data
os.close(fd)
with open(path, "rb") as f:
    for b in range(BLOCKS):
        got = f.read(4096)
        if got != model[b]:
            sys.exit(f"block {b}: got write {int.from_bytes(got[:4], 'little')}, "
                     f"want {int.from_bytes(model[b][:4], 'little')}")
# Four writers on disjoint blocks of one file.
fd = os.open(path, os.O_RDWR | os.O_DIRECT)
def writer(t):
    mine = [b for b in range(BLOCKS) if b % 4 == t]
    m = mmap.mmap(-1, 4096)
    r = random.Random(t)
    for i in range(1000):
        b = r.choice(mine)
        data = ((t << 24 | i).to_bytes(4, "little") * 1024)
        m.seek(0); m.write(data)
        os.pwrite(fd, m, b * 4096)
        model[b] = data
ts = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
os.close(fd)
with open(path, "rb") as f:
    for b in range(BLOCKS):
        if f.read(4096) != model[b]:
            sys.exit(f"block {b} differs after four writers")
PY
check "overlapping direct 4 KiB writes land in order (one writer, four writers)"
timeout 120 fio --name=order --filename="$M/order-fio" --rw=randwrite --bs=4k --size=8m --direct=1 \
  --ioengine=libaio --iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
  --output="$L/order.out" || { cat "$L/order.out"; fail "fio direct randwrite iodepth 16"; }
check "fio direct randwrite 4k, 16 in flight, verified"

# Queued random block writes of one chunk go out together, as one scattered write per chunk.
# Direct writes of 1 to 3 blocks over three 64 MiB chunks, some across a chunk boundary, many
# over a few hot blocks, mirrored in a local file: both must match, on this mount and on a
# fresh one (which reads from the chunk servers).
metric() {  # metric NAME: the mount's counter, 0 when absent
  curl -s "http://127.0.0.1:$MOUNT_METRICS/metrics" | awk -v n="$1" '$1 == n {print $2; f=1} END {if (!f) print 0}'
}
scattered_before=$(metric cairn_client_scattered_write_blocks_total)
timeout 300 python3 - "$M/scatter" "$T/scatter.model" <<'PY' || fail "scattered block writes differ from the model"
import mmap, os, random, sys
CHUNK, BLOCK, BLOCKS = 64 << 20, 4096, 3 * (64 << 20) // 4096
fds = [os.open(sys.argv[1], os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644),
       os.open(sys.argv[2], os.O_CREAT | os.O_RDWR, 0o644)]
for fd in fds:
    os.ftruncate(fd, BLOCKS * BLOCK)
buf = mmap.mmap(-1, 3 * BLOCK)
rnd = random.Random(8)
hot = [rnd.randrange(BLOCKS - 3) for _ in range(8)] + [CHUNK // BLOCK - 1, 2 * CHUNK // BLOCK - 2]
for i in range(12000):
    n = rnd.choice((1, 1, 1, 2, 3))
    b = rnd.choice(hot) if rnd.random() < 0.3 else rnd.randrange(BLOCKS - n)
    data = b"".join((i.to_bytes(4, "little") + k.to_bytes(4, "little")) * 512 for k in range(n))
    buf.seek(0); buf.write(data)
    for fd in fds:
        assert os.pwrite(fd, memoryview(buf)[:n * BLOCK], b * BLOCK) == n * BLOCK
for fd in fds:
    os.close(fd)
PY
cmp "$M/scatter" "$T/scatter.model" || fail "scattered block writes read back wrong on the writing mount"
mount_extra "$T/fresh"
cmp "$T/fresh/scatter" "$T/scatter.model" || fail "scattered block writes read back wrong on a fresh mount"
scattered=$(( $(metric cairn_client_scattered_write_blocks_total) - scattered_before ))
[ "$scattered" -gt 0 ] || fail "no queued block writes went out together (scattered blocks: $scattered)"
check "12,000 direct writes of 1-3 blocks over 3 chunks match a local model on both mounts ($scattered blocks went out in scattered writes)"
rm -f "$M/scatter" "$T/scatter.model"

# Large reads run on the chunk servers' I/O threads while writes of the same blocks arrive
# from another client: a read must never see half of a write (it would read as a damaged copy).
mount_extra "$T/b"
dd if=/dev/urandom of="$M/mixed" bs=1M count=32 status=none
before=$(cat "$CL"/logs/chunk*.log | grep -c "checksum mismatch" || true)
common="--filename=mixed --bs=256k --size=32m --direct=1 --ioengine=libaio --iodepth=8 --time_based --runtime=8"
(cd "$M" && timeout 120 fio --name=w $common --rw=randwrite --output="$L/mixed-w.out") &
writer=$!
(cd "$T/b" && timeout 120 fio --name=r $common --rw=randread --output="$L/mixed-r.out") ||
  { cat "$L/mixed-r.out"; fail "fio 256 KiB reads during another client's writes"; }
wait $writer || { cat "$L/mixed-w.out"; fail "fio 256 KiB writes"; }
after=$(cat "$CL"/logs/chunk*.log | grep -c "checksum mismatch" || true)
[ "$after" = "$before" ] || fail "reads concurrent with writes saw damaged blocks ($((after - before)) mismatches)"
! grep -q "authentication failed" "$T"/mount*.log "$CL"/logs/mount.log 2>/dev/null ||
  fail "a client could not open blocks read during writes"
io="$(grep -hE "READ:|WRITE:" "$L"/mixed-?.out | sed 's/^ *//' | cut -d, -f1 | tr '\n' ' ')"
check "random 256 KiB direct reads on one mount during writes of the same file on another, 8 s, no torn read ($io)"
