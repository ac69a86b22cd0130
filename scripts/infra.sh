#!/usr/bin/env bash
# Local infrastructure for outbox-relay without Docker (npm run infra:up / infra:down).
#
#   infra.sh up     # ensure PostgreSQL + Kafka; print DATABASE_URL/KAFKA_BROKERS lines last
#   infra.sh down   # stop only what `up` started
#   infra.sh env    # print the env lines of a running infra (exit 1 if not up)
#
# Usage: eval "$(scripts/infra.sh up)"   (progress goes to stderr, env lines to stdout)
#
# PostgreSQL: $DATABASE_URL if set; else a server on 127.0.0.1:5432 (database outbox_relay is
#   created); else a throwaway cluster in .infra/pg on ${PG_PORT:-55432}.
# Kafka: $KAFKA_BROKERS if set; else a broker in .infra/kafka on ${KAFKA_PORT:-9092}
#   (controller ${KAFKA_CONTROLLER_PORT:-KAFKA_PORT+1}).
# State: .infra/ (gitignored). *.started markers record what `up` started, for `down`.
set -euo pipefail

SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPTS/.." && pwd)
STATE=$ROOT/.infra
ENV_FILE=$STATE/env
readonly SCRIPTS ROOT STATE ENV_FILE
readonly DB_NAME=outbox_relay

log() { printf 'infra: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }

# pg_isready/psql: Debian's wrappers in /usr/bin, else the newest server bin dir.
pg_tool() {
  if command -v "$1" >/dev/null; then command -v "$1"; return; fi
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d && -x $d/$1 ]] || die "$1 not found; install the PostgreSQL client (apt-get install postgresql-client)"
  echo "$d/$1"
}

tcp_ok() { timeout 3 bash -c ">/dev/tcp/$1/$2" 2>/dev/null; }

# Create the database if missing. A concurrent `up` may win the race: re-check before failing.
ensure_db() { # port
  local psql exists
  psql=$(pg_tool psql)
  exists=$("$psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") \
    || die "cannot connect as postgres to 127.0.0.1:$1 (trust auth expected)"
  [[ $exists == 1 ]] && return 0
  log "creating database $DB_NAME on 127.0.0.1:$1"
  "$psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtqc "CREATE DATABASE $DB_NAME" >/dev/null 2>&1 \
    || [[ $("$psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") == 1 ]] \
    || die "could not create database $DB_NAME on 127.0.0.1:$1"
}

up_pg() {
  local t0 isready
  t0=$(now_ms)
  isready=$(pg_tool pg_isready)
  if [[ -n ${DATABASE_URL:-} ]]; then
    # Check it really answers (server, auth and database), not just that something listens.
    local err
    err=$(PGCONNECT_TIMEOUT=5 "$(pg_tool psql)" "$DATABASE_URL" -XAtqc 'SELECT 1' 2>&1 >/dev/null) \
      || die "DATABASE_URL is set but does not answer: ${err:-$("$isready" -d "$DATABASE_URL" -t 5 2>&1)}"
    PG_URL=$DATABASE_URL
    log "postgres: using DATABASE_URL from the environment ($(elapsed "$t0"))"
  elif [[ -f $STATE/pg.started ]]; then
    # Our own cluster from a previous `up`: keep using it even if 5432 has appeared since.
    local port
    port=$(<"$STATE/pg.started")
    "$SCRIPTS/pg.sh" start --dir "$STATE/pg" --port "$port"
    ensure_db "$port"
    PG_URL="postgres://postgres@127.0.0.1:$port/$DB_NAME"
    log "postgres: throwaway cluster .infra/pg on $port ($(elapsed "$t0"))"
  elif "$isready" -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -t 2; then
    ensure_db 5432
    PG_URL="postgres://postgres@127.0.0.1:5432/$DB_NAME"
    log "postgres: using the server on 127.0.0.1:5432 ($(elapsed "$t0"))"
  else
    local port=${PG_PORT:-55432}
    "$SCRIPTS/pg.sh" start --dir "$STATE/pg" --port "$port"
    echo "$port" >"$STATE/pg.started"
    ensure_db "$port"
    PG_URL="postgres://postgres@127.0.0.1:$port/$DB_NAME"
    log "postgres: started throwaway cluster .infra/pg on $port ($(elapsed "$t0"))"
  fi
}

up_kafka() {
  local t0
  t0=$(now_ms)
  if [[ -n ${KAFKA_BROKERS:-} ]]; then
    local first host port
    first=${KAFKA_BROKERS%%,*}; first=${first// /}
    host=${first%:*}; port=${first##*:}
    [[ -n $host && $port =~ ^[0-9]+$ ]] || die "KAFKA_BROKERS must be host:port[,host:port...], got '$KAFKA_BROKERS'"
    tcp_ok "$host" "$port" || die "KAFKA_BROKERS is set but $host:$port does not accept TCP connections"
    BROKERS=$KAFKA_BROKERS
    log "kafka: using KAFKA_BROKERS from the environment ($(elapsed "$t0"))"
  else
    local port=${KAFKA_PORT:-9092}
    if [[ -z ${KAFKA_PORT:-} ]]; then
      if [[ -f $STATE/kafka.started ]] && "$SCRIPTS/kafka.sh" status --dir "$STATE/kafka" >/dev/null 2>&1; then
        port=$(<"$STATE/kafka.started")   # ours, from an earlier `up`
      else
        # 9092 (or its controller port) taken by someone else's server: use the next free pair.
        while tcp_ok 127.0.0.1 "$port" || tcp_ok 127.0.0.1 "$((port + 1))"; do port=$((port + 100)); done
      fi
    fi
    local cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
    # A no-op ("already running") when a previous `up` started it on the same port.
    "$SCRIPTS/kafka.sh" start --dir "$STATE/kafka" --port "$port" --controller-port "$cport"
    echo "$port" >"$STATE/kafka.started"
    BROKERS="127.0.0.1:$port"
    log "kafka: broker .infra/kafka on $port ($(elapsed "$t0"))"
  fi
}

env_lines() {
  printf 'export DATABASE_URL=%q\n' "$1"
  printf 'export KAFKA_BROKERS=%q\n' "$2"
}

cmd_up() {
  local t0
  t0=$(now_ms)
  up_pg
  up_kafka
  env_lines "$PG_URL" "$BROKERS" >"$ENV_FILE.tmp"
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
  log "up in $(elapsed "$t0"); env in .infra/env"
  cat "$ENV_FILE"
}

cmd_down() {
  local t0
  t0=$(now_ms)
  rm -f "$ENV_FILE"
  if [[ -f $STATE/kafka.started ]]; then
    "$SCRIPTS/kafka.sh" stop --dir "$STATE/kafka"
    rm -f "$STATE/kafka.started"
  fi
  if [[ -f $STATE/pg.started ]]; then
    "$SCRIPTS/pg.sh" stop --dir "$STATE/pg"
    rm -f "$STATE/pg.started"
  fi
  # Data dirs stay, so the next `up` is fast; rm -rf .infra for a clean slate.
  log "down in $(elapsed "$t0")"
}

cmd_env() {
  [[ -f $ENV_FILE ]] || { log "not up (no .infra/env); run: scripts/infra.sh up"; return 1; }
  local url brokers first
  # The file was written by env_lines (printf %q), so sourcing it in a subshell is safe.
  # shellcheck disable=SC1090
  url=$(source "$ENV_FILE" && echo "$DATABASE_URL")
  # shellcheck disable=SC1090
  brokers=$(source "$ENV_FILE" && echo "$KAFKA_BROKERS")
  "$(pg_tool pg_isready)" -q -d "$url" -t 2 || { log "postgres at $url does not answer"; return 1; }
  first=${brokers%%,*}; first=${first// /}
  tcp_ok "${first%:*}" "${first##*:}" || { log "kafka at $first does not answer"; return 1; }
  cat "$ENV_FILE"
}

[[ $# -eq 1 ]] || { sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2; }
mkdir -p "$STATE"
# One infra.sh at a time (parallel `npm test` workers calling up).
exec {lock}>"$STATE/.lock"
flock "$lock"
case $1 in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2 ;;
esac
