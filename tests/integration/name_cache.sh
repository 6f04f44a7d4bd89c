#!/usr/bin/env bash
# The mount's own cache of names and attributes (fs/name_cache.h), kept after the kernel let go
# of them while meta's change feed vouches for them. With the kernel's dentries and inodes
# dropped before each look (drop_caches), so that every stat is a lookup the mount answers:
# - names looked up or made more than the 1 s timeout ago are answered from the cache;
# - what another mount changes (chmod, rewrite, rename, unlink, link, rmdir) is seen at once;
# - a mount whose feed comes 3 s late sees another's change within the 1 s bound all the same;
# - the mount's own changes are seen at once (unlink, rename over a name, links, writes);
# - name_cache=0 turns it off.
source "$(dirname "$0")/lib.sh"
cluster_up
A="$T/a" B="$T/b" C="$T/c" Z="$T/z"
PA=$(free_port) PC=$(free_port) PZ=$(free_port)
mount_extra "$A" "metrics=127.0.0.1:$PA"
mount_extra "$B"
CAIRN_FAILPOINT_FEED_DELAY_MS=3000 mount_extra "$C" "metrics=127.0.0.1:$PC"
mount_extra "$Z" "metrics=127.0.0.1:$PZ,name_cache=0"

timeout 300 python3 - "$A" "$B" "$C" "$Z" "$PA" "$PC" "$PZ" <<'PY' || fail "see above"
import os, sys, time, urllib.request
a, b, c, z = sys.argv[1:5]
pa, pc, pz = sys.argv[5:8]

def hits(port):
    t = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in t.splitlines()
               if l.startswith('cairn_client_cached_answers_total{op="lookup"}'))

def drop():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")

def look(path):  # a fresh lookup through the mount: (mode, size, nlink, ino) or None
    drop()
    try:
        st = os.stat(path)
        return (st.st_mode & 0o7777, st.st_size, st.st_nlink, st.st_ino)
    except FileNotFoundError:
        return None

def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)

def seen_within(limit, what, pred):  # seconds until pred() holds, or fail
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > limit:
            fail(f"not seen within {limit} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - t0

def write(path, data):
    with open(path, "wb") as f:
        f.write(data)

# Names made on A (written: the attributes of a file written here are asked again after its
# close) and on B, that A looks at once: after the kernel's timeouts and with its caches
# dropped, A answers every lookup itself.
os.makedirs(f"{a}/d")
for i in range(100):
    write(f"{a}/d/own{i}", b"x" * i)
for i in range(100):
    write(f"{b}/d/other{i}", b"y" * i)
time.sleep(0.3)  # B's creates reach A's feed first (an answer that races one is not kept)
drop()
for i in range(100):
    os.stat(f"{a}/d/own{i}")
    os.stat(f"{a}/d/other{i}")
time.sleep(1.5)
h0 = hits(pa)
drop()
for i in range(100):
    if os.stat(f"{a}/d/own{i}").st_size != i or os.stat(f"{a}/d/other{i}").st_size != i:
        fail("a size answered from the cache is wrong")
answered = hits(pa) - h0
if answered < 195:
    fail(f"only {answered:.0f} of 200 lookups answered from the cache")
print(f"ok: {answered:.0f} of 200 lookups of names 1.5 s old answered by the mount itself")

# Changes on B reach A's cache through the feed.
lag = []
write(f"{a}/d/f", b"1234")
look(f"{a}/d/f")
os.chmod(f"{b}/d/f", 0o600)
lag.append(seen_within(1, "chmod on B", lambda: look(f"{a}/d/f")[0] == 0o600))
write(f"{b}/d/f", b"123456789")
lag.append(seen_within(1, "rewrite on B", lambda: look(f"{a}/d/f")[1] == 9))
look(f"{a}/d/g")
os.rename(f"{b}/d/f", f"{b}/d/g")
lag.append(seen_within(1, "rename on B: old name", lambda: look(f"{a}/d/f") is None))
lag.append(seen_within(1, "rename on B: new name", lambda: look(f"{a}/d/g") is not None))
os.link(f"{b}/d/g", f"{b}/d/h")
lag.append(seen_within(1, "link on B", lambda: look(f"{a}/d/g")[2] == 2))
os.unlink(f"{b}/d/g")
lag.append(seen_within(1, "unlink on B: the name", lambda: look(f"{a}/d/g") is None))
lag.append(seen_within(1, "unlink on B: the other name's links", lambda: look(f"{a}/d/h")[2] == 1))
os.makedirs(f"{a}/d/sub")
look(f"{a}/d/sub")
os.rmdir(f"{b}/d/sub")
lag.append(seen_within(1, "rmdir on B", lambda: look(f"{a}/d/sub") is None))
print(f"ok: B's chmod, rewrite, rename, link, unlink and rmdir seen on A after at most "
      f"{max(lag) * 1000:.0f} ms")

# C gets the feed 3 s late (pages with changes only): once its feed is quiet, its answers keep
# vouching for its cache; then B rewrites a file C has cached. C's cache is trusted no longer
# than the 1 s bound from the last prompt answer, so C sees the rewrite well before the feed
# tells it.
write(f"{b}/d/late", b"old")
time.sleep(7)  # every late page applied: C's feed answers promptly again
c0 = hits(pc)
for _ in range(15):
    if look(f"{c}/d/late")[1] != 3:
        fail("C: wrong size before the rewrite")
    time.sleep(0.1)
if hits(pc) - c0 < 10:
    fail(f"C answered {hits(pc) - c0:.0f} of 15 lookups from its cache")
stale = 0
def rewritten():
    global stale
    if look(f"{c}/d/late")[1] == 16:
        return True
    stale += 1
    return False
write(f"{b}/d/late", b"newer and longer")
took = seen_within(2.5, "B's rewrite on C, whose feed is 3 s late", rewritten)
print(f"ok: with its feed 3 s late, C saw B's rewrite after {took * 1000:.0f} ms "
      f"({stale} stale answers before)")

# A's own changes, each seen at once.
write(f"{a}/d/m", b"m")
write(f"{a}/d/n", b"nn")
look(f"{a}/d/m"); look(f"{a}/d/n")
os.unlink(f"{a}/d/m")
if look(f"{a}/d/m") is not None:
    fail("own unlink: the name is still there")
ino_n = look(f"{a}/d/n")[3]
write(f"{a}/d/o", b"ooo")
look(f"{a}/d/o")
os.rename(f"{a}/d/n", f"{a}/d/o")  # over an existing name
if look(f"{a}/d/n") is not None or look(f"{a}/d/o")[3] != ino_n:
    fail("own rename over a name: old name or new target wrong")
os.link(f"{a}/d/o", f"{a}/d/p")
if look(f"{a}/d/o")[2] != 2 or look(f"{a}/d/p")[2] != 2:
    fail("own link: link counts")
os.unlink(f"{a}/d/p")
if look(f"{a}/d/o")[2] != 1:
    fail("own unlink of a second name: the first's link count")
with open(f"{a}/d/o", "ab") as f:
    f.write(b"more")
if look(f"{a}/d/o")[1] != 6:
    fail(f"own append: size {look(f'{a}/d/o')[1]}")
os.truncate(f"{a}/d/o", 1)
if look(f"{a}/d/o")[1] != 1:
    fail("own truncate: size")
os.chmod(f"{a}/d/o", 0o640)
if look(f"{a}/d/o")[0] != 0o640:
    fail("own chmod: mode")
print("ok: A's own unlink, rename over a name, link, append, truncate and chmod seen at once")

# name_cache=0: nothing is answered from a cache.
for i in range(50):
    os.stat(f"{z}/d/own{i}")
time.sleep(1.5)
z0 = hits(pz)
drop()
for i in range(50):
    os.stat(f"{z}/d/own{i}")
if hits(pz) != z0:
    fail("name_cache=0 answered from a cache")
print("ok: name_cache=0 asks meta every time")
PY
check "the mount's name cache answers lookups and stays coherent"
