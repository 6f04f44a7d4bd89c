#!/usr/bin/env bash
# Promise 5: a peer without the cluster secret gets nothing, and everyone else goes on.
source "$(dirname "$0")/lib.sh"
cluster_up

head -c 32 /dev/urandom | xxd -p -c 64 > "$L/wrong"
if "$BIN/cairn" --meta "$CAIRN_META" --secret-file "$L/wrong" status 2>"$L/err"; then
  fail "status with a wrong secret succeeded"
fi
grep -qi "authentication failed" "$L/err" || fail "unclear error: $(cat "$L/err")"
grep -q "wrong cluster secret" "$CL"/logs/meta0.log || fail "meta did not log the refusal"
check "cairn with a wrong secret refused and logged"

mkdir -p "$L/m2"
EXTRA_MOUNTS+=("$L/m2")
if timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/" "$L/m2" -o "secretfile=$L/wrong,keyfile=$CAIRN_KEY_FILE" 2>"$L/merr"; then
  fail "mount with a wrong secret succeeded"
fi
mountpoint -q "$L/m2" && fail "wrong-secret mount is mounted"
check "mount with a wrong secret refused: $(tail -1 "$L/merr")"

# A raw TCP client sending garbage is dropped; the cluster keeps serving.
meta_port="${CAIRN_META##*:}"
head -c 4096 /dev/urandom > "/dev/tcp/127.0.0.1/$meta_port" 2>/dev/null || true
chunk_port="$CHUNK0_PORT"
head -c 4096 /dev/urandom > "/dev/tcp/127.0.0.1/$chunk_port" 2>/dev/null || true
echo still-works > "$M/after"
[ "$(cat "$M/after")" = still-works ] || fail "cluster stopped serving"
cairn status >/dev/null || fail "status after garbage"
check "garbage on the wire is refused, service goes on"

# A wrong data key never yields garbage: the mount is refused.
echo secret-content > "$M/enc"
head -c 32 /dev/urandom > "$L/otherkey"
mkdir -p "$L/m3"
EXTRA_MOUNTS+=("$L/m3")
if timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/" "$L/m3" -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$L/otherkey" 2>"$L/kerr"; then
  if cat "$L/m3/enc" 2>/dev/null | grep -q secret-content; then fail "wrong key read plaintext"; fi
  fail "mount with a wrong data key succeeded"
fi
grep -q "data key" "$L/kerr" || fail "unclear wrong-key message: $(cat "$L/kerr")"
check "wrong data key refused: $(tail -1 "$L/kerr")"

# Subdirectory mounts see only their subtree.
mkdir -p "$M/vol/a" && echo inside > "$M/vol/a/f"
mkdir -p "$L/m4"
EXTRA_MOUNTS+=("$L/m4")
timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/vol" "$L/m4" -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,log=$L/m4.log" \
  || fail "subdirectory mount"
[ "$(cat "$L/m4/a/f")" = inside ] || fail "subdirectory content"
[ ! -e "$L/m4/vol" ] && [ ! -e "$L/m4/enc" ] || fail "subdirectory mount shows the parent"
ra="$(cat "/sys/class/bdi/$(mountpoint -d "$L/m4")/read_ahead_kb")"
[ "$ra" = 16384 ] || fail "the mount's readahead is $ra KiB, not 16384"
fusermount3 -u "$L/m4"
check "subdirectory mount (readahead 16 MiB)"

# Mount options: readahead_kb sets the kernel's readahead; a bad number is refused clearly.
mkdir -p "$L/m6"
EXTRA_MOUNTS+=("$L/m6")
timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/vol" "$L/m6" \
  -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,readahead_kb=2048" || fail "mount with readahead_kb"
ra="$(cat "/sys/class/bdi/$(mountpoint -d "$L/m6")/read_ahead_kb")"
[ "$ra" = 2048 ] || fail "readahead_kb=2048 gave $ra KiB"
[ "$(cat "$L/m6/a/f")" = inside ] || fail "content with readahead_kb"
fusermount3 -u "$L/m6"
if timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/vol" "$L/m6" \
     -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,readahead_kb=lots" 2>"$L/raerr"; then
  fail "readahead_kb=lots accepted"
fi
grep -q "readahead_kb=lots: not a number" "$L/raerr" || fail "unclear error: $(cat "$L/raerr")"
mountpoint -q "$L/m6" && fail "mounted with a bad option"
check "readahead_kb=2048 applied; readahead_kb=lots refused: $(cat "$L/raerr")"

# mount(8) with -t cairn runs /sbin/mount.cairn (installed by tools/build.sh), as fstab does.
if [ -x /sbin/mount.cairn ]; then
  mkdir -p "$L/m5"
  EXTRA_MOUNTS+=("$L/m5")
  timeout 60 mount -t cairn "$CAIRN_META:/vol" "$L/m5" \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,_netdev" || fail "mount -t cairn"
  [ "$(cat "$L/m5/a/f")" = inside ] || fail "content through mount -t cairn"
  umount "$L/m5" || fail "umount"
  check "mount -t cairn and umount"
fi
