# Shared setup of the integration tests: a cluster of their own in a temporary directory,
# torn down on exit whatever happens.
set -euo pipefail
ROOT="${CAIRN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BIN="${CAIRN_BIN:-$ROOT/build/bin}"
export CAIRN_BIN="$BIN"
T="$(mktemp -d /tmp/cairn-test.XXXXXX)"
CL="$T/cluster"
M="$T/mnt"
L="$T/local"
mkdir -p "$L"

cleanup() {
  local rc=$?
  cd /
  kill "$WATCHDOG_PID" 2>/dev/null || true
  bash "$ROOT/tools/cluster.sh" down --dir "$CL" >/dev/null 2>&1 || true
  for extra in "${EXTRA_MOUNTS[@]:-}"; do
    [ -n "$extra" ] && { fusermount3 -uz "$extra" 2>/dev/null || umount -l "$extra" 2>/dev/null || true; }
  done
  # Only a child of this test or a process whose command line names its directory: a pid
  # recorded here may have gone to another test's process since (pids wrap at 32768 here).
  ours() {
    [ "$(awk '{print $4}' "/proc/$1/stat" 2>/dev/null)" = "$$" ] ||
      tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF "$T/"
  }
  for pid in "${EXTRA_PIDS[@]:-}"; do
    [ -n "$pid" ] && ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  for f in "${EXTRA_PID_FILES[@]:-}"; do  # processes restarted by the test: their latest pid
    [ -n "$f" ] && [ -f "$f" ] && ours "$(cat "$f")" && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  # mount.cairn daemons this test started outside cluster.sh (their command line names $T).
  for p in /proc/[0-9]*; do
    case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
      */mount.cairn\ *"$T/"*) kill -KILL "${p#/proc/}" 2>/dev/null || true ;;
    esac
  done
  if [ $rc -ne 0 ]; then
    echo "--- logs of the failed test ($T)"
    for f in "$CL"/logs/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  fi
  # Never let rm walk into a mount that is still there.
  test_fuse_mounts | while read -r _ mnt; do umount -l "$mnt" 2>/dev/null || true; done
  rm -rf "$T"
  exit $rc
}
EXTRA_MOUNTS=()
EXTRA_PIDS=()
EXTRA_PID_FILES=()
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# FUSE mounts under this test's directory, as "minor mountpoint" (the minor is the FUSE
# connection number under /sys/fs/fuse/connections, where fusectl is mounted).
test_fuse_mounts() {
  awk -v t="$T/" '{ for (i = 7; i <= NF && $i != "-"; i++) {} }
    $(i + 1) ~ /^fuse/ && index($5, t) == 1 { split($3, d, ":"); print d[2], $5 }' /proc/self/mountinfo
}

# A hung request on a FUSE mount would hold the test until ctest kills it, and ctest's kill
# leaves the cluster and the mounts behind. The watchdog ends the test first (ctest's TIMEOUT is
# 900 s): it kills the FUSE daemons of this test's mounts (which aborts their connections, so
# stuck calls fail with ENOTCONN), sends SIGTERM to the test's running commands and to the test,
# whose EXIT trap then tears everything down.
CAIRN_TEST_DEADLINE="${CAIRN_TEST_DEADLINE:-840}"
(
  trap - EXIT TERM INT
  end=$((SECONDS + CAIRN_TEST_DEADLINE))
  while kill -0 $$ 2>/dev/null; do
    if [ $SECONDS -ge $end ]; then
      echo "TIMEOUT: the test ran for ${CAIRN_TEST_DEADLINE} s; stopping it" >&2
      for p in /proc/[0-9]*; do
        cmd="$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" || continue
        case "$cmd" in
          */mount.cairn\ *"$T/"*) echo "  killing ${p#/proc/}: $cmd" >&2; kill -KILL "${p#/proc/}" 2>/dev/null ;;
        esac
      done
      for c in $(ps -o pid= --ppid $$); do [ "$c" = "$BASHPID" ] || kill -TERM "$c" 2>/dev/null; done
      kill -TERM $$ 2>/dev/null || true
      exit 0
    fi
    sleep 1
  done
) </dev/null &
WATCHDOG_PID=$!

fail() { echo "FAIL: $*" >&2; exit 1; }
check() { echo "ok: $*"; }

cluster_up() {  # cluster_up [cluster.sh options]
  timeout 180 bash "$ROOT/tools/cluster.sh" up --dir "$CL" --mount "$M" "$@"
  source "$CL/cluster.env"
}

cairn() { "$BIN/cairn" --meta "$CAIRN_META" --secret-file "$CAIRN_SECRET_FILE" "$@"; }

mount_extra() {  # mount_extra DIR [OPTIONS]: one more mount of the cluster; its pid in MOUNT_PID
  local dir="$1" opts="${2:+,$2}"
  mkdir -p "$dir"
  "$BIN/mount.cairn" "$CAIRN_META:/" "$dir" -f \
    -o "secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE,log=$T/mount-$(basename "$dir").log$opts" &
  MOUNT_PID=$!
  EXTRA_PIDS+=("$MOUNT_PID")
  EXTRA_MOUNTS+=("$dir")
  local end=$((SECONDS + 30))
  until mountpoint -q "$dir"; do
    [ $SECONDS -lt $end ] || fail "mount $dir did not come up"
    sleep 0.2
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }  # a loopback port free now

json() {  # json 'python expression over d' < json
  python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
