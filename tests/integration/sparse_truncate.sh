#!/usr/bin/env bash
# Holes read as zeros; shrinking then growing a file reads zeros in the gap.
source "$(dirname "$0")/lib.sh"
cluster_up

cd "$M"
printf 'X' | dd of=sparse bs=1 seek=$((100 * 1024 * 1024)) conv=notrunc status=none
[ "$(stat -c %s sparse)" = $((100 * 1024 * 1024 + 1)) ] || fail "sparse size"
cmp -n $((1024 * 1024)) sparse /dev/zero || fail "hole does not read as zeros"
[ "$(tail -c 1 sparse)" = X ] || fail "byte after the hole"
dd if=sparse bs=1M skip=70 count=1 status=none | cmp - <(head -c 1M /dev/zero) || fail "hole in the second chunk"
check "holes read as zeros across chunks"

head -c 10M /dev/urandom > "$L/r"
cp "$L/r" t
truncate -s 5000 t
truncate -s 20000 t
[ "$(stat -c %s t)" = 20000 ] || fail "size after grow"
cmp -n 5000 t "$L/r" || fail "first 5000 bytes changed"
tail -c 15000 t | cmp - <(head -c 15000 /dev/zero) || fail "grown gap is not zeros"
check "shrink then grow reads zeros in the gap"

cp "$L/r" u
truncate -s 0 u
truncate -s $((70 * 1024 * 1024)) u
cmp u <(head -c $((70 * 1024 * 1024)) /dev/zero) || fail "truncate to 0 then grow"
check "truncate to zero then grow"

cp "$L/r" v
truncate -s $((3 * 1024 * 1024 + 123)) v
cmp v <(head -c $((3 * 1024 * 1024 + 123)) "$L/r") || fail "truncate mid-block"
printf 'tail' >> v
[ "$(tail -c 4 v)" = tail ] || fail "append after truncate"
check "truncate within a block, then append"

python3 - <<'PY' || fail "fallocate extends the size"
import os
fd = os.open("fa", os.O_CREAT | os.O_RDWR)
os.posix_fallocate(fd, 0, 5 * 1024 * 1024)
assert os.fstat(fd).st_size == 5 * 1024 * 1024
assert os.pread(fd, 4096, 4096 * 100) == b"\0" * 4096
os.close(fd)
PY
check "fallocate"

# SEEK_DATA and SEEK_HOLE on a new file before its first commit: its first chunk is written
# before meta records it, and must still count as data.
python3 - <<'PY' || fail "SEEK_DATA on a file not yet committed"
import errno, os
fd = os.open("fresh", os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"d" * 1588, 0)
assert os.lseek(fd, 836, os.SEEK_DATA) == 836, os.lseek(fd, 836, os.SEEK_DATA)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 1588
try:
    os.lseek(fd, 1588, os.SEEK_DATA)
    raise SystemExit("SEEK_DATA at the end found data")
except OSError as e:
    assert e.errno == errno.ENXIO, e
os.close(fd)
PY
check "SEEK_DATA finds data written before the first commit"

# Owner, mode and times set on a file just written carry its size commit along: under a quota
# that refuses the growth, the chmod still succeeds, the growth is refused at close (EDQUOT),
# and the file keeps the size the quota allowed.
mkdir -p "$M/q"
cairn quota set /q --bytes $((4 * 1024 * 1024)) > /dev/null
timeout 60 python3 - "$M/q" <<'PY' || fail "setattr with a refused size commit"
import errno, os, sys
d = sys.argv[1]
fd = os.open(f"{d}/small", os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"x" * 1000)
os.fchmod(fd, 0o640)
os.fchown(fd, 1234, 1234)
os.close(fd)
st = os.stat(f"{d}/small")
assert (st.st_size, st.st_mode & 0o777, st.st_uid) == (1000, 0o640, 1234), st
fd = os.open(f"{d}/big", os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"y" * (6 * 1024 * 1024))
os.fchmod(fd, 0o644)  # must not fail: the quota refuses the growth, not the chmod
try:
    os.close(fd)
    sys.exit("close of a file past its quota did not fail")
except OSError as e:
    assert e.errno == errno.EDQUOT, e
st = os.stat(f"{d}/big")
assert st.st_mode & 0o777 == 0o644, oct(st.st_mode)
assert st.st_size <= 4 * 1024 * 1024, st.st_size
PY
check "chmod/chown right after writing commit the size with them; a refused growth fails at close only"
