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
  bash "$ROOT/tools/cluster.sh" down --dir "$CL" >/dev/null 2>&1 || true
  for extra in "${EXTRA_MOUNTS[@]:-}"; do
    [ -n "$extra" ] && { fusermount3 -uz "$extra" 2>/dev/null || umount -l "$extra" 2>/dev/null || true; }
  done
  for pid in "${EXTRA_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    echo "--- logs of the failed test ($T)"
    for f in "$CL"/logs/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  fi
  rm -rf "$T"
  exit $rc
}
EXTRA_MOUNTS=()
EXTRA_PIDS=()
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
check() { echo "ok: $*"; }

cluster_up() {  # cluster_up [cluster.sh options]
  timeout 180 bash "$ROOT/tools/cluster.sh" up --dir "$CL" --mount "$M" "$@"
  source "$CL/cluster.env"
}

cairn() { "$BIN/cairn" --meta "$CAIRN_META" --secret-file "$CAIRN_SECRET_FILE" "$@"; }

json() {  # json 'python expression over d' < json
  python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
