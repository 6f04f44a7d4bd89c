#!/usr/bin/env bash
# Promise 3: no chunk server or meta server stores plaintext file data or the data key.
source "$(dirname "$0")/lib.sh"
cluster_up

marker="CAIRN-PLAINTEXT-MARKER-$RANDOM$RANDOM"
python3 -c "import sys; sys.stdout.write(('$marker\n' * (8 * 1024 * 1024 // (len('$marker') + 1))))" > "$L/plain"
cp "$L/plain" "$M/plain.txt"
echo "$marker small" > "$M/small.txt"
setfattr -n user.note -v "not-data" "$M/small.txt"
sync
cmp "$L/plain" "$M/plain.txt" || fail "file reads back wrong"
for d in $CAIRN_CHUNK_DIRS $CAIRN_META_DIRS; do
  if grep -rl --binary-files=text "$marker" "$d" 2>/dev/null; then fail "plaintext marker found under $d"; fi
done
check "marker written $(($(wc -c < "$L/plain") / (${#marker} + 1))) times appears nowhere on the servers"
keyhex=$(xxd -p -c 64 "$CAIRN_KEY_FILE")
for d in $CAIRN_CHUNK_DIRS $CAIRN_META_DIRS; do
  if grep -rlF --binary-files=text "$keyhex" "$d" 2>/dev/null; then fail "data key (hex) found under $d"; fi
  if grep -rlF --binary-files=text -f <(head -c 16 "$CAIRN_KEY_FILE" | xxd -p) "$d" 2>/dev/null | grep -q .; then :; fi
done
python3 - "$CAIRN_KEY_FILE" $CAIRN_CHUNK_DIRS $CAIRN_META_DIRS <<'PY' || fail "raw data key bytes found on a server"
import os, sys
key = open(sys.argv[1], "rb").read()
for top in sys.argv[2:]:
    for root, _, files in os.walk(top):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if key in fh.read():
                    raise SystemExit("key found in " + os.path.join(root, f))
PY
check "the data key is on no server"
