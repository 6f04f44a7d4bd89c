#!/usr/bin/env bash
# Installs, builds, and brings up a local cairn cluster with a mounted filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${CAIRN_QUICKSTART_DIR:-/tmp/cairn-quickstart}"
MNT="${CAIRN_QUICKSTART_MOUNT:-/mnt/cairn}"
bash tools/deps.sh
bash tools/build.sh
bash tools/cluster.sh up --dir "$DIR" --mount "$MNT" --chunks 3 --replicas 3
cat <<EOT

cairn is mounted at $MNT (1 meta server, 3 chunk servers, 3 replicas, all on loopback).

  source $DIR/cluster.env       # sets CAIRN_META and CAIRN_SECRET_FILE for the cairn tool
  build/bin/cairn status
  cp -a /usr/share/doc $MNT/ && build/bin/cairn fileinfo /doc/bash/copyright
  bash tools/cluster.sh down --dir $DIR
EOT
