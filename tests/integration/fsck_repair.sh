#!/usr/bin/env bash
# cairn fsck: clean on a healthy cluster with thousands of files; after deliberate damage to the
# chunk servers (a chunk file deleted, bytes flipped, a copy planted where the table does not
# list it) and to the metadata (an orphaned inode, a dangling entry, a wrong link count, a
# replica list lowered, a size below the file's chunks), it reports each problem with its path,
# exits 1, `--repair` fixes every one of them, a second run is clean and every file still reads
# back byte for byte. Meta's own repairs are paused during the damage so that fsck, not the
# repair loop, is what finds it; the scrubber and orphan collection are slowed for the same reason.
source "$(dirname "$0")/lib.sh"
export CAIRN_SCRUB_INTERVAL_S=3600 CAIRN_GC_GRACE_MS=600000
cluster_up --chunks 4 --replicas 3
DAMAGE="$BIN/cairn_meta_damage"

# A tree of thousands of small files, hard links, and five files of one chunk each.
python3 - "$M" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(20):
    os.mkdir(f"{root}/d{d}")
    for f in range(100):
        with open(f"{root}/d{d}/f{f}", "w") as fh:
            fh.write(f"file {d}/{f}\n" * (f % 7 + 1))
os.link(f"{root}/d0/f0", f"{root}/d1/link0")
os.symlink("d0/f1", f"{root}/sym")
PY
mkdir "$M/big"
for n in a b c d e; do head -c 3M /dev/urandom > "$L/$n"; cp "$L/$n" "$M/big/$n"; done
sync

cairn fsck > "$L/fsck0.txt" 2> "$L/fsck0.err" || { cat "$L/fsck0.txt" "$L/fsck0.err"; fail "fsck of a healthy cluster is not clean"; }
grep -q "^clean" "$L/fsck0.txt" || fail "no verdict line: $(cat "$L/fsck0.txt")"
cairn fsck --json --verify-data --quiet > "$L/fsck0.json" || fail "fsck --verify-data not clean"
json "d['clean'], d['checked']['inodes'], d['checked']['blocks_verified']" < "$L/fsck0.json"
[ "$(json "d['checked']['inodes'] >= 2000 and d['checked']['copies'] >= 3 * d['checked']['chunks'] and d['checked']['blocks_verified'] > 0" < "$L/fsck0.json")" = True ] \
  || fail "fsck did not look at everything: $(cat "$L/fsck0.json")"
check "fsck is clean on a healthy cluster of $(json "d['checked']['inodes']" < "$L/fsck0.json") inodes"

cairn repair pause
status_json() { cairn status --json || true; }
[ "$(status_json | json "d['repair']['paused']")" = True ] || fail "repairs not shown as paused"

host_of() { status_json | json "[s['host'] for s in d['chunk_servers'] if s['id']==$1][0]"; }
chunk_of() {  # chunk_of PATH -> "HEXID SERVER SERVER SERVER"
  cairn fileinfo "$1" --json | json "'%016x ' % d['chunks'][0]['id'] + ' '.join(str(r['server']) for r in d['chunks'][0]['replicas'])"
}
all_servers="$(status_json | json "' '.join(str(s['id']) for s in d['chunk_servers'])")"

# 1. A chunk file deleted from one server.
read -r id_a sa _ <<< "$(chunk_of /big/a)"
rm "$CL/$(host_of "$sa")/data/chunks/$id_a.chk"
# 2. A copy planted on a server the chunk table does not list for it.
read -r id_c c1 c2 c3 <<< "$(chunk_of /big/c)"
for s in $all_servers; do
  case " $c1 $c2 $c3 " in *" $s "*) ;; *) sx=$s ;; esac
done
hx="$(host_of "$sx")"
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" "$hx"
cp "$CL/$(host_of "$c1")/data/chunks/$id_c.chk" "$CL/$hx/data/chunks/$id_c.chk"
bash "$ROOT/tools/cluster.sh" start --dir "$CL" "$hx"
# 3. Bytes flipped in a copy of another chunk, on a server other than the one just restarted
#    (a chunk server scrubs its copies as it starts, and would report and drop the damaged copy
#    before fsck looks).
read -r id_b b1 b2 b3 <<< "$(chunk_of /big/b)"
for s in $b1 $b2 $b3; do [ "$s" = "$sx" ] || sb=$s; done
python3 - "$CL/$(host_of "$sb")/data/chunks/$id_b.chk" <<'PY'
import sys
path = sys.argv[1]
data_offset = 4096 + (64 * 1024 * 1024 // 4096) * 64   # header + block table of a 64 MiB chunk
with open(path, "r+b") as f:
    for off in (data_offset + 100, data_offset + 4096 * 5 + 7):
        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xA5]))
PY
# 4. Metadata damage, with meta stopped.
bash "$ROOT/tools/cluster.sh" kill --dir "$CL" meta0
META0="$CL/meta0"
orphan_ino="$("$DAMAGE" "$META0" lookup /d3/f5)"
"$DAMAGE" "$META0" unlink /d3/f5                 # inode left without any entry
"$DAMAGE" "$META0" drop-inode /d4/f7             # entry left pointing at nothing
"$DAMAGE" "$META0" set-nlink /d5/f1 5            # wrong link count
dropped_from="$("$DAMAGE" "$META0" drop-replica /big/d 0)"  # replica list one short
"$DAMAGE" "$META0" set-size /big/e 0             # its chunk now lies past the end
bash "$ROOT/tools/cluster.sh" start --dir "$CL" meta0
end=$((SECONDS + 60))
until status_json | json "len([s for s in d['chunk_servers'] if s['state']=='online'])" | grep -qx 4; do
  [ $SECONDS -lt $end ] || fail "cluster did not come back after the metadata damage"
  sleep 0.5
done

set +e
cairn fsck --verify-data --json --quiet > "$L/fsck1.json"
rc=$?
set -e
[ $rc -eq 1 ] || fail "fsck of a damaged cluster exited $rc, not 1: $(cat "$L/fsck1.json")"
python3 - "$L/fsck1.json" "$orphan_ino" "$sa" "$sb" "$sx" "$dropped_from" <<'PY' || fail "fsck missed damage"
import json, sys
d = json.load(open(sys.argv[1]))
orphan, sa, sb, sx, dropped = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
found = {(f["kind"], f["path"], f["server"]) for f in d["findings"]}
for f in d["findings"]:
    print("  found:", f["kind"], f["path"], f["server"], f["detail"])
want = [
    ("chunk-missing", "/big/a", sa),
    ("chunk-corrupt", "/big/b", sb),
    ("chunk-extra", "/big/c", sx),
    ("chunk-extra", "/big/d", dropped),
    ("chunk-under-replicated", "/big/d", 0),
    ("chunk-under-replicated", "/big/a", 0),
    ("chunk-without-file", "/d4/f7", 0),   # the dropped inode's chunk
    ("inode-count", "", 0),                # and the counter statfs reports
    ("chunk-past-eof", "/big/e", 0),
    ("orphan-inode", f"(no path: inode {orphan})", 0),
    ("dangling-entry", "/d4/f7", 0),
    ("wrong-nlink", "/d5/f1", 0),
]
missing = [w for w in want if w not in found]
assert not missing, f"not reported: {missing}"
kinds = {f["kind"] for f in d["findings"]}
unexpected = kinds - {w[0] for w in want}
assert not unexpected, f"reported problems that were not made: {unexpected}"
PY
check "fsck reported every problem with its path and exited 1"
cairn fsck --quiet > "$L/fsck1.txt" || true
grep -q "dangling-entry *\/d4\/f7" "$L/fsck1.txt" || fail "human output lacks the path: $(cat "$L/fsck1.txt")"

cairn repair resume
set +e
cairn fsck --repair --verify-data --wait 120 > "$L/repair.txt" 2> "$L/repair.err"
rc=$?
set -e
cat "$L/repair.txt"
[ $rc -eq 1 ] || fail "fsck --repair exited $rc (problems were found and fixed: 1)"
grep -q "not fixed: " "$L/repair.txt" && fail "fsck --repair left problems"
grep -q "repair: linked into /lost+found" "$L/repair.txt" || fail "orphan not relinked"

cairn fsck --verify-data > "$L/fsck2.txt" 2>&1 || { cat "$L/fsck2.txt"; fail "fsck after --repair is not clean"; }
check "fsck --repair fixed every problem; the next fsck is clean"

echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
for n in a b c d; do cmp "$L/$n" "$M/big/$n" || fail "/big/$n differs after the repair"; done
[ "$(stat -c %s "$M/big/e")" = 0 ] || fail "/big/e should keep its (damaged) size 0"
[ ! -e "$M/d4/f7" ] || fail "the dangling entry is still listed"
[ "$(stat -c %h "$M/d5/f1")" = 1 ] || fail "link count of /d5/f1 not repaired"
[ "$(stat -c %h "$M/d0/f0")" = 2 ] || fail "a correct link count was changed"
[ -f "$M/lost+found/#$orphan_ino" ] || fail "the orphan is not in /lost+found"
grep -q "file 3/5" "$M/lost+found/#$orphan_ino" || fail "the orphan's content is lost"
check "every file reads back; the orphan is in /lost+found with its content"

"$BIN/cairn" --meta 127.0.0.1:1 --secret-file "$CAIRN_SECRET_FILE" fsck --quiet > /dev/null 2>&1 && rc=0 || rc=$?
[ $rc -eq 2 ] || fail "fsck without a reachable meta exited $rc, not 2"
check "fsck exits 2 when it cannot run"
