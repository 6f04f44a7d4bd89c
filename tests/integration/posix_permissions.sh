#!/usr/bin/env bash
# POSIX permissions and file semantics as other users see them (every user may use a mount made
# by root; the kernel checks permissions against cairn's attributes): owner, group
# (supplementary groups too) and other bits, sticky and setgid directories, suid/sgid cleared by
# writes and chown, O_EXCL, O_TRUNC, O_APPEND, utimensat with UTIME_NOW and UTIME_OMIT, and ctime
# moving on every change.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
cd "$M"
as() {  # as UID GID[,GROUPS] COMMAND...: run as another user (supplementary groups after the comma)
  local uid="$1" gid="${2%%,*}" groups=""
  case "$2" in *,*) groups="${2#*,}" ;; esac
  shift 2
  if [ -z "$groups" ]; then
    setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
  else
    setpriv --reuid="$uid" --regid="$gid" --groups="$groups" "$@"
  fi
}
denied() { ! "$@" >/dev/null 2>&1; }

mkdir p && chmod 755 p && cd p
echo public > pub && chmod 644 pub
echo secret > priv && chmod 600 priv
echo team > grp && chown 0:100 grp && chmod 640 grp
as 1000 1000 cat pub >/dev/null || fail "another user cannot read a 644 file"
denied as 1000 1000 cat priv || fail "another user read a 600 file"
as 1000 100 cat grp >/dev/null || fail "the file's group (primary) cannot read a 640 file"
as 1000 1000,100 cat grp >/dev/null || fail "the file's group (supplementary) cannot read a 640 file"
denied as 1000 1000 cat grp || fail "a user outside the group read a 640 file"
denied as 1000 1000 sh -c 'echo x >> pub' || fail "another user wrote a 644 file"
printf '#!/bin/sh\necho ran\n' > script && chmod 744 script
[ "$(./script)" = ran ] || fail "the owner cannot run a 744 script"
# Another user's exec of a 744 script: whatever the kernel decides for a local file, the same.
cp -p script "$L/script"
chmod 711 "$T"; chmod 755 "$L"
local_rc=0; as 1000 1000 "$L/script" >/dev/null 2>&1 || local_rc=$?
cairn_rc=0; as 1000 1000 ./script >/dev/null 2>&1 || cairn_rc=$?
[ "$local_rc" = "$cairn_rc" ] || fail "exec of a 744 script by another user: $cairn_rc here, $local_rc on a local disk"
mkdir closed && chmod 700 closed && touch closed/inside
denied as 1000 1000 ls closed || fail "another user listed a 700 directory"
denied as 1000 1000 touch p2 || fail "another user created a file in a 755 directory"
check "owner, group (primary and supplementary) and other bits are enforced for other users"

cd "$M" && mkdir shared && chmod 1777 shared && cd shared
as 1000 1000 sh -c 'echo a > a_file'
as 1001 1001 sh -c 'echo b > b_file'
denied as 1001 1001 rm -f a_file || fail "sticky directory: another user removed a file"
denied as 1001 1001 mv a_file c_file || fail "sticky directory: another user renamed a file"
as 1000 1000 rm a_file || fail "sticky directory: the owner cannot remove its file"
rm b_file || fail "sticky directory: root cannot remove a file"
check "sticky directories: only the owner (or root) removes or renames"

cd "$M" && mkdir sg && chown 0:100 sg && chmod 2775 sg
mkdir sg/sub && touch sg/file
[ "$(stat -c %g sg/file)" = 100 ] || fail "setgid directory: a new file's group"
[ "$(stat -c %g sg/sub)" = 100 ] || fail "setgid directory: a new directory's group"
[ "$(stat -c %A sg/sub | cut -c7)" = s ] || fail "setgid directory: a new directory keeps the setgid bit ($(stat -c %A sg/sub))"
check "setgid directories: new entries take its group, new directories its setgid bit"

cd "$M" && mkdir su && chmod 777 su && cd su
as 1000 1000 sh -c 'echo x > prog && chmod 6755 prog'
[ "$(stat -c %a prog)" = 6755 ] || fail "setting suid and sgid as the owner"
chmod 6777 prog
as 1001 1001 sh -c 'echo more >> prog' || fail "a writer could not write a 6777 file"
[ "$(stat -c %a prog)" = 777 ] || fail "suid/sgid not cleared by another user's write ($(stat -c %a prog))"
chmod 6755 prog
chown 1001 prog
[ "$(stat -c %a prog)" = 755 ] || fail "suid/sgid not cleared by chown ($(stat -c %a prog))"
check "suid and sgid are cleared by an unprivileged write and by chown"

cd "$M" && mkdir flags && cd flags
python3 - <<'PY' || fail "open flags"
import errno, os
fd = os.open("x", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, b"0123456789")
os.close(fd)
try:
    os.open("x", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    raise SystemExit("O_EXCL opened an existing file")
except FileExistsError:
    pass
fd = os.open("x", os.O_WRONLY | os.O_APPEND)
os.lseek(fd, 0, os.SEEK_SET)
os.write(fd, b"AB")
os.close(fd)
assert open("x", "rb").read() == b"0123456789AB", open("x", "rb").read()
fd = os.open("x", os.O_WRONLY | os.O_TRUNC)
os.close(fd)
assert os.stat("x").st_size == 0, "O_TRUNC"
PY
check "O_EXCL, O_APPEND (writes go to the end), O_TRUNC"

python3 - <<'PY' || fail "times"
import os, time
open("t", "w").close()
os.utime("t", ns=(1_000_000_000, 2_000_000_000))
st = os.stat("t")
assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000), st
# UTIME_OMIT for atime, UTIME_NOW for mtime, through utimensat.
import ctypes, ctypes.util
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
UTIME_NOW, UTIME_OMIT, AT_FDCWD = (1 << 30) - 1, (1 << 30) - 2, -100
times = (Timespec * 2)(Timespec(0, UTIME_OMIT), Timespec(0, UTIME_NOW))
before = time.time()
assert libc.utimensat(AT_FDCWD, b"t", times, 0) == 0, ctypes.get_errno()
st = os.stat("t")
assert st.st_atime_ns == 1_000_000_000, "UTIME_OMIT changed atime"
assert abs(st.st_mtime - before) < 5, "UTIME_NOW did not set mtime to now"
# ctime moves on every change: chmod, link, rename, write.
def ctime_moves(what, fn):
    c = os.stat("t").st_ctime_ns
    time.sleep(0.01)
    fn()
    assert os.stat("t" if os.path.exists("t") else "t2").st_ctime_ns > c, f"ctime did not move on {what}"
ctime_moves("chmod", lambda: os.chmod("t", 0o600))
ctime_moves("link", lambda: os.link("t", "t_link"))
ctime_moves("write", lambda: open("t", "a").write("x"))
c = os.stat("t").st_ctime_ns
time.sleep(0.01)
os.rename("t", "t2")
assert os.stat("t2").st_ctime_ns > c, "ctime did not move on rename"
PY
check "utimensat with UTIME_NOW and UTIME_OMIT; ctime moves on chmod, link, write and rename"
