#!/usr/bin/env bash
# cairn-csi driven through its socket by a kubelet-like client (csi_client.py): every CSI call
# the plugin serves, idempotency and error codes, RWX sharing, read-only publish, quota and
# stats, a plugin restart under a pod holding a bind in its own mount namespace, a killed node
# mount recovered, hostile ids and paths, static provisioning, delete with and without trash.
source "$(dirname "$0")/lib.sh"
[ -x "$BIN/cairn-csi" ] || fail "cairn-csi not built"
cluster_up --chunks 3 --replicas 3

protoc --python_out="$L" -I"$ROOT/k8s/csi" -I/usr/include "$ROOT/k8s/csi/csi.proto" ||
  fail "protoc could not compile csi.proto for the client"
export CSI_SOCK="$T/csi/csi.sock" KUBELET="$T/kubelet" NODE_MOUNT="$T/node-mount" NODE_ID=node-1
export POD_VIEW="$T/pod-view"
mkdir -p "$KUBELET" "$T/csi"
EXTRA_MOUNTS+=("$NODE_MOUNT")

cat > "$L/start_plugin.sh" <<SH
setsid "$BIN/cairn-csi" --endpoint "unix://$CSI_SOCK" --mode all --node-id $NODE_ID \
  --meta "$CAIRN_META" --secret-file "$CAIRN_SECRET_FILE" --key-file "$CAIRN_KEY_FILE" \
  --node-mount "$NODE_MOUNT" --state-dir "$T/csi-state" --kubelet-dir "$KUBELET" \
  --mount-binary "$BIN/mount.cairn" --health-seconds 1 --log-file "$L/csi.log" \
  >> "$L/csi.out" 2>&1 < /dev/null &
echo \$! > "$L/csi.pid"
for i in \$(seq 1 100); do [ -S "$CSI_SOCK" ] && break; sleep 0.1; done
SH
bash "$L/start_plugin.sh"
EXTRA_PID_FILES+=("$L/csi.pid")
[ -S "$CSI_SOCK" ] || { cat "$L/csi.out" "$L/csi.log" 2>/dev/null; fail "cairn-csi did not start"; }

# Restart: SIGTERM, wait for the process to end, start again.
export RESTART_PLUGIN="pid=\$(cat '$L/csi.pid'); kill -TERM \$pid;
  for i in \$(seq 1 100); do kill -0 \$pid 2>/dev/null || break; sleep 0.1; done;
  bash '$L/start_plugin.sh'"
export T
export MOUNT_BIN="$BIN/mount.cairn" MOUNT_SRC="$CAIRN_META:/"
export MOUNT_OPTS="secretfile=$CAIRN_SECRET_FILE,keyfile=$CAIRN_KEY_FILE"
export STOP_META="bash '$ROOT/tools/cluster.sh' kill --dir '$CL' meta0"
export CAIRN="'$BIN/cairn' --meta '$CAIRN_META' --secret-file '$CAIRN_SECRET_FILE'"

# Debian's Python, which has Debian's grpcio and protobuf (not a python3 earlier in PATH).
PYTHONPATH="$L" timeout 600 /usr/bin/python3 "$(dirname "$0")/csi_client.py" ||
  { echo "--- cairn-csi log"; tail -40 "$L/csi.log"; fail "the CSI client found a problem"; }
grep -qi "secret\b.*[0-9a-f]\{32\}" "$L/csi.log" && fail "a secret appeared in the plugin's log"
check "cairn-csi passed every CSI check"
