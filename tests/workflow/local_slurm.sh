#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, started by hand (no systemd), for testing
# `snakemake --profile slurm` (tests/workflow/test_slurm.py; .ci/run installs the packages).
# Self-contained: everything it needs is in this file. Debian 12: Slurm 22.05, munge, MariaDB.
# Run as root.
#
# Usage: local_slurm.sh install|start|stop|status
#   install  apt-get install whatever is missing (no daemon is started)
#   start    install, write /etc/slurm/{slurm,slurmdbd}.conf, start munged, mariadbd,
#            slurmdbd, slurmctld, slurmd (those not running; idempotent)
#   stop     stop the daemons by the PIDs in their pid files, in reverse order (never by name)
#
# Environment: SLURM_LOCAL_DIR (state/log/pid folder, default /tmp/slurm-local),
#   SLURM_LOCAL_PARTITIONS (default "cpu gpu": the partitions profiles/slurm asks for, all on
#   the one node; the first is the default),
#   SLURM_LOCAL_ACCOUNT (account created for root, default ci).
#
# Accounting (slurmdbd + MariaDB) is always on: the Slurm executor plugin polls job states
# with `sacct`, and without accounting storage it waits forever (slurm_local.md gotcha 1).
set -euo pipefail

ACTION="${1:-start}"
DIR="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
PARTITIONS="${SLURM_LOCAL_PARTITIONS:-cpu gpu}"
ACCOUNT="${SLURM_LOCAL_ACCOUNT:-ci}"
CLUSTER=localcluster
NODE=localhost
DB_PASS=slurmdbpass   # a MariaDB listening on 127.0.0.1 only
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
DBD_PID="$DIR/slurmdbd.pid"
CTLD_PID="$DIR/slurmctld.pid"
SLURMD_PID="$DIR/slurmd.pid"

log() { printf '[local_slurm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# retry SECONDS CMD...: run CMD every 0.2 s until it succeeds
retry() {
  local n=$(($1 * 5)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
stop_pidfile() {
  local name=$1 file=$2 pid
  if alive "$file"; then
    pid=$(cat "$file")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$name still alive after 10 s: SIGKILL"; kill -9 "$pid" || true; }
  fi
  rm -f "$file"
}

[ "$(id -u)" = 0 ] || die "must run as root"

do_install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends leaves out libpmix2: Slurm then logs a harmless mpi/pmix error.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# write FILE MODE (content on stdin); exit status 0 when the file changed
write() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" -o root -g root "$tmp" "$1"; rm -f "$tmp"
}

write_configs() {
  mkdir -p /etc/slurm "$DIR"/{state,spool,log}
  # The node line comes from the hardware slurmd sees; 95 % of its memory, so it registers.
  local hw mem
  hw=$(slurmd -C | head -1)
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  [ -n "$mem" ] || die "cannot parse 'slurmd -C': $hw"
  hw=$(sed -e 's/^NodeName=[^ ]* //' -e 's/ RealMemory=[0-9]*//' -e 's/ UpTime=.*//' <<<"$hw")
  local parts="" default=YES
  for p in $PARTITIONS; do
    parts+="PartitionName=$p Nodes=ALL Default=$default MaxTime=INFINITE State=UP"$'\n'
    default=NO
  done
  CONF_CHANGED=0
  # DefMemPerCPU: without it a job that gives no --mem takes the whole node (gotcha 3);
  # batch_sched_delay=0: allocate at once instead of after ~3 s; job_comment: sacct shows the
  # comment, where the executor plugin puts the rule name (its job name is the run's UUID).
  write /etc/slurm/slurm.conf 0644 <<EOF && CONF_CHANGED=1
# Written by tests/workflow/local_slurm.sh: a single-node test cluster on localhost.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStoreFlags=job_comment
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 $hw RealMemory=$((mem * 95 / 100)) State=UNKNOWN
$parts
EOF
  # slurmdbd refuses a config that is not mode 0600 and owned by SlurmUser.
  write /etc/slurm/slurmdbd.conf 0600 <<EOF || true
# Written by tests/workflow/local_slurm.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

start_munge() {
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge   # /run is a tmpfs; no systemd to make it
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  retry 10 sh -c 'munge -n | unmunge' || die "munged does not answer"
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$DIR/log/mariadb-install.log" 2>&1
  if ! mariadb-admin ping >/dev/null 2>&1; then
    log "starting mariadbd"
    # setsid + redirected output: no pipe of the caller stays open.
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file="$MARIADB_PID" \
      --innodb-lock-wait-timeout=900 >>"$DIR/log/mariadb.log" 2>&1 </dev/null &
    retry 60 mariadb-admin ping || die "mariadbd did not start (see $DIR/log/mariadb.log)"
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

dbd_up() { (exec 3<>/dev/tcp/127.0.0.1/6819) 2>/dev/null; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -n "$NODE" -o %t 2>/dev/null | head -1; }
node_ready() { case "$(node_state)" in idle* | mix* | alloc* | comp*) return 0 ;; *) return 1 ;; esac; }

do_start() {
  do_install
  write_configs
  start_munge
  start_mariadb
  if ! (alive "$DBD_PID" && dbd_up); then
    log "starting slurmdbd"
    slurmdbd
    retry 30 dbd_up || die "slurmdbd did not start (see $DIR/log/slurmdbd.log)"
  fi
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true   # exit 1: already there
  if [ "$CONF_CHANGED" = 1 ]; then stop_pidfile slurmd "$SLURMD_PID"; stop_pidfile slurmctld "$CTLD_PID"; fi
  if ! (alive "$CTLD_PID" && ctld_up); then
    log "starting slurmctld"
    slurmctld
    retry 30 ctld_up || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  fi
  alive "$SLURMD_PID" || { log "starting slurmd"; slurmd -N "$NODE"; }
  retry 30 sh -c "sinfo -h -n $NODE -o %t | grep -qv -e down -e unk" || true
  case "$(node_state)" in drain* | down* | fail*) scontrol update NodeName="$NODE" State=RESUME || true ;; esac
  retry 30 node_ready || die "node $NODE not ready: $(node_state) (see $DIR/log/slurmd.log)"
  sacctmgr -i add account "$ACCOUNT" Description=ci Organization=ci >/dev/null 2>&1 || true
  sacctmgr -i add user root DefaultAccount="$ACCOUNT" >/dev/null 2>&1 || true
  log "ready: partitions $PARTITIONS, node $NODE ($(node_state)), account $ACCOUNT, logs in $DIR/log"
}

do_stop() {
  stop_pidfile slurmd "$SLURMD_PID"
  stop_pidfile slurmctld "$CTLD_PID"
  stop_pidfile slurmdbd "$DBD_PID"
  stop_pidfile mariadbd "$MARIADB_PID"
  stop_pidfile munged "$MUNGE_PID"
}

do_status() {
  for d in munged:$MUNGE_PID mariadbd:$MARIADB_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    if alive "${d#*:}"; then echo "${d%%:*}: running"; else echo "${d%%:*}: stopped"; fi
  done
  sinfo || true
}

case "$ACTION" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
