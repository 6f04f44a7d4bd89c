#!/usr/bin/env bash
# A chunk server killed in the middle of a large write: the write completes without an error
# and the file reads back byte-identical.
source "$(dirname "$0")/lib.sh"
cluster_up --chunks 4 --replicas 3

head -c 600M /dev/urandom > "$L/big"
(cp "$L/big" "$M/big") &
cp_pid=$!
sleep 2
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" chunk1
wait $cp_pid || fail "the write failed when a chunk server died"
cmp "$L/big" "$M/big" || fail "data differs"
check "600 MiB write survived the death of a chunk server"
python3 - <<PY || fail "replicas"
import json, subprocess
d = json.loads(subprocess.check_output(["$BIN/cairn", "--meta", "$CAIRN_META", "--secret-file",
    "$CAIRN_SECRET_FILE", "fileinfo", "/big", "--json"]))
for c in d["chunks"]:
    assert len(c["replicas"]) >= 2, c
PY
check "every chunk kept at least two replicas"
