# MariaDB from the Debian package, run by us on 127.0.0.1 with its own datadir under
# $STACK_STATE (sourced by stack.sh). The system service is never used: mariadbd is started
# with a defaults file of ours, so /etc/mysql and port 3306 of a system server stay out of it.
# The binlog is on, in ROW format with full row images, as Canal needs.

MARIADB_STATE=$STACK_STATE/mariadb
MARIADB_DATA=$MARIADB_STATE/data
MARIADB_PID=$MARIADB_STATE/mariadb.pid
MARIADB_CNF=$MARIADB_STATE/my.cnf
# A unix socket path may not exceed 107 bytes; a deep checkout gets one in /tmp instead.
MARIADB_SOCKET=$MARIADB_STATE/mariadb.sock
[ ${#MARIADB_SOCKET} -lt 100 ] \
  || MARIADB_SOCKET=/tmp/esupdater-mariadb-$(printf '%s' "$STACK_STATE" | md5sum | cut -c1-12).sock

mariadb_install() {
  if command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; then return 0; fi
  [ "$(id -u)" = 0 ] || die "MariaDB is not installed: run (as root) apt-get install mariadb-server"
  log "installing mariadb-server from the Debian packages (once per machine)"
  # Docker-style images forbid services to start on install (policy-rc.d); elsewhere the
  # package may start the system server on 3306: stop it, ours needs the port.
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server; } >&2 \
    || die "apt-get install mariadb-server failed (see above)"
  if pgrep -x mariadbd >/dev/null && ! pid_alive "$MARIADB_PID"; then
    log "stopping the system MariaDB service the package started"
    service mariadb stop >&2 || true
  fi
}

mariadb_bin() {
  # mariadbd lives in /usr/sbin, which a non-root PATH may lack.
  command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd
}

mariadb_configure() {
  mkdir -p "$MARIADB_DATA" "$STACK_LOGS"
  cat > "$MARIADB_CNF" <<CNF
[mariadbd]
datadir=$MARIADB_DATA
socket=$MARIADB_SOCKET
bind-address=127.0.0.1
port=$MARIADB_PORT
log-error=$STACK_LOGS/mariadb.log
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
# What Canal reads: the binlog, row-based, every column of the before and after images.
server_id=1
log-bin=mariadb-bin
binlog_format=ROW
binlog_row_image=FULL
binlog_expire_logs_seconds=86400
# A small server: test tables only.
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
performance_schema=OFF

[client]
socket=$MARIADB_SOCKET
host=localhost
user=root
CNF
}

# mariadb_sql SQL...: runs SQL as root over the socket.
mariadb_sql() {
  mariadb --defaults-file="$MARIADB_CNF" -N -B -e "$*"
}

# Over the socket: a bare TCP probe would leave an "Aborted connection" warning in the log
# every half second of a wait. The server opens its TCP port before its socket.
mariadb_healthy() {
  [ -S "$MARIADB_SOCKET" ] \
    && mariadb-admin --defaults-file="$MARIADB_CNF" --connect-timeout=2 ping >/dev/null 2>&1
}

mariadb_up() {
  already_up MariaDB "$MARIADB_PID" "127.0.0.1:$MARIADB_PORT" "$MARIADB_PORT" && return 0
  mariadb_install
  mariadb_configure
  if [ ! -d "$MARIADB_DATA/mysql" ]; then
    log "initialising the MariaDB datadir"
    # root@localhost logs in through the socket as the user who runs this script (unix_socket).
    mariadb-install-db --defaults-file="$MARIADB_CNF" --user="$(id -un)" \
      --auth-root-authentication-method=socket --auth-root-socket-user="$(id -un)" \
      --skip-test-db > "$STACK_LOGS/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed: see $STACK_LOGS/mariadb-install.log"
    # Canal's saved positions point into the old datadir's binlog: start from the new one.
    rm -rf "$STACK_STATE/canal/meta"
  fi
  log "starting MariaDB $(mariadb_version)"
  # Runs as whoever runs the stack (root included, explicitly allowed with --user): the data
  # is loopback-only test data in this checkout. Detached, like Kafka, so it outlives `make up`.
  setsid nohup "$(mariadb_bin)" --defaults-file="$MARIADB_CNF" --user="$(id -un)" \
    > "$STACK_LOGS/mariadb.out" 2>&1 < /dev/null &
  echo $! > "$MARIADB_PID"
}

mariadb_version() {
  "$(mariadb_bin)" --version | sed -n 's/.*Ver \([^ ]*\).*/\1/p'
}

# The database Canal watches and the two accounts: Canal's (binlog dump) and the tests'.
mariadb_setup() {
  mariadb_sql "
    CREATE DATABASE IF NOT EXISTS $MARIADB_DATABASE CHARACTER SET utf8mb4;
    CREATE USER IF NOT EXISTS '$CANAL_DB_USER'@'127.0.0.1' IDENTIFIED BY '$CANAL_DB_PASSWORD';
    GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '$CANAL_DB_USER'@'127.0.0.1';
    CREATE USER IF NOT EXISTS '$MARIADB_TEST_USER'@'127.0.0.1' IDENTIFIED BY '$MARIADB_TEST_PASSWORD';
    GRANT ALL PRIVILEGES ON $MARIADB_DATABASE.* TO '$MARIADB_TEST_USER'@'127.0.0.1';
  " || die "could not create the $MARIADB_DATABASE database and its users"
}

mariadb_wait() {
  wait_until 60 mariadb mariadb_healthy \
    || die "MariaDB did not become healthy in 60 s: see $STACK_LOGS/mariadb.log"
  mariadb_setup
  log "MariaDB healthy on 127.0.0.1:$MARIADB_PORT"
}

mariadb_down() {
  stop_pidfile mariadb "$MARIADB_PID"
}
