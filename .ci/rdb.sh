#!/usr/bin/env bash
# .ci/rdb.sh -- a private MariaDB server on 127.0.0.1 for Optuna RDB storage in tests and CI
# (Debian 12). No systemd: mariadbd is a plain background process.
#
#   bash .ci/rdb.sh start    # install mariadb-server if missing (root, CI=true), init, start, create db+user
#   bash .ci/rdb.sh status   # exit 0 when up (answers a query), 1 when not
#   bash .ci/rdb.sh env      # eval "$(bash .ci/rdb.sh env)"  -> HYRAX_RDB_URL=mysql+pymysql://...
#   bash .ci/rdb.sh stop     # stop the mariadbd we started (by recorded pid)
#
# Everything lives under $HYRAX_RDB_DIR (default /tmp/hyrax-rdb): datadir, socket, pid, log and
# the generated password. TCP on 127.0.0.1:$HYRAX_RDB_PORT (default 3308) only; the Slurm
# accounting MariaDB of .ci/local-slurm.sh is a separate server on 3307. `--no-defaults`: nothing
# in /etc/mysql applies. As root mariadbd runs as root (`--user=root`) over a root-owned datadir;
# as any other user it runs as that user, and that user administers it through the socket.
#
# The database `optuna` and the user `hyrax` (password generated once, kept in $DIR/password,
# mode 600) with all rights on it and on databases named `hyrax\_...` (so a test can make a fresh
# database of its own, e.g. for an MLflow store, and drop it).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

DIR=${HYRAX_RDB_DIR:-/tmp/hyrax-rdb}
PORT=${HYRAX_RDB_PORT:-3308}
DB=optuna
DB_USER=hyrax
DATA=$DIR/data
SOCK=$DIR/run/mariadbd.sock
PIDF=$DIR/run/mariadbd.pid           # written by us ($! of the launch), not by mariadbd
LOG=$DIR/log/mariadbd.log
PWF=$DIR/password
ME=$(id -un)                         # the socket-authenticated admin account (root, or the caller)

say() { echo "[rdb] $*"; }
die() { echo "[rdb] ERROR: $*" >&2; exit 1; }

# running PID: the process exists and is not a zombie. alive: print the recorded pid if that
# process runs and really is mariadbd (/proc/PID/comm guards against pid reuse).
running() { local st; read -r _ _ st _ 2>/dev/null <"/proc/$1/stat" && [[ $st != Z ]]; }
alive() {
  local pid
  [[ -s $PIDF ]] || return 1
  pid=$(<"$PIDF")
  running "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == mariadbd ]] || return 1
  echo "$pid"
}

sql() { mariadb --no-defaults -u"$ME" --socket="$SOCK" -N -B -e "$1"; }
# the server answers on its socket (true even when we may not log in: any user can ask)
db_ok() { mariadb-admin --no-defaults --socket="$SOCK" --connect-timeout=2 ping; }
# the app's own path: TCP on 127.0.0.1 with the password (in the environment, not in `ps`)
app_ok() {
  MYSQL_PWD=$(<"$PWF") mariadb --no-defaults -h127.0.0.1 -P"$PORT" -u"$DB_USER" -N -B -e 'SELECT 1' "$DB"
}

ensure_packages() {
  local b
  for b in mariadbd mariadb-install-db mariadb mariadb-admin; do
    command -v "$b" >/dev/null && continue
    if [[ $(id -u) == 0 && ${CI:-} == true ]]; then
      say "installing mariadb-server (log: $DIR/log/apt.log)..."
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends mariadb-server mariadb-client
      } >>"$DIR/log/apt.log" 2>&1 || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get failed"; }
      return 0
    fi
    die "$b not found: install mariadb-server (apt-get install mariadb-server), or run as root with CI=true"
  done
}

start() {
  local t0=$SECONDS pid pw end
  if pid=$(alive) && db_ok >/dev/null 2>&1 && [[ -s $PWF ]] && app_ok >/dev/null 2>&1; then
    say "already running (pid $pid) on 127.0.0.1:$PORT"
    return 0
  fi
  ensure_packages
  # the password first: generated once, readable by its owner only
  if [[ ! -s $PWF ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$PWF")
  fi
  pw=$(<"$PWF")
  local user_opt=()
  [[ $(id -u) == 0 ]] && user_opt=(--user=root)   # mariadbd refuses to run as root without it
  if [[ ! -d $DATA/mysql ]]; then
    say "initialising MariaDB in $DATA"
    rm -rf "$DATA" && mkdir -p "$DATA"
    mariadb-install-db --no-defaults "${user_opt[@]}" --datadir="$DATA" --skip-test-db \
      --auth-root-authentication-method=socket --auth-root-socket-user="$ME" \
      >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "mariadb-install-db failed"; }
  fi
  if ! pid=$(alive); then
    [[ -S $SOCK ]] && rm -f "$SOCK"   # a stale socket of a killed server
    echo "=== $(date '+%F %T') starting mariadbd on 127.0.0.1:$PORT" >>"$LOG"
    (
      # close every inherited fd above 2 (our lock, a caller's pipes) or the daemon keeps them open
      for fd in "/proc/$BASHPID"/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
      # a test database: durability traded for speed (log flushed once a second, not per commit)
      exec setsid mariadbd --no-defaults "${user_opt[@]}" --datadir="$DATA" --socket="$SOCK" \
        --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve --pid-file="$DIR/run/mariadbd.own.pid" \
        --max-connections=1000 --innodb-flush-log-at-trx-commit=2 --innodb-lock-wait-timeout=120 \
        --log-error="$LOG" </dev/null >>"$LOG" 2>&1
    ) &
    echo $! >"$PIDF"
    say "mariadbd started (pid $(<"$PIDF"))"
  fi
  end=$((SECONDS + 60))
  until db_ok >/dev/null 2>&1; do
    if ! running "$(<"$PIDF")" || ((SECONDS >= end)); then
      echo "[rdb] ERROR: mariadbd not ready (died or timed out); tail of $LOG:" >&2
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  # 'localhost' too: with --skip-name-resolve a TCP client from 127.0.0.1 matches the '127.0.0.1' host
  sql "CREATE DATABASE IF NOT EXISTS $DB;
       CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
       CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
       ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
       ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pw';
       GRANT ALL ON $DB.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';
       GRANT ALL ON \`hyrax\\_%\`.* TO '$DB_USER'@'127.0.0.1', '$DB_USER'@'localhost';" ||
    die "creating database $DB and user $DB_USER failed"
  app_ok >/dev/null || die "user $DB_USER cannot reach $DB on 127.0.0.1:$PORT"
  say "up in $((SECONDS - t0))s: $(url_of "$pw" | sed 's/:[^:@]*@/:***@/')"
}

stop() {
  local pid n
  if pid=$(alive); then
    kill -TERM "$pid"
    for ((n = 0; n < 150; n++)); do alive >/dev/null || break; sleep 0.2; done
    if alive >/dev/null; then say "mariadbd ignored SIGTERM for 30s: SIGKILL"; kill -KILL "$pid"; sleep 0.5; fi
    say "mariadbd stopped (pid $pid)"
  else
    say "nothing was running"
  fi
  rm -f "$PIDF"
}

status() {
  local pid
  if pid=$(alive) && db_ok >/dev/null 2>&1; then
    say "running (pid $pid) on 127.0.0.1:$PORT"; return 0
  fi
  say "not running"; return 1
}

url_of() { echo "mysql+pymysql://$DB_USER:$1@127.0.0.1:$PORT/$DB"; }

case ${1:-} in
  start | stop)
    mkdir -p "$DIR"/{run,log}
    exec 9>>"$DIR/lock" && flock 9   # serialise concurrent start/stop (e.g. parallel test workers)
    "$1" ;;
  status) status ;;
  env)
    [[ -s $PWF ]] || die "no password in $PWF yet: run '$0 start' first"
    echo "export HYRAX_RDB_URL=$(url_of "$(<"$PWF")")" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
