#!/usr/bin/env bash
# cairn beside MooseFS (as shipped, and with its chunk servers syncing on fsync) and a plain
# directory, same machine, same workloads, interleaved rounds; prints a markdown table of the
# medians and the JSON of every round. See tools/bench.py for the workloads.
#
#   tools/bench.sh [--quick] [--rounds N] [--systems cairn,moosefs,moosefs-fsync,local]
#                  [--fsync-peer-full-rounds N] [--json FILE]
#
# Installs what it needs (Debian's moosefs-master, moosefs-chunkserver, moosefs-client, fio),
# builds cairn when its binaries are missing, and leaves no process, namespace or file behind.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it mounts, drops caches, makes a netns)" >&2; exit 2; }
bash "$ROOT/tools/deps.sh" >/dev/null
if ! command -v mfsmaster >/dev/null || ! command -v mfsmount >/dev/null || ! command -v mfscli >/dev/null; then
  # Debian's packages, without letting them start their default services (those would listen
  # on every address): a policy-rc.d refuses service starts during the install.
  policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created=1; fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q moosefs-master moosefs-chunkserver \
    moosefs-client moosefs-cli </dev/null >/dev/null
  [ $created = 1 ] && rm -f $policy
fi
[ -x "$ROOT/build/bin/cairn-meta" ] || bash "$ROOT/tools/build.sh"
exec python3 "$ROOT/tools/bench.py" "$@"
