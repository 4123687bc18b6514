# shellcheck shell=bash
# A two-shard ClickHouse cluster of local servers, sourced by scripts/services.sh (`up --clickhouse-cluster`):
#   clickhouse_node1, clickhouse_node2   clickhouse-local (chdb) servers, one shard each, both naming the
#                                        cluster CLICKHOUSE_CLUSTER_NAME in remote_servers
# Each node has its own data directory .services/clickhouse-cluster/node<N>/; `stop`/`start clickhouse_node<N>`
# stop or start one node (fault tests). .services/clickhouse-cluster/env exports CLICKHOUSE_CLUSTER and
# CLICKHOUSE_CLUSTER_URLS (the nodes' HTTP URLs, node 1 first).
# Ports (environment overrides): CLICKHOUSE_NODE1_HTTP_PORT=18811, CLICKHOUSE_NODE1_TCP_PORT=18821,
# CLICKHOUSE_NODE2_HTTP_PORT=18812, CLICKHOUSE_NODE2_TCP_PORT=18822.

CLICKHOUSE_NODE1_HTTP_PORT=${CLICKHOUSE_NODE1_HTTP_PORT:-18811}
CLICKHOUSE_NODE1_TCP_PORT=${CLICKHOUSE_NODE1_TCP_PORT:-18821}
CLICKHOUSE_NODE2_HTTP_PORT=${CLICKHOUSE_NODE2_HTTP_PORT:-18812}
CLICKHOUSE_NODE2_TCP_PORT=${CLICKHOUSE_NODE2_TCP_PORT:-18822}
CLICKHOUSE_CLUSTER_NAME=cache_refresher_test

CH_CLUSTER=$STATE/clickhouse-cluster
CH_CLUSTER_SERVICES=(clickhouse_node1 clickhouse_node2)

ch_node_number() { printf '%s' "${1#clickhouse_node}"; }
ch_node_http_port() { local v="CLICKHOUSE_NODE$(ch_node_number "$1")_HTTP_PORT" && printf '%s' "${!v}"; }
ch_node_tcp_port() { local v="CLICKHOUSE_NODE$(ch_node_number "$1")_TCP_PORT" && printf '%s' "${!v}"; }

launch_clickhouse_node() { # name
  local name=$1 d
  d=$(state_dir "$name")
  mkdir -p "$d/data"
  check_ports_free "$name" "$(ch_node_http_port "$name")" "$(ch_node_tcp_port "$name")"
  sed -e "s|@DATA_DIR@|$d/data|g" -e "s|@CLUSTER@|$CLICKHOUSE_CLUSTER_NAME|g" \
    -e "s|@TCP_PORT_1@|$CLICKHOUSE_NODE1_TCP_PORT|g" -e "s|@TCP_PORT_2@|$CLICKHOUSE_NODE2_TCP_PORT|g" \
    -e "s|@SHARD@|$(ch_node_number "$name")|g" "$HELPERS/clickhouse-cluster-config.xml" >"$d/config.xml"
  # As launch_clickhouse: ./config.xml is what clickhouse-local reads; the last query keeps it serving.
  launch "$name" "$d" "$d/clickhouse.out" "$(launcher_path)" "$CHDB_DIR/libchdb.so" \
    --path="$d/data/" --listen_host=127.0.0.1 \
    --http_port="$(ch_node_http_port "$name")" --tcp_port="$(ch_node_tcp_port "$name")" \
    --log-level=error --logger.log="$d/clickhouse.log" --async_insert=0 \
    --query="SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; SELECT sleepEachRow(1) AS services_sh_keepalive FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null"
}
launch_clickhouse_node1() { launch_clickhouse_node clickhouse_node1; }
launch_clickhouse_node2() { launch_clickhouse_node clickhouse_node2; }

probe_clickhouse_node() { # name
  [[ $(curl -fsS --max-time 5 --data-binary 'SELECT 1' "http://127.0.0.1:$(ch_node_http_port "$1")/" 2>/dev/null) == 1 ]] &&
    port_open "$(ch_node_tcp_port "$1")"
}
probe_clickhouse_node1() { probe_clickhouse_node clickhouse_node1; }
probe_clickhouse_node2() { probe_clickhouse_node clickhouse_node2; }

write_clickhouse_cluster_env() {
  local tmp=$CH_CLUSTER/env.tmp.$$
  {
    printf '# Written by scripts/services.sh up --clickhouse-cluster: a two-shard ClickHouse cluster.\n'
    printf 'export CLICKHOUSE_CLUSTER=%s\n' "$CLICKHOUSE_CLUSTER_NAME"
    printf 'export CLICKHOUSE_CLUSTER_URLS=http://127.0.0.1:%s,http://127.0.0.1:%s\n' \
      "$CLICKHOUSE_NODE1_HTTP_PORT" "$CLICKHOUSE_NODE2_HTTP_PORT"
  } >"$tmp"
  mv -f -- "$tmp" "$CH_CLUSTER/env"
}

up_clickhouse_cluster() {
  local name start
  take_lock
  start=$(now)
  install_for clickhouse
  mkdir -p "$CH_CLUSTER"
  for name in "${CH_CLUSTER_SERVICES[@]}"; do
    begin_service "$name"
  done
  for name in "${CH_CLUSTER_SERVICES[@]}"; do
    finish_service "$name"
  done
  # Each node answers; now the cluster itself: node 1 reaches every shard (a Distributed read needs them all).
  [[ $(curl -fsS --max-time 10 --data-binary \
    "SELECT count() FROM clusterAllReplicas('$CLICKHOUSE_CLUSTER_NAME', system.one)" \
    "http://127.0.0.1:$CLICKHOUSE_NODE1_HTTP_PORT/" 2>/dev/null) == "${#CH_CLUSTER_SERVICES[@]}" ]] ||
    start_failed clickhouse_node1 "does not reach every node of cluster $CLICKHOUSE_CLUSTER_NAME"
  write_clickhouse_cluster_env
  log "clickhouse cluster up in $(elapsed_since "$start") s; environment in .services/clickhouse-cluster/env"
}
