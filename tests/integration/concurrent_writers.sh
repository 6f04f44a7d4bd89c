#!/usr/bin/env bash
# Several writers at once, on separate files and appending to logs; all data intact.
source "$(dirname "$0")/lib.sh"
cluster_up

for i in 1 2 3 4; do head -c 32M /dev/urandom > "$L/w$i"; done
pids=()
for i in 1 2 3 4; do (cp "$L/w$i" "$M/w$i") & pids+=($!); done
for j in 1 2; do
  (for k in $(seq 1 300); do echo "writer $j line $k $(printf '%080d' $k)" >> "$M/log$j"; done) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a writer failed"; done
for i in 1 2 3 4; do cmp "$L/w$i" "$M/w$i" || fail "file w$i differs"; done
for j in 1 2; do
  [ "$(wc -l < "$M/log$j")" = 300 ] || fail "log$j has $(wc -l < "$M/log$j") lines"
  [ "$(sort -u "$M/log$j" | wc -l)" = 300 ] || fail "log$j has duplicate lines"
done
check "4 concurrent 32 MiB writers and 2 appenders"

# Two processes writing disjoint ranges of one file.
python3 - "$M/shared" <<'PY' || fail "disjoint writers on one file"
import os, sys, multiprocessing
path = sys.argv[1]
open(path, "wb").close()
def w(k):
    fd = os.open(path, os.O_WRONLY)
    for i in range(64):
        os.pwrite(fd, bytes([k]) * 65536, (i * 2 + k) * 65536)
    os.close(fd)
ps = [multiprocessing.Process(target=w, args=(k,)) for k in (0, 1)]
[p.start() for p in ps]; [p.join() for p in ps]
data = open(path, "rb").read()
assert len(data) == 128 * 65536, len(data)
for i in range(128):
    assert data[i * 65536:(i + 1) * 65536] == bytes([i % 2]) * 65536, i
PY
check "disjoint writers on one file"
