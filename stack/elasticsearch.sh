# Elasticsearch, single node on 127.0.0.1, from the integ-test zip on Maven Central (sourced by
# stack.sh). That distribution has no x-pack, no painless and no `GET /`: health is checked with
# _cluster/health. It refuses to run as root, so as root it runs as the unprivileged $ES_USER.

ES_HOME=$STACK_CACHE/elasticsearch-$ES_VERSION
ES_ARTIFACT=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip
ES_STATE=$STACK_STATE/elasticsearch
ES_PID=$ES_STATE/es.pid
ES_URL=http://127.0.0.1:$ES_PORT

es_fetch() {
  [ -f "$ES_HOME/.complete" ] && return 0
  log "fetching Elasticsearch $ES_VERSION from Maven Central (once per machine)"
  local tmp
  tmp=$(mktemp -d)
  mvn -q -B dependency:copy -Dartifact="$ES_ARTIFACT" -DoutputDirectory="$tmp" >&2 \
    || die "could not fetch $ES_ARTIFACT (see the Maven output above)"
  rm -rf "$ES_HOME"
  mkdir -p "$STACK_CACHE"
  (cd "$tmp" && unzip -q "elasticsearch-$ES_VERSION.zip") || die "could not unzip Elasticsearch"
  mv "$tmp/elasticsearch-$ES_VERSION" "$ES_HOME"
  rm -rf "$tmp"
  chmod -R a+rX "$STACK_CACHE"
  touch "$ES_HOME/.complete"
}

# as_es_user COMMAND...: run as $ES_USER when we are root, else as ourselves.
as_es_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$ES_USER" -- "$@"
  else
    "$@"
  fi
}

es_user_setup() {
  [ "$(id -u)" = 0 ] || return 0
  id -u "$ES_USER" >/dev/null 2>&1 \
    || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" \
    || die "could not create the system user $ES_USER for Elasticsearch"
}

# The data folder must be reachable by $ES_USER; if this checkout sits somewhere it cannot
# enter (a home directory), keep the data in /var/tmp and link it from .stack/.
es_state_setup() {
  mkdir -p "$STACK_STATE" "$STACK_LOGS"
  if [ "$(id -u)" = 0 ] && [ ! -L "$ES_STATE" ] && ! runuser -u "$ES_USER" -- test -x "$STACK_STATE"; then
    local elsewhere
    elsewhere=/var/tmp/esupdater-es-$(printf '%s' "$STACK_STATE" | md5sum | cut -c1-12)
    mkdir -p "$elsewhere"
    rm -rf "$ES_STATE"
    ln -s "$elsewhere" "$ES_STATE"
    log "Elasticsearch data in $elsewhere ($ES_USER cannot enter $STACK_STATE)"
  fi
  mkdir -p "$ES_STATE/data" "$ES_STATE/logs" "$ES_STATE/config"
  if [ ! -f "$ES_STATE/config/jvm.options" ]; then
    cp -R "$ES_HOME/config/." "$ES_STATE/config/"
  fi
  cat > "$ES_STATE/config/elasticsearch.yml" <<YML
cluster.name: esupdater-local
node.name: local
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
discovery.type: single-node
path.data: $ES_STATE/data
path.logs: $ES_STATE/logs
cluster.routing.allocation.disk.threshold_enabled: false
action.destructive_requires_name: false
# This zip ships x-pack security; the local stack is loopback-only and needs none of it.
xpack.security.enabled: false
YML
  [ "$(id -u)" = 0 ] && chown -R "$ES_USER" "$(readlink -f "$ES_STATE")"
  ln -sfn "$ES_STATE/logs" "$STACK_LOGS/elasticsearch"
}

es_healthy() {
  curl -fsS --max-time 2 "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null 2>&1
}

es_up() {
  already_up Elasticsearch "$ES_PID" "$ES_URL" "$ES_PORT" && return 0
  es_fetch
  es_user_setup
  es_state_setup
  log "starting Elasticsearch $ES_VERSION"
  # Its own session, like the other servers: a server (re)started from inside a test run
  # must not end with that run's process group. --wait keeps the launcher's exit status.
  as_es_user setsid --wait env ES_JAVA_HOME="$JAVA_HOME" ES_PATH_CONF="$ES_STATE/config" \
    ES_JAVA_OPTS="-Xms1g -Xmx1g" "$ES_HOME/bin/elasticsearch" -d -p "$ES_PID" \
    > "$STACK_LOGS/elasticsearch.out" 2>&1 \
    || die "Elasticsearch failed to start: see $STACK_LOGS/elasticsearch.out and $ES_STATE/logs"
}

es_wait() {
  wait_until 120 elasticsearch es_healthy \
    || die "Elasticsearch did not become healthy in 120 s: see $ES_STATE/logs"
  log "Elasticsearch healthy on $ES_URL"
}

es_down() {
  stop_pidfile elasticsearch "$ES_PID"
}
