#!/usr/bin/env bash
# A large mixed tree survives cp -a, tar and rsync round trips byte for byte.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 3 --replicas 3

src="$L/src"
mkdir -p "$src"
for d in $(seq 1 12); do
  mkdir -p "$src/dir$d/sub$((d % 3))"
  for f in $(seq 1 25); do
    printf 'file %s in dir %s\n%.0s' "$f" "$d" $(seq 1 $((f * 7))) > "$src/dir$d/sub$((d % 3))/t$f.txt"
  done
done
for i in 1 2 3 4 5; do head -c $((i * 3 * 1024 * 1024 + i * 977)) /dev/urandom > "$src/blob$i.bin"; done
head -c 70M /dev/urandom > "$src/big.bin"   # spans two 64 MiB chunks
ln -s dir1/sub1/t1.txt "$src/link"
ln -s /nonexistent/target "$src/dangling"
: > "$src/empty"
chmod 640 "$src/dir2/sub2/t3.txt"
touch -d '2001-02-03 04:05:06' "$src/dir3/sub0/t4.txt"

timeout 300 cp -a "$src" "$M/copy"
diff -r --no-dereference "$src" "$M/copy" || fail "cp -a: trees differ"
[ "$(stat -c %a "$M/copy/dir2/sub2/t3.txt")" = 640 ] || fail "mode not kept"
[ "$(stat -c %Y "$M/copy/dir3/sub0/t4.txt")" = "$(stat -c %Y "$src/dir3/sub0/t4.txt")" ] || fail "mtime not kept"
[ "$(readlink "$M/copy/link")" = dir1/sub1/t1.txt ] || fail "symlink target"
check "cp -a of $(find "$src" | wc -l) entries, diff -r clean"

mkdir "$M/tar"
timeout 300 tar -C "$src" -cf - . | timeout 300 tar -C "$M/tar" -xf -
diff -r --no-dereference "$src" "$M/tar" || fail "tar into the mount differs"
mkdir "$L/back"
timeout 300 tar -C "$M/tar" -cf - . | tar -C "$L/back" -xf -
diff -r --no-dereference "$src" "$L/back" || fail "tar out of the mount differs"
check "tar round trip"

timeout 300 rsync -a "$src/" "$M/rsync/"
diff -r --no-dereference "$src" "$M/rsync" || fail "rsync differs"
timeout 300 rsync -a --checksum "$src/" "$M/rsync/" --itemize-changes > "$L/rsync.out"
[ ! -s "$L/rsync.out" ] || fail "second rsync found differences: $(head -3 "$L/rsync.out")"
check "rsync round trip, second rsync --checksum finds nothing to do"
