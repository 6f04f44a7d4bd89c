#!/usr/bin/env bash
# fio writes and verifies random and sequential patterns (crc32c) through the mount.
source "$(dirname "$0")/lib.sh"
cluster_up
command -v fio >/dev/null || fail "fio is not installed"
timeout 600 fio --name=rand --directory="$M" --rw=randwrite --bs=4k --size=64m --numjobs=2 --direct=0 \
  --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting \
  --output="$L/rand.out" || { cat "$L/rand.out"; fail "fio random write/verify"; }
grep -q "err= 0" "$L/rand.out" || { cat "$L/rand.out"; fail "fio reported errors"; }
check "fio randwrite 4k x2 jobs verified"
timeout 600 fio --name=seq --directory="$M" --rw=write --bs=1m --size=256m \
  --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 \
  --output="$L/seq.out" || { cat "$L/seq.out"; fail "fio sequential write/verify"; }
grep -q "err= 0" "$L/seq.out" || { cat "$L/seq.out"; fail "fio reported errors"; }
check "fio sequential 1m verified"
timeout 600 fio --name=mixed --directory="$M" --rw=randrw --bs=16k --size=32m --ioengine=psync \
  --verify=md5 --do_verify=1 --verify_fatal=1 --output="$L/mixed.out" \
  || { cat "$L/mixed.out"; fail "fio randrw"; }
check "fio randrw 16k verified"
