# shellcheck shell=bash
# The Sentinel set of local servers, sourced by scripts/services.sh (`up --sentinel`): a Redis master, its
# replica and three redis-sentinel processes (quorum 2) that monitor the master under one name, so tests
# can kill the master and watch the sentinels promote the replica.
#   sentinel_master    redis-server started as the master (after a failover it may be the replica: the
#                      names are the processes, the roles are whatever the sentinels made them)
#   sentinel_replica   redis-server started as a replica of the current master
#   sentinel_1..3      redis-sentinel, each with a writable config file of its own (sentinels rewrite it)
# Ports (environment overrides): SENTINEL_MASTER_PORT=17601, SENTINEL_REPLICA_PORT=17602,
# SENTINEL_PORTS=17611,17612,17613 (three, comma-separated); the master's name SENTINEL_MASTER_NAME=
# cache-refresher. Failure detection: down-after-milliseconds 2000, failover-timeout 10000.
# `up --sentinel` writes .services/sentinel/env (REDIS_SENTINELS, REDIS_SENTINEL_NAME); it is a separate
# file so that sourcing .services/env never turns every test's sidecar into a Sentinel client.

SENTINEL_MASTER_PORT=${SENTINEL_MASTER_PORT:-17601}
SENTINEL_REPLICA_PORT=${SENTINEL_REPLICA_PORT:-17602}
SENTINEL_PORTS=${SENTINEL_PORTS:-17611,17612,17613}
SENTINEL_MASTER_NAME=${SENTINEL_MASTER_NAME:-cache-refresher}
SENTINEL_DOWN_AFTER_MS=2000
SENTINEL_FAILOVER_TIMEOUT_MS=10000

SENTINEL_STATE=$STATE/sentinel
SENTINEL_NODES=(sentinel_master sentinel_replica)
SENTINEL_WATCHERS=(sentinel_1 sentinel_2 sentinel_3)
SENTINEL_SERVICES=("${SENTINEL_NODES[@]}" "${SENTINEL_WATCHERS[@]}")

IFS=, read -r -a SENTINEL_PORT_LIST <<<"$SENTINEL_PORTS"
((${#SENTINEL_PORT_LIST[@]} == 3)) || die "SENTINEL_PORTS: expected three comma-separated ports, got '$SENTINEL_PORTS'"

sentinel_port_of() { # name
  case $1 in
    sentinel_master) printf '%s' "$SENTINEL_MASTER_PORT" ;;
    sentinel_replica) printf '%s' "$SENTINEL_REPLICA_PORT" ;;
    sentinel_[123]) printf '%s' "${SENTINEL_PORT_LIST[${1#sentinel_} - 1]}" ;;
  esac
}

# The title redis rewrites its command line to: the sentinels add " [sentinel]".
sentinel_signature() { printf '127.0.0.1:%s ' "$(sentinel_port_of "$1")"; }

sentinel_log_files() { printf '%s\n' "$(state_dir "$1")/redis.log" "$(state_dir "$1")/redis.out"; }

sentinel_cli() { timeout 3 redis-cli -h 127.0.0.1 -p "$1" "${@:2}" 2>/dev/null; }

# The port of the master that a running sentinel names, or fail (no sentinel runs or none knows yet).
sentinel_current_master_port() {
  local name reply
  for name in "${SENTINEL_WATCHERS[@]}"; do
    server_pid "$name" >/dev/null || continue
    reply=$(sentinel_cli "$(sentinel_port_of "$name")" sentinel get-master-addr-by-name "$SENTINEL_MASTER_NAME") || continue
    reply=$(sed -n 2p <<<"$reply")
    [[ $reply =~ ^[0-9]+$ ]] && printf '%s' "$reply" && return 0
  done
  return 1
}

# A data node replicates the master the sentinels name; with no sentinel running (a fresh set), the
# replica follows sentinel_master. A node the sentinels still call master comes back as master: the
# sentinels demote it themselves if they have promoted another in the meantime.
launch_sentinel_node() { # name
  local name=$1 d port master replicaof=()
  d=$(state_dir "$name")
  port=$(sentinel_port_of "$name")
  mkdir -p "$d"
  check_ports_free "$name" "$port"
  if master=$(sentinel_current_master_port); then
    [[ $master == "$port" ]] || replicaof=(--replicaof 127.0.0.1 "$master")
  elif [[ $name == sentinel_replica ]]; then
    replicaof=(--replicaof 127.0.0.1 "$SENTINEL_MASTER_PORT")
  fi
  launch "$name" "$d" "$d/redis.out" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize no --dir "$d" --logfile "$d/redis.log" "${replicaof[@]}"
}

launch_sentinel_master() { launch_sentinel_node sentinel_master; }
launch_sentinel_replica() { launch_sentinel_node sentinel_replica; }

# SENTINEL_FRESH=1 when no sentinel of the set runs (decided once, before any of them is launched).
sentinel_check_fresh() {
  local name
  SENTINEL_FRESH=1
  for name in "${SENTINEL_WATCHERS[@]}"; do
    if server_pid "$name" >/dev/null; then SENTINEL_FRESH=0; fi
  done
}

# A sentinel's config file is its memory (it rewrites it with its id, the current master, the other
# sentinels and replicas): kept while any sentinel of the set runs, so a restarted one rejoins as itself;
# written afresh when the whole set was down, monitoring whichever node is master then.
launch_sentinel_watcher() { # name
  local name=$1 d port master=$SENTINEL_MASTER_PORT
  d=$(state_dir "$name")
  port=$(sentinel_port_of "$name")
  mkdir -p "$d"
  check_ports_free "$name" "$port"
  [[ -n ${SENTINEL_FRESH:-} ]] || sentinel_check_fresh
  if ((SENTINEL_FRESH)) || [[ ! -s $d/sentinel.conf ]]; then
    if [[ $(sentinel_cli "$SENTINEL_REPLICA_PORT" role | head -n 1) == master &&
      $(sentinel_cli "$SENTINEL_MASTER_PORT" role | head -n 1) != master ]]; then
      master=$SENTINEL_REPLICA_PORT
    fi
    cat >"$d/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
daemonize no
dir $d
logfile $d/redis.log
sentinel monitor $SENTINEL_MASTER_NAME 127.0.0.1 $master 2
sentinel down-after-milliseconds $SENTINEL_MASTER_NAME $SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $SENTINEL_MASTER_NAME $SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $SENTINEL_MASTER_NAME 1
EOF
  fi
  launch "$name" "$d" "$d/redis.out" redis-sentinel "$d/sentinel.conf"
}

launch_sentinel_1() { launch_sentinel_watcher sentinel_1; }
launch_sentinel_2() { launch_sentinel_watcher sentinel_2; }
launch_sentinel_3() { launch_sentinel_watcher sentinel_3; }

probe_sentinel_node() { [[ $(sentinel_cli "$(sentinel_port_of "$1")" ping) == PONG ]]; }
probe_sentinel_master() { probe_sentinel_node sentinel_master; }
probe_sentinel_replica() { probe_sentinel_node sentinel_replica; }
probe_sentinel_watcher() {
  sentinel_cli "$(sentinel_port_of "$1")" sentinel get-master-addr-by-name "$SENTINEL_MASTER_NAME" |
    grep -q '^127.0.0.1$'
}
probe_sentinel_1() { probe_sentinel_watcher sentinel_1; }
probe_sentinel_2() { probe_sentinel_watcher sentinel_2; }
probe_sentinel_3() { probe_sentinel_watcher sentinel_3; }

ensure_sentinel_installed() {
  ensure_redis_installed
  need_cmd redis-sentinel redis-sentinel
}

# One field of `SENTINEL MASTER <name>` (a flat list of field, value lines) from the sentinel on <port>.
sentinel_master_field() { # port field
  sentinel_cli "$1" sentinel master "$SENTINEL_MASTER_NAME" | awk -v f="$2" 'prev == f { print; exit } { prev = $0 }'
}

# How many replicas the sentinel on <port> sees up and in sync (flags exactly "slave": not s_down or
# disconnected, as a restarted node stays until the sentinel's next look at it). A failover needs one.
sentinel_healthy_replicas() { # port
  sentinel_cli "$1" sentinel replicas "$SENTINEL_MASTER_NAME" | paste - - |
    awk -F'\t' '$1 == "flags" { f = $2 } $1 == "master-link-status" { if (f == "slave" && $2 == "ok") n++ } END { print n + 0 }'
}

# Ready for a failover: every sentinel has found the two others and sees the replica up and in sync
# (through the hello messages and INFO replies they exchange), and the replica's link to the master is up.
wait_sentinel_quorum() {
  local deadline=$((SECONDS + 60)) name port ok master
  while :; do
    ok=1
    for name in "${SENTINEL_WATCHERS[@]}"; do
      port=$(sentinel_port_of "$name")
      [[ $(sentinel_master_field "$port" num-other-sentinels) == 2 ]] || ok=0
      (($(sentinel_healthy_replicas "$port") >= 1)) || ok=0
    done
    if master=$(sentinel_current_master_port); then
      for port in "$SENTINEL_MASTER_PORT" "$SENTINEL_REPLICA_PORT"; do
        [[ $port == "$master" ]] && continue
        sentinel_cli "$port" info replication | grep -q '^master_link_status:up' || ok=0
      done
    else
      ok=0
    fi
    ((ok)) && return 0
    ((SECONDS < deadline)) || die "sentinels: no quorum within 60 s (see $SENTINEL_STATE/*/redis.log)"
    sleep 0.25
  done
}

write_sentinel_env() {
  local tmp=$SENTINEL_STATE/env.tmp.$$ list='' port
  for port in "${SENTINEL_PORT_LIST[@]}"; do list+=${list:+,}127.0.0.1:$port; done
  {
    printf '# Written by scripts/services.sh up --sentinel: a master, a replica and three sentinels.\n'
    printf '# REDIS_URL gives only the scheme and credentials here (none): the sentinels name the master.\n'
    printf 'export REDIS_SENTINELS=%s\n' "$list"
    printf 'export REDIS_SENTINEL_NAME=%s\n' "$SENTINEL_MASTER_NAME"
    printf 'export SENTINEL_MASTER_PORT=%s\n' "$SENTINEL_MASTER_PORT"
    printf 'export SENTINEL_REPLICA_PORT=%s\n' "$SENTINEL_REPLICA_PORT"
  } >"$tmp"
  mv -f -- "$tmp" "$SENTINEL_STATE/env"
}

up_sentinel() {
  local name start
  take_lock
  start=$(now)
  ensure_sentinel_installed
  mkdir -p "$SENTINEL_STATE"
  # The data nodes first: a data node's role is read from the sentinels that still run, and a fresh
  # sentinel's config from the data nodes' roles.
  for name in "${SENTINEL_NODES[@]}"; do
    begin_service "$name"
    finish_service "$name"
  done
  sentinel_check_fresh
  for name in "${SENTINEL_WATCHERS[@]}"; do
    begin_service "$name"
  done
  for name in "${SENTINEL_WATCHERS[@]}"; do
    finish_service "$name"
  done
  wait_sentinel_quorum
  write_sentinel_env
  log "sentinel set up in $(elapsed_since "$start") s; environment in .services/sentinel/env"
}
