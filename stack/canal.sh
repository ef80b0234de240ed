# Alibaba Canal 1.1.7 from its Maven Central jars (stack/canal/pom.xml), run by our launcher
# stack/canal/CanalRunner.java (sourced by stack.sh). It follows MariaDB's binlog for the
# `shop` database and publishes every row change to Kafka, in two forms side by side:
#   destination shop    -> topic canal_shop    flat JSON, 3 partitions, hashed by primary key
#   destination shop_pb -> topic canal_shop_pb protobuf (flatMessage=false), 1 partition,
#                          whole batches with their transaction entries
# Canal opens no listening port (no TCP server, admin or metrics); it only connects to
# 127.0.0.1:$MARIADB_PORT and 127.0.0.1:$KAFKA_PORT. Positions live in .stack/canal/meta, so
# a restart goes on where it stopped; `rm -rf .stack/canal` starts again from the binlog's end.

CANAL_VERSION=$(sed -n 's:.*<canal.version>\(.*\)</canal.version>.*:\1:p' "$STACK_ROOT/stack/canal/pom.xml")
CANAL_HOME=$STACK_CACHE/canal-$CANAL_VERSION
CANAL_STATE=$STACK_STATE/canal
CANAL_PID=$CANAL_STATE/canal.pid
CANAL_DESTINATIONS=(shop shop_pb)
CANAL_TOPIC=canal_shop
CANAL_PB_TOPIC=canal_shop_pb

canal_fetch() {
  # The pom's checksum is part of the stamp: editing the pom fetches again.
  local stamp
  stamp=$(md5sum < "$STACK_ROOT/stack/canal/pom.xml" | cut -c1-32)
  [ "$(cat "$CANAL_HOME/.complete" 2>/dev/null)" = "$stamp" ] && return 0
  log "fetching Canal $CANAL_VERSION jars from Maven Central (once per machine)"
  rm -rf "$CANAL_HOME" && mkdir -p "$CANAL_HOME/libs"
  mvn -q -B -f "$STACK_ROOT/stack/canal/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$CANAL_HOME/libs" >&2 \
    || die "could not fetch the Canal jars (see the Maven output above)"
  echo "$stamp" > "$CANAL_HOME/.complete"
}

canal_configure() {
  mkdir -p "$CANAL_STATE/conf" "$CANAL_STATE/meta" "$STACK_LOGS"
  # Canal's own keys, as its deployer reads them; instance.properties override these.
  cat > "$CANAL_STATE/conf/canal.properties" <<PROPS
canal.destinations = $(IFS=,; echo "${CANAL_DESTINATIONS[*]}")
canal.serverMode = kafka
canal.file.data.dir = $CANAL_STATE/meta
canal.file.flush.period = 1000
canal.mq.flatMessage = true
canal.mq.canalBatchSize = 50
canal.mq.canalGetTimeout = 100
kafka.bootstrap.servers = 127.0.0.1:$KAFKA_PORT
kafka.acks = all
kafka.linger.ms = 1
kafka.retries = 3
kafka.client.id = esupdater-stack-canal
PROPS
  canal_instance shop 1001 <<PROPS
canal.mq.topic = $CANAL_TOPIC
canal.mq.partitionsNum = 3
# schema.table regex : key columns; \$pk\$ = each table's own primary key.
canal.mq.partitionHash = $MARIADB_DATABASE\\\\..*:\$pk\$
PROPS
  canal_instance shop_pb 1002 <<PROPS
canal.mq.topic = $CANAL_PB_TOPIC
canal.mq.partitionsNum = 1
canal.mq.flatMessage = false
canal.instance.filter.transaction.entry = false
PROPS
  cat > "$CANAL_STATE/conf/logback.xml" <<XML
<configuration>
  <appender name="file" class="ch.qos.logback.core.FileAppender">
    <file>$STACK_LOGS/canal.log</file>
    <encoder><pattern>%d{yyyy-MM-dd HH:mm:ss.SSS} [%thread] %-5level %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.kafka" level="WARN"/>
  <root level="INFO"><appender-ref ref="file"/></root>
</configuration>
XML
}

# canal_instance DESTINATION SLAVE_ID < EXTRA: an instance.properties watching $MARIADB_DATABASE.
canal_instance() {
  mkdir -p "$CANAL_STATE/conf/$1"
  {
    cat <<PROPS
canal.instance.master.address = 127.0.0.1:$MARIADB_PORT
canal.instance.mysql.slaveId = $2
canal.instance.dbUsername = $CANAL_DB_USER
canal.instance.dbPassword = $CANAL_DB_PASSWORD
canal.instance.connectionCharset = UTF-8
canal.instance.filter.regex = $MARIADB_DATABASE\\\\..*
# Tables the tests fill in bulk without needing their binlog (a 100,000-row backfill source):
# kept out of Canal's topics, which other tests read from the start.
canal.instance.filter.black.regex = $MARIADB_DATABASE\\\\.quiet_.*
PROPS
    cat
  } > "$CANAL_STATE/conf/$1/instance.properties"
}

# Canal is following the binlog when MariaDB shows one binlog dump thread per destination.
canal_dumping() {
  [ "$(mariadb_sql "SELECT COUNT(*) FROM information_schema.PROCESSLIST
        WHERE USER = '$CANAL_DB_USER' AND COMMAND LIKE 'Binlog Dump%'" 2>/dev/null)" \
    = "${#CANAL_DESTINATIONS[@]}" ]
}

canal_healthy() {
  pid_alive "$CANAL_PID" && mariadb_healthy && canal_dumping \
    && grep -q "canal is running" "$STACK_LOGS/canal.log" 2>/dev/null
}

canal_describe() {
  echo "$CANAL_VERSION, ${CANAL_DESTINATIONS[*]} -> $CANAL_TOPIC, $CANAL_PB_TOPIC"
}

canal_up() {
  already_up Canal "$CANAL_PID" "" && return 0
  mariadb_healthy || die "Canal needs MariaDB: stack/stack.sh start mariadb"
  kafka_healthy || die "Canal needs Kafka: stack/stack.sh start kafka"
  canal_fetch
  canal_configure
  : > "$STACK_LOGS/canal.log"
  log "starting Canal $CANAL_VERSION"
  # JDK 17 runs this Java 8 code as it is: on this path (no Spring, no TSDB, no TCP server)
  # nothing needs an --add-opens. UTC: Canal writes TIMESTAMP values in its own time zone.
  # Detached, like Kafka.
  setsid nohup "$JAVA_HOME/bin/java" -Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dfile.encoding=UTF-8 -Duser.timezone=UTC \
    -Dlogback.configurationFile="$CANAL_STATE/conf/logback.xml" \
    -cp "$CANAL_HOME/libs/*" "$STACK_ROOT/stack/canal/CanalRunner.java" "$CANAL_STATE/conf" \
    > "$STACK_LOGS/canal.out" 2>&1 < /dev/null &
  echo $! > "$CANAL_PID"
}

canal_wait() {
  wait_until 90 canal canal_healthy \
    || die "Canal did not start following the binlog in 90 s: see $STACK_LOGS/canal.log and canal.out"
  log "Canal following the binlog of $MARIADB_DATABASE -> $CANAL_TOPIC, $CANAL_PB_TOPIC"
}

canal_down() {
  stop_pidfile canal "$CANAL_PID"
}
