#!/usr/bin/env bash
# Promise 4 with the wrong data key: a second mount of the same cluster with another key file
# is either refused (with a message about the data key) or reads fail with an error. It never
# returns bytes that are not the file's.
source "$(dirname "$0")/lib.sh"
cluster_up

head -c 3M /dev/urandom > "$L/data"
printf 'KNOWN-CONTENT-%s\n' "$RANDOM$RANDOM" > "$L/small"
cp "$L/data" "$M/data.bin"
cp "$L/small" "$M/small.txt"
sync
cmp "$L/data" "$M/data.bin" || fail "file written with the right key reads back wrong"
check "files written with the cluster's key"

head -c 32 /dev/urandom > "$L/otherkey"
chmod 600 "$L/otherkey"
M2="$L/m2"
mkdir -p "$M2"
EXTRA_MOUNTS+=("$M2")
echo "mounting a second time with a different key file"
if timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/" "$M2" \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$L/otherkey,log=$L/m2.log" 2>"$L/m2.err"; then
  mountpoint -q "$M2" || fail "mount.cairn exited 0 but nothing is mounted at $M2"
  echo "the mount was accepted; reads must fail"
  for f in data.bin small.txt; do
    if timeout 60 cat "$M2/$f" > "$L/read.$f" 2>"$L/read.$f.err"; then
      fail "reading $f with the wrong key succeeded ($(wc -c < "$L/read.$f") bytes)"
    fi
    grep -qi "input/output error" "$L/read.$f.err" \
      || fail "reading $f with the wrong key: expected EIO, got: $(cat "$L/read.$f.err")"
    if [ -s "$L/read.$f" ] && ! cmp -s "$L/read.$f" <(head -c "$(wc -c < "$L/read.$f")" "$L/${f%%.*}"); then
      fail "reading $f with the wrong key returned bytes that are not the file's"
    fi
  done
  check "reads with the wrong key fail with EIO"
  fusermount3 -u "$M2" || umount -l "$M2" || fail "unmounting the second mount"
else
  rc=$?
  [ "$rc" != 124 ] || fail "mount.cairn with the wrong key hung for 60 s"
  mountpoint -q "$M2" && fail "mount.cairn failed (exit $rc) but $M2 is mounted"
  grep -qi "data key" "$L/m2.err" || fail "the refusal does not mention the data key: $(cat "$L/m2.err")"
  check "mount with the wrong key refused (exit $rc): $(tail -n 1 "$L/m2.err")"
fi
mountpoint -q "$M2" && fail "the second mount is still there"

cmp "$L/data" "$M/data.bin" || fail "the first mount reads wrong after the wrong-key attempt"
cmp "$L/small" "$M/small.txt" || fail "the first mount reads wrong after the wrong-key attempt"
echo after > "$M/after" && [ "$(cat "$M/after")" = after ] || fail "the first mount stopped working"
check "the mount with the right key still reads and writes"

# A key file of the wrong size is refused with a clear message, nothing mounted.
head -c 7 /dev/urandom > "$L/shortkey"
M3="$L/m3"
mkdir -p "$M3"
EXTRA_MOUNTS+=("$M3")
if timeout 60 "$BIN/mount.cairn" "$CAIRN_META:/" "$M3" \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$L/shortkey" 2>"$L/m3.err"; then
  fail "mount with a 7-byte key file succeeded"
fi
mountpoint -q "$M3" && fail "the short-key mount is mounted"
grep -qi "key" "$L/m3.err" || fail "unclear error for a short key file: $(cat "$L/m3.err")"
check "a 7-byte key file is refused: $(tail -n 1 "$L/m3.err")"
