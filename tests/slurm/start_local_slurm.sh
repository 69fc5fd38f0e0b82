#!/usr/bin/env bash
# A real SLURM cluster on this machine, for the tests of slurm/*.sh and the NeMo-Run SLURM executor (CPU, no GPU,
# no systemd): one single-node partition as before plus MULTI_NODES nodes that are each their own host on a private
# network, so that multi-node jobs (srun across nodes, torchrun's c10d rendezvous, gloo) really cross a network.
#
#   bash tests/slurm/start_local_slurm.sh start     # install (apt, first time ~10 s) and start what is not running
#   bash tests/slurm/start_local_slurm.sh status    # daemons, namespaces and sinfo
#   bash tests/slurm/start_local_slurm.sh stop      # stop the daemons this script started, remove the namespaces
#   source /tmp/local-slurm/env.sh                   # clients (sbatch, squeue, sacct...) need SLURM_CONF
#
# Layout (defaults):
#   partition debug (Default)  node `localhost`, NodeAddr 127.0.0.1, slurmd in this machine's namespaces: the
#                              single-node cluster the older tests were written for, unchanged
#   partition multi            nodes node1..nodeN (N = MULTI_NODES). Node i is a network namespace `slurm-node<i>`
#                              with its own address $SLURM_NET.(10+i) on a veth pair to the bridge $SLURM_BRIDGE
#                              ($SLURM_NET.1, this machine's side), its own hostname (a UTS namespace: `hostname`
#                              prints node<i>), an /etc/hosts naming every node (bind-mounted from $PREFIX/netns/node<i>), and its
#                              own slurmd (-N node<i>), spool ($PREFIX/spool/node<i>), pid file and log
#                              ($PREFIX/log/slurmd-node<i>.log). Jobs' processes live in their node's namespaces.
#   one slurmctld and one slurmdbd (+ MariaDB) in this machine's namespace, reachable from the nodes on the bridge
#   address; munge is shared (its socket is a file: same filesystem, any network namespace).
# Everything stays on this machine: the addresses are private to the namespaces this script creates and `stop` removes.
#
# Daemons: munged, slurmctld, slurmd per node, and (WITH_ACCOUNTING=1) slurmdbd + MariaDB so that `sacct` works.
# Debian 12 packages (slurm-wlm 22.05). Must run as root. Idempotent and safe to call concurrently (flock):
# it starts only what is not running, and restarts the slurm daemons only when the generated config changed (an
# older single-node cluster started by a previous version of this script is upgraded in place). Restarting
# slurmctld/slurmd keeps running jobs (state is saved), but avoid changing FAKE_GPUS or MULTI_NODES under someone.
#
# Env knobs (defaults):
#   SLURM_LOCAL_PREFIX  /tmp/local-slurm   config, state, logs, MariaDB datadir
#   MULTI_NODES         2                  nodes of the `multi` partition (0: only the single-node cluster)
#   SLURM_NET           10.77.12           the /24 of the bridge ($SLURM_NET.1) and the nodes ($SLURM_NET.11, ...)
#   SLURM_BRIDGE        slurmbr0           the bridge's name
#   WITH_ACCOUNTING     1                  1: slurmdbd + MariaDB (sacct, job states after they leave the queue)
#   FAKE_GPUS           0                  N>0: every node advertises N file-backed gres/gpu, so scripts that ask
#                                          for --gpus-per-node=N schedule (CUDA_VISIBLE_DEVICES stays empty)
#   DB_PORT             3307               MariaDB port on 127.0.0.1
#   KILL_WAIT           30                 seconds between SIGTERM and SIGKILL when a job is cancelled/requeued
#   REQUEUE_DELAY       10                 AuthInfo=cred_expire: a requeued job waits this long (+1 s) before it
#                                          may start again (SLURM's default is 120 s; short keeps tests quick)
#
# Choices that make it work here (see ../../../shared/NOTES.md, "SLURM"):
#   - munged runs as the munge user; the machine's hostname is not resolvable as a node name, so the single node is
#     NodeName=localhost NodeAddr=127.0.0.1 and slurmd runs with -N localhost; the namespace nodes run slurmd -N
#     node<i> and are reached at NodeAddr; SlurmctldHost=localhost($SLURM_NET.1) so that every node finds slurmctld;
#   - no cgroups: proctrack/linuxproc, task/none (so every node sees all of this machine's CPUs);
#   - DependencyParameters=kill_invalid_depend: an afterok dependent of a failed job is cancelled instead of
#     pending forever (22.05 ignores it under SchedulerParameters).
set -euo pipefail

ACTION=${1:-start}
PREFIX=${SLURM_LOCAL_PREFIX:-/tmp/local-slurm}
MULTI_NODES=${MULTI_NODES:-2}
SLURM_NET=${SLURM_NET:-10.77.12}
SLURM_BRIDGE=${SLURM_BRIDGE:-slurmbr0}
WITH_ACCOUNTING=${WITH_ACCOUNTING:-1}
FAKE_GPUS=${FAKE_GPUS:-0}
DB_PORT=${DB_PORT:-3307}
KILL_WAIT=${KILL_WAIT:-30}
REQUEUE_DELAY=${REQUEUE_DELAY:-10}
ETC=$PREFIX/etc
LOG=$PREFIX/log
RUN=$PREFIX/run
export SLURM_CONF=$ETC/slurm.conf
NODE=localhost
MULTI=()
for ((i = 1; i <= MULTI_NODES; i++)); do MULTI+=("node$i"); done
ns_of() { echo "slurm-$1"; }           # node1 -> its network namespace
addr_of() { echo "$SLURM_NET.$((10 + ${1#node}))"; }
veth_of() { echo "slv-$1"; }           # this machine's end of the node's veth pair (the node's end is eth0)

log() { echo "[local-slurm $(date +%T)] $*" >&2; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "timed out after ${secs}s waiting for $what"
  return 1
}

stop_pidfile() { # stop_pidfile NAME PIDFILE
  alive "$2" || { rm -f "$2"; return 0; }
  local pid i
  pid=$(cat "$2")
  log "stopping $1 (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then log "$1 ignored SIGTERM for 20 s: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$2"
}

install_packages() {
  local wanted=(munge slurmctld slurmd slurm-client) missing=() p
  [ "$WITH_ACCOUNTING" = 1 ] && wanted+=(slurmdbd mariadb-server mariadb-client)
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # postinst scripts try to start the services; without systemd that is refused, harmlessly
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$LOG/apt.log" 2>&1 \
    || { tail -30 "$LOG/apt.log" >&2; exit 1; }
}

replace_if_changed() { # replace_if_changed PATH MODE < content; succeeds only if PATH changed
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  chmod "$2" "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}

write_configs() {
  SLURM_CONF_CHANGED=0
  DBD_CONF_CHANGED=0
  # the node's hardware as slurmd sees it: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=24105";
  # every node of this cluster is this machine (task/none: no CPU binding), so they all declare the same
  local hw
  hw=$(/usr/sbin/slurmd -C | head -1)
  field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  # declare less memory than there is: a node reporting less than RealMemory is drained
  local hw_line
  hw_line="CPUs=$(field CPUs) Boards=$(field Boards)"
  hw_line+=" SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket)"
  hw_line+=" ThreadsPerCore=$(field ThreadsPerCore) RealMemory=$(($(field RealMemory) * 90 / 100))"
  local gres_types="" gres="" node_lines n
  if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres=" Gres=gpu:$FAKE_GPUS"
    local i files gres_conf=""
    for n in "$NODE" "${MULTI[@]}"; do
      files=()
      for ((i = 0; i < FAKE_GPUS; i++)); do touch "$RUN/fakegpu-$n-$i"; files+=("$RUN/fakegpu-$n-$i"); done
      # SLURM drops GPUs without File=; plain files work (slurmd logs "not a valid character or block device")
      gres_conf+="NodeName=$n Name=gpu File=$(IFS=,; echo "${files[*]}")"$'\n'
    done
    printf '%s' "$gres_conf" | replace_if_changed "$ETC/gres.conf" 644 && SLURM_CONF_CHANGED=1
  elif [ -f "$ETC/gres.conf" ]; then
    rm -f "$ETC/gres.conf"
    SLURM_CONF_CHANGED=1
  fi
  # localhost last: while `localhost` is the only node defined, slurmctld's node lookup returns it for any name,
  # and the next NodeName line would be refused as a duplicate of it
  node_lines=""
  for n in "${MULTI[@]}"; do node_lines+="NodeName=$n NodeAddr=$(addr_of "$n") $hw_line$gres State=UNKNOWN"$'\n'; done
  node_lines+="NodeName=$NODE NodeAddr=127.0.0.1 $hw_line$gres State=UNKNOWN"
  local partitions="PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP"
  ((${#MULTI[@]})) && partitions+=$'\n'"PartitionName=multi Nodes=$(IFS=,; echo "${MULTI[*]}") MaxTime=INFINITE State=UP"
  # with namespace nodes, slurmctld (and slurmdbd) are reached on the bridge address from every node
  local ctld_host=localhost dbd_host=localhost
  ((${#MULTI[@]})) && ctld_host="localhost($SLURM_NET.1)" dbd_host=$SLURM_NET.1
  local accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$dbd_host
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
  fi
  replace_if_changed "$SLURM_CONF" 644 <<EOF && SLURM_CONF_CHANGED=1 || true
# generated by tests/slurm/start_local_slurm.sh: partition debug = the single node localhost,
# partition multi = ${#MULTI[@]} nodes in their own network namespaces
ClusterName=local
SlurmctldHost=$ctld_host
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=$REQUEUE_DELAY
StateSaveLocation=$PREFIX/state
SlurmdSpoolDir=$PREFIX/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# schedule pending jobs every 2 s instead of every 30-60 s: a requeued job restarts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
DependencyParameters=kill_invalid_depend
KillWait=$KILL_WAIT
$accounting
ReturnToService=2
MpiDefault=none
$gres_types
$node_lines
$partitions
EOF
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF; it must be 0600 and owned by SlurmUser
    replace_if_changed "$ETC/slurmdbd.conf" 600 <<EOF && DBD_CONF_CHANGED=1 || true
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  fi
  echo "export SLURM_CONF=$SLURM_CONF" >"$PREFIX/env.sh"
}

# ---- the namespace nodes' network -------------------------------------------------------------------------------

setup_network() { # the bridge, then per node: namespace, veth pair, address, /etc/hosts
  ((${#MULTI[@]})) || return 0
  local routed
  routed=$(ip -4 route show "$SLURM_NET.0/24" 2>/dev/null | grep -v "dev $SLURM_BRIDGE" || true)
  if [ -n "$routed" ]; then
    log "$SLURM_NET.0/24 is already in use on this machine ($routed): choose another SLURM_NET"
    exit 1
  fi
  if ! ip link show "$SLURM_BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $SLURM_BRIDGE ($SLURM_NET.1/24)"
    ip link add "$SLURM_BRIDGE" type bridge
  fi
  ip -4 addr show dev "$SLURM_BRIDGE" | grep -q "inet $SLURM_NET.1/" || ip addr add "$SLURM_NET.1/24" dev "$SLURM_BRIDGE"
  ip link set "$SLURM_BRIDGE" up
  local hosts n ns veth
  # every node resolves every node's name (torchrun's rendezvous endpoint and gloo use the hostnames)
  hosts="$(grep -vE '(^|[[:space:]])node[0-9]+([[:space:]]|$)' /etc/hosts)"$'\n'"$SLURM_NET.1 slurmctld-host"
  for n in "${MULTI[@]}"; do hosts+=$'\n'"$(addr_of "$n") $n"; done
  for n in "${MULTI[@]}"; do
    ns=$(ns_of "$n")
    veth=$(veth_of "$n")
    if ! ip netns list | grep -qw "$ns"; then log "creating namespace $ns ($n, $(addr_of "$n"))"; ip netns add "$ns"; fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip netns exec "$ns" ip link del eth0 2>/dev/null || true # a half-made pair from an interrupted start
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$SLURM_BRIDGE" up
    ip netns exec "$ns" ip -4 addr show dev eth0 | grep -q "inet $(addr_of "$n")/" \
      || ip netns exec "$ns" ip addr add "$(addr_of "$n")/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    mkdir -p "$PREFIX/netns/$n" # bind-mounted over /etc/hosts in the node's mount namespace (start_slurmd)
    printf '%s\n' "$hosts" | replace_if_changed "$PREFIX/netns/$n/hosts" 644 || true
  done
}

teardown_network() { # every namespace of this cluster (MULTI_NODES or not), its processes, the bridge
  local ns pids n
  for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^slurm-node[0-9]+$/ {print $1}'); do
    n=${ns#slurm-}
    # what is left in the namespace was started by its slurmd (job steps); the slurmd is stopped already
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "${pids// /}" ]; then
      log "$ns: stopping leftover processes $pids"
      # shellcheck disable=SC2086
      kill $pids 2>/dev/null || true
      sleep 2
      pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
      # shellcheck disable=SC2086
      [ -n "${pids// /}" ] && kill -9 $pids 2>/dev/null || true
    fi
    log "removing namespace $ns"
    ip link del "$(veth_of "$n")" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "${PREFIX:?}/netns/$n"
  done
  if ip link show "$SLURM_BRIDGE" >/dev/null 2>&1; then log "removing bridge $SLURM_BRIDGE"; ip link del "$SLURM_BRIDGE"; fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged 9>&- # refuses to run as root; daemonises itself
  wait_for "munge round trip" 20 bash -c 'munge -n | unmunge'
  touch "$RUN/munged.started-here"
}

start_mariadb() {
  local data=$PREFIX/db
  if [ ! -d "$data/mysql" ]; then
    log "initialising MariaDB in $data"
    mkdir -p "$data"
    mariadb-install-db --user=root --datadir="$data" --auth-root-authentication-method=normal \
      >"$LOG/mariadb-install.log" 2>&1 || { tail -20 "$LOG/mariadb-install.log" >&2; exit 1; }
  fi
  if ! alive "$RUN/mariadbd.pid"; then
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid mariadbd --no-defaults --user=root --datadir="$data" --socket="$RUN/mysqld.sock" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --pid-file="$RUN/mariadbd.pid" --log-error="$LOG/mariadbd.log" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
    wait_for "mariadbd" 60 mariadb-admin --socket="$RUN/mysqld.sock" -uroot ping
  fi
  mariadb --socket="$RUN/mysqld.sock" -uroot -e "
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

stop_slurmds() { # every node's slurmd, those of nodes no longer configured and a pre-namespace slurmd.pid included
  local f
  for f in "$RUN"/slurmd-*.pid "$RUN/slurmd.pid"; do
    [ -e "$f" ] || continue
    f=${f##*/}
    f=${f%.pid}
    stop_pidfile "$f" "$RUN/$f.pid"
  done
}

start_slurmd() { # start_slurmd NODE
  local n=$1
  alive "$RUN/slurmd-$n.pid" && return 0
  mkdir -p "$PREFIX/spool/$n"
  log "starting slurmd -N $n"
  if [ "$n" = "$NODE" ]; then
    /usr/sbin/slurmd -f "$SLURM_CONF" -N "$n" 9>&-
  else
    # its own network namespace, a UTS namespace for its hostname and a mount namespace for its /etc/hosts;
    # slurmd daemonises inside them and its job steps inherit them. (Not `ip netns exec`: it remounts /sys, and
    # slurmd refuses to start without /sys/fs/cgroup even with proctrack/linuxproc.)
    # shellcheck disable=SC2016  # expanded by sh inside the namespaces
    nsenter --net="/run/netns/$(ns_of "$n")" unshare --mount --uts --propagation slave -- sh -c \
      'mount --bind "$3" /etc/hosts && hostname "$1" && exec /usr/sbin/slurmd -f "$2" -N "$1"' \
      slurmd "$n" "$SLURM_CONF" "$PREFIX/netns/$n/hosts" 9>&-
  fi
}

wait_usable() { # wait_usable NODE...
  local n i state
  for n in "$@"; do
    for ((i = 0; i < 240; i++)); do
      state=$(sinfo -h -N -n "$n" -o %T 2>/dev/null | head -1 || true)
      case "$state" in
        idle | mixed | allocated | completing) break ;;
        *drain* | *inval* | down*) scontrol update nodename="$n" state=resume 2>/dev/null || true ;;
      esac
      sleep 0.25
    done
    if ((i == 240)); then
      log "node $n never became usable (state '$state'); see $LOG/slurmd-$n.log and $LOG/slurmctld.log"
      scontrol show node "$n" >&2 || true
      return 1
    fi
  done
}

start_slurm() {
  if [ "$WITH_ACCOUNTING" = 1 ]; then
    [ "$DBD_CONF_CHANGED" = 1 ] && stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    if ! alive "$RUN/slurmdbd.pid"; then log "starting slurmdbd"; /usr/sbin/slurmdbd 9>&-; fi
    wait_for "slurmdbd" 60 sacctmgr -n list cluster
  fi
  if [ "$SLURM_CONF_CHANGED" = 1 ]; then
    stop_slurmds
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
  fi
  if ! alive "$RUN/slurmctld.pid"; then log "starting slurmctld"; /usr/sbin/slurmctld -f "$SLURM_CONF" 9>&-; fi
  wait_for "slurmctld" 60 bash -c 'scontrol ping | grep -q "is UP"'
  local n
  for n in "$NODE" "${MULTI[@]}"; do start_slurmd "$n"; done
  wait_usable "$NODE" "${MULTI[@]}" || return 1
  log "ready: partition debug = $NODE${MULTI[*]:+, partition multi = ${MULTI[*]}}; export SLURM_CONF=$SLURM_CONF"
}

status() {
  local d f n
  for d in munged mariadbd slurmdbd slurmctld; do
    f=$RUN/$d.pid
    [ "$d" = munged ] && f=/run/munge/munged.pid
    if alive "$f"; then echo "$d running (pid $(cat "$f"))"; else echo "$d not running"; fi
  done
  for f in "$RUN"/slurmd-*.pid "$RUN/slurmd.pid"; do
    [ -e "$f" ] || continue
    n=${f##*/slurmd}
    n=${n#-}
    n=${n%.pid}
    if alive "$f"; then echo "slurmd ${n:-(single node, older script)} running (pid $(cat "$f"))"; else echo "slurmd $n not running"; fi
  done
  for n in $(ip netns list 2>/dev/null | awk '$1 ~ /^slurm-node[0-9]+$/ {print $1}'); do
    echo "namespace $n: $(ip netns exec "$n" ip -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')"
  done
  [ -f "$SLURM_CONF" ] && sinfo 2>&1 || true
}

mkdir -p "$ETC" "$LOG" "$RUN" "$PREFIX/state" "$PREFIX/spool"
case "$ACTION" in
  start)
    [ "$(id -u)" = 0 ] || { echo "start needs root (it installs packages and runs the daemons)" >&2; exit 1; }
    exec 9>"$PREFIX/.lock"
    flock 9 # concurrent callers (parallel test sessions) wait for the first to finish
    # (every daemon below is started with 9>&-: one that inherited the fd would hold the lock forever)
    install_packages
    write_configs
    setup_network
    start_munge
    [ "$WITH_ACCOUNTING" = 1 ] && start_mariadb
    start_slurm
    ;;
  stop)
    exec 9>"$PREFIX/.lock"
    flock 9
    stop_slurmds
    stop_pidfile slurmctld "$RUN/slurmctld.pid"
    stop_pidfile slurmdbd "$RUN/slurmdbd.pid"
    stop_pidfile mariadbd "$RUN/mariadbd.pid"
    teardown_network
    if [ -f "$RUN/munged.started-here" ]; then
      stop_pidfile munged /run/munge/munged.pid
      rm -f "$RUN/munged.started-here"
    fi
    ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
