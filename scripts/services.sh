#!/usr/bin/env bash
# Local servers for tests and the demo (CONTRACT §10): a real Redis, a real ClickHouse (current engine)
# and a real Apache Kafka broker, as plain processes on 127.0.0.1 and non-default ports.
#
#   scripts/services.sh up                 install what is missing, start all three, wait until each
#                                          answers, write .services/env (idempotent)
#   scripts/services.sh up --secure        the same three with TLS and authentication, on their own ports
#                                          (see scripts/services/secure.sh); writes .services/secure/env
#   scripts/services.sh up --redis-cluster six redis-server nodes forming a Redis Cluster (3 masters, 1
#                                          replica each; see scripts/services/redis-cluster.sh); writes
#                                          .services/redis-cluster/env (REDIS_CLUSTER_NODES)
#   scripts/services.sh up --sentinel      a Redis master, a replica and three sentinels (see
#                                          scripts/services/sentinel.sh); writes .services/sentinel/env
#   scripts/services.sh up --clickhouse-cluster  a two-shard ClickHouse cluster (two more local servers, see
#                                          scripts/services/clickhouse-cluster.sh); writes
#                                          .services/clickhouse-cluster/env
#   scripts/services.sh down               stop every server of every set
#   scripts/services.sh status             one line per server: name, running/stopped, pid, port
#   scripts/services.sh stop  <name>       stop one (SIGTERM, then SIGKILL after a grace period)
#   scripts/services.sh start <name>       start one and wait until it answers
#                                          (name: redis | clickhouse | kafka | secure_redis |
#                                          secure_clickhouse | secure_clickhouse_tls | secure_kafka |
#                                          sentinel_master | sentinel_replica | sentinel_1..3 |
#                                          clickhouse_node1 | clickhouse_node2 | redis_cluster_1 … redis_cluster_6;
#                                          `-` for `_`)
#
# Ports (environment overrides): REDIS_PORT=16379, CLICKHOUSE_HTTP_PORT=18123, CLICKHOUSE_TCP_PORT=19000,
# KAFKA_PORT=19092, KAFKA_CONTROLLER_PORT=19093; secure set: SECURE_REDIS_PORT=27579,
# SECURE_CLICKHOUSE_HTTPS_PORT=27543, SECURE_CLICKHOUSE_HTTP_PORT=27544 (loopback, behind the TLS
# terminator), SECURE_KAFKA_PORT=27592, SECURE_KAFKA_CONTROLLER_PORT=27593; sentinel set:
# SENTINEL_MASTER_PORT=17601, SENTINEL_REPLICA_PORT=17602, SENTINEL_PORTS=17611,17612,17613; cluster:
# REDIS_CLUSTER_PORT_BASE=17001 (nodes on 17001-17006, cluster bus on port + 10000).
# State (data, logs, pid files): <repo>/.services/<name>/ and .services/<name>.pid (the server's own pid).
# Downloads and builds are cached per machine in
# ${CACHE_REFRESHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cache-refresher}, in versioned directories that
# are only renamed into place once complete.
#
# Redis is Debian's redis-server. ClickHouse is clickhouse-local from the npm package
# @chdb/lib-linux-x64-gnu (libchdb.so), started as a server by a small C launcher
# (scripts/services/chdb-server.c). Kafka is org.apache.kafka:kafka_2.13 from Maven Central, run in KRaft
# mode as one combined broker+controller.
set -euo pipefail
set +m # no job control: a background child is then not a process-group leader, so setsid execs in place

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/services
STATE=$ROOT/.services
CACHE=${CACHE_REFRESHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cache-refresher}

REDIS_PORT=${REDIS_PORT:-16379}
CLICKHOUSE_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-18123}
CLICKHOUSE_TCP_PORT=${CLICKHOUSE_TCP_PORT:-19000}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}

CHDB_PACKAGE=@chdb/lib-linux-x64-gnu
CHDB_VERSION=26.7.3-stable.1
CHDB_DIR=$CACHE/chdb-${CHDB_VERSION%%-*}
KAFKA_POM=$HELPERS/kafka-pom.xml
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM")
MAVEN_DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

READY_TIMEOUT_REDIS=60
READY_TIMEOUT_CLICKHOUSE=60
READY_TIMEOUT_KAFKA=120
STOP_GRACE_REDIS=15
STOP_GRACE_CLICKHOUSE=20
STOP_GRACE_KAFKA=30

SERVICES=(redis clickhouse kafka)
TMP_DIRS=()

# shellcheck source=services/secure.sh
source "$HELPERS/secure.sh"
# shellcheck source=services/sentinel.sh
source "$HELPERS/sentinel.sh"
# shellcheck source=services/clickhouse-cluster.sh
source "$HELPERS/clickhouse-cluster.sh"
# shellcheck source=services/redis-cluster.sh
source "$HELPERS/redis-cluster.sh"

log() { printf 'services: %s\n' "$*"; }
die() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  local dir
  for dir in "${TMP_DIRS[@]}"; do
    rm -rf -- "$dir"
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

usage() {
  cat >&2 <<'EOF'
usage: scripts/services.sh up [--secure | --sentinel | --clickhouse-cluster | --redis-cluster] | down | status
       | stop <name> | start <name>
       name: redis | clickhouse | kafka | secure_redis | secure_clickhouse | secure_clickhouse_tls | secure_kafka
             | sentinel_master | sentinel_replica | sentinel_1 | sentinel_2 | sentinel_3
             | clickhouse_node1 | clickhouse_node2 | redis_cluster_1 … redis_cluster_6
EOF
  exit 2
}

now() { printf '%s' "${EPOCHREALTIME//[!0-9]/}"; } # microseconds
elapsed_since() {                                # start(µs) -> "1.2"
  local us=$(($(now) - $1))
  printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

short_hash() { sha256sum -- "$1" | cut -c1-12; }

# ---------------------------------------------------------------------------------------------------------
# Prerequisites

apt_install() {
  local sudo=() out
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "$* missing: install it (apt-get install $*) and retry"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get is not available: install it and retry"
  log "installing $* (apt-get)"
  out=$(mktemp)
  TMP_DIRS+=("$out")
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    >"$out" 2>&1; then
    # Only refresh the package lists when the install could not find the package.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$out" 2>&1 || true
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
      >>"$out" 2>&1; then
      tail -n 20 "$out" >&2
      die "apt-get install $* failed"
    fi
  fi
}

need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

# Serialise installs into the machine cache (several clones may share it).
with_cache_lock() {
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.install.lock"
  flock -w 1800 8 || die "timed out waiting for another install into $CACHE (lock $CACHE/.install.lock)"
  "$@" # not in a condition: errexit must stay in force inside the install functions
  exec 8>&-
}

# A fresh temporary directory inside the cache (same file system, so the final rename is atomic), in
# CACHE_TMP; removed on exit. (Not printed: TMP_DIRS must be updated in this shell, not a subshell.)
cache_tmpdir() { # prefix
  CACHE_TMP=$(mktemp -d "$CACHE/.tmp-$1.XXXXXX")
  TMP_DIRS+=("$CACHE_TMP")
}

install_chdb() {
  [[ -f $CHDB_DIR/libchdb.so ]] && return 0
  need_cmd npm npm
  with_cache_lock install_chdb_locked
}

install_chdb_locked() {
  [[ -f $CHDB_DIR/libchdb.so ]] && return 0
  rm -rf -- "$CACHE"/.tmp-chdb.* # left by an interrupted install (we hold the lock)
  log "installing the ClickHouse engine: npm $CHDB_PACKAGE@$CHDB_VERSION (~540 MB) into $CHDB_DIR"
  local tmp start
  start=$(now)
  cache_tmpdir chdb
  tmp=$CACHE_TMP
  mkdir -p "$tmp/npm" "$tmp/out"
  if ! (cd "$tmp/npm" && npm install --prefix "$tmp/npm" --no-save --no-package-lock --no-audit --no-fund \
    --prefer-offline --loglevel=error "$CHDB_PACKAGE@$CHDB_VERSION") >"$tmp/npm.log" 2>&1; then
    tail -n 30 "$tmp/npm.log" >&2
    die "npm install $CHDB_PACKAGE@$CHDB_VERSION failed"
  fi
  local pkg=$tmp/npm/node_modules/$CHDB_PACKAGE
  [[ -f $pkg/libchdb.so ]] || die "npm package $CHDB_PACKAGE@$CHDB_VERSION has no libchdb.so"
  mv -- "$pkg/libchdb.so" "$pkg/package.json" "$tmp/out/"
  mv -T -- "$tmp/out" "$CHDB_DIR"
  log "installed $CHDB_DIR in $(elapsed_since "$start") s"
}

launcher_path() { printf '%s/chdb-server-%s/chdb-server' "$CACHE" "$(short_hash "$HELPERS/chdb-server.c")"; }

build_launcher() {
  [[ -x $(launcher_path) ]] && return 0
  need_cmd gcc gcc
  with_cache_lock build_launcher_locked
}

build_launcher_locked() {
  local target tmp
  target=$(launcher_path)
  [[ -x $target ]] && return 0
  rm -rf -- "$CACHE"/.tmp-chdb-server.*
  log "building the ClickHouse launcher $target"
  cache_tmpdir chdb-server
  tmp=$CACHE_TMP
  mkdir -p "$tmp/out"
  gcc -O2 -Wall -Wextra -o "$tmp/out/chdb-server" "$HELPERS/chdb-server.c" -ldl ||
    die "gcc could not build $HELPERS/chdb-server.c"
  mv -T -- "$tmp/out" "$(dirname -- "$target")"
}

kafka_dir() { printf '%s/kafka-%s-%s' "$CACHE" "$KAFKA_VERSION" "$(short_hash "$KAFKA_POM")"; }

install_kafka() {
  [[ -n $KAFKA_VERSION ]] || die "cannot read <kafka.version> from $KAFKA_POM"
  need_cmd java default-jre-headless
  [[ -f $(kafka_dir)/lib/kafka_2.13-$KAFKA_VERSION.jar ]] && return 0
  need_cmd mvn maven
  with_cache_lock install_kafka_locked
}

install_kafka_locked() {
  local dir tmp start
  dir=$(kafka_dir)
  [[ -f $dir/lib/kafka_2.13-$KAFKA_VERSION.jar ]] && return 0
  rm -rf -- "$CACHE"/.tmp-kafka.*
  log "installing Apache Kafka $KAFKA_VERSION from Maven Central into $dir"
  start=$(now)
  cache_tmpdir kafka
  tmp=$CACHE_TMP
  mkdir -p "$tmp/out/lib"
  cp -- "$KAFKA_POM" "$tmp/out/pom.xml"
  if ! (cd "$tmp" && mvn -q -B -Dstyle.color=never -f "$tmp/out/pom.xml" \
    "$MAVEN_DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$tmp/out/lib") \
    >"$tmp/mvn.log" 2>&1; then
    tail -n 30 "$tmp/mvn.log" >&2
    die "maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION"
  fi
  [[ -f $tmp/out/lib/kafka_2.13-$KAFKA_VERSION.jar ]] || die "maven did not produce kafka_2.13-$KAFKA_VERSION.jar"
  mv -T -- "$tmp/out" "$dir"
  log "installed $dir in $(elapsed_since "$start") s"
}

ensure_redis_installed() {
  need_cmd redis-server redis-server
  need_cmd redis-cli redis-tools
}

# ---------------------------------------------------------------------------------------------------------
# Processes

pid_file() { printf '%s/%s.pid' "$STATE" "$1"; }

state_dir() { # name -> its data/log directory
  case $1 in
    sentinel_*) printf '%s/%s' "$SENTINEL_STATE" "${1#sentinel_}" ;;
    secure_clickhouse_tls) printf '%s/clickhouse-tls' "$SECURE" ;;
    secure_*) printf '%s/%s' "$SECURE" "${1#secure_}" ;;
    clickhouse_node*) printf '%s/node%s' "$CH_CLUSTER" "$(ch_node_number "$1")" ;;
    *) printf '%s/%s' "$STATE" "$1" ;;
  esac
}

# What the server's command line must contain, so a reused pid is never taken for our server.
signature() {
  case $1 in
    sentinel_*) sentinel_signature "$1" ;;
    redis) printf 'redis-server' ;;
    clickhouse) printf -- '--path=%s/clickhouse/data' "$STATE" ;;
    kafka) printf '%s/kafka/server.properties' "$STATE" ;;
    secure_redis) printf 'redis-server 127.0.0.1:' ;; # redis rewrites its title to its address
    secure_clickhouse) printf -- '--path=%s/clickhouse/data' "$SECURE" ;;
    secure_clickhouse_tls) printf 'cert=%s/server.pem' "$TLS_DIR" ;;
    secure_kafka) printf '%s/kafka/server.properties' "$SECURE" ;;
    clickhouse_node*) printf -- '--path=%s/data' "$(state_dir "$1")" ;;
    redis_cluster_*) printf 'redis-server 127.0.0.1:%s' "$(redis_cluster_port "$1")" ;;
  esac
}

ports_of() {
  case $1 in
    sentinel_*) sentinel_port_of "$1" ;;
    redis) printf '%s' "$REDIS_PORT" ;;
    clickhouse) printf '%s,%s' "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" ;;
    kafka) printf '%s,%s' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" ;;
    secure_redis) printf '%s' "$SECURE_REDIS_PORT" ;;
    secure_clickhouse) printf '%s' "$SECURE_CLICKHOUSE_HTTP_PORT" ;;
    secure_clickhouse_tls) printf '%s' "$SECURE_CLICKHOUSE_HTTPS_PORT" ;;
    secure_kafka) printf '%s,%s' "$SECURE_KAFKA_PORT" "$SECURE_KAFKA_CONTROLLER_PORT" ;;
    clickhouse_node*) printf '%s,%s' "$(ch_node_http_port "$1")" "$(ch_node_tcp_port "$1")" ;;
    redis_cluster_*) redis_cluster_port "$1" ;;
  esac
}

proc_state() { # pid -> one-letter state (R, S, D, T, Z, ...); fails if there is no such process
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  printf '%s' "${stat%% *}"
}

alive() { # pid: exists and is not a zombie (nobody may reap a server whose parent has exited)
  local state
  state=$(proc_state "$1") || return 1
  [[ $state != Z && $state != X ]]
}

# The pid of our running server <name>, or fail.
server_pid() {
  local pid cmdline
  [[ -s $(pid_file "$1") ]] || return 1
  pid=$(<"$(pid_file "$1")")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$(signature "$1")"* ]] || return 1
  printf '%s' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports_free() { # name port...
  local name=$1 port
  shift
  for port in "$@"; do
    [[ $port =~ ^[0-9]+$ ]] || die "$name: port '$port' is not a number"
    if port_open "$port"; then
      die "$name: port $port on 127.0.0.1 is already in use by another process (ss -ltnp 'sport = :$port' shows it); stop it or set a different port"
    fi
  done
}

# Start "$@" in <directory>, in its own session, detached from this shell, with all output to <out>; the
# pid file gets the real server pid (the subshell execs setsid, which execs the server without forking).
# fd 8/9 are our locks: not inherited.
launch() { # name directory out command...
  local name=$1 dir=$2 out=$3
  shift 3
  (cd -- "$dir" && exec setsid "$@" </dev/null >>"$out" 2>&1 8>&- 9>&-) &
  LAUNCHED_PID=$!
  printf '%s\n' "$LAUNCHED_PID" >"$(pid_file "$name")"
}

wait_gone() { # pid seconds
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

stop_pid() { # name pid
  local name=$1 pid=$2 grace
  case $name in
    sentinel_*) grace=$STOP_GRACE_REDIS ;;
    redis | secure_redis | secure_clickhouse_tls | redis_cluster_*) grace=$STOP_GRACE_REDIS ;;
    clickhouse | secure_clickhouse | clickhouse_node*) grace=$STOP_GRACE_CLICKHOUSE ;;
    kafka | secure_kafka) grace=$STOP_GRACE_KAFKA ;;
  esac
  # A SIGSTOPped server (fault injection) only handles SIGTERM once continued.
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$grace"; then
    log "$name (pid $pid) still running ${grace} s after SIGTERM: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 || die "$name (pid $pid) survived SIGKILL"
  fi
}

log_files() {
  case $1 in
    sentinel_*) sentinel_log_files "$1" ;;
    redis) printf '%s\n' "$STATE/redis/redis.log" "$STATE/redis/redis.out" ;;
    clickhouse) printf '%s\n' "$STATE/clickhouse/clickhouse.log" "$STATE/clickhouse/clickhouse.out" ;;
    kafka) printf '%s\n' "$STATE/kafka/server.log" "$STATE/kafka/kafka.out" ;;
    secure_redis) printf '%s\n' "$SECURE/redis/redis.log" "$SECURE/redis/redis.out" ;;
    secure_clickhouse) printf '%s\n' "$SECURE/clickhouse/clickhouse.log" "$SECURE/clickhouse/clickhouse.out" ;;
    secure_clickhouse_tls) printf '%s\n' "$SECURE/clickhouse-tls/socat.out" ;;
    secure_kafka) printf '%s\n' "$SECURE/kafka/server.log" "$SECURE/kafka/kafka.out" ;;
    clickhouse_node*) printf '%s\n' "$(state_dir "$1")/clickhouse.log" "$(state_dir "$1")/clickhouse.out" ;;
    redis_cluster_*) printf '%s\n' "$STATE/$1/redis.log" "$STATE/$1/redis.out" ;;
  esac
}

# Keep the previous run's logs as <file>.1, so a start-up failure shows only this run's lines.
rotate_logs() {
  local file
  while IFS= read -r file; do
    if [[ -e $file ]]; then mv -f -- "$file" "$file.1"; fi
  done < <(log_files "$1")
}

start_failed() { # name reason
  local name=$1 file
  {
    printf 'services: error: %s %s\n' "$name" "$2"
    while IFS= read -r file; do
      [[ -s $file ]] || continue
      printf -- '--- last lines of %s ---\n' "$file"
      # (without ClickHouse's stack-trace frames)
      grep -v -E '^[[:space:]]*[0-9]+\. .*@ 0x[0-9a-f]+' -- "$file" | tail -n 40 || true
    done < <(log_files "$name")
  } >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------------
# Readiness probes: each proves the server answers a real request.

probe_redis() { [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

probe_clickhouse() {
  [[ $(curl -fsS --max-time 5 --data-binary 'SELECT 1' "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/" 2>/dev/null) == 1 ]] &&
    port_open "$CLICKHOUSE_TCP_PORT"
}

# A metadata request through kafkajs when the project's dependencies are installed, else Kafka's own tool.
KAFKA_PROBE_JS='
const { Kafka, logLevel } = require("kafkajs");
const admin = new Kafka({
  clientId: "services-sh-probe", brokers: [process.argv[1]], logLevel: logLevel.NOTHING,
  connectionTimeout: 2000, requestTimeout: 5000, retry: { retries: 0 },
}).admin();
admin.connect()
  .then(() => admin.describeCluster())
  .then((cluster) => { if (cluster.brokers.length === 0) throw new Error("no brokers"); return admin.disconnect(); })
  .then(() => process.exit(0), () => process.exit(1));
'

probe_kafka() {
  if [[ -f $ROOT/node_modules/kafkajs/package.json ]] && command -v node >/dev/null 2>&1; then
    (cd "$ROOT" && timeout 20 node -e "$KAFKA_PROBE_JS" "127.0.0.1:$KAFKA_PORT") >/dev/null 2>&1
  else
    timeout 30 java -Dlog4j.configuration="file:$STATE/kafka/log4j.properties" -Dkafka.logs.dir="$STATE/kafka" \
      -cp "$(kafka_dir)/lib/*" kafka.admin.BrokerApiVersionsCommand \
      --bootstrap-server "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
  fi
}

# ---------------------------------------------------------------------------------------------------------
# Starting

launch_redis() {
  local d=$STATE/redis
  mkdir -p "$d"
  check_ports_free redis "$REDIS_PORT"
  launch redis "$d" "$d/redis.out" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no --dir "$d" --logfile "$d/redis.log"
}

launch_clickhouse() {
  local d=$STATE/clickhouse
  mkdir -p "$d/data"
  check_ports_free clickhouse "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
  sed -e "s|@DATA_DIR@|$d/data|g" "$HELPERS/clickhouse-config.xml" >"$d/config.xml"
  # clickhouse-local keeps the system database in memory but the system log tables' parts on disk: the
  # previous run's data/system/query_log would stop the new system.query_log from being created.
  rm -rf -- "$d/data/data/system"
  # chdb's clickhouse-local ignores --config-file: it reads ./config.xml, so it starts in $d; that file's
  # <path> is the data directory (--path is passed too, but is ignored once a config.xml is read).
  # --async_insert=0: chdb turns async inserts on by default; a ClickHouse server has them off.
  # SYSTEM FLUSH LOGS first creates system.query_log before the listeners open; the last query keeps the
  # process (and so the server) alive, waking once a second.
  launch clickhouse "$d" "$d/clickhouse.out" "$(launcher_path)" "$CHDB_DIR/libchdb.so" \
    --path="$d/data/" --listen_host=127.0.0.1 \
    --http_port="$CLICKHOUSE_HTTP_PORT" --tcp_port="$CLICKHOUSE_TCP_PORT" \
    --log-level=error --logger.log="$d/clickhouse.log" --async_insert=0 \
    --query="SYSTEM FLUSH LOGS; SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; SELECT sleepEachRow(1) AS services_sh_keepalive FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null"
}

kafka_java() { # main-class args...
  local d=$STATE/kafka
  java -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" -cp "$(kafka_dir)/lib/*" "$@"
}

launch_kafka() {
  local d=$STATE/kafka cluster_id
  mkdir -p "$d"
  check_ports_free kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
  sed -e "s|@PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$d/data|g" \
    "$HELPERS/kafka-server.properties" >"$d/server.properties"
  cp -- "$HELPERS/kafka-log4j.properties" "$d/log4j.properties"
  if [[ ! -f $d/data/meta.properties ]]; then
    rm -rf -- "$d/data" # never formatted (or interrupted): nothing to keep
    # A cluster id as kafka-storage random-uuid makes one: 16 random bytes, unpadded base64url, no leading '-'.
    cluster_id=-
    while [[ $cluster_id == -* ]]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    done
    printf '%s\n' "$cluster_id" >"$d/cluster-id"
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$d/server.properties" >>"$d/kafka.out" 2>&1 ||
      start_failed kafka "storage: format of $d/data failed"
  fi
  launch kafka "$d" "$d/kafka.out" java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" \
    -cp "$(kafka_dir)/lib/*" kafka.Kafka "$d/server.properties"
}

install_for() {
  case $1 in
    sentinel_*) ensure_sentinel_installed ;;
    redis) ensure_redis_installed ;;
    clickhouse)
      need_cmd curl curl
      install_chdb
      build_launcher
      ;;
    kafka) install_kafka ;;
    secure_redis) ensure_redis_installed ;;
    secure_clickhouse)
      need_cmd curl curl
      install_chdb
      build_launcher
      ;;
    secure_clickhouse_tls)
      need_cmd socat socat
      need_cmd curl curl
      ;;
    secure_kafka) install_kafka ;;
    clickhouse_node*) install_for clickhouse ;;
    redis_cluster_*) ensure_redis_installed ;;
  esac
}

# Phase 1: make sure <name> runs (launch it if not). Sets BEGIN_<name>=started|running and PID_<name>.
begin_service() {
  local name=$1 pid running_ports
  if pid=$(server_pid "$name"); then
    running_ports=$(cat "$(state_dir "$name")/ports" 2>/dev/null || true)
    if [[ -n $running_ports && $running_ports != "$(ports_of "$name")" ]]; then
      die "$name already runs (pid $pid) on port $running_ports, not $(ports_of "$name"): run 'scripts/services.sh stop $name' first"
    fi
    if [[ $(proc_state "$pid") == T ]]; then
      log "$name (pid $pid) was paused (SIGSTOP): sending SIGCONT"
      kill -CONT "$pid"
    fi
    printf -v "BEGIN_$name" running
  else
    rm -f -- "$(pid_file "$name")"
    rotate_logs "$name"
    if [[ $name == redis_cluster_* ]]; then launch_redis_cluster_node "$name"; else "launch_$name"; fi
    pid=$LAUNCHED_PID
    printf '%s\n' "$(ports_of "$name")" >"$(state_dir "$name")/ports"
    printf -v "BEGIN_$name" started
  fi
  printf -v "PID_$name" '%s' "$pid"
  printf -v "T0_$name" '%s' "$(now)"
}

# Phase 2: wait until <name> answers; on timeout stop it and fail with the tail of its logs.
finish_service() {
  local name=$1 pid_var=PID_$1 begin_var=BEGIN_$1 t0_var=T0_$1 timeout probe deadline
  local pid=${!pid_var} begin=${!begin_var} t0=${!t0_var}
  case $name in
    sentinel_*) timeout=$READY_TIMEOUT_REDIS ;;
    redis | secure_redis | secure_clickhouse_tls | redis_cluster_*) timeout=$READY_TIMEOUT_REDIS ;;
    clickhouse | secure_clickhouse | clickhouse_node*) timeout=$READY_TIMEOUT_CLICKHOUSE ;;
    kafka | secure_kafka) timeout=$READY_TIMEOUT_KAFKA ;;
  esac
  probe=probe_$name
  [[ $name != redis_cluster_* ]] || probe="probe_redis_cluster_node $name"
  deadline=$((SECONDS + timeout))
  until $probe; do
    alive "$pid" || start_failed "$name" "exited during start-up (pid $pid)"
    if ((SECONDS >= deadline)); then
      stop_pid "$name" "$pid"
      rm -f -- "$(pid_file "$name")"
      start_failed "$name" "did not answer on 127.0.0.1 port $(ports_of "$name") within ${timeout} s (stopped it)"
    fi
    sleep 0.25
  done
  if [[ $name == clickhouse ]] &&
    ! curl -fsS --max-time 10 --data-binary 'SELECT count() FROM system.query_log FORMAT Null' \
      "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/" >/dev/null 2>&1; then
    start_failed clickhouse "answers but has no system.query_log (was $STATE/clickhouse/config.xml read?)"
  fi
  if [[ $begin == running ]]; then
    log "$name: already running (pid $pid, port $(ports_of "$name"))"
  else
    log "$name: ready (pid $pid, port $(ports_of "$name"), $(elapsed_since "$t0") s)"
  fi
}

stop_service() {
  local name=$1 pid
  if ! pid=$(server_pid "$name"); then
    rm -f -- "$(pid_file "$name")"
    log "$name: already stopped"
    return 0
  fi
  stop_pid "$name" "$pid"
  rm -f -- "$(pid_file "$name")"
  log "$name: stopped (was pid $pid)"
}

write_env() {
  local tmp=$STATE/env.tmp.$$
  {
    printf '# Written by scripts/services.sh up: the local servers for tests and the demo.\n'
    printf 'export REDIS_URL=redis://127.0.0.1:%s\n' "$REDIS_PORT"
    printf 'export CLICKHOUSE_URL=http://127.0.0.1:%s\n' "$CLICKHOUSE_HTTP_PORT"
    printf 'export KAFKA_BROKERS=127.0.0.1:%s\n' "$KAFKA_PORT"
    printf '# The database and key prefix `npm run demo` migrates, seeds and refreshes.\n'
    printf 'export CLICKHOUSE_DATABASE=demo\n'
    printf 'export CACHE_KEY_PREFIX=demo\n'
  } >"$tmp"
  mv -f -- "$tmp" "$STATE/env"
}

status_line() {
  local name=$1 pid ports note=''
  if pid=$(server_pid "$name"); then
    ports=$(cat "$(state_dir "$name")/ports" 2>/dev/null || ports_of "$name")
    [[ $(proc_state "$pid") != T ]] || note='  (paused: SIGSTOP)'
    printf '%-21s  %-7s  pid=%-7s  port=%s%s\n' "$name" running "$pid" "$ports" "$note"
  else
    ports=$(ports_of "$name")
    printf '%-21s  %-7s  pid=%-7s  port=%s\n' "$name" stopped - "$ports"
  fi
}

# promtool and prometheus for the dashboard and alert-rule tests (Debian's package). Never started here:
# the tests run their own on a free loopback port. The package's postinst may start a system service on
# :9090 where an init system runs; stop it so nothing of ours listens there.
ensure_prometheus() {
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && return 0
  apt_install prometheus
  command -v promtool >/dev/null 2>&1 || die "promtool is still missing after installing prometheus"
  if port_open 9090; then
    local sudo=()
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" service prometheus stop >/dev/null 2>&1 || log "warning: a prometheus service listens on 9090"
  fi
}

take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 900 9 || die "another scripts/services.sh is still running (lock $STATE/.lock)"
}

valid_name() {
  case ${1:-} in
    sentinel_master | sentinel_replica | sentinel_1 | sentinel_2 | sentinel_3) return 0 ;;
    redis | clickhouse | kafka | secure_redis | secure_clickhouse | secure_clickhouse_tls | secure_kafka) return 0 ;;
    clickhouse_node1 | clickhouse_node2) return 0 ;;
    redis_cluster_[1-6]) return 0 ;;
    *) usage ;;
  esac
}

up_secure() {
  local name start
  take_lock
  start=$(now)
  for name in "${SECURE_SERVICES[@]}"; do
    install_for "$name"
  done
  prepare_secure
  for name in secure_kafka secure_clickhouse secure_redis; do # slowest first: they start in parallel
    begin_service "$name"
  done
  finish_service secure_clickhouse # the TLS terminator forwards to it
  begin_service secure_clickhouse_tls
  for name in secure_redis secure_clickhouse_tls secure_kafka; do
    finish_service "$name"
  done
  grant_secure_kafka_acls
  write_secure_env
  log "secure set up in $(elapsed_since "$start") s; environment in .services/secure/env"
}

main() {
  local cmd=${1:-} name start
  case $cmd in
    up)
      if [[ $# -eq 2 && $2 == --secure ]]; then
        up_secure
        return
      fi
      if [[ $# -eq 2 && $2 == --sentinel ]]; then
        up_sentinel
        return
      fi
      if [[ $# -eq 2 && $2 == --clickhouse-cluster ]]; then
        up_clickhouse_cluster
        return
      fi
      if [[ $# -eq 2 && $2 == --redis-cluster ]]; then
        up_redis_cluster
        return
      fi
      [[ $# -eq 1 ]] || usage
      take_lock
      start=$(now)
      for name in "${SERVICES[@]}"; do
        install_for "$name"
      done
      ensure_prometheus
      for name in kafka clickhouse redis; do # slowest first: they start in parallel
        begin_service "$name"
      done
      for name in "${SERVICES[@]}"; do
        finish_service "$name"
      done
      write_env
      log "all up in $(elapsed_since "$start") s; environment in .services/env"
      ;;
    down)
      [[ $# -eq 1 ]] || usage
      take_lock
      for name in "${SENTINEL_WATCHERS[@]}" "${SENTINEL_NODES[@]}"; do
        stop_service "$name"
      done
      for name in "${CH_CLUSTER_SERVICES[@]}" "${REDIS_CLUSTER_SERVICES[@]}" secure_kafka secure_clickhouse_tls \
        secure_clickhouse secure_redis kafka clickhouse redis; do
        stop_service "$name"
      done
      ;;
    status)
      [[ $# -eq 1 ]] || usage
      for name in "${SERVICES[@]}" "${SECURE_SERVICES[@]}" "${SENTINEL_SERVICES[@]}" "${CH_CLUSTER_SERVICES[@]}" \
        "${REDIS_CLUSTER_SERVICES[@]}"; do
        status_line "$name"
      done
      ;;
    stop)
      [[ $# -eq 2 ]] || usage
      set -- "$1" "${2//-/_}" # sentinel-master is sentinel_master
      valid_name "$2"
      take_lock
      stop_service "$2"
      ;;
    start)
      [[ $# -eq 2 ]] || usage
      set -- "$1" "${2//-/_}"
      valid_name "$2"
      take_lock
      install_for "$2"
      [[ $2 != secure_* ]] || prepare_secure
      begin_service "$2"
      finish_service "$2"
      [[ $2 != secure_kafka ]] || grant_secure_kafka_acls
      case $2 in
        sentinel_*) write_sentinel_env ;;
        redis_cluster_*) ;;
        secure_*) write_secure_env ;;
        clickhouse_node*) write_clickhouse_cluster_env ;;
        *) write_env ;;
      esac
      ;;
    *) usage ;;
  esac
}

main "$@"
