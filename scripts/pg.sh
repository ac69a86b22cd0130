#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests and the local demo (no Docker).
#
#   pg.sh start  --dir DIR --port PORT
#   pg.sh stop   --dir DIR            # pg_ctl stop -m fast
#   pg.sh kill   --dir DIR            # SIGKILL the server, for fault tests; `start` recovers
#   pg.sh status --dir DIR            # exit 0 if running and accepting connections
#
# Layout: DIR/data (PGDATA), DIR/postgres.log, unix socket in DIR. Listens on 127.0.0.1 only,
# trust auth, superuser `postgres`. When run as root the cluster belongs to the `postgres` OS user
# (PostgreSQL refuses to run as root). Env: PG_BIN (bin dir override), PG_START_TIMEOUT (s, 60).
set -euo pipefail

# Shell snippet: close every fd above 2 (run by a helper shell right before exec'ing a daemon).
# No redirection on the loop: bash would park the real stderr on a high fd while the loop runs,
# the loop would close that fd too, and the daemon's stderr would stay /dev/null. The -L test
# skips the fd that listing /proc/$$/fd used and has closed again.
# shellcheck disable=SC2016 # expands in the helper shell
readonly CLOSE_FDS='for f in /proc/$$/fd/*; do f=${f##*/}; if [ "$f" -gt 2 ] && [ -L "/proc/$$/fd/$f" ]; then eval "exec $f>&-"; fi; done'

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '4,7p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2; }
now_ms() { date +%s%3N; }

find_bin() {
  if [[ -n ${PG_BIN:-} ]]; then
    [[ -x $PG_BIN/pg_ctl ]] || die "PG_BIN=$PG_BIN has no pg_ctl"
    echo "$PG_BIN"; return
  fi
  # Newest installed major version (Debian layout); version-sort so 9.6 < 10 < 15.
  local d
  d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d && -x $d/pg_ctl && -x $d/initdb ]] \
    || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; install PostgreSQL (e.g. apt-get install postgresql) or set PG_BIN"
  echo "$d"
}

# Server-side commands run as the cluster owner. As root that is `postgres`; otherwise ourselves.
as_owner() {
  if (( EUID == 0 )); then runuser -u postgres -- "$@"; else "$@"; fi
}

# postmaster.pid: line 1 pid, line 4 port. Present but stale after a kill -9.
pm_pid() { sed -n 1p "$DATA/postmaster.pid" 2>/dev/null; }
pm_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }
# Not `pg_ctl status`: it uses kill -0, which also succeeds on an unreaped zombie postmaster
# right after a kill -9 (init may reap late), and would make `start` wait for a dead server.
pid_alive() {
  kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
running() {
  local pid
  pid=$(pm_pid)
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */postgres ]]
}
# -U postgres: without it pg_isready uses the OS user name and the server logs a FATAL per probe.
ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 1; }

# Every server process (postmaster, backends, aux) is the postgres binary running with DATA as
# its working directory; PostgreSQL children each get their own process group, so a group kill
# would miss them.
cluster_pids() {
  local p
  for p in /proc/[0-9]*; do
    [[ $(readlink "$p/cwd" 2>/dev/null) == "$DATA" && $(readlink "$p/exe" 2>/dev/null) == */postgres ]] \
      && echo "${p#/proc/}"
  done
  return 0
}

# Orphaned backends of a killed server keep the shared memory segment attached, and a new
# postmaster refuses to start while they exist: wait until they are gone.
wait_cluster_gone() {
  local deadline=$(( $(now_ms) + 15000 ))
  while [[ -n $(cluster_pids) ]]; do
    (( $(now_ms) < deadline )) || return 1
    sleep 0.1
  done
}

init_cluster() {
  log "initdb in $DATA (PostgreSQL $("$BIN/pg_ctl" --version | awk '{print $3}'))"
  # --no-sync: throwaway data, fsync of the fresh cluster is wasted time.
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 \
    || { tail -n 20 "$DIR/initdb.log" >&2; die "initdb failed (log: $DIR/initdb.log)"; }
  # The port is passed at start time (-p), so one cluster can be reused on another port.
  cat >>"$DATA/postgresql.conf" <<EOF

# --- scripts/pg.sh (throwaway cluster) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 200
# Durability against OS crashes is irrelevant here; process kills are still crash-safe (WAL
# reaches the kernel on commit), which is what fault tests exercise.
fsync = off
full_page_writes = off
logging_collector = off
EOF
}

cmd_start() {
  [[ -n $DIR && -n $PORT ]] || usage
  # The socket path DIR/.s.PGSQL.PORT must fit in sun_path (107 bytes).
  (( ${#DIR} + 18 <= 107 )) || die "DIR path too long for a unix socket: $DIR"
  if running; then
    local rport
    rport=$(pm_port)
    [[ $rport == "$PORT" ]] || die "already running in $DIR on port $rport; stop it first to change port"
    if ready "$PORT"; then log "already running (127.0.0.1:$PORT, $DIR)"; return 0; fi
    log "postmaster alive but not ready yet; waiting"
  else
    if [[ ! -f $DATA/PG_VERSION ]]; then
      init_cluster
    elif [[ -f $DATA/postmaster.pid ]]; then
      # Left by a kill -9: the postmaster replaces the stale lock itself, but orphans must be gone.
      wait_cluster_gone || die "processes of a killed server are still alive: $(cluster_pids | xargs)"
      # PostgreSQL's own stale-lock check is kill(pid, 0), which an unreaped zombie postmaster
      # passes ("lock file already exists"). Let init reap it (here ~2 s); if it never does, the
      # server is provably dead, so drop the lock ourselves.
      local old deadline=$(( $(now_ms) + 10000 ))
      old=$(pm_pid)
      while [[ $old =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.1; done
      if [[ $old =~ ^[0-9]+$ ]] && kill -0 "$old" 2>/dev/null; then
        log "postmaster $old is dead but unreaped; removing its stale postmaster.pid"
        rm -f "$DATA/postmaster.pid"
      fi
    fi
    ready "$PORT" && die "port $PORT on 127.0.0.1 is already used by another PostgreSQL server"
    log "starting on 127.0.0.1:$PORT ($DIR)"
    # -W: don't let pg_ctl wait; readiness is checked below with pg_isready. Inherited fds > 2
    # are closed first: a postmaster holding e.g. infra.sh's flock would block later calls.
    as_owner bash -c "$CLOSE_FDS"'; exec "$@"' _ \
      "$BIN/pg_ctl" start -W -D "$DATA" -l "$DIR/postgres.log" -o "-p $PORT" >/dev/null
  fi
  local t0 deadline timeout=${PG_START_TIMEOUT:-60}
  t0=$(now_ms); deadline=$(( t0 + timeout * 1000 ))
  until ready "$PORT"; do
    # Give the postmaster 3 s to write its pid file before treating "not running" as a failure.
    if (( $(now_ms) - t0 > 3000 )) && ! running; then
      tail -n 30 "$DIR/postgres.log" >&2
      die "server exited during startup (log: $DIR/postgres.log)"
    fi
    if (( $(now_ms) > deadline )); then
      tail -n 30 "$DIR/postgres.log" >&2
      die "server not ready after ${timeout}s (log: $DIR/postgres.log)"
    fi
    sleep 0.1
  done
  log "ready on 127.0.0.1:$PORT after $(( $(now_ms) - t0 )) ms"
}

cmd_stop() {
  [[ -n $DIR ]] || usage
  if ! running; then log "not running ($DIR)"; return 0; fi
  as_owner "$BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null
  log "stopped ($DIR)"
}

cmd_kill() {
  [[ -n $DIR ]] || usage
  if ! running; then log "not running ($DIR)"; return 0; fi
  local pid others
  pid=$(pm_pid)
  # Postmaster first, so it cannot fork replacements; then every other process of the cluster
  # (a real crash takes them all; orphans would also block the restart until they notice).
  kill -KILL "$pid"
  others=$(cluster_pids)
  # shellcheck disable=SC2086 # word splitting of the pid list is intended
  [[ -z $others ]] || kill -KILL $others 2>/dev/null || true
  wait_cluster_gone || die "server processes survived SIGKILL: $(cluster_pids | xargs)"
  log "killed -9 (postmaster pid $pid)"
}

cmd_status() {
  [[ -n $DIR ]] || usage
  local port
  running || { echo "stopped"; return 1; }
  port=$(pm_port)
  if ready "$port"; then echo "running (127.0.0.1:$port, pid $(pm_pid))"; else echo "starting (port $port)"; return 1; fi
}

[[ $# -ge 1 ]] || usage
CMD=$1; shift
DIR="" PORT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
[[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || die "not a port number: $PORT"
[[ -n $DIR ]] || usage
BIN=$(find_bin)
if [[ $CMD == start ]]; then
  mkdir -p "$DIR"
  # The cluster owner must be able to write DIR (and reach it through its parents).
  if (( EUID == 0 )); then chown postgres:postgres "$DIR"; chmod 700 "$DIR"; fi
  as_owner test -w "$DIR" || die "$DIR is not writable by the cluster owner (a parent directory may be closed, e.g. /root)"
fi
[[ -d $DIR ]] && DIR=$(cd "$DIR" && pwd -P)
DATA=$DIR/data

case $CMD in
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  status) cmd_status ;;
  *) usage ;;
esac
