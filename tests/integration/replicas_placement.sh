#!/usr/bin/env bash
# Every chunk has R replicas on distinct chunk servers (promise 2's precondition).
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 4 --replicas 3

for i in 1 2 3; do head -c 100M /dev/urandom > "$M/big$i"; done
for i in 1 2 3; do
  cairn fileinfo "/big$i" --json > "$L/info$i"
  python3 - "$L/info$i" <<'PY' || fail "placement of /big$i"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["size"] == 100 * 1024 * 1024, d["size"]
assert len(d["chunks"]) == 2, len(d["chunks"])
for c in d["chunks"]:
    servers = [r["server"] for r in c["replicas"]]
    assert len(servers) == 3, c
    assert len(set(servers)) == 3, c
    assert len(set(r["addr"] for r in c["replicas"])) == 3, c
PY
done
[ "$(cairn status --json | json "d['chunks']['under_replicated']")" = 0 ] || fail "under-replicated chunks"
[ "$(cairn status --json | json "d['chunks']['total']")" = 6 ] || fail "chunk count"
cairn fileinfo /big1
check "3 replicas on distinct servers for every chunk"
if cairn fileinfo /nope 2>/dev/null; then fail "fileinfo of a missing path"; fi
if cairn fileinfo relative 2>/dev/null; then fail "fileinfo of a relative path"; fi
check "fileinfo errors"
