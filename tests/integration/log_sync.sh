#!/usr/bin/env bash
# Meta answers namespace changes once they are written to its log and syncs the log behind
# them; fsync() and fsyncdir() wait until everything answered before them is on stable
# storage, and so do admin commands. The sync behind is delayed 5 s here so that the window
# is wide enough to see: without the waits, the checks below fail.
source "$(dirname "$0")/lib.sh"
export CAIRN_LOG_SYNC_DELAY_MS=5000
cluster_up

metric() {  # metric NAME: its value on meta0
  curl -sf "http://127.0.0.1:$META0_METRICS/metrics" | awk -v n="$1" '$1 == n { printf "%d\n", $2 }'
}
quiet() {  # waits until no sync behind is due (a test step starts from a synced log)
  local end=$((SECONDS + 20))
  until [ "$(metric cairn_raft_log_durable_index)" = "$(metric cairn_raft_log_written_index)" ]; do
    [ $SECONDS -lt $end ] || fail "the log never caught up with its sync behind"
    sleep 0.5
  done
}

# 1. Changes are answered before the sync: 200 of them make a handful of syncs, not 200, and
#    right after them the log is written past what is durable.
mkdir -p "$M/d"
quiet
syncs0=$(metric cairn_raft_log_syncs_total)
for i in $(seq 1 200); do : > "$M/d/f$i"; done
written=$(metric cairn_raft_log_written_index)
durable=$(metric cairn_raft_log_durable_index)
syncs1=$(metric cairn_raft_log_syncs_total)
[ "$durable" -lt "$written" ] || fail "creates waited for the log sync (durable $durable, written $written)"
[ $((syncs1 - syncs0)) -lt 20 ] || fail "200 creates made $((syncs1 - syncs0)) log syncs"
check "200 creates answered before the sync behind them ($((syncs1 - syncs0)) syncs, durable $durable < written $written)"

# 2. fsync() of a file waits for the sync of everything answered before it.
quiet
python3 - "$M/d/synced" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"x" * 5000)
os.rename(sys.argv[1], sys.argv[1] + ".tmp")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
PY
written=$(metric cairn_raft_log_written_index)
[ "$(metric cairn_raft_log_durable_index)" -lt "$written" ] || fail "the renames were synced at once"
python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.fsync(fd); os.close(fd)" "$M/d/synced"
durable=$(metric cairn_raft_log_durable_index)
[ "$durable" -ge "$written" ] || fail "fsync returned before meta's log was synced ($durable < $written)"
check "fsync waits for meta's log sync (durable $durable >= $written)"

# 3. fsync() of a directory too (what sqlite and git do after a rename).
quiet
mv "$M/d/f1" "$M/d/moved"
written=$(metric cairn_raft_log_written_index)
python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY|os.O_DIRECTORY); os.fsync(fd); os.close(fd)" "$M/d"
durable=$(metric cairn_raft_log_durable_index)
[ "$durable" -ge "$written" ] || fail "fsync of a directory returned before the sync ($durable < $written)"
check "fsyncdir waits for meta's log sync"

# 4. Admin commands are answered only once durable.
quiet
: > "$M/d/unsynced"
written=$(metric cairn_raft_log_written_index)
cairn quota set /d --bytes $((1 << 30)) > /dev/null || fail "quota set failed"
durable=$(metric cairn_raft_log_durable_index)
[ "$durable" -gt "$written" ] || fail "an admin command was answered before the sync ($durable <= $written)"
check "an admin command waits for the sync"

# 5. What was answered and not yet synced survives a crash of the meta process (it is in the
#    page cache), and of every process at once.
quiet
for i in $(seq 1 50); do echo "late $i" > "$M/d/late$i"; done
rm "$M/d/f2"
[ "$(metric cairn_raft_log_durable_index)" -lt "$(metric cairn_raft_log_written_index)" ] ||
  fail "the late changes were synced at once"
for n in meta0 mount; do bash "$ROOT/tools/cluster.sh" kill --dir "$CL" "$n"; done
cluster_up
for i in $(seq 1 50); do
  [ "$(cat "$M/d/late$i")" = "late $i" ] || fail "late$i lost by kill -9 of meta and the mount"
done
[ ! -e "$M/d/f2" ] || fail "a removal was lost by kill -9 of meta"
[ -e "$M/d/moved" ] && [ -e "$M/d/synced" ] || fail "earlier changes lost"
check "changes answered before the sync survive kill -9 of meta and the mount"
