#!/usr/bin/env bash
# .ci/local-slurm.sh -- a real single-node Slurm cluster, with accounting, on this machine
# (Debian 12, run as root), for tests and CI. No systemd: daemons are plain background processes.
#
#   bash .ci/local-slurm.sh start    # install packages if missing, configure, start, wait for an idle node
#   bash .ci/local-slurm.sh status   # exit 0 when up, 1 when not
#   bash .ci/local-slurm.sh env      # eval "$(bash .ci/local-slurm.sh env)"  -> SLURM_CONF=...
#   bash .ci/local-slurm.sh stop     # cancel jobs, stop the daemons we started (by recorded pid)
#
# Config, state, logs, pids and the MariaDB data live under $HYRAX_SLURM_DIR (default
# /tmp/hyrax-slurm). Outside it we only write /etc/slurm/slurm.conf (a copy, so plain `sbatch`
# works; left alone if someone else's), /etc/munge/munge.key (if missing) and /run/munge
# (munged's default socket: slurmdbd's auth ignores AuthInfo=socket=).
#
# Daemons, in start order: munged -> mariadbd -> slurmdbd -> (sacctmgr add cluster) -> slurmctld
# -> slurmd. The cluster must exist in the accounting db before slurmctld starts, or slurmctld
# dies with "no TRES from the database". Accounting matters: without it `sacct` fails and
# submitit waits forever on a job that died before writing its result.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

DIR=${HYRAX_SLURM_DIR:-/tmp/hyrax-slurm}
DB_PORT=${HYRAX_SLURM_DB_PORT:-3307}        # MariaDB, on 127.0.0.1 only
CLUSTER=hyrax
NODE=$(hostname -s)
CONF=$DIR/etc/slurm.conf
MYSOCK=$DIR/mysqld/mysqld.sock
export SLURM_CONF=$CONF                     # daemons and our own client calls use this
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # stop goes in reverse
MARK="# written by hyrax .ci/local-slurm.sh -- safe to delete"

say() { echo "[local-slurm] $*"; }
die() { echo "[local-slurm] ERROR: $*" >&2; exit 1; }

# running PID: the process exists and is not a zombie (our daemons get reaped by init, not us).
# alive NAME: print the recorded pid of NAME if that process runs and really is NAME
# (/proc/PID/comm guards against pid reuse).
running() { local st; read -r _ _ st _ 2>/dev/null <"/proc/$1/stat" && [[ $st != Z ]]; }
alive() {
  local f=$DIR/pids/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  running "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
  echo "$pid"
}

# launch NAME CMD...: run CMD in its own session (so it outlives our caller's process group),
# stdout+stderr appended to log/NAME.log, pid recorded in pids/NAME.pid. The subshell, setsid
# and setpriv all exec, so $! is the daemon's own pid.
launch() {
  local name=$1; shift
  echo "=== $(date '+%F %T') starting: $*" >>"$DIR/log/$name.log"
  (
    # close every inherited fd above 2 (our lock, a caller's pipes) or the daemon keeps them open
    for fd in "/proc/$BASHPID"/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
    exec setsid "$@" </dev/null >>"$DIR/log/$name.log" 2>&1
  ) &
  echo $! >"$DIR/pids/$name.pid"
}

# wait_for NAME SECONDS CHECK...: poll CHECK until it succeeds; on timeout, or if NAME died,
# print the tail of NAME's log and exit 1.
wait_for() {
  local name=$1 end=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    # (pid, not alive(): right after launch the process may still be setsid/setpriv)
    if ! running "$(<"$DIR/pids/$name.pid")" || ((SECONDS >= end)); then
      echo "[local-slurm] ERROR: $name not ready (died or timed out); tail of $DIR/log/$name.log:" >&2
      tail -n 30 "$DIR/log/$name.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

# start_daemon NAME SECONDS CHECK -- CMD...: launch CMD unless NAME already runs, then wait for CHECK.
start_daemon() {
  local name=$1 t=$2 check=$3 pid; shift 4
  if pid=$(alive "$name"); then say "$name already running (pid $pid)"
  else launch "$name" "$@"; say "$name started (pid $(<"$DIR/pids/$name.pid"))"; fi
  wait_for "$name" "$t" "$check"
}

# readiness checks
munge_ok() { munge -n </dev/null | unmunge; }
sql() { mariadb --no-defaults -uroot --socket="$MYSOCK" -e "$1"; }
db_ok() { sql 'SELECT 1'; }
dbd_ok() { timeout 10 sacctmgr -n list cluster; }
ctld_ok() { scontrol ping | grep -q 'is UP'; }
node_ok() { [[ $(sinfo -h -n "$NODE" -o %T) =~ ^(idle|mixed|allocated)$ ]]; }

ensure_packages() {
  local b
  for b in munged mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null || {
      say "installing Debian packages (log: $DIR/log/apt.log)..."
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends slurmctld slurmd slurm-client munge slurmdbd mariadb-server
      } >>"$DIR/log/apt.log" 2>&1 || { tail -n 20 "$DIR/log/apt.log" >&2; die "apt-get failed"; }
      return 0; }
  done
}

write_configs() {
  local cpus mem
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/ {print $2}')
  mem=$((mem - (mem / 10 > 512 ? mem / 10 : 512)))  # margin: slurmd drains a node that over-claims
  # stand-in device for the one fake GPU: slurmd only sets CUDA_VISIBLE_DEVICES for a GRES
  # whose File is a character/block device, and a symlink to /dev/null passes (no mknod needed)
  ln -sfn /dev/null "$DIR/dev/gpu0"
  cat >"$CONF" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
# listen on 127.0.0.1 only (NodeAddr, SlurmctldHost's address), never on every interface
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
AuthType=auth/munge
# job credential lifetime; also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
# no cgroups: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
# share the node per core and memory; without DefMemPerCPU a job asking no memory takes it all
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# batch_sched_delay=0: small batches start at once; short intervals: a requeued job (eligible
# after cred_expire) restarts within seconds instead of waiting for the 30-60 s default passes
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
KillWait=5
# gpus_per_node is only accepted when GPUs are declared as GRES (see gres.conf)
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/gres.conf" <<EOF
$MARK
NodeName=$NODE Name=gpu File=$DIR/dev/gpu0
EOF
  # slurmdbd.conf holds the db password: mode 600, owned by SlurmUser (root)
  install -m 600 /dev/null "$DIR/etc/slurmdbd.conf"
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=hyrax
StorageLoc=slurm_acct_db
EOF
  # also the default client path, so plain sbatch/sacct work without SLURM_CONF (never clobber
  # a slurm.conf that is not ours)
  mkdir -p /etc/slurm
  if [[ ! -e /etc/slurm/slurm.conf ]] || grep -qF "$MARK" /etc/slurm/slurm.conf; then
    cp "$CONF" /etc/slurm/slurm.conf
  else
    say "warning: /etc/slurm/slurm.conf is not ours, left alone; clients need SLURM_CONF=$CONF"
  fi
}

start() {
  local t0=$SECONDS
  ensure_packages
  write_configs
  # munge: key if missing; munged refuses to run as root over munge-owned folders
  if [[ ! -s /etc/munge/munge.key ]]; then
    install -d -o munge -g munge -m 700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 "$DIR/munge"
  start_daemon munged 20 munge_ok -- setpriv --reuid munge --regid munge --init-groups \
    munged --foreground --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"

  # MariaDB for slurmdbd: private datadir/socket, TCP on 127.0.0.1:$DB_PORT, ignores /etc/mysql
  install -d -o mysql -g mysql -m 750 "$DIR/mysql"
  install -d -o mysql -g mysql -m 755 "$DIR/mysqld"
  if [[ ! -d $DIR/mysql/mysql ]]; then
    say "initialising MariaDB in $DIR/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >>"$DIR/log/mariadbd.log" 2>&1 ||
      { tail -n 20 "$DIR/log/mariadbd.log" >&2; die "mariadb-install-db failed"; }
  fi
  start_daemon mariadbd 60 db_ok -- mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" \
    --socket="$MYSOCK" --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --pid-file="$DIR/mysqld/mariadbd.pid" --innodb-lock-wait-timeout=900
  sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
       CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'hyrax';
       CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'hyrax';
       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost', 'slurm'@'127.0.0.1';"

  start_daemon slurmdbd 60 dbd_ok -- slurmdbd -D
  # the cluster must be known to the db BEFORE slurmctld starts
  if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    say "cluster '$CLUSTER' added to accounting"
  fi
  start_daemon slurmctld 60 ctld_ok -- slurmctld -D -i   # -i: keep job state (and job ids)
  start_daemon slurmd 60 node_ok -- slurmd -D -N "$NODE"
  timeout 60 srun -N1 -t 1 true || die "srun smoke test failed (see $DIR/log/)"
  wait_for slurmd 20 node_ok   # until the smoke job's "completing" is over
  say "up in $((SECONDS - t0))s: node $NODE is $(sinfo -h -n "$NODE" -o %T); SLURM_CONF=$CONF"
}

stop() {
  local i d pid n stopped=0 jobs=()
  # cancel leftover jobs first, so no job step outlives the cluster
  alive slurmctld >/dev/null && mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
  if ((${#jobs[@]})); then
    say "cancelling jobs: ${jobs[*]}"
    scancel "${jobs[@]}" || true
    for ((n = 0; n < 75; n++)); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    if pid=$(alive "$d"); then
      kill -TERM "$pid"
      for ((n = 0; n < 150; n++)); do alive "$d" >/dev/null || break; sleep 0.2; done
      if alive "$d" >/dev/null; then say "$d ignored SIGTERM for 30s: SIGKILL"; kill -KILL "$pid"; sleep 0.5; fi
      say "$d stopped (pid $pid)"; stopped=1
    fi
    rm -f "$DIR/pids/$d.pid"
  done
  ((stopped)) || say "nothing was running"
}

status() {
  local d pid down=0 state
  for d in "${DAEMONS[@]}"; do
    if pid=$(alive "$d"); then echo "  $d: running (pid $pid)"; else echo "  $d: not running"; down=1; fi
  done
  if ((down == 0)) && state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null); then
    say "running: node $NODE is $state; SLURM_CONF=$CONF"; return 0
  fi
  say "not running"; return 1
}

case ${1:-} in
  start | stop)
    [[ $(id -u) == 0 ]] || die "must run as root"
    mkdir -p "$DIR"/{etc,state/ctld,state/d,run,log,pids,dev}
    exec 9>>"$DIR/lock" && flock 9   # serialise concurrent start/stop (e.g. parallel test workers)
    "$1" ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF"; echo "export HYRAX_SLURM_DIR=$DIR" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
