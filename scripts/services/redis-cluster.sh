# shellcheck shell=bash
# A local Redis Cluster, sourced by scripts/services.sh (`up --redis-cluster`): six Debian redis-server
# processes in cluster mode, three masters with one replica each, made into a cluster once by
# `redis-cli --cluster create … --cluster-replicas 1`. Their names are redis_cluster_1 … redis_cluster_6
# (`scripts/services.sh stop|start redis_cluster_<n>` for fault tests); node n listens on
# REDIS_CLUSTER_PORT_BASE + n - 1 (default 17001 … 17006) and on that port + 10000 for the cluster bus.
# Each node keeps its cluster configuration (nodes.conf) in .services/redis_cluster_<n>/, so a stopped
# node that is started again rejoins as it was (a master whose replica was promoted meanwhile comes back
# as a replica). Data is not persisted, like the standalone server's.
# `.services/redis-cluster/env` exports REDIS_CLUSTER_NODES (every node's host:port) once the cluster
# answers `cluster_state:ok`; it is a file of its own so that sourcing .services/env never switches a
# shell onto the cluster.

REDIS_CLUSTER_PORT_BASE=${REDIS_CLUSTER_PORT_BASE:-17001}
# A master unreachable for this long is failed over to its replica (redis.conf cluster-node-timeout).
REDIS_CLUSTER_NODE_TIMEOUT_MS=${REDIS_CLUSTER_NODE_TIMEOUT_MS:-3000}
REDIS_CLUSTER_SERVICES=(redis_cluster_1 redis_cluster_2 redis_cluster_3 redis_cluster_4 redis_cluster_5 redis_cluster_6)
READY_TIMEOUT_REDIS_CLUSTER=60

redis_cluster_port() { printf '%s' $((REDIS_CLUSTER_PORT_BASE + ${1#redis_cluster_} - 1)); }

redis_cluster_cli() { # port args...
  local port=$1
  shift
  timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

probe_redis_cluster_node() { [[ $(redis_cluster_cli "$(redis_cluster_port "$1")" ping) == PONG ]]; }

launch_redis_cluster_node() { # name
  local name=$1 d port
  d=$(state_dir "$name")
  port=$(redis_cluster_port "$name")
  mkdir -p "$d"
  check_ports_free "$name" "$port" $((port + 10000))
  launch "$name" "$d" "$d/redis.out" redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --daemonize no --dir "$d" --logfile "$d/redis.log" --cluster-enabled yes \
    --cluster-config-file "$d/nodes.conf" --cluster-node-timeout "$REDIS_CLUSTER_NODE_TIMEOUT_MS"
}

redis_cluster_info() { # field -> value on node 1 (empty when it does not answer)
  redis_cluster_cli "$REDIS_CLUSTER_PORT_BASE" cluster info | tr -d '\r' | sed -n "s/^$1://p"
}

# Creates the cluster when node 1 knows no other node (fresh state); otherwise the nodes' nodes.conf
# already describe it. Then waits until every slot is served.
form_redis_cluster() {
  local known name seeds=() deadline
  known=$(redis_cluster_info cluster_known_nodes)
  if [[ $known == 1 ]]; then
    for name in "${REDIS_CLUSTER_SERVICES[@]}"; do
      seeds+=("127.0.0.1:$(redis_cluster_port "$name")")
    done
    log "redis cluster: creating (3 masters, 1 replica each)"
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes \
      >"$STATE/redis-cluster/create.out" 2>&1 || {
      cat "$STATE/redis-cluster/create.out" >&2
      die "redis-cli --cluster create failed"
    }
  fi
  deadline=$((SECONDS + READY_TIMEOUT_REDIS_CLUSTER))
  until [[ $(redis_cluster_info cluster_state) == ok && $(redis_cluster_info cluster_slots_ok) == 16384 ]]; do
    if ((SECONDS >= deadline)); then
      redis_cluster_cli "$REDIS_CLUSTER_PORT_BASE" cluster info >&2 || true
      die "redis cluster not ok within ${READY_TIMEOUT_REDIS_CLUSTER} s (known nodes: $known); 'scripts/services.sh down' then remove $STATE/redis_cluster_* to start afresh"
    fi
    sleep 0.25
  done
}

write_redis_cluster_env() {
  local name nodes=() tmp=$STATE/redis-cluster/env.tmp.$$
  for name in "${REDIS_CLUSTER_SERVICES[@]}"; do
    nodes+=("127.0.0.1:$(redis_cluster_port "$name")")
  done
  {
    printf '# Written by scripts/services.sh up --redis-cluster: the local Redis Cluster.\n'
    printf 'export REDIS_CLUSTER_NODES=%s\n' "$(
      IFS=,
      printf '%s' "${nodes[*]}"
    )"
  } >"$tmp"
  mv -f -- "$tmp" "$STATE/redis-cluster/env"
}

up_redis_cluster() {
  local name start
  take_lock
  start=$(now)
  ensure_redis_installed
  mkdir -p "$STATE/redis-cluster"
  for name in "${REDIS_CLUSTER_SERVICES[@]}"; do
    begin_service "$name"
  done
  for name in "${REDIS_CLUSTER_SERVICES[@]}"; do
    finish_service "$name"
  done
  form_redis_cluster
  write_redis_cluster_env
  log "redis cluster up in $(elapsed_since "$start") s; environment in .services/redis-cluster/env"
}
