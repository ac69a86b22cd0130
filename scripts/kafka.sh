#!/usr/bin/env bash
# Single-node KRaft Apache Kafka broker (broker+controller in one JVM) built from Maven Central
# jars: no Docker, no tarball. Used by scripts/infra.sh and by fault tests (kill -9 + start again).
#
#   kafka.sh fetch
#   kafka.sh start  --dir DIR --port PORT [--controller-port CPORT] [--advertised-port APORT]
#   kafka.sh stop   --dir DIR
#   kafka.sh kill   --dir DIR      # SIGKILL, for fault tests; `start` on the same DIR recovers
#   kafka.sh status --dir DIR      # exit 0 if running and accepting connections
#
# Env: OUTBOX_RELAY_CACHE (jar cache root, default ~/.cache/outbox-relay),
#      KAFKA_START_TIMEOUT (s, default 120), KAFKA_STOP_TIMEOUT (s, default 30),
#      KAFKA_JVM_OPTS (replaces the default heap/GC flags below).
# --advertised-port: the port clients are told to connect to (metadata), default PORT; e.g. a
#   test's TCP proxy in front of the broker, so that every client connection goes through it.
set -euo pipefail

readonly KAFKA_VERSION=3.9.2
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly POM="$SCRIPT_DIR/kafka/pom.xml"
readonly CACHE_DIR="${OUTBOX_RELAY_CACHE:-$HOME/.cache/outbox-relay}/kafka-$KAFKA_VERSION"
readonly LIBS="$CACHE_DIR/libs"
# Written only after a complete fetch; holds the POM hash so editing the POM triggers a re-fetch.
readonly MARKER="$CACHE_DIR/.fetched"

# Shell snippet: close every fd above 2 (run by a helper shell right before exec'ing a daemon).
# No redirection on the loop: bash would park the real stderr on a high fd while the loop runs,
# the loop would close that fd too, and the daemon's stderr would stay /dev/null. The -L test
# skips the fd that listing /proc/$$/fd used and has closed again.
# shellcheck disable=SC2016 # expands in the helper shell
readonly CLOSE_FDS='for f in /proc/$$/fd/*; do f=${f##*/}; if [ "$f" -gt 2 ] && [ -L "/proc/$$/fd/$f" ]; then eval "exec $f>&-"; fi; done'

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '5,9p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2; }
now_ms() { date +%s%3N; }

# TCP probe without extra tools; `timeout` guards against a connect that never completes.
port_open() { timeout 2 bash -c ">/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# kill -0 also succeeds on zombies (a subreaper may reap late), so a zombie counts as dead, but
# only once no thread is left: a JVM's main thread turns Z while other threads still hold its
# sockets open.
pid_alive() {
  local state tasks
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $state != Z ]] && return 0
  tasks=$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  (( tasks > 1 ))
}

# After the process is gone the kernel may still need a moment to release the listeners.
wait_ports_closed() { # timeout_s port...
  local p deadline=$(( $(now_ms) + $1 * 1000 ))
  shift
  for p in "$@"; do
    [[ -n $p ]] || continue
    while port_open "$p"; do
      (( $(now_ms) < deadline )) || return 1
      sleep 0.1
    done
  done
}

# ---------------------------------------------------------------- fetch
pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }
fetched() { [[ -f $MARKER && $(cat "$MARKER") == "$(pom_hash)" ]]; }

cmd_fetch() {
  fetched && return 0
  command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
  command -v java >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
  mkdir -p "$CACHE_DIR"
  # Serialise concurrent fetches (parallel test workers); re-check once we hold the lock.
  exec {lock}>"$CACHE_DIR/.lock"
  flock "$lock"
  if fetched; then exec {lock}>&-; return 0; fi
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (first time only)..."
  local t0 tmp
  t0=$(now_ms)
  tmp=$(mktemp -d "$CACHE_DIR/libs.tmp.XXXXXX")
  # Plugin version pinned so Maven needs no plugin-prefix metadata lookup.
  # includeScope=runtime = compile + runtime: the broker's `implementation` deps are POM runtime.
  if ! mvn -B -q -f "$POM" \
      org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
      -Dkafka.version="$KAFKA_VERSION" -DincludeScope=runtime -Dmdep.prependGroupId=true \
      -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then # strip jansi resets
    rm -rf "$tmp"
    die "mvn could not resolve the Kafka jars (is Maven Central reachable?)"
  fi
  [[ -f $tmp/org.apache.kafka.kafka_2.13-$KAFKA_VERSION.jar && -f $tmp/ch.qos.reload4j.reload4j-1.2.25.jar ]] \
    || { rm -rf "$tmp"; die "fetch incomplete: broker or reload4j jar missing in $tmp"; }
  chmod 755 "$tmp" # mktemp -d makes it 0700
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  pom_hash >"$MARKER"
  exec {lock}>&-
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$LIBS" | cut -f1)) in $(( $(now_ms) - t0 )) ms"
}

# ---------------------------------------------------------------- pid helpers
# The pid file is trusted only if that pid is still *our* broker (guards against pid reuse).
our_pid() {
  local pid
  [[ -f $DIR/kafka.pid ]] || return 1
  pid=$(<"$DIR/kafka.pid")
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $DIR/server.properties" || return 1
  echo "$pid"
}

recorded_port() { cat "$DIR/kafka.port" 2>/dev/null || true; }

wait_gone() { # pid timeout_s -> 0 if gone
  local deadline=$(( $(now_ms) + $2 * 1000 ))
  while pid_alive "$1"; do
    (( $(now_ms) < deadline )) || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------- config
write_config() {
  # Rewritten on every start so the file always matches the requested ports and this script.
  cat >"$DIR/server.properties" <<EOF
# Generated by scripts/kafka.sh on every start; edits are overwritten.
process.roles=broker,controller
node.id=1
# Static quorum: works unchanged across restarts and needs no format flag.
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:${APORT:-$PORT},CONTROLLER://127.0.0.1:$CPORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
# Single node: internal topics default to RF 3 / min.isr 2, which would break groups and transactions.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Test speed-ups: 1 partition internal topics, no 3 s wait before the first group rebalance.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
# Restart after kill -9: the new process cannot register until the controller expires the dead
# incarnation's session (DUPLICATE_BROKER_REGISTRATION retries), default 9 s -> ~11.5 s restarts.
# A 3 s session (6 missed 500 ms heartbeats) keeps fault-test restarts short.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
# Small machine (2 cores).
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
# Default 128 MiB is allocated on the heap by the log cleaner; 16 MiB lets a 512 MiB heap work.
log.cleaner.dedupe.buffer.size=16777216
EOF
  # Console only: the JVM's stdout is redirected to DIR/kafka.log. INFO is needed for the
  # "Kafka Server started" readiness line.
  cat >"$DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
EOF
}

cluster_id() {
  # Generated once per DIR and kept, so a restart reuses the formatted storage.
  # Kafka's format: 16 random bytes, unpadded base64url, must not start with '-' (CLI flag).
  if [[ ! -s $DIR/cluster.id ]]; then
    local id
    while id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); [[ $id == -* ]]; do :; done
    echo "$id" >"$DIR/cluster.id"
  fi
  cat "$DIR/cluster.id"
}

# ---------------------------------------------------------------- start
cmd_start() {
  [[ -n ${DIR:-} && -n ${PORT:-} ]] || usage
  CPORT=${CPORT:-$((PORT + 1))}
  local pid rport
  if pid=$(our_pid); then
    rport=$(recorded_port)
    [[ $rport == "$PORT" ]] || die "already running in $DIR on port ${rport:-?} (pid $pid); stop it first to change port"
    if port_open "$PORT"; then
      log "already running (pid $pid, 127.0.0.1:$PORT)"
      return 0
    fi
    # Alive but not listening yet: a concurrent start is in progress; wait for it below.
    log "pid $pid is alive but port $PORT not open yet; waiting for it"
  else
    # A stale pid file means the broker was killed outside this script (e.g. a test's
    # process.kill): its sockets may take a moment to close. Otherwise a busy port is foreign.
    local wait_s=0
    if [[ -f $DIR/kafka.pid ]]; then wait_s=10; rm -f "$DIR/kafka.pid"; fi
    wait_ports_closed "$wait_s" "$PORT" "$CPORT" \
      || die "port $PORT or $CPORT on 127.0.0.1 is in use by another process (not the broker in $DIR)"
    cmd_fetch
    mkdir -p "$DIR/data"
    write_config
    echo "$PORT" >"$DIR/kafka.port"
    if [[ ! -f $DIR/data/meta.properties ]]; then
      log "formatting storage in $DIR/data"
      java -Xmx256m -Dlog4j.configuration="file:$DIR/log4j.properties" -cp "$LIBS/*" \
        kafka.tools.StorageTool format -t "$(cluster_id)" -c "$DIR/server.properties" --ignore-formatted \
        >>"$DIR/format.log" 2>&1 || { tail -n 30 "$DIR/format.log" >&2; die "storage format failed"; }
    fi
    # Keep the previous run's log (e.g. the one that was kill -9'd) for post-mortems; the
    # readiness grep must only see this run's lines.
    [[ -f $DIR/kafka.log ]] && mv -f "$DIR/kafka.log" "$DIR/kafka.log.prev"
    # Heap: 256-512 MiB is ample for a test broker (dedupe buffer reduced above).
    # GC: G1 with Kafka's own production flags, so latency/benchmark numbers resemble a real
    # broker; no -XX:TieredStopAtLevel=1 for the same reason. Override with KAFKA_JVM_OPTS.
    local -a jvm
    read -r -a jvm <<<"${KAFKA_JVM_OPTS:--Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}"
    jvm+=(-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "-Dlog4j.configuration=file:$DIR/log4j.properties")
    # setsid: own session, so Ctrl-C or a kill of the caller's process group (npm, test runner)
    # does not take the broker down. The inner shell closes inherited fds > 2 (e.g. infra.sh's
    # flock: a daemon holding it would block every later `infra.sh` call), writes its own pid,
    # then execs java (same pid).
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT (controller $CPORT), dir $DIR"
    # shellcheck disable=SC2016 # $$ and "$@" expand in the inner shell
    setsid bash -c "$CLOSE_FDS"'; echo $$ >"$1"; shift; exec "$@"' _ "$DIR/kafka.pid" \
      java "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$DIR/server.properties" \
      </dev/null >>"$DIR/kafka.log" 2>&1 &
    for _ in {1..50}; do pid=$(our_pid) && break; sleep 0.1; done
    [[ -n ${pid:-} ]] || { tail -n 40 "$DIR/kafka.log" >&2 2>/dev/null; die "broker process did not start"; }
  fi
  wait_ready "$pid"
}

wait_ready() {
  local pid=$1 t0 deadline timeout=${KAFKA_START_TIMEOUT:-120}
  t0=$(now_ms); deadline=$(( t0 + timeout * 1000 ))
  # Ready = the broker logged its started line (KRaft: after it is unfenced) AND the port accepts.
  until grep -q 'Kafka Server started' "$DIR/kafka.log" 2>/dev/null && port_open "$PORT"; do
    if ! pid_alive "$pid"; then
      tail -n 40 "$DIR/kafka.log" >&2
      rm -f "$DIR/kafka.pid"
      die "broker exited during startup (log: $DIR/kafka.log)"
    fi
    if (( $(now_ms) > deadline )); then
      tail -n 40 "$DIR/kafka.log" >&2
      die "broker not ready after ${timeout}s (pid $pid still running; log: $DIR/kafka.log)"
    fi
    sleep 0.2
  done
  log "ready on 127.0.0.1:$PORT (pid $pid) after $(( $(now_ms) - t0 )) ms"
}

# ---------------------------------------------------------------- stop / kill / status
cmd_stop() {
  [[ -n ${DIR:-} ]] || usage
  local pid
  if ! pid=$(our_pid); then
    rm -f "$DIR/kafka.pid"
    log "not running ($DIR)"
    return 0
  fi
  local timeout=${KAFKA_STOP_TIMEOUT:-30}
  kill -TERM "$pid"
  if ! wait_gone "$pid" "$timeout"; then
    log "pid $pid still alive after ${timeout}s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
  fi
  rm -f "$DIR/kafka.pid"
  wait_ports_closed 10 "$(recorded_port)" || log "warning: port still open after stop"
  log "stopped (pid $pid)"
}

cmd_kill() {
  [[ -n ${DIR:-} ]] || usage
  local pid
  if ! pid=$(our_pid); then
    log "not running ($DIR)"
    return 0
  fi
  kill -KILL "$pid"
  wait_gone "$pid" 10 || die "pid $pid survived SIGKILL"
  # Remove the pid file so nothing mistakes a reused pid for the broker; data stays for recovery.
  rm -f "$DIR/kafka.pid"
  wait_ports_closed 10 "$(recorded_port)" || log "warning: port still open after kill"
  log "killed -9 (pid $pid)"
}

cmd_status() {
  [[ -n ${DIR:-} ]] || usage
  local pid port
  pid=$(our_pid) || { echo "stopped"; return 1; }
  port=$(recorded_port)
  if [[ -n $port ]] && port_open "$port"; then
    echo "running (pid $pid, 127.0.0.1:$port)"
  else
    echo "starting (pid $pid, port ${port:-?} not open yet)"
    return 1
  fi
}

# ---------------------------------------------------------------- main
[[ $# -ge 1 ]] || usage
CMD=$1; shift
DIR="" PORT="" CPORT="" APORT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
    --port) PORT=${2:?--port needs a value}; shift 2 ;;
    --controller-port) CPORT=${2:?--controller-port needs a value}; shift 2 ;;
    --advertised-port) APORT=${2:?--advertised-port needs a value}; shift 2 ;;
    *) log "unknown argument: $1"; usage ;;
  esac
done
for v in "$PORT" "$CPORT" "$APORT"; do [[ -z $v || $v =~ ^[0-9]+$ ]] || die "not a port number: $v"; done
if [[ -n $DIR ]]; then
  # Absolute path: it goes into server.properties and is matched against the JVM's cmdline.
  if [[ $CMD == start && -n $PORT ]]; then mkdir -p "$DIR"; fi
  [[ -d $DIR ]] && DIR=$(cd "$DIR" && pwd -P)
fi

case $CMD in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill ;;
  status) cmd_status ;;
  *) usage ;;
esac
