#!/usr/bin/env bash
# The cluster's cipher suite (fs/crypto.h): chosen by the first mount (-o cipher=), kept in the
# key check, followed by every later mount whatever it asks, and refused with a clear message
# when unknown. Files written under one mount read back under the others, for both suites.
source "$(dirname "$0")/lib.sh"

aes_here=0
grep -qw aes /proc/cpuinfo && grep -qw pclmulqdq /proc/cpuinfo && aes_here=1

# A cluster made with XChaCha20-Poly1305 even where AES-256-GCM would be faster.
CAIRN_MOUNT_OPTIONS=cipher=xchacha20poly1305 cluster_up
grep -q "blocks sealed with xchacha20poly1305" "$CL/logs/mount.log" \
  || fail "the first mount did not seal with the suite it asked for: $(grep -i sealed "$CL/logs/mount.log")"
head -c 5M /dev/urandom > "$L/a"
cp "$L/a" "$M/a"
check "first mount (asked xchacha20poly1305) seals with it"

# Later mounts follow the cluster: one asking nothing, one asking the other suite.
mount_extra "$T/m2"
grep -q "blocks sealed with xchacha20poly1305" "$T/mount-m2.log" || fail "a later mount did not follow the cluster"
cmp "$L/a" "$T/m2/a" || fail "a later mount reads the first one's file wrong"
if [ $aes_here = 1 ]; then
  mount_extra "$T/m3" cipher=aes256gcm
  grep -q "cipher=aes256gcm asked, but the cluster seals with xchacha20poly1305" "$T/mount-m3.log" \
    || fail "a mount asking another suite did not say it follows the cluster's"
  grep -q "blocks sealed with xchacha20poly1305" "$T/mount-m3.log" || fail "m3 did not follow the cluster"
  head -c 3M /dev/urandom > "$L/b"
  cp "$L/b" "$T/m3/b"
  sync
  echo 3 > /proc/sys/vm/drop_caches
  cmp "$L/b" "$M/b" || fail "the first mount reads m3's file wrong"
  cmp "$L/a" "$T/m3/a" || fail "m3 reads the first mount's file wrong"
fi
check "later mounts follow the cluster's suite and read each other's files"

# Unknown suites are refused before anything is mounted.
mkdir -p "$T/m4"
if "$BIN/mount.cairn" "$CAIRN_META:/" "$T/m4" \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,cipher=rot13" 2>"$L/m4.err"; then
  EXTRA_MOUNTS+=("$T/m4")
  fail "a mount with cipher=rot13 succeeded"
fi
grep -q "cipher=rot13: not aes256gcm, xchacha20poly1305 or auto" "$L/m4.err" \
  || fail "the refusal of cipher=rot13 says: $(cat "$L/m4.err")"
mountpoint -q "$T/m4" && fail "cipher=rot13 left a mount"
check "an unknown suite is refused: $(cat "$L/m4.err")"

# A cluster made without asking takes the fastest suite this CPU runs, and a mount asking for
# XChaCha20-Poly1305 there follows it.
if [ $aes_here = 1 ]; then
  C2="$T/cluster2"
  timeout 180 bash "$ROOT/tools/cluster.sh" up --dir "$C2" --mount "$T/m5" --chunks 2 --replicas 2 >/dev/null
  EXTRA_MOUNTS+=("$T/m5")
  trap 'bash "$ROOT/tools/cluster.sh" down --dir "$C2" >/dev/null 2>&1 || true; cleanup' EXIT
  grep -q "blocks sealed with aes256gcm" "$C2/logs/mount.log" || fail "a cluster made on an AES-NI CPU did not take AES-256-GCM"
  cp "$L/a" "$T/m5/a"
  (
    source "$C2/cluster.env"
    mkdir -p "$T/m6"
    "$BIN/mount.cairn" "$CAIRN_META:/" "$T/m6" \
      -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,log=$T/mount-m6.log,cipher=xchacha20poly1305"
  )
  EXTRA_MOUNTS+=("$T/m6")
  grep -q "blocks sealed with aes256gcm" "$T/mount-m6.log" || fail "m6 did not follow the AES cluster"
  cmp "$L/a" "$T/m6/a" || fail "m6 reads the AES cluster's file wrong"
  echo 3 > /proc/sys/vm/drop_caches
  cmp "$L/a" "$T/m5/a" || fail "the AES cluster's file reads back wrong with cold caches"
  fusermount3 -u "$T/m6"
  bash "$ROOT/tools/cluster.sh" down --dir "$C2" >/dev/null
  check "a cluster made on this CPU seals with aes256gcm, and mounts asking otherwise follow it"
else
  check "no AES-NI here: the AES-256-GCM cluster is not tried"
fi
