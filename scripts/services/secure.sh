# shellcheck shell=bash
# The secure set of local servers, sourced by scripts/services.sh (`up --secure`): the same Redis,
# ClickHouse and Kafka, on their own ports and data directories, with TLS and authentication the way
# managed services offer them:
#   secure_redis           redis-server on a TLS-only port; the default user is off, ACL user `refresher`
#   secure_clickhouse      clickhouse-local with users.xml (user `refresher`); plain HTTP on loopback only
#   secure_clickhouse_tls  socat terminating TLS (HTTPS) in front of it: chdb's clickhouse-local cannot
#                          serve HTTPS itself (SYSTEM START LISTEN only knows its TCP and HTTP listeners)
#   secure_kafka           a KRaft broker whose client listener is SASL_SSL only (SCRAM-SHA-512/256, PLAIN);
#                          SCRAM users are created by Kafka's own kafka-storage format --add-scram
# Certificates (a local CA and a server certificate for 127.0.0.1/localhost, made with openssl) and random
# passwords are generated on the first `up --secure` into .services/secure/{tls,secrets} (mode 700/600)
# and reused afterwards; nothing of it is ever committed. .services/secure/env names them as the
# sidecar's variables (passwords by *_PASSWORD_FILE, never by value).

SECURE_REDIS_PORT=${SECURE_REDIS_PORT:-27579}
SECURE_CLICKHOUSE_HTTPS_PORT=${SECURE_CLICKHOUSE_HTTPS_PORT:-27543}
SECURE_CLICKHOUSE_HTTP_PORT=${SECURE_CLICKHOUSE_HTTP_PORT:-27544}
SECURE_KAFKA_PORT=${SECURE_KAFKA_PORT:-27592}
SECURE_KAFKA_CONTROLLER_PORT=${SECURE_KAFKA_CONTROLLER_PORT:-27593}

SECURE=$STATE/secure
TLS_DIR=$SECURE/tls
SECRETS_DIR=$SECURE/secrets
SECURE_SERVICES=(secure_redis secure_clickhouse secure_clickhouse_tls secure_kafka)
CERT_DAYS=30

secret_file() { printf '%s/%s.password' "$SECRETS_DIR" "$1"; }

# A random password of 24 letters and digits (no quoting trouble in JAAS lines, URLs or XML).
new_secret() { head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | cut -c1-24; }

secret_sha256() { printf '%s' "$(<"$(secret_file "$1")")" | sha256sum | cut -d' ' -f1; }

ensure_secret() { # name
  local file
  file=$(secret_file "$1")
  [[ -s $file ]] && return 0
  (umask 077 && new_secret >"$file.tmp" && mv -f -- "$file.tmp" "$file")
}

# The CA, the server certificate and the Kafka keystore; regenerated only when missing or expiring
# within a day (and then only while no secure server runs, since they read them at start).
ensure_tls_material() {
  if [[ -s $TLS_DIR/server.p12 ]] && openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.crt" >/dev/null 2>&1; then
    return 0
  fi
  local name
  for name in "${SECURE_SERVICES[@]}"; do
    if server_pid "$name" >/dev/null; then
      die "the certificates in $TLS_DIR are missing or expiring but $name still runs: run 'scripts/services.sh down' first"
    fi
  done
  log "making a local CA and a server certificate for 127.0.0.1 in $TLS_DIR"
  rm -rf -- "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local t=$TLS_DIR
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$CERT_DAYS" \
      -subj '/CN=cache-refresher local test CA' -keyout "$t/ca.key" -out "$t/ca.crt" &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=127.0.0.1' \
        -keyout "$t/server.key" -out "$t/server.csr" &&
      printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' >"$t/server.ext" &&
      openssl x509 -req -in "$t/server.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial \
        -days "$CERT_DAYS" -extfile "$t/server.ext" -out "$t/server.crt" &&
      cat "$t/server.crt" "$t/server.key" >"$t/server.pem" &&
      openssl pkcs12 -export -in "$t/server.crt" -inkey "$t/server.key" -certfile "$t/ca.crt" -name server \
        -passout "file:$(secret_file keystore)" -out "$t/server.p12"
  } >"$SECURE/openssl.log" 2>&1 || {
    cat "$SECURE/openssl.log" >&2
    die "openssl could not make the test certificates"
  }
  chmod 600 "$t"/*
  chmod 644 "$t/ca.crt"
}

prepare_secure() {
  need_cmd openssl openssl
  mkdir -p "$SECRETS_DIR"
  chmod 700 "$SECURE" "$SECRETS_DIR"
  local name missing=0
  for name in redis clickhouse kafka-admin kafka-refresher kafka-reader keystore; do
    [[ -s $(secret_file "$name") ]] || missing=1
  done
  if ((missing)); then
    # Running servers hold the old passwords; Kafka keeps its SCRAM users in its formatted storage and
    # the keystore is sealed with the old keystore password: start all of it afresh.
    for name in "${SECURE_SERVICES[@]}"; do
      if server_pid "$name" >/dev/null; then
        die "$name runs but passwords in $SECRETS_DIR are missing: run 'scripts/services.sh down' first"
      fi
    done
    rm -rf -- "$SECURE/kafka/data" "$TLS_DIR"
  fi
  for name in redis clickhouse kafka-admin kafka-refresher kafka-reader keystore; do
    ensure_secret "$name"
  done
  ensure_tls_material
}

# Fills a template's @NAME@ placeholders from NAME=value arguments into a mode-600 file.
fill_template() { # template target NAME=value...
  local template=$1 target=$2 args=() pair
  shift 2
  for pair in "$@"; do
    args+=(-e "s|@${pair%%=*}@|${pair#*=}|g")
  done
  (umask 077 && sed "${args[@]}" "$template" >"$target")
}

launch_secure_redis() {
  local d=$SECURE/redis
  mkdir -p "$d"
  check_ports_free secure_redis "$SECURE_REDIS_PORT"
  # Passwords on a command line are visible to every local user: the ACL goes in a mode-600 config file.
  (
    umask 077
    cat >"$d/redis.conf" <<EOF
bind 127.0.0.1
port 0
tls-port $SECURE_REDIS_PORT
tls-cert-file $TLS_DIR/server.crt
tls-key-file $TLS_DIR/server.key
tls-ca-cert-file $TLS_DIR/ca.crt
tls-auth-clients no
save ""
appendonly no
daemonize no
dir $d
logfile $d/redis.log
user default off
user refresher on >$(<"$(secret_file redis)") ~* &* +@all
EOF
  )
  launch secure_redis "$d" "$d/redis.out" redis-server "$d/redis.conf"
}

probe_secure_redis() {
  [[ $(REDISCLI_AUTH=$(<"$(secret_file redis)") timeout 5 redis-cli --tls --cacert "$TLS_DIR/ca.crt" \
    -h 127.0.0.1 -p "$SECURE_REDIS_PORT" --user refresher --no-auth-warning ping 2>/dev/null) == PONG ]]
}

launch_secure_clickhouse() {
  local d=$SECURE/clickhouse
  mkdir -p "$d/data"
  check_ports_free secure_clickhouse "$SECURE_CLICKHOUSE_HTTP_PORT"
  fill_template "$HELPERS/clickhouse-secure-users.xml" "$d/users.xml" \
    "REFRESHER_PASSWORD_SHA256=$(secret_sha256 clickhouse)"
  fill_template "$HELPERS/clickhouse-secure-config.xml" "$d/config.xml" "DATA_DIR=$d/data" "USERS_FILE=$d/users.xml"
  rm -rf -- "$d/data/data/system" # see launch_clickhouse
  launch secure_clickhouse "$d" "$d/clickhouse.out" "$(launcher_path)" "$CHDB_DIR/libchdb.so" \
    --path="$d/data/" --listen_host=127.0.0.1 --http_port="$SECURE_CLICKHOUSE_HTTP_PORT" \
    --log-level=error --logger.log="$d/clickhouse.log" --async_insert=0 \
    --query="SYSTEM FLUSH LOGS; SYSTEM START LISTEN HTTP; SELECT sleepEachRow(1) AS services_sh_keepalive FROM system.numbers SETTINGS max_block_size = 1 FORMAT Null"
}

# curl with the refresher's password from a config on stdin (never on the command line).
secure_curl() { # url args...
  local url=$1
  shift
  printf 'user = "refresher:%s"\n' "$(<"$(secret_file clickhouse)")" |
    curl -K - -fsS --max-time 5 "$@" "$url" 2>/dev/null
}

probe_secure_clickhouse() {
  [[ $(secure_curl "http://127.0.0.1:$SECURE_CLICKHOUSE_HTTP_PORT/" --data-binary 'SELECT 1') == 1 ]]
}

launch_secure_clickhouse_tls() {
  local d=$SECURE/clickhouse-tls
  mkdir -p "$d"
  check_ports_free secure_clickhouse_tls "$SECURE_CLICKHOUSE_HTTPS_PORT"
  launch secure_clickhouse_tls "$d" "$d/socat.out" socat -d \
    "OPENSSL-LISTEN:$SECURE_CLICKHOUSE_HTTPS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$TLS_DIR/server.pem,verify=0" \
    "TCP:127.0.0.1:$SECURE_CLICKHOUSE_HTTP_PORT"
}

probe_secure_clickhouse_tls() {
  [[ $(secure_curl "https://127.0.0.1:$SECURE_CLICKHOUSE_HTTPS_PORT/" --cacert "$TLS_DIR/ca.crt" \
    --data-binary 'SELECT 1') == 1 ]]
}

launch_secure_kafka() {
  local d=$SECURE/kafka cluster_id
  mkdir -p "$d"
  check_ports_free secure_kafka "$SECURE_KAFKA_PORT" "$SECURE_KAFKA_CONTROLLER_PORT"
  fill_template "$HELPERS/kafka-secure-server.properties" "$d/server.properties" \
    "PORT=$SECURE_KAFKA_PORT" "CONTROLLER_PORT=$SECURE_KAFKA_CONTROLLER_PORT" "DATA_DIR=$d/data" \
    "TLS_DIR=$TLS_DIR" "KEYSTORE_PASSWORD=$(<"$(secret_file keystore)")" \
    "ADMIN_PASSWORD=$(<"$(secret_file kafka-admin)")" "REFRESHER_PASSWORD=$(<"$(secret_file kafka-refresher)")"
  cp -- "$HELPERS/kafka-log4j.properties" "$d/log4j.properties"
  if [[ ! -f $d/data/meta.properties ]]; then
    rm -rf -- "$d/data"
    cluster_id=-
    while [[ $cluster_id == -* ]]; do
      cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    done
    # SCRAM credentials live in the cluster metadata; format writes them before the first start, so
    # the broker's own (admin) login works at once. The arguments name the passwords: a short-lived
    # process on a test machine, and the only way this tool takes them.
    local scram=() user mech
    for user in admin refresher reader; do
      for mech in SCRAM-SHA-512 SCRAM-SHA-256; do
        scram+=(--add-scram "$mech=[name=$user,password=$(<"$(secret_file "kafka-$user")")]")
      done
    done
    java -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" -cp "$(kafka_dir)/lib/*" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$d/server.properties" "${scram[@]}" \
      >>"$d/kafka.out" 2>&1 || start_failed secure_kafka "storage: format of $d/data failed"
  fi
  launch secure_kafka "$d" "$d/kafka.out" java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Djava.awt.headless=true -Dlog4j.configuration="file:$d/log4j.properties" -Dkafka.logs.dir="$d" \
    -cp "$(kafka_dir)/lib/*" kafka.Kafka "$d/server.properties"
}

# A metadata request over SASL_SSL as the admin user, through kafkajs (the project's own client).
KAFKA_SECURE_PROBE_JS='
const { readFileSync } = require("node:fs");
const { Kafka, logLevel } = require("kafkajs");
const [broker, ca, password] = process.argv.slice(1);
const admin = new Kafka({
  clientId: "services-sh-probe", brokers: [broker], logLevel: logLevel.NOTHING,
  ssl: { ca: [readFileSync(ca, "utf8")] },
  sasl: { mechanism: "scram-sha-512", username: "admin", password: readFileSync(password, "utf8").trim() },
  connectionTimeout: 2000, requestTimeout: 5000, retry: { retries: 0 },
}).admin();
admin.connect()
  .then(() => admin.describeCluster())
  .then((cluster) => { if (cluster.brokers.length === 0) throw new Error("no brokers"); return admin.disconnect(); })
  .then(() => process.exit(0), () => process.exit(1));
'

# The ACLs a managed cluster would give: refresher may create, describe and write topics (the DLQ topic);
# reader may describe and read topics and use consumer groups. Created as admin; creating an ACL that
# exists is a no-op, so this runs on every `up --secure`.
KAFKA_SECURE_ACLS_JS='
const { readFileSync } = require("node:fs");
const { Kafka, logLevel, AclResourceTypes: R, AclOperationTypes: O, AclPermissionTypes: P,
  ResourcePatternTypes: T } = require("kafkajs");
const [broker, ca, password] = process.argv.slice(1);
const admin = new Kafka({
  clientId: "services-sh-acls", brokers: [broker], logLevel: logLevel.NOTHING,
  ssl: { ca: [readFileSync(ca, "utf8")] },
  sasl: { mechanism: "scram-sha-512", username: "admin", password: readFileSync(password, "utf8").trim() },
}).admin();
const allow = (user, resourceType, resourceName, operation) => ({
  principal: `User:${user}`, host: "*", permissionType: P.ALLOW, operation,
  resourceType, resourceName, resourcePatternType: T.LITERAL,
});
const acl = [
  ...[O.CREATE, O.DESCRIBE, O.WRITE].map((op) => allow("refresher", R.TOPIC, "*", op)),
  ...[O.DESCRIBE, O.READ].map((op) => allow("reader", R.TOPIC, "*", op)),
  allow("reader", R.GROUP, "*", O.READ),
];
admin.connect()
  .then(() => admin.createAcls({ acl }))
  .then(() => admin.disconnect())
  .then(() => process.exit(0), (err) => { console.error(err.message); process.exit(1); });
'

grant_secure_kafka_acls() {
  (cd "$ROOT" && timeout 30 node -e "$KAFKA_SECURE_ACLS_JS" "127.0.0.1:$SECURE_KAFKA_PORT" "$TLS_DIR/ca.crt" \
    "$(secret_file kafka-admin)") >>"$SECURE/kafka/acls.out" 2>&1 ||
    die "secure_kafka: creating the ACLs failed (see $SECURE/kafka/acls.out)"
}

probe_secure_kafka() {
  (cd "$ROOT" && timeout 20 node -e "$KAFKA_SECURE_PROBE_JS" "127.0.0.1:$SECURE_KAFKA_PORT" "$TLS_DIR/ca.crt" \
    "$(secret_file kafka-admin)") >/dev/null 2>&1
}

# .services/secure/env: the sidecar's variables for the secure servers, passwords by file.
write_secure_env() {
  local tmp=$SECURE/env.tmp.$$ ca=$TLS_DIR/ca.crt
  {
    printf '# Written by scripts/services.sh up --secure: the TLS/authenticated local servers.\n'
    printf 'export REDIS_URL=rediss://refresher@127.0.0.1:%s\n' "$SECURE_REDIS_PORT"
    printf 'export REDIS_PASSWORD_FILE=%s\n' "$(secret_file redis)"
    printf 'export REDIS_TLS_CA_FILE=%s\n' "$ca"
    printf 'export CLICKHOUSE_URL=https://127.0.0.1:%s\n' "$SECURE_CLICKHOUSE_HTTPS_PORT"
    printf 'export CLICKHOUSE_USER=refresher\n'
    printf 'export CLICKHOUSE_PASSWORD_FILE=%s\n' "$(secret_file clickhouse)"
    printf 'export CLICKHOUSE_TLS_CA_FILE=%s\n' "$ca"
    printf 'export KAFKA_BROKERS=127.0.0.1:%s\n' "$SECURE_KAFKA_PORT"
    printf 'export KAFKA_SSL=true\n'
    printf 'export KAFKA_SSL_CA_FILE=%s\n' "$ca"
    printf 'export KAFKA_SASL_MECHANISM=scram-sha-512\n'
    printf 'export KAFKA_SASL_USERNAME=refresher\n'
    printf 'export KAFKA_SASL_PASSWORD_FILE=%s\n' "$(secret_file kafka-refresher)"
    printf '# A second Kafka user for reading the DLQ topic back (not a sidecar variable).\n'
    printf 'export SECURE_KAFKA_READER_USERNAME=reader\n'
    printf 'export SECURE_KAFKA_READER_PASSWORD_FILE=%s\n' "$(secret_file kafka-reader)"
  } >"$tmp"
  mv -f -- "$tmp" "$SECURE/env"
}
