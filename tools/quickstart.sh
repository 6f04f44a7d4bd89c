#!/usr/bin/env bash
# From a fresh Debian machine to a mounted cairn filesystem: installs what is missing, builds,
# and starts a local cluster (1 meta server, 3 chunk servers, 3 replicas) on loopback.
#
#   sudo bash tools/quickstart.sh
#
# CAIRN_QUICKSTART_DIR (default /tmp/cairn-quickstart) holds the cluster's data, logs, secret
# and key; CAIRN_QUICKSTART_MOUNT (default /mnt/cairn) is where it is mounted. Running it again
# brings the same cluster back.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CAIRN_QUICKSTART_DIR:-/tmp/cairn-quickstart}"
MNT="${CAIRN_QUICKSTART_MOUNT:-/mnt/cairn}"

if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (sudo bash tools/quickstart.sh): it installs packages and mounts" >&2
  exit 1
fi
[ -e /dev/fuse ] || { echo "quickstart: /dev/fuse is missing: load the fuse module (modprobe fuse)" >&2; exit 1; }

echo "== installing dependencies"
bash "$ROOT/tools/deps.sh"
echo "== building"
bash "$ROOT/tools/build.sh"
echo "== starting a local cluster in $DIR, mounted at $MNT"
bash "$ROOT/tools/cluster.sh" up --dir "$DIR" --mount "$MNT" --chunks 3 --replicas 3

cat <<EOF

cairn is mounted at $MNT. Use it like any directory:

  cd $MNT && echo hello > hello.txt && cat hello.txt

Cluster health (the env file sets CAIRN_META and CAIRN_SECRET_FILE for the cairn tool):

  source $DIR/cluster.env
  $ROOT/build/bin/cairn status
  $ROOT/build/bin/cairn fileinfo /hello.txt

Logs are in $DIR/logs. Stop the cluster (data stays in $DIR):

  bash $ROOT/tools/cluster.sh down --dir $DIR

Start it again with the same data: run this script again, or

  bash $ROOT/tools/cluster.sh up --dir $DIR --mount $MNT

Remove everything: stop it, then rm -rf $DIR
EOF
