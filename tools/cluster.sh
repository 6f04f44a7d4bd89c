#!/usr/bin/env bash
# A local cairn cluster on loopback, for the quickstart, tests and benchmarks.
#
#   tools/cluster.sh up --dir DIR --mount MNT [--metas N] [--chunks N] [--replicas R]
#   tools/cluster.sh down --dir DIR
#   tools/cluster.sh kill --dir DIR NAME      (NAME: meta0.., chunk0.., mount)
#   tools/cluster.sh start --dir DIR NAME
#   tools/cluster.sh status --dir DIR
#   tools/cluster.sh add-chunk --dir DIR      (one more, empty chunk server)
#
# `up` on an existing DIR brings the same cluster back (same ports, same data).
# DIR/cluster.env (shell syntax) describes the cluster for scripts. Environment: CAIRN_ZONES and
# CAIRN_RACKS (comma-separated labels, one per chunk server), CAIRN_GC_GRACE_MS (default 5000),
# CAIRN_SCRUB_INTERVAL_S (default: the server's own, 3600), CAIRN_CHUNK_CAPACITY (bytes each
# chunk server offers; default: its disk), CAIRN_CHUNK_MIB (chunk size of a new cluster; default
# 64), CAIRN_MOUNT_OPTIONS (more -o options for the mount, e.g. nolocal_reads).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CAIRN_BIN:-$ROOT/build/bin}"

die() { echo "cluster.sh: $*" >&2; exit 2; }

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
cmd="${1:-}"; shift || true
case "$cmd" in up|down|kill|start|status|add-chunk) ;; *) usage ;; esac
DIR="" MNT="" METAS="" CHUNKS="" REPLICAS="" NAME=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --mount) MNT="$2"; shift 2 ;;
    --metas) METAS="$2"; shift 2 ;;
    --chunks) CHUNKS="$2"; shift 2 ;;
    --replicas) REPLICAS="$2"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) NAME="$1"; shift ;;
  esac
done
[ -n "$DIR" ] || die "--dir is required"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
ENV="$DIR/cluster.env"
[ -f "$ENV" ] && source "$ENV"

# pick_ports VAR...: sets each VAR to a free loopback port that no other port of this cluster
# uses (the kernel may hand out a port it just gave us again once the probing socket is closed).
# One python3 for all of them: its start costs a third of a second here.
USED_PORTS=" "
for v in $(compgen -v | grep -E '^(META|CHUNK)[0-9]+_(PORT|METRICS)$|^MOUNT_METRICS$'); do
  USED_PORTS+="${!v} "
done
pick_ports() {
  local ports p v
  ports="$(python3 - "$#" "$USED_PORTS" <<'PY'
import socket, sys
want, used = int(sys.argv[1]), set(sys.argv[2].split())
held, out = [], []
while len(out) < want:  # every probe stays bound until all are picked: no port twice
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    p = str(s.getsockname()[1])
    if p not in used:
        out.append(p)
print(" ".join(out))
PY
)"
  read -r -a ports <<<"$ports"
  [ "${#ports[@]}" -eq "$#" ] || die "could not pick $# free ports"
  for v in "$@"; do
    p="${ports[0]}"; ports=("${ports[@]:1}")
    USED_PORTS+="$p "
    declare -g "$v=$p"
  done
}

write_env() {
  {
    echo "CAIRN_DIR='$DIR'"
    echo "CAIRN_META='$CAIRN_META'"
    echo "CAIRN_PEERS='$CAIRN_PEERS'"
    echo "CAIRN_SECRET_FILE='$DIR/secret'"
    echo "CAIRN_KEY_FILE='$DIR/key'"
    echo "CAIRN_MOUNT='$CAIRN_MOUNT'"
    echo "CAIRN_CHUNK_DIRS='$CAIRN_CHUNK_DIRS'"
    echo "CAIRN_META_DIRS='$CAIRN_META_DIRS'"
    echo "CAIRN_METAS=$CAIRN_METAS"
    echo "CAIRN_CHUNKS=$CAIRN_CHUNKS"
    echo "CAIRN_REPLICAS=$CAIRN_REPLICAS"
    for v in $(compgen -v | grep -E '^(META|CHUNK)[0-9]+_(PORT|METRICS)$'); do echo "$v=${!v}"; done
    echo "MOUNT_METRICS=${MOUNT_METRICS:-}"
    [ -n "${CAIRN_CHUNK_CAPACITY:-}" ] && echo "CAIRN_CHUNK_CAPACITY=$CAIRN_CHUNK_CAPACITY"
    [ -n "${CAIRN_CHUNK_MIB:-}" ] && echo "CAIRN_CHUNK_MIB=$CAIRN_CHUNK_MIB"
    echo "export CAIRN_META CAIRN_SECRET_FILE CAIRN_KEY_FILE CAIRN_MOUNT"
  } > "$ENV.tmp"
  mv "$ENV.tmp" "$ENV"
}

pid_of() { cat "$DIR/pids/$1.pid" 2>/dev/null || true; }
# Running, and the process this cluster started under that name: its command line names its own
# log file (a pid recorded here may since have gone to another cluster's process).
alive() {
  local pid; pid="$(pid_of "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/logs/$1.log"
}

command_of() {
  local name="$1" i
  case "$name" in
    meta*)
      i="${name#meta}"
      local port="META${i}_PORT" metrics="META${i}_METRICS"
      echo "$BIN/cairn-meta --id $((i + 1)) --peers $CAIRN_PEERS --listen 127.0.0.1:${!port}" \
        "--data $DIR/$name --secret-file $DIR/secret --replicas $CAIRN_REPLICAS" \
        "--metrics 127.0.0.1:${!metrics} --log-file $DIR/logs/$name.log" \
        "--suspect-after-ms ${CAIRN_SUSPECT_MS:-2000} --dead-after-ms ${CAIRN_DEAD_MS:-5000}" \
        "--snapshot-every ${CAIRN_SNAPSHOT_EVERY:-10000} --gc-grace-ms ${CAIRN_GC_GRACE_MS:-5000}" \
        "${CAIRN_CHUNK_MIB:+--chunk-size-mib $CAIRN_CHUNK_MIB}" \
        "${CAIRN_LOG_SYNC_DELAY_MS:+--log-sync-delay-ms $CAIRN_LOG_SYNC_DELAY_MS}" ;;
    chunk*)
      i="${name#chunk}"
      local port="CHUNK${i}_PORT" metrics="CHUNK${i}_METRICS"
      # Failure-domain labels: CAIRN_ZONES / CAIRN_RACKS hold one comma-separated entry per
      # chunk server (chunk0 first); the host label is the server's name.
      local zone rack labels=""
      zone="$(echo "${CAIRN_ZONES:-}" | cut -s -d, -f$((i + 1)))"
      rack="$(echo "${CAIRN_RACKS:-}" | cut -s -d, -f$((i + 1)))"
      [ -n "$zone" ] && labels+=" --zone $zone"
      [ -n "$rack" ] && labels+=" --rack $rack"
      echo "$BIN/cairn-chunk --listen 127.0.0.1:${!port} --meta $CAIRN_META" \
        "--secret-file $DIR/secret --data $DIR/$name/data --host $name$labels" \
        "${CAIRN_SCRUB_INTERVAL_S:+--scrub-interval-s $CAIRN_SCRUB_INTERVAL_S}" \
        "${CAIRN_CHUNK_CAPACITY:+--capacity $CAIRN_CHUNK_CAPACITY}" \
        "--metrics 127.0.0.1:${!metrics} --log-file $DIR/logs/$name.log" ;;
    mount)
      echo "$BIN/mount.cairn $CAIRN_META:/ $CAIRN_MOUNT -f" \
        "-o secretfile=$DIR/secret,keyfile=$DIR/key,log=$DIR/logs/mount.log${MOUNT_METRICS:+,metrics=127.0.0.1:$MOUNT_METRICS}${CAIRN_MOUNT_OPTIONS:+,$CAIRN_MOUNT_OPTIONS}" ;;
    *) die "unknown process name $name (meta0.., chunk0.., mount)" ;;
  esac
}

start_one() {
  local name="$1"
  if alive "$name"; then return 0; fi
  mkdir -p "$DIR/logs" "$DIR/pids"
  if [ "$name" = mount ]; then
    mkdir -p "$CAIRN_MOUNT"
    # A dead mount left behind must go before mounting again.
    if grep -q " $CAIRN_MOUNT fuse" /proc/mounts; then
      fusermount3 -uz "$CAIRN_MOUNT" 2>/dev/null || umount -l "$CAIRN_MOUNT" 2>/dev/null || true
    fi
  fi
  # shellcheck disable=SC2046
  setsid nohup $(command_of "$name") >>"$DIR/logs/$name.out" 2>&1 </dev/null &
  echo $! > "$DIR/pids/$name.pid"
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
  local limit="$1" what="$2"; shift 2
  local end=$((SECONDS + limit))
  while [ $SECONDS -lt $end ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "cluster.sh: timed out after ${limit}s waiting for $what" >&2
  for f in "$DIR"/logs/*.log "$DIR"/logs/*.out; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
  done
  return 1
}

chunks_online() {
  local out
  out="$("$BIN/cairn" status --json --meta "$CAIRN_META" --secret-file "$DIR/secret" 2>/dev/null || true)"
  # Counted in cairn status's compact JSON without a python3 start (a third of a second here).
  [ "$(grep -o '"state":"online"' <<<"$out" | wc -l)" -ge "$CAIRN_CHUNKS" ]
}

mount_ready() { mountpoint -q "$CAIRN_MOUNT" && stat "$CAIRN_MOUNT" >/dev/null; }

# A port picked free can be taken by another cluster (a test running beside this one) before
# our server binds it: a chunk server that died of that gets new ports and starts again.
fix_port_clashes() {
  local i name
  for ((i = 0; i < CAIRN_CHUNKS; i++)); do
    name="chunk$i"
    alive "$name" && continue
    grep -q "Address already in use" "$DIR/logs/$name.log" "$DIR/logs/$name.out" 2>/dev/null || continue
    pick_ports "CHUNK${i}_PORT" "CHUNK${i}_METRICS"
    for f in "$DIR/logs/$name.log" "$DIR/logs/$name.out"; do [ -f "$f" ] && mv "$f" "$f.clash"; done
    echo "cluster.sh: $name lost its port to another process; starting it on port $(eval echo \$CHUNK${i}_PORT)" >&2
    write_env
    start_one "$name"
  done
}
chunks_online_fixing() { fix_port_clashes; chunks_online; }

names() {
  local i
  for ((i = 0; i < CAIRN_METAS; i++)); do echo "meta$i"; done
  for ((i = 0; i < CAIRN_CHUNKS; i++)); do echo "chunk$i"; done
}

known_name() {  # known_name NAME: is NAME a process of this cluster?
  [ "$1" = mount ] && return 0
  local n
  for n in $(names); do [ "$n" = "$1" ] && return 0; done  # no pipe: grep -q would SIGPIPE names
  return 1
}

case "$cmd" in
  up)
    [ -x "$BIN/cairn-meta" ] || die "binaries missing in $BIN: run tools/build.sh"
    if [ -z "${CAIRN_METAS:-}" ]; then
      [ -n "$MNT" ] || die "--mount is required"
      CAIRN_METAS="${METAS:-1}" CAIRN_CHUNKS="${CHUNKS:-3}" CAIRN_REPLICAS="${REPLICAS:-3}"
      case "$CAIRN_METAS" in 1|3|5) ;; *) die "--metas must be 1, 3 or 5" ;; esac
      mkdir -p "$MNT"
      CAIRN_MOUNT="$(cd "$MNT" && pwd)"
      CAIRN_META="" CAIRN_PEERS="" CAIRN_CHUNK_DIRS="" CAIRN_META_DIRS=""
      vars=(MOUNT_METRICS)
      for ((i = 0; i < CAIRN_METAS; i++)); do vars+=("META${i}_PORT" "META${i}_METRICS"); done
      for ((i = 0; i < CAIRN_CHUNKS; i++)); do vars+=("CHUNK${i}_PORT" "CHUNK${i}_METRICS"); done
      pick_ports "${vars[@]}"
      for ((i = 0; i < CAIRN_METAS; i++)); do
        p="META${i}_PORT"
        CAIRN_META+="${CAIRN_META:+,}127.0.0.1:${!p}"
        CAIRN_PEERS+="${CAIRN_PEERS:+,}$((i + 1))=127.0.0.1:${!p}"
        CAIRN_META_DIRS+="${CAIRN_META_DIRS:+ }$DIR/meta$i"
      done
      for ((i = 0; i < CAIRN_CHUNKS; i++)); do
        CAIRN_CHUNK_DIRS+="${CAIRN_CHUNK_DIRS:+ }$DIR/chunk$i/data"
      done
    elif [ -n "$MNT" ]; then
      mkdir -p "$MNT"
      CAIRN_MOUNT="$(cd "$MNT" && pwd)"
    fi
    [ -f "$DIR/secret" ] || { (umask 077; head -c 32 /dev/urandom | xxd -p -c 64 > "$DIR/secret"); }
    [ -f "$DIR/key" ] || { (umask 077; head -c 32 /dev/urandom > "$DIR/key"); }
    write_env
    for n in $(names); do start_one "$n"; done
    wait_until 60 "every chunk server to be online" chunks_online_fixing || exit 1
    start_one mount
    wait_until 30 "the mount at $CAIRN_MOUNT" mount_ready || exit 1
    echo "cluster up: $CAIRN_METAS meta, $CAIRN_CHUNKS chunk servers, mounted at $CAIRN_MOUNT"
    echo "environment: source $ENV"
    ;;
  down)
    [ -f "$ENV" ] || exit 0
    if [ -n "${CAIRN_MOUNT:-}" ] && grep -q " $CAIRN_MOUNT fuse" /proc/mounts; then
      fusermount3 -u "$CAIRN_MOUNT" 2>/dev/null || umount -l "$CAIRN_MOUNT" 2>/dev/null || true
    fi
    # The mount first, alone: what it still owes meta as it leaves (the commit of files closed
    # last, the end of its session) needs meta up. Stopped together, the mount sent it to a
    # meta going away and waited out its retries until the SIGKILL below.
    if alive mount; then
      kill -TERM "$(pid_of mount)" 2>/dev/null || true
      end=$((SECONDS + 10))
      while alive mount && [ $SECONDS -lt $end ]; do sleep 0.1; done
    fi
    for f in "$DIR"/pids/*.pid; do
      [ -f "$f" ] || continue
      n="$(basename "$f" .pid)"
      if alive "$n"; then kill -TERM "$(pid_of "$n")" 2>/dev/null || true; fi
    done
    end=$((SECONDS + 10))
    for f in "$DIR"/pids/*.pid; do
      [ -f "$f" ] || continue
      n="$(basename "$f" .pid)"
      while alive "$n" && [ $SECONDS -lt $end ]; do sleep 0.1; done
      if alive "$n"; then kill -KILL "$(pid_of "$n")" 2>/dev/null || true; fi
      rm -f "$f"
    done
    if [ -n "${CAIRN_MOUNT:-}" ] && grep -q " $CAIRN_MOUNT fuse" /proc/mounts; then
      umount -l "$CAIRN_MOUNT" 2>/dev/null || true
    fi
    echo "cluster down"
    ;;
  kill)
    [ -n "$NAME" ] || die "kill needs a process name"
    [ -f "$ENV" ] || die "no cluster in $DIR"
    known_name "$NAME" || die "no process $NAME in this cluster (names: $(names | tr '\n' ' ')mount)"
    if alive "$NAME"; then
      pid="$(pid_of "$NAME")"
      kill -KILL "$pid"
      # Gone for good (its ports closed) before anyone starts it again.
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ "$NAME" = mount ]; then
      sleep 0.2
      fusermount3 -uz "$CAIRN_MOUNT" 2>/dev/null || umount -l "$CAIRN_MOUNT" 2>/dev/null || true
    fi
    rm -f "$DIR/pids/$NAME.pid"
    ;;
  start)
    [ -n "$NAME" ] || die "start needs a process name"
    [ -f "$ENV" ] || die "no cluster in $DIR"
    known_name "$NAME" || die "no process $NAME in this cluster (names: $(names | tr '\n' ' ')mount)"
    start_one "$NAME"
    if [ "$NAME" = mount ]; then wait_until 30 "the mount" mount_ready || exit 1; fi
    ;;
  add-chunk)
    [ -f "$ENV" ] || die "no cluster in $DIR"
    i=$CAIRN_CHUNKS
    pick_ports "CHUNK${i}_PORT" "CHUNK${i}_METRICS"
    CAIRN_CHUNK_DIRS+="${CAIRN_CHUNK_DIRS:+ }$DIR/chunk$i/data"
    CAIRN_CHUNKS=$((CAIRN_CHUNKS + 1))
    write_env
    start_one "chunk$i"
    wait_until 60 "chunk$i to be online" chunks_online || exit 1
    echo "chunk$i online"
    ;;
  status)
    [ -f "$ENV" ] || die "no cluster in $DIR"
    exec "$BIN/cairn" status --meta "$CAIRN_META" --secret-file "$DIR/secret"
    ;;
esac
