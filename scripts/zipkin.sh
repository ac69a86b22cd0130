#!/usr/bin/env bash
# A Zipkin server (in-memory storage) from Maven Central's executable jar, for the tracing
# backend test: no Docker. Resolved with Maven into the same cache as the Kafka jars.
#
#   zipkin.sh fetch
#   zipkin.sh start --dir DIR --port PORT    # prints nothing; ready when it returns
#   zipkin.sh stop  --dir DIR
#
# Env: OUTBOX_RELAY_CACHE (jar cache root, default ~/.cache/outbox-relay),
#      ZIPKIN_START_TIMEOUT (s, default 120).
set -euo pipefail

readonly ZIPKIN_VERSION=3.5.1
readonly CACHE_DIR="${OUTBOX_RELAY_CACHE:-$HOME/.cache/outbox-relay}/zipkin-$ZIPKIN_VERSION"
readonly JAR="$CACHE_DIR/zipkin-server-$ZIPKIN_VERSION-exec.jar"

log() { printf 'zipkin.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '5,7p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2; }
now_ms() { date +%s%3N; }

cmd_fetch() {
  [[ -s $JAR ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  mkdir -p "$CACHE_DIR"
  # Concurrent test files may fetch at once; the second waits, then finds the jar.
  exec {lock}>"$CACHE_DIR/.lock"
  flock "$lock"
  if [[ -s $JAR ]]; then exec {lock}>&-; return 0; fi
  log "resolving io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec from Maven Central (first time only)..."
  local tmp
  tmp=$(mktemp -d "$CACHE_DIR/tmp.XXXXXX")
  # Plugin version pinned so Maven needs no plugin-prefix metadata lookup.
  if ! mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
      -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" -DoutputDirectory="$tmp" 2>&1 \
      | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    rm -rf "$tmp"
    die "mvn could not resolve the Zipkin server jar (is Maven Central reachable?)"
  fi
  [[ -s $tmp/zipkin-server-$ZIPKIN_VERSION-exec.jar ]] || { rm -rf "$tmp"; die "fetch incomplete: no jar in $tmp"; }
  mv "$tmp/zipkin-server-$ZIPKIN_VERSION-exec.jar" "$JAR"
  rm -rf "$tmp"
  exec {lock}>&-
  log "fetched $(du -h "$JAR" | cut -f1) into $JAR"
}

our_pid() {
  local pid
  [[ -f $DIR/zipkin.pid ]] || return 1
  pid=$(<"$DIR/zipkin.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-jar $JAR" || return 1
  echo "$pid"
}

cmd_start() {
  [[ -n ${DIR:-} && -n ${PORT:-} ]] || usage
  our_pid >/dev/null && die "already running in $DIR"
  cmd_fetch
  mkdir -p "$DIR"
  # Small heap and C1 only: a test backend holding a few hundred spans, started on a busy machine.
  # setsid: a Ctrl-C of the test runner's group does not leave it half-stopped; stop does.
  # shellcheck disable=SC2016 # $$ and "$@" expand in the inner shell
  QUERY_PORT=$PORT STORAGE_TYPE=mem setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$DIR/zipkin.pid" \
    java -Xms64m -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.awt.headless=true -jar "$JAR" \
    </dev/null >"$DIR/zipkin.log" 2>&1 &
  local pid t0 deadline
  for _ in {1..50}; do pid=$(our_pid) && break; sleep 0.1; done
  [[ -n ${pid:-} ]] || { tail -n 40 "$DIR/zipkin.log" >&2; die "zipkin did not start"; }
  t0=$(now_ms); deadline=$(( t0 + ${ZIPKIN_START_TIMEOUT:-120} * 1000 ))
  until curl -fsS "http://127.0.0.1:$PORT/health" 2>/dev/null | grep -q '"UP"'; do
    kill -0 "$pid" 2>/dev/null || { tail -n 40 "$DIR/zipkin.log" >&2; die "zipkin exited during startup (log: $DIR/zipkin.log)"; }
    (( $(now_ms) < deadline )) || { tail -n 40 "$DIR/zipkin.log" >&2; die "zipkin not ready after ${ZIPKIN_START_TIMEOUT:-120}s"; }
    sleep 0.3
  done
  log "ready on 127.0.0.1:$PORT (pid $pid) after $(( $(now_ms) - t0 )) ms"
}

cmd_stop() {
  [[ -n ${DIR:-} ]] || usage
  local pid
  pid=$(our_pid) || { rm -f "$DIR/zipkin.pid"; return 0; }
  kill -TERM "$pid"
  for _ in {1..100}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$DIR/zipkin.pid"
  log "stopped (pid $pid)"
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
if [[ -n $DIR ]]; then mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd -P); fi

case $CMD in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
