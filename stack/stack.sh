#!/usr/bin/env bash
# The local stack: `stack/stack.sh up|down|status`, or `start|stop SERVER` for one server
# (kafka, elasticsearch, mariadb, canal: fault tests). Idempotent; loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
# shellcheck source=kafka.sh
. "$here/kafka.sh"
# shellcheck source=elasticsearch.sh
. "$here/elasticsearch.sh"
# shellcheck source=mariadb.sh
. "$here/mariadb.sh"
# shellcheck source=canal.sh
. "$here/canal.sh"

for tool in mvn curl unzip; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install maven curl unzip)"
done
[ -x "$JAVA_HOME/bin/java" ] || die "no JDK 17 found; set JAVA_HOME"

case "${1:-}" in
  up)
    # Start the servers, then wait for them: their start-up overlaps. Canal needs both
    # MariaDB and Kafka healthy (and its topics created) before it starts.
    kafka_up
    es_up
    mariadb_up
    kafka_wait
    mariadb_wait
    canal_up
    es_wait
    canal_wait
    log "logs: $STACK_LOGS"
    ;;
  down)
    # Canal first: it holds connections to MariaDB and Kafka.
    canal_down
    mariadb_down
    kafka_down
    es_down
    ;;
  start | stop)
    # One server at a time, for fault tests: `stack/stack.sh stop elasticsearch`.
    case "${2:-}" in
      kafka) if [ "$1" = start ]; then kafka_up; kafka_wait; else kafka_down; fi ;;
      elasticsearch) if [ "$1" = start ]; then es_up; es_wait; else es_down; fi ;;
      mariadb) if [ "$1" = start ]; then mariadb_up; mariadb_wait; else mariadb_down; fi ;;
      canal) if [ "$1" = start ]; then canal_up; canal_wait; else canal_down; fi ;;
      *) die "usage: $0 $1 kafka|elasticsearch|mariadb|canal" ;;
    esac
    ;;
  status)
    if kafka_healthy && pid_alive "$KAFKA_PID"; then echo "kafka: up 127.0.0.1:$KAFKA_PORT"; else echo "kafka: down"; fi
    if es_healthy; then echo "elasticsearch: up $ES_URL"; else echo "elasticsearch: down"; fi
    if mariadb_healthy && pid_alive "$MARIADB_PID"; then echo "mariadb: up 127.0.0.1:$MARIADB_PORT"; else echo "mariadb: down"; fi
    if canal_healthy; then echo "canal: up ($(canal_describe))"; else echo "canal: down"; fi
    ;;
  *)
    echo "usage: $0 up|down|status|start SERVER|stop SERVER" >&2
    exit 2
    ;;
esac
