#!/usr/bin/env bash
# POSIX conformance on a real mount, the checks of the established suites (pjdfstest's) that a
# FUSE filesystem itself answers for, rather than the kernel: names of 256 bytes refused
# everywhere (also for names that do not exist), 4095-byte symlink targets, modes stored
# exactly, which calls move which times (and which must not), link counts of files and
# directories through link, unlink and rename, rename and rmdir errors, fifos and sockets opened
# as the kernel says, 64-bit offsets, suid/sgid cleared on writes and chown by others, huge
# truncates, device numbers, utimensat (far times, nanoseconds, UTIME_NOW, symlinks themselves),
# and a 4 KiB deep path. Each check compares with what ext4 (the local disk) does.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3
chmod 711 "$T"  # other users reach the mount below it (its files keep their own modes)
mkdir "$M/c" "$L/c"
chmod 777 "$M/c" "$L/c"
python3 - "$M/c" "$L/c" <<'PY' || fail "POSIX conformance"
import errno, os, socket, stat, sys, time
mnt, ext4 = sys.argv[1], sys.argv[2]
failures = []

def expect(what, cond, detail=""):
    if not cond:
        failures.append(f"{what} {detail}")
        print(f"FAIL: {what} {detail}", flush=True)

def err_of(fn, *a):
    try:
        fn(*a)
        return 0
    except OSError as e:
        return e.errno

def as_user(uid, fn):
    """Runs fn as uid/gid `uid` (no supplementary groups) in a child; its errno (0: none)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            fn()
            os._exit(0)
        except OSError as e:
            os._exit(e.errno)
        except BaseException:
            os._exit(250)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def on_both(fn):
    """fn(root) on cairn and on ext4; both results."""
    return fn(mnt), fn(ext4)

def same(what, fn):
    a, b = on_both(fn)
    expect(what, a == b, f"cairn {a!r}, ext4 {b!r}")

os.umask(0)
long = "x" * 256
ok = "y" * 255

# Names: 255 bytes work, 256 fail with ENAMETOOLONG in every call, existing or not.
def names(root):
    out = []
    p = os.path.join(root, ok)
    out.append(err_of(lambda: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))))
    out.append(err_of(os.unlink, p))
    q = os.path.join(root, long)
    for call in (lambda: os.close(os.open(q, os.O_CREAT | os.O_WRONLY, 0o644)),
                 lambda: os.mkdir(q), lambda: os.mkfifo(q), lambda: os.symlink("t", q),
                 lambda: os.unlink(q), lambda: os.rmdir(q), lambda: os.chmod(q, 0o644),
                 lambda: os.stat(q), lambda: os.link(q, os.path.join(root, "n0")),
                 lambda: os.rename(q, os.path.join(root, "n0")), lambda: os.truncate(q, 0)):
        out.append(err_of(call))
    f = os.path.join(root, "n1")
    open(f, "w").close()
    out.append(err_of(os.link, f, q))
    out.append(err_of(os.rename, f, q))
    os.unlink(f)
    return out
a, b = on_both(names)
expect("256-byte names", a == b and a[2:] == [errno.ENAMETOOLONG] * (len(a) - 2), f"{a} vs {b}")
print("ok: 255-byte names work, 256-byte names fail with ENAMETOOLONG in every call", flush=True)

# Symlink targets: a 256-byte component and 4095 bytes in all are kept as they are.
def targets(root):
    out = []
    for i, t in enumerate(["z" * 256, ("d" * 127 + "/") * 31 + "e" * 126]):
        p = os.path.join(root, f"sl{i}")
        os.symlink(t, p)
        out.append((len(t), os.readlink(p) == t, os.lstat(p).st_size))
        os.unlink(p)
    return out
same("symlink targets", targets)
print("ok: symlink targets of a 256-byte name and of 4095 bytes are stored and read back", flush=True)

# Modes are stored exactly (umask 0 here); a mode-0 file created O_RDWR by its owner is usable.
def modes(root):
    out = []
    for m in (0o151, 0o755, 0o000, 0o7777 & ~0o2000):
        p = os.path.join(root, f"m{m:o}")
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, m))
        out.append(oct(stat.S_IMODE(os.lstat(p).st_mode)))
        os.unlink(p)
    d = os.path.join(root, "md")
    os.mkdir(d, 0o151)
    out.append(oct(stat.S_IMODE(os.lstat(d).st_mode)))
    os.rmdir(d)
    z = os.path.join(root, "zero")
    out.append(as_user(65534, lambda: (os.ftruncate(fd := os.open(z, os.O_CREAT | os.O_RDWR, 0), 0),
                                       os.write(fd, b"x"), os.close(fd))))
    out.append((os.lstat(z).st_uid, os.lstat(z).st_size))
    os.unlink(z)
    return out
same("modes", modes)
print("ok: modes (0151, 0755, 0000, 05777) are stored exactly; a mode-0 file opened O_RDWR at create works", flush=True)

# Times: what moves them and what must not (whole seconds apart, as the suites compare).
def times(root):
    t = lambda p: (os.lstat(p).st_mtime_ns, os.lstat(p).st_ctime_ns)
    out = {}
    d = os.path.join(root, "td")
    os.mkdir(d)
    f = os.path.join(d, "f")
    before = t(d)
    time.sleep(1.05)
    os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o644))
    out["create moves the parent"] = t(d) > before
    before = t(d)
    time.sleep(1.05)
    os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o644))
    out["O_CREAT of an existing file leaves the parent"] = t(d) == before
    for content in (b"12345", b""):
        with open(f, "wb") as h:
            h.write(content)
        before = t(f)
        time.sleep(1.05)
        os.close(os.open(f, os.O_WRONLY | os.O_TRUNC))
        now = t(f)
        out[f"O_TRUNC of a {len(content)}-byte file moves mtime and ctime"] = (
            now[0] > before[0] and now[1] > before[1] and os.lstat(f).st_size == 0)
    g = os.path.join(d, "g")
    before = os.lstat(f).st_ctime_ns
    time.sleep(1.05)
    os.link(f, g)
    out["link moves the file's ctime"] = os.lstat(f).st_ctime_ns > before
    before = os.lstat(f).st_ctime_ns
    time.sleep(1.05)
    os.unlink(g)
    out["unlink of one name moves the other's ctime"] = os.lstat(f).st_ctime_ns > before
    before = os.lstat(f).st_ctime_ns
    time.sleep(1.05)
    os.rename(f, g)
    out["rename moves the renamed file's ctime"] = os.lstat(g).st_ctime_ns > before
    for name, fn in (("truncate", lambda: os.truncate(g, 100)), ("chmod", lambda: os.chmod(g, 0o600)),
                     ("chown", lambda: os.chown(g, 65534, 65534))):
        before = t(g)
        time.sleep(1.05)
        fn()
        now = t(g)
        out[f"{name} moves ctime"] = now[1] > before[1]
        if name == "truncate":
            out["truncate moves mtime"] = now[0] > before[0]
    # A rename over a file with two names: the replaced inode keeps one, its ctime moves.
    h, h2 = os.path.join(d, "h"), os.path.join(d, "h2")
    open(h, "w").close()
    os.link(h, h2)
    before = os.lstat(h2).st_ctime_ns
    time.sleep(1.05)
    os.rename(g, h)
    out["rename over a linked file leaves it nlink 1"] = os.lstat(h2).st_nlink == 1
    out["rename over a linked file moves its ctime"] = os.lstat(h2).st_ctime_ns > before
    for p in (h, h2):
        os.unlink(p)
    os.rmdir(d)
    return out
a, b = on_both(times)
for k in a:
    expect(f"times: {k}", a[k] and a[k] == b[k], f"cairn {a[k]}, ext4 {b[k]}")
print("ok: times: create, O_TRUNC (also of an empty file), link, unlink, rename, truncate, chmod and chown move them; O_CREAT of an existing file does not", flush=True)

# Directory link counts through rename; '..' follows the directory.
def dirlinks(root):
    a, b = os.path.join(root, "pa"), os.path.join(root, "pb")
    os.mkdir(a); os.mkdir(b); os.mkdir(os.path.join(a, "child"))
    out = [os.lstat(a).st_nlink, os.lstat(b).st_nlink]
    os.rename(os.path.join(a, "child"), os.path.join(b, "child"))
    out += [os.lstat(a).st_nlink, os.lstat(b).st_nlink,
            os.lstat(os.path.join(b, "child", "..")).st_ino == os.lstat(b).st_ino]
    os.rmdir(os.path.join(b, "child")); os.rmdir(a); os.rmdir(b)
    return out
same("directory nlink through rename", dirlinks)

# rename and rmdir errors, with every kind of child.
def errors(root):
    out = []
    d, f = os.path.join(root, "ed"), os.path.join(root, "ef")
    os.mkdir(d); open(f, "w").close()
    out.append(err_of(os.rename, d, f))   # ENOTDIR
    out.append(err_of(os.rename, f, d))   # EISDIR
    for make in (lambda p: open(p, "w").close(), os.mkdir, os.mkfifo,
                 lambda p: os.symlink("nowhere", p),
                 lambda p: socket.socket(socket.AF_UNIX).bind(p)):
        child = os.path.join(d, "child")
        make(child)
        out.append(err_of(os.rmdir, d) in (errno.ENOTEMPTY, errno.EEXIST))
        e = os.path.join(root, "empty")
        os.mkdir(e)
        os.mkdir(os.path.join(e, "x"))
        out.append(err_of(os.rename, e, d) in (errno.ENOTEMPTY, errno.EEXIST))
        os.rmdir(os.path.join(e, "x")); os.rmdir(e)
        (os.rmdir if os.path.isdir(child) and not os.path.islink(child) else os.unlink)(child)
    os.rmdir(d); os.unlink(f)
    return out
same("rename and rmdir errors", errors)

# Fifos and sockets: opened as the kernel says (the types must be right for that).
def special(root):
    out = []
    p, s = os.path.join(root, "fifo"), os.path.join(root, "sock")
    os.mkfifo(p, 0o644)
    out.append(err_of(lambda: os.open(p, os.O_WRONLY | os.O_NONBLOCK)))  # ENXIO: no reader
    r = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"through the fifo")
    out.append(os.read(r, 100))
    os.close(r); os.close(w)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(s); srv.listen(1)
    out.append(err_of(lambda: os.open(s, os.O_RDONLY)))  # ENXIO
    cl = socket.socket(socket.AF_UNIX); cl.connect(s)
    conn, _ = srv.accept(); cl.sendall(b"through the socket"); out.append(conn.recv(100))
    out.append(stat.S_ISSOCK(os.lstat(s).st_mode))
    for x in (conn, cl, srv):
        x.close()
    dev = os.path.join(root, "dev")
    os.mknod(dev, stat.S_IFBLK | 0o755, os.makedev(1, 2))
    st = os.lstat(dev)
    out.append((stat.S_ISBLK(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)))
    for x in (p, s, dev):
        os.unlink(x)
    return out
same("fifos, sockets and device nodes", special)
print("ok: directory nlink through rename, rename/rmdir errors, fifos, sockets and device numbers as on ext4", flush=True)

# 64-bit offsets, huge truncates.
def offsets(root):
    p = os.path.join(root, "big")
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"!", 2 ** 31 + 1)
    out = [os.fstat(fd).st_size, os.pread(fd, 1, 2 ** 31 + 1)]
    os.close(fd)
    q = os.path.join(root, "huge")
    open(q, "w").close()
    e = err_of(os.truncate, q, 999999999999999)
    out.append(os.lstat(q).st_size == (999999999999999 if e == 0 else 0) and e in (0, errno.EFBIG, errno.EINVAL))
    os.unlink(p); os.unlink(q)
    return out
a, b = on_both(offsets)
expect("64-bit offsets", a == b, f"cairn {a}, ext4 {b}")

# suid/sgid: cleared when another user writes; chown by a non-root owner clears them.
def killpriv(root):
    out = []
    for m in (0o4777, 0o2777, 0o6777):
        p = os.path.join(root, f"s{m:o}")
        with open(p, "w") as h:
            h.write("x")
        os.chmod(p, m)
        out.append(as_user(65534, lambda: (os.write(fd := os.open(p, os.O_WRONLY), b"y"), os.close(fd))))
        out.append(oct(stat.S_IMODE(os.lstat(p).st_mode)))
        os.unlink(p)
    p = os.path.join(root, "own")
    open(p, "w").close()
    os.chown(p, 65534, 65534)
    os.chmod(p, 0o6555)
    out.append(as_user(65534, lambda: os.chown(p, -1, 65534)))
    out.append(oct(stat.S_IMODE(os.lstat(p).st_mode)))
    out.append(as_user(65534, lambda: os.chown(p, -1, -1)))
    os.unlink(p)
    q = os.path.join(root, "sticky")
    open(q, "w").close()
    os.chown(q, 65534, 65534)
    out.append(as_user(65534, lambda: os.chmod(q, 0o1644)))
    out.append(oct(stat.S_IMODE(os.lstat(q).st_mode)))
    os.unlink(q)
    return out
same("suid and sgid", killpriv)
print("ok: 64-bit offsets and huge truncates; suid/sgid cleared by another user's write and by the owner's chown; sticky files", flush=True)

# utimensat: far times, nanoseconds, UTIME_NOW, symlinks themselves.
def utimes(root):
    out = []
    f, l = os.path.join(root, "u"), os.path.join(root, "ul")
    open(f, "w").close()
    os.symlink("u", l)
    for at, mt in ((1900000000, 1950000000), (2 ** 31, 2 ** 32), (0, 1)):
        os.utime(f, ns=(at * 10 ** 9 + 100000000, mt * 10 ** 9 + 200000000))
        st = os.lstat(f)
        out.append((st.st_atime_ns, st.st_mtime_ns))
    os.utime(l, ns=(10 ** 9, 2 * 10 ** 9), follow_symlinks=False)
    out.append((os.lstat(l).st_mtime_ns, os.lstat(f).st_mtime_ns))
    t0 = time.time()
    os.utime(f)  # UTIME_NOW
    out.append(abs(os.lstat(f).st_mtime - t0) < 5)
    os.unlink(l); os.unlink(f)
    return out
same("utimensat", utimes)

# Access mode 3, and a path of about 4 KiB.
def misc(root):
    p = os.path.join(root, "acc")
    open(p, "w").close()
    e = err_of(lambda: os.close(os.open(p, 3)))
    out = [e in (0, errno.EINVAL)]
    cur = root
    comps = 0
    while len(cur) + 128 < 4000:
        cur = os.path.join(cur, "p" * 127)
        os.mkdir(cur)
        comps += 1
    open(os.path.join(cur, "leaf"), "w").close()
    out.append(os.path.exists(os.path.join(cur, "leaf")))
    os.unlink(p)
    return out, comps
a, b = on_both(misc)
expect("access mode 3 and a deep path", a[0] == [True, True], f"{a}")
os.system(f"rm -rf '{mnt}'/ppp* '{ext4}'/ppp*")
print("ok: utimensat (far times, nanoseconds, UTIME_NOW, symlinks), access mode 3, a path of 4 KiB", flush=True)
sys.exit(1 if failures else 0)
PY
check "POSIX conformance: every check agreed with ext4"
