#!/usr/bin/env bash
# Benchmarks on a local loopback cluster; prints the numbers README.md quotes.
#
#   tools/bench.sh [--metas N] [--size-mib N] [--files N]
#
# Sequential write and read, with dd and with fio (1 MiB requests of incompressible data, through
# the page cache, fsync at the end of the write; the read after dropping caches), metadata
# operations per second (create, stat, unlink) and, with several meta servers, the time from
# killing the leader to the first served request.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
METAS=1 SIZE=1024 FILES=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --metas) METAS="$2"; shift 2 ;;
    --size-mib) SIZE="$2"; shift 2 ;;
    --files) FILES="$2"; shift 2 ;;
    *) echo "usage: $0 [--metas N] [--size-mib N] [--files N]" >&2; exit 2 ;;
  esac
done
T="$(mktemp -d /tmp/cairn-bench.XXXXXX)"
trap 'bash "$ROOT/tools/cluster.sh" down --dir "$T/c" >/dev/null 2>&1 || true; rm -rf "$T"' EXIT
bash "$ROOT/tools/cluster.sh" up --dir "$T/c" --mount "$T/m" --metas "$METAS" --chunks 3 --replicas 3 >/dev/null
source "$T/c/cluster.env"
M="$T/m"
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

if [ "$METAS" -gt 1 ]; then
  leader=$("$ROOT/build/bin/cairn" meta status --json | python3 -c "import json,sys; d=json.load(sys.stdin); \
print([m['id'] for m in d if m.get('role')=='leader'][0])")
  t0=$(now)
  bash "$ROOT/tools/cluster.sh" kill --dir "$T/c" "meta$((leader - 1))"
  until : > "$M/after-failover" 2>/dev/null; do sleep 0.02; done
  t1=$(now)
  echo "failover: first request served $(python3 -c "print(round($t1 - $t0, 2))") s after killing the leader"
fi
