# Apache Kafka, KRaft, one combined broker+controller on 127.0.0.1 (sourced by stack.sh).

KAFKA_HOME=$STACK_CACHE/kafka-$KAFKA_VERSION
KAFKA_STATE=$STACK_STATE/kafka
KAFKA_PID=$KAFKA_STATE/kafka.pid

kafka_fetch() {
  [ -f "$KAFKA_HOME/.complete" ] && return 0
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central (once per machine)"
  rm -rf "$KAFKA_HOME" && mkdir -p "$KAFKA_HOME/libs"
  mvn -q -B -f "$STACK_ROOT/stack/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs" >&2 \
    || die "could not fetch the Kafka jars (see the Maven output above)"
  touch "$KAFKA_HOME/.complete"
}

kafka_configure() {
  mkdir -p "$KAFKA_STATE/data" "$STACK_LOGS"
  cat > "$KAFKA_STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_STATE/data
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
PROPS
  cat > "$KAFKA_STATE/log4j2.properties" <<PROPS
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $STACK_LOGS/kafka.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.server.name = kafka.server.KafkaServer
logger.server.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
PROPS
}

kafka_java() {
  "$JAVA_HOME/bin/java" -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}
# The broker runs detached (own session), so it outlives `make up` and a later Ctrl-C.
kafka_start_detached() {
  setsid nohup "$JAVA_HOME/bin/java" -Xms256m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_STATE/server.properties" \
    > "$STACK_LOGS/kafka.out" 2>&1 < /dev/null &
  echo $! > "$KAFKA_PID"
}

kafka_healthy() {
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started\|BrokerServer.*started\|Transition from STARTING to STARTED" "$STACK_LOGS/kafka.log" 2>/dev/null
}

kafka_up() {
  already_up Kafka "$KAFKA_PID" "127.0.0.1:$KAFKA_PORT" "$KAFKA_PORT" && return 0
  kafka_fetch
  kafka_configure
  if [ ! -f "$KAFKA_STATE/data/meta.properties" ]; then
    log "formatting Kafka storage"
    kafka_java kafka.tools.StorageTool format --ignore-formatted \
      --cluster-id "$(kafka_java kafka.tools.StorageTool random-uuid)" \
      --config "$KAFKA_STATE/server.properties" >> "$STACK_LOGS/kafka-format.log" 2>&1 \
      || die "Kafka storage format failed: see $STACK_LOGS/kafka-format.log"
  fi
  : > "$STACK_LOGS/kafka.log"
  log "starting Kafka $KAFKA_VERSION"
  kafka_start_detached
}

kafka_wait() {
  wait_until 90 kafka kafka_healthy \
    || die "Kafka did not become healthy in 90 s: see $STACK_LOGS/kafka.log and kafka.out"
  # A new broker answers before its offsets topic has a coordinator: the first group commit
  # would fail. Healthy means a consumer group can commit (needs `make install`'s .venv).
  if [ -x "$STACK_ROOT/.venv/bin/python" ]; then
    (cd "$STACK_ROOT" && ESUPDATER_TEST_KAFKA="127.0.0.1:$KAFKA_PORT" \
      .venv/bin/python -m tools.kafka_ready --seconds 90) \
      || die "Kafka started but cannot serve consumer groups: see $STACK_LOGS/kafka.log"
  else
    log "no .venv yet: not checking that Kafka serves consumer groups (make install first)"
  fi
  log "Kafka healthy on 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
  stop_pidfile kafka "$KAFKA_PID"
}
