#!/usr/bin/env bash
# Namespace semantics through the kernel: rename rules, links, symlinks, xattrs, special
# files, name limits, attributes and large directories.
source "$(dirname "$0")/lib.sh"
cluster_up

cd "$M"
echo one > a; echo two > b
mv a b
[ "$(cat b)" = one ] && [ ! -e a ] || fail "rename over a file"
mkdir -p d/e
if mv d d/e/inside 2>/dev/null; then fail "moving a directory into itself succeeded"; fi
mkdir -p full/x empty
if mv empty full 2>/dev/null && [ -d full/empty ]; then :; fi   # mv puts it inside: allowed
mkdir -p src2 dst2/child
python3 - <<'PY' || fail "rename over a non-empty directory must fail with ENOTEMPTY"
import os, errno
try:
    os.rename("src2", "dst2")
except OSError as e:
    assert e.errno in (errno.ENOTEMPTY, errno.EEXIST), e
else:
    raise SystemExit("rename succeeded")
PY
mkdir emptydir src3
python3 -c 'import os; os.rename("src3", "emptydir")' || fail "rename over an empty directory"
[ -d emptydir ] && [ ! -e src3 ] || fail "rename over empty dir result"
check "rename: replace file, refuse loop, refuse non-empty, replace empty dir"

python3 - <<'PY' || fail "RENAME_NOREPLACE / RENAME_EXCHANGE"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
def renameat2(a, b, flags):
    r = libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags)
    return 0 if r == 0 else ctypes.get_errno()
open("x1", "w").write("X1"); open("x2", "w").write("X2")
assert renameat2("x1", "x2", 1) == errno.EEXIST
assert renameat2("x1", "x2", 2) == 0
assert open("x1").read() == "X2" and open("x2").read() == "X1"
PY
check "renameat2 NOREPLACE and EXCHANGE"

echo shared > h1
ln h1 h2
[ "$(stat -c %h h1)" = 2 ] || fail "nlink after ln"
echo more >> h2
grep -q more h1 || fail "hard links share content"
rm h1
[ "$(stat -c %h h2)" = 1 ] && grep -q shared h2 || fail "remaining link"
check "hard links"

ln -s target/path sl
[ "$(readlink sl)" = target/path ] || fail readlink
[ "$(stat -c %F sl)" = "symbolic link" ] || fail "symlink type"
check symlink

echo x > xf
setfattr -n user.color -v blue xf
[ "$(getfattr --only-values -n user.color xf)" = blue ] || fail getxattr
setfattr -n user.size -v 12345 xf
getfattr -d xf | grep -q 'user.size="12345"' || fail listxattr
setfattr -x user.color xf
if getfattr -n user.color xf 2>/dev/null; then fail "removed xattr still there"; fi
check xattrs

mkfifo ff
[ "$(stat -c %F ff)" = fifo ] || fail "fifo type"
mknod cdev c 1 3
[ "$(stat -c %t,%T cdev)" = 1,3 ] || fail "device numbers"
check "fifo and device node"

n255=$(printf 'a%.0s' $(seq 1 255))
n256=$(printf 'b%.0s' $(seq 1 256))
touch "$n255" || fail "255-byte name"
if touch "$n256" 2>"$L/err"; then fail "256-byte name accepted"; fi
grep -q "File name too long" "$L/err" || fail "256-byte name: $(cat "$L/err")"
check "NAME_MAX 255"

echo data > perm
chmod 604 perm
[ "$(stat -c %a perm)" = 604 ] || fail chmod
chown 1234:5678 perm
[ "$(stat -c %u:%g perm)" = 1234:5678 ] || fail chown
touch -d '2010-01-02 03:04:05' perm
[ "$(stat -c %Y perm)" = "$(date -d '2010-01-02 03:04:05' +%s)" ] || fail "touch -d"
check "chmod, chown, utimes"

mkdir nl
before=$(stat -c %h nl)
mkdir nl/s1 nl/s2
[ "$(stat -c %h nl)" = $((before + 2)) ] || fail "directory nlink"
rmdir nl/s1
if rmdir nl 2>/dev/null; then fail "rmdir of a non-empty directory"; fi
check "directory nlink, rmdir non-empty refused"

mkdir big
(cd big && seq 1 3000 | xargs touch)
[ "$(ls big | wc -l)" = 3000 ] || fail "ls lists $(ls big | wc -l) of 3000"
[ "$(ls big | sort | uniq | wc -l)" = 3000 ] || fail "duplicates in a large listing"
check "3000-entry directory listed exactly once each"

# readdir while the directory changes: every entry present throughout is seen exactly once.
python3 - <<'PY' || fail "readdir during changes"
import os
d = "big"
seen = []
it = os.scandir(d)
for i, e in enumerate(it):
    seen.append(e.name)
    if i == 100:
        for k in range(50):
            open(os.path.join(d, "new%d" % k), "w").close()
        for k in range(2000, 2050):
            os.unlink(os.path.join(d, str(k)))
stable = set(str(k) for k in range(1, 3001)) - set(str(k) for k in range(2000, 2050))
dups = len(seen) - len(set(seen))
assert dups == 0, "duplicates: %d" % dups
missing = stable - set(seen)
assert not missing, "missing %d" % len(missing)
PY
check "readdir cursor stable while the directory changes"
df -h "$M" | tail -1
[ "$(stat -f -c %l "$M")" = 255 ] || fail "statfs namemax"
check "statfs"
# File capabilities: a write by anyone drops them (the kernel asks for security.capability
# before writes; a new file is known to have none, a setcap makes it ask again).
echo hi > "$M/capf"
setcap cap_net_raw+ep "$M/capf" || fail "setcap on a new file"
[ -n "$(getcap "$M/capf")" ] || fail "capability not kept"
echo more >> "$M/capf"
[ -z "$(getcap "$M/capf")" ] || fail "a write did not drop the file's capability"
check "file capabilities set after create and dropped by a write"

# A listing carries every entry's attributes (readdirplus): ls -l of 300 files asks meta for
# no entry one by one, and shows each file's own size and mode.
mkdir "$M/plus"
python3 - "$M/plus" <<'PY'
import os, sys
for i in range(300):
    p = f"{sys.argv[1]}/f{i:03d}"
    with open(p, "wb") as f: f.write(b"x" * i)
    os.chmod(p, 0o600 if i % 2 else 0o644)
PY
source "$CL/cluster.env"
lookups() { curl -s "127.0.0.1:$META0_METRICS/metrics" | awk -F' ' '/request_seconds_count\{op="lookup"\}/ {print $2}'; }
listings() { curl -s "127.0.0.1:$META0_METRICS/metrics" | awk -F' ' '/request_seconds_count\{op="readdir"\}/ {print $2}'; }
echo 3 > /proc/sys/vm/drop_caches
l0=$(lookups); r0=$(listings)
ls -l "$M/plus" > "$L/plus.ls"
l1=$(lookups); r1=$(listings)
python3 - "$L/plus.ls" <<'PY' || fail "ls -l shows wrong attributes"
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.startswith("-")]
assert len(rows) == 300, len(rows)
for r in rows:
    i = int(r[-1][1:])
    assert int(r[4]) == i, (r, "size")
    assert r[0] == ("-rw-------" if i % 2 else "-rw-r--r--"), (r, "mode")
PY
[ $((l1 - l0)) -le 5 ] || fail "ls -l looked up $((l1 - l0)) entries one by one"
check "ls -l of 300 files: sizes and modes right, $((l1 - l0)) lookups and $((r1 - r0)) listing requests at meta"

# A directory listed twice in a row (rm -r does) is asked of meta once; a change through this
# mount shows in the very next listing.
mkdir "$M/twice"
for i in 1 2 3; do echo $i > "$M/twice/f$i"; done
ls "$M/twice" > /dev/null
r0=$(listings)
a=$(ls "$M/twice" | tr '\n' ' '); b=$(ls "$M/twice" | tr '\n' ' ')
r1=$(listings)
[ "$a" = "f1 f2 f3 " ] && [ "$b" = "$a" ] || fail "listed twice: '$a' then '$b'"
[ $((r1 - r0)) -le 1 ] || fail "two listings in a row asked meta $((r1 - r0)) times"
for round in 1 2 3; do
  ls "$M/twice" > /dev/null
  touch "$M/twice/new$round"
  ls "$M/twice" | grep -qx "new$round" || fail "a file made after a listing is missing from the next"
  rm "$M/twice/f$round"
  ! ls "$M/twice" | grep -qx "f$round" || fail "a removed file is still listed"
  mv "$M/twice/new$round" "$M/twice/moved$round"
  [ "$(ls "$M/twice" | grep -c "new$round\|moved$round")" = 1 ] || fail "a renamed file listed wrong"
done
check "a directory listed twice in a row: $((r1 - r0)) listing at meta; changes here show at once"

# In a directory made here, every name is known for an entry timeout: creating files asks meta
# no lookup first, and the names stay right through creates, removals, renames and links.
l0=$(lookups)
python3 - "$M/fresh" <<'PY' || fail "names in a directory made here went wrong"
import os, sys, errno
d = sys.argv[1]
os.mkdir(d)
for i in range(50):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
def absent(p):
    try:
        os.lstat(p)
    except FileNotFoundError:
        return True
    return False
assert not absent(f"{d}/f7")
os.unlink(f"{d}/f1")
assert absent(f"{d}/f1")
os.close(os.open(f"{d}/f1", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
assert not absent(f"{d}/f1")
os.rename(f"{d}/f2", f"{d}/g2")
assert absent(f"{d}/f2") and not absent(f"{d}/g2")
os.link(f"{d}/f3", f"{d}/h3")
os.symlink("f4", f"{d}/s4")
os.mkfifo(f"{d}/p5")
os.mkdir(f"{d}/sub")
assert not absent(f"{d}/h3") and not absent(f"{d}/s4") and not absent(f"{d}/p5")
assert not absent(f"{d}/sub") and absent(f"{d}/sub/none")
try:
    os.open(f"{d}/f9", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    raise SystemExit("O_EXCL create of an existing name succeeded")
except FileExistsError:
    pass
assert sorted(os.listdir(d)) == sorted([f"f{i}" for i in range(50) if i != 2] + ["g2", "h3", "s4", "p5", "sub"])
PY
l1=$(lookups)
[ $((l1 - l0)) -le 10 ] || fail "56 new names in a new directory cost $((l1 - l0)) lookups at meta"
echo 3 > /proc/sys/vm/drop_caches
[ "$(ls "$M/fresh" | wc -l)" = 54 ] || fail "the new directory lists $(ls "$M/fresh" | wc -l) names"
check "a directory made here: 56 new names with $((l1 - l0)) lookups at meta; removals, renames, links right"

# Filling it for longer than the entry timeout (1 s here): each reply to our own create shows
# that nobody else added a name, which keeps the directory known.
l0=$(lookups)
python3 - "$M/slow" <<'PY' || fail "names in a directory filled slowly went wrong"
import os, sys, time
d = sys.argv[1]
os.mkdir(d)
for i in range(40):
    os.close(os.open(f"{d}/f{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    if i % 3 == 2:
        os.unlink(f"{d}/f{i}")
    time.sleep(0.08)
assert sorted(os.listdir(d)) == sorted(f"f{i}" for i in range(40) if i % 3 != 2), os.listdir(d)
PY
l1=$(lookups)
[ $((l1 - l0)) -le 12 ] || fail "40 new names over 3 s in a new directory cost $((l1 - l0)) lookups at meta"
rm -r "$M/slow"
check "a directory made here and filled for 3 s: 40 new names with $((l1 - l0)) lookups at meta"

# A listing longer than one reply of meta's (4,096 entries) is whole, by ls and by getdents.
mkdir "$M/long"
python3 - "$M/long" <<'PY'
import os, sys, threading
def make(t):
    for i in range(t, 5000, 8): os.close(os.open(f"{sys.argv[1]}/e{i}", os.O_CREAT | os.O_WRONLY, 0o644))
ts = [threading.Thread(target=make, args=(t,)) for t in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
echo 3 > /proc/sys/vm/drop_caches
n1=$(ls "$M/long" | wc -l)
n2=$(python3 -c "import os,sys; print(len(os.listdir(sys.argv[1])))" "$M/long")
n3=$(ls -l "$M/long" | grep -c "^-")
[ "$n1" = 5000 ] && [ "$n2" = 5000 ] && [ "$n3" = 5000 ] || fail "a directory of 5000 lists as $n1 / $n2 / $n3"
check "a directory of 5000 entries lists whole (ls, listdir, ls -l)"

# The attributes a setattr answered are kept for the kernel's next getattr (tar's chown); any
# later change of the file must drop them: O_TRUNC after ftruncate, a link, an unlink.
python3 - "$M/noted" <<'PY' || fail "a getattr after a change answered attributes from before it"
import os, sys
p = sys.argv[1]
for i in range(5):
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"a" * 671)
    os.ftruncate(fd, 298)
    os.close(fd)
    fd = os.open(p, os.O_RDWR | os.O_TRUNC)
    size = os.fstat(fd).st_size
    assert size == 0, f"size {size} after O_TRUNC"
    os.ftruncate(fd, 5)
    os.link(p, p + ".l")
    assert os.fstat(fd).st_nlink == 2, f"nlink {os.fstat(fd).st_nlink} after link"
    os.ftruncate(fd, 6)
    os.unlink(p + ".l")
    assert os.fstat(fd).st_nlink == 1, f"nlink {os.fstat(fd).st_nlink} after unlink"
    os.close(fd)
PY
check "attributes noted at a setattr give way to a later O_TRUNC, link or unlink"
