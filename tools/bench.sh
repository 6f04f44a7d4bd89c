#!/usr/bin/env bash
# Benchmarks on a local loopback cluster; prints the numbers README.md quotes.
#
#   tools/bench.sh [--metas N] [--size-mib N] [--files N] [--moosefs]
#
# --moosefs runs the same workload on a local MooseFS cluster from Debian's packages (one
# master, 3 chunk servers, goal 3) instead, for a side-by-side comparison on the same machine.
# MooseFS refuses loopback addresses for its servers, so they run in a network namespace of
# their own (a veth pair in a private /24, torn down afterwards) and mfsmount reaches them
# through it.
#
# Sequential write and read, with dd and with fio (1 MiB requests of incompressible data, through
# the page cache, fsync at the end of the write; the read after dropping caches), metadata
# operations per second (create, stat, unlink) and, with several meta servers, the time from
# killing the leader to the first served request.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
METAS=1 SIZE=1024 FILES=10000 MOOSEFS=0
while [ $# -gt 0 ]; do
  case "$1" in
    --metas) METAS="$2"; shift 2 ;;
    --size-mib) SIZE="$2"; shift 2 ;;
    --files) FILES="$2"; shift 2 ;;
    --moosefs) MOOSEFS=1; shift ;;
    *) echo "usage: $0 [--metas N] [--size-mib N] [--files N] [--moosefs]" >&2; exit 2 ;;
  esac
done
T="$(mktemp -d /tmp/cairn-bench.XXXXXX)"
M="$T/m"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

moosefs_up() {
  # Debian's packages, without letting them start their default services (those would listen
  # on every address): a policy-rc.d refuses service starts during the install.
  if ! command -v mfsmaster >/dev/null || ! command -v mfsmount >/dev/null; then
    local policy=/usr/sbin/policy-rc.d created=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created=1; fi
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q moosefs-master moosefs-chunkserver \
      moosefs-client </dev/null >/dev/null
    [ $created = 1 ] && rm -f $policy
  fi
  local net=10.231.99  # addresses used only inside the netns made here and on its veth
  local ml=9419 cs=9420 cl=9421 ip=$net.2
  NS=cairn-bench-mfs$$
  ip netns add "$NS"
  ip link add "${NS:0:10}h" type veth peer name "${NS:0:10}n"
  ip link set "${NS:0:10}n" netns "$NS"
  ip addr add $net.1/24 dev "${NS:0:10}h"
  ip link set "${NS:0:10}h" up
  ip netns exec "$NS" ip addr add $ip/24 dev "${NS:0:10}n"
  ip netns exec "$NS" ip link set "${NS:0:10}n" up
  ip netns exec "$NS" ip link set lo up
  in_ns() { nsenter --net="/run/netns/$NS" "$@"; }
  mkdir -p "$T/mfs/master" "$M"
  cp /var/lib/mfs/metadata.mfs.empty "$T/mfs/master/metadata.mfs"
  echo "* / rw,alldirs,maproot=0" > "$T/mfs/exports.cfg"
  cat > "$T/mfs/master.cfg" <<CFG
WORKING_USER = root
WORKING_GROUP = root
DATA_PATH = $T/mfs/master
EXPORTS_FILENAME = $T/mfs/exports.cfg
MATOML_LISTEN_HOST = $ip
MATOML_LISTEN_PORT = $ml
MATOCS_LISTEN_HOST = $ip
MATOCS_LISTEN_PORT = $cs
MATOCL_LISTEN_HOST = $ip
MATOCL_LISTEN_PORT = $cl
CFG
  in_ns mfsmaster -c "$T/mfs/master.cfg" start >/dev/null
  for i in 0 1 2; do
    mkdir -p "$T/mfs/cs$i/hdd"
    echo "$T/mfs/cs$i/hdd" > "$T/mfs/cs$i/hdd.cfg"
    cat > "$T/mfs/cs$i/cs.cfg" <<CFG
WORKING_USER = root
WORKING_GROUP = root
DATA_PATH = $T/mfs/cs$i
HDD_CONF_FILENAME = $T/mfs/cs$i/hdd.cfg
HDD_LEAVE_SPACE_DEFAULT = 64MiB
MASTER_HOST = $ip
MASTER_PORT = $cs
BIND_HOST = $ip
CSSERV_LISTEN_HOST = $ip
CSSERV_LISTEN_PORT = $((9422 + i))
CFG
    in_ns mfschunkserver -c "$T/mfs/cs$i/cs.cfg" start >/dev/null
  done
  mfsmount "$M" -H $ip -P "$cl" >/dev/null
  mfssetgoal -r 3 "$M" >/dev/null
  # Wait until the three chunk servers have registered (a write needs them for goal 3).
  for _ in $(seq 1 60); do
    [ "$(mfscli -H $ip -P "$cl" -SCS -s, 2>/dev/null | grep -c "$ip")" -ge 3 ] && break
    sleep 1
  done
}

moosefs_down() {
  umount -l "$M" 2>/dev/null || true
  for i in 0 1 2; do
    nsenter --net="/run/netns/$NS" mfschunkserver -c "$T/mfs/cs$i/cs.cfg" stop >/dev/null 2>&1 || true
  done
  nsenter --net="/run/netns/$NS" mfsmaster -c "$T/mfs/master.cfg" stop >/dev/null 2>&1 || true
  ip link del "${NS:0:10}h" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}

NS=""
if [ "$MOOSEFS" = 1 ]; then
  trap 'moosefs_down; rm -rf "$T"' EXIT
  moosefs_up
  echo "MooseFS $(mfsmaster -v 2>/dev/null | head -1 | grep -o '[0-9][0-9.]*' | head -1), 1 master, 3 chunk servers, goal 3, mfsmount at $M"
  METAS=1
else
  trap 'bash "$ROOT/tools/cluster.sh" down --dir "$T/c" >/dev/null 2>&1 || true; rm -rf "$T"' EXIT
  bash "$ROOT/tools/cluster.sh" up --dir "$T/c" --mount "$M" --metas "$METAS" --chunks 3 --replicas 3 >/dev/null
  source "$T/c/cluster.env"
fi
now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.1f}')"; }

head -c "${SIZE}M" /dev/urandom > "$T/src"
t0=$(now); dd if="$T/src" of="$M/seq" bs=1M conv=fsync status=none; t1=$(now)
echo "sequential write: $(rate "$SIZE" "$t0" "$t1") MiB/s (${SIZE} MiB, 3 replicas, fsync)"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); dd if="$M/seq" of=/dev/null bs=1M status=none; t1=$(now)
echo "sequential read:  $(rate "$SIZE" "$t0" "$t1") MiB/s"
cmp "$T/src" "$M/seq" || { echo "bench: data mismatch" >&2; exit 1; }
rm -f "$M/seq"

# The same through fio (1 MiB requests, fresh random buffers so nothing compresses or dedups).
fio_mibs() {  # fio_mibs JSON read|write
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(f\"{sum(j[sys.argv[2]]['bw_bytes'] for j in d['jobs']) / 1048576:.1f}\")" "$1" "$2"
}
fio --name=seq --directory="$M" --rw=write --bs=1m --size="${SIZE}m" --ioengine=psync \
  --refill_buffers --end_fsync=1 --output-format=json --output="$T/fio-write.json"
echo "fio sequential write: $(fio_mibs "$T/fio-write.json" write) MiB/s (${SIZE} MiB, bs=1M, end_fsync)"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
fio --name=seq --directory="$M" --rw=read --bs=1m --size="${SIZE}m" --ioengine=psync \
  --output-format=json --output="$T/fio-read.json"
echo "fio sequential read:  $(fio_mibs "$T/fio-read.json" read) MiB/s"
rm -f "$M"/seq.*

mkdir "$M/meta"
t0=$(now); python3 - "$M/meta" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.close(os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
PY
t1=$(now); echo "create: $(rate "$FILES" "$t0" "$t1") files/s ($METAS meta servers)"
t0=$(now); python3 - "$M/meta" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.stat(os.path.join(d, "f%d" % i))
PY
t1=$(now); echo "stat:   $(rate "$FILES" "$t0" "$t1") files/s"
t0=$(now); python3 - "$M/meta" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.unlink(os.path.join(d, "f%d" % i))
PY
t1=$(now); echo "unlink: $(rate "$FILES" "$t0" "$t1") files/s"

if [ "$MOOSEFS" = 0 ] && [ "$METAS" -gt 1 ]; then
  leader=$("$ROOT/build/bin/cairn" meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
print([m['id'] for m in d if m.get('role')=='leader'][0])")
  t0=$(now)
  bash "$ROOT/tools/cluster.sh" kill --dir "$T/c" "meta$((leader - 1))"
  until : > "$M/after-failover" 2>/dev/null; do sleep 0.02; done
  t1=$(now)
  echo "failover: first request served $(python3 -c "print(round($t1 - $t0, 2))") s after killing the leader"
fi
