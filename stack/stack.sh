#!/usr/bin/env bash
# The local stack: `stack/stack.sh up|down|status`, or `start|stop kafka|elasticsearch` for
# one server (fault tests). Idempotent; loopback only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
# shellcheck source=kafka.sh
. "$here/kafka.sh"
# shellcheck source=elasticsearch.sh
. "$here/elasticsearch.sh"

for tool in mvn curl unzip; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install maven curl unzip)"
done
[ -x "$JAVA_HOME/bin/java" ] || die "no JDK 17 found; set JAVA_HOME"

case "${1:-}" in
  up)
    # Start both, then wait for both: their start-up overlaps.
    kafka_up
    es_up
    kafka_wait
    es_wait
    log "logs: $STACK_LOGS"
    ;;
  down)
    kafka_down
    es_down
    ;;
  start | stop)
    # One server at a time, for fault tests: `stack/stack.sh stop elasticsearch`.
    case "${2:-}" in
      kafka) if [ "$1" = start ]; then kafka_up; kafka_wait; else kafka_down; fi ;;
      elasticsearch) if [ "$1" = start ]; then es_up; es_wait; else es_down; fi ;;
      *) die "usage: $0 $1 kafka|elasticsearch" ;;
    esac
    ;;
  status)
    if kafka_healthy && pid_alive "$KAFKA_PID"; then echo "kafka: up 127.0.0.1:$KAFKA_PORT"; else echo "kafka: down"; fi
    if es_healthy; then echo "elasticsearch: up $ES_URL"; else echo "elasticsearch: down"; fi
    ;;
  *)
    echo "usage: $0 up|down|status|start SERVER|stop SERVER" >&2
    exit 2
    ;;
esac
