# Shared settings and helpers of the local stack scripts (sourced, not run).
# Everything listens on 127.0.0.1 only. Data and logs live under $STACK_STATE (git-ignored);
# downloads are cached under $STACK_CACHE so a second `make up` on the machine takes seconds.

STACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_STATE=${ESUPDATER_STACK_STATE:-$STACK_ROOT/.stack}
# Outside any home directory: the unprivileged Elasticsearch user must be able to read it.
STACK_CACHE=${ESUPDATER_STACK_CACHE:-/var/cache/esupdater-stack}
STACK_LOGS=$STACK_STATE/logs

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$STACK_ROOT/stack/pom.xml")
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
ES_VERSION=8.19.7
ES_PORT=9200
ES_TRANSPORT_PORT=9300
# Elasticsearch refuses to run as root; when we are root it runs as this system user.
ES_USER=${ESUPDATER_ES_USER:-esupdater-es}
MARIADB_PORT=3306
# The database Canal watches, and the accounts (loopback-only test infrastructure, so the
# passwords are plain here; the integration tests use the same defaults).
MARIADB_DATABASE=shop
MARIADB_TEST_USER=esupdater
MARIADB_TEST_PASSWORD=esupdater
CANAL_DB_USER=canal
CANAL_DB_PASSWORD=canal

if [ -z "${JAVA_HOME:-}" ]; then
  for candidate in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
    [ -x "$candidate/bin/java" ] && JAVA_HOME=$candidate && break
  done
  [ -n "${JAVA_HOME:-}" ] || JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
fi
export JAVA_HOME

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# pid_alive FILE: true when FILE names a running process.
pid_alive() {
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# already_up NAME PIDFILE WHERE [PORT]: true (saying so) when our server of that pidfile runs;
# dies when another process holds PORT, which the server could not bind.
already_up() {
  local name=$1 file=$2 where=$3 port=${4:-}
  if pid_alive "$file"; then
    log "$name already running (pid $(cat "$file"))${where:+ on $where}"
    return 0
  fi
  if [ -n "$port" ] && port_open "$port"; then
    die "127.0.0.1:$port is taken by another process; stop it first"
  fi
  return 1
}

# stop_pidfile NAME FILE: TERM, wait up to 60 s, then KILL; removes FILE.
stop_pidfile() {
  local name=$1 file=$2 pid i
  if pid_alive "$file"; then
    pid=$(cat "$file")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 60 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second.
wait_until() {
  local seconds=$1 what=$2 i
  shift 2
  for i in $(seq 1 $((seconds * 2))); do
    "$@" && return 0
    sleep 0.5
  done
  return 1
}
