#!/usr/bin/env bash
# The cluster path for real, on one Linux machine (root): two test hosts in network namespaces, a
# Ray cluster brought up on them with `ray up` from sweeps/cluster/local-venv.yaml over SSH, MLflow
# on PostgreSQL on the head, sweeps through `ray submit` and `ray job submit`, the worker host
# lost in the middle of a trial, `ray down`, and everything removed again.
#
#   bash scripts/cluster_test.sh            (from a checkout installed with scripts/install.sh)
#   bash scripts/cluster_test.sh --check    only say what this machine lacks (exit 0 or 77)
#
# Each host is a network namespace with its own address on a private test subnet (a bridge joins
# them and this machine), a PID namespace (so `ray stop` on a test host ends that host's Ray
# only, never a Ray of this machine) and its own /tmp and /root; the rest of the filesystem is
# shared, like the NFS mount docs/cluster.md asks for: the checkout, its .venv, the data root and
# the run's folder (Tune storage, MLflow artifacts) are the same paths on both hosts.
# Needs: ip (iproute2), sshd + ssh (openssh-server), rsync, PostgreSQL's server binaries.
# Environment: AMM_CLUSTER_VENV (default ./.venv), AMM_DATA_DIR (default ../shared/data, ./data),
# AMM_CLUSTER_NET (first three octets of the test subnet, default 10.213.0), AMM_CLUSTER_KEEP=1
# keeps the run's folder. Exit 0: all passed; 1: a step failed; 77: this machine cannot host it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
VENV="$(cd "${AMM_CLUSTER_VENV:-.venv}" 2>/dev/null && pwd || echo "${AMM_CLUSTER_VENV:-.venv}")"
NET="${AMM_CLUSTER_NET:-10.213.0}"
HEAD="$NET.1"
WORKER="$NET.2"
GATE="$NET.254" # this machine's address on the test subnet (the client: ray up, submit, amm)
NS_HEAD=amm-ct-head
NS_WORKER=amm-ct-worker
BRIDGE=amm-ct-br
CONFIG_SRC=sweeps/cluster/local-venv.yaml
t0=$SECONDS

step() { printf '\n== [%s +%3ds] %s\n' "$(date -u +%H:%M:%S)" $((SECONDS - t0)) "$*"; }
fail() {
  echo "cluster test: FAILED: $*" >&2
  exit 1
}

# --- what the machine must have -------------------------------------------------------------
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (ip netns, sshd)")
command -v ip >/dev/null || missing+=("ip (Debian: iproute2)")
[ -x /usr/sbin/sshd ] || missing+=("sshd (Debian: openssh-server)")
command -v ssh >/dev/null || missing+=("ssh (Debian: openssh-client)")
command -v rsync >/dev/null || missing+=("rsync")
command -v unshare >/dev/null || missing+=("unshare (util-linux)")
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || missing+=("PostgreSQL server (Debian: postgresql)")
id postgres >/dev/null 2>&1 || missing+=("the postgres user (Debian: postgresql)")
[ -x "$VENV/bin/ray" ] || missing+=("the project installed in $VENV (bash scripts/install.sh)")
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  probe="amm-ct-probe-$$"
  if ip netns add "$probe" 2>/dev/null; then
    ip netns exec "$probe" unshare --pid --fork --mount-proc true 2>/dev/null \
      || missing+=("PID and mount namespaces (unshare --pid --mount-proc)")
    ip netns del "$probe"
  else
    missing+=("permission to make network namespaces (ip netns add)")
  fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "cluster test: cannot run on this machine, it lacks: $(IFS=';'; echo "${missing[*]}")"
  exit 77
fi
if [ "${1:-}" = "--check" ]; then
  echo "cluster test: this machine has what it needs"
  exit 0
fi

if [ -z "${AMM_DATA_DIR:-}" ]; then
  AMM_DATA_DIR="$([ -d ../shared/data ] && echo ../shared/data || echo data)"
fi
DATA="$(cd "$AMM_DATA_DIR" && pwd)" || fail "data root $AMM_DATA_DIR not found"
ls "$DATA"/mnist/MNIST/raw/*.gz >/dev/null 2>&1 || fail "no MNIST under $DATA (amm data get mnist)"

RUN="$(mktemp -d /var/tmp/amm-cluster.XXXXXX)" # not /tmp: each test host has its own /tmp
chmod 755 "$RUN"
SHARED="$RUN/shared"
STORAGE="$SHARED/amm-runs"
CLUSTER="amm-ct-$$"
CONFIG="$RUN/cluster.yaml"
KEY="$RUN/id_ed25519"
export PATH="$VENV/bin:$PATH" PYTHONPATH="$REPO" RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS MLFLOW_TRACKING_URI AMM_SWEEP_STORAGE
declare -A NS_PID=()
cluster_up=0
pg_up=0

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  step "teardown"
  if [ "$cluster_up" = 1 ]; then
    echo "-- ray down -y (the cluster was still up)"
    timeout 180 ray down -y "$CONFIG" >"$RUN/ray-down.log" 2>&1 || echo "   ray down failed"
  fi
  for host in "${!NS_PID[@]}"; do # SIGKILL to a PID namespace's first process ends all of it
    init="$(pgrep -P "${NS_PID[$host]}" | head -n 1)"
    [ -n "$init" ] && kill -9 "$init" 2>/dev/null
    kill "${NS_PID[$host]}" 2>/dev/null
  done
  [ "$pg_up" = 1 ] && ip netns exec "$NS_HEAD" runuser -u postgres -- \
    "$PG_BIN/pg_ctl" -D "$RUN/postgres/data" -m fast -w stop >/dev/null
  ip netns del "$NS_HEAD" 2>/dev/null
  ip netns del "$NS_WORKER" 2>/dev/null
  ip link del "$BRIDGE" 2>/dev/null
  ip link del amm-ct-h 2>/dev/null # the kernel may free a deleted namespace's links only later
  ip link del amm-ct-w 2>/dev/null
  rm -f "/tmp/ray/cluster-$CLUSTER.state" "/tmp/ray/cluster-$CLUSTER.lock"
  echo "-- namespaces, bridge, sshd, Ray, MLflow and PostgreSQL of this run stopped and removed"
  if [ "$rc" -ne 0 ] || [ "${AMM_CLUSTER_KEEP:-0}" = 1 ]; then
    echo "-- logs kept in $RUN"
  else
    rm -rf "$RUN"
  fi
  echo "cluster test: $([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - t0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

logged() { # logged LOG CMD...: CMD's output shown and kept in LOG; CMD's exit status
  local log="$1"
  shift
  ("$@" 2>&1; echo $? >"$log.rc") | tee "$log" \
    | grep --line-buffered -vE "VV?INFO|Loaded cached|no-config-cache|Fetched IP|Permanently added|^$" || true
  return "$(cat "$log.rc")"
}

on() { # on HOST CMD...: a command on a test host, over SSH as Ray does
  ssh -i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR "root@$1" "${@:2}"
}

# --- two hosts ------------------------------------------------------------------------------
step "network: $NS_HEAD ($HEAD) and $NS_WORKER ($WORKER) on bridge $BRIDGE ($GATE/24)"
for ns in "$NS_HEAD" "$NS_WORKER"; do # left over from an interrupted run of this script
  ip netns del "$ns" 2>/dev/null || true
done
for link in "$BRIDGE" amm-ct-h amm-ct-w; do
  ip link del "$link" 2>/dev/null || true
done
trap 'echo "cluster test: FAILED: line $LINENO: $BASH_COMMAND" >&2' ERR
ip link add "$BRIDGE" type bridge
ip addr add "$GATE/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for pair in "$NS_HEAD:$HEAD:amm-ct-h" "$NS_WORKER:$WORKER:amm-ct-w"; do
  IFS=: read -r ns addr veth <<<"$pair"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip addr add "$addr/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
done
ip -br addr show dev "$BRIDGE"

step "sshd on each host: a key made for this run, root login by key only"
ssh-keygen -q -t ed25519 -N '' -C "amm cluster test" -f "$KEY"
ssh-keygen -q -t ed25519 -N '' -f "$RUN/host_key"
mkdir -p /run/sshd
PY_UNDER_ROOT="$(readlink -f "$VENV/bin/python" | sed -n 's|^/root/\([^/]*\)/.*|\1|p')"
for pair in "$NS_HEAD:$HEAD:head" "$NS_WORKER:$WORKER:worker"; do
  IFS=: read -r ns addr host <<<"$pair"
  mkdir -p "$RUN/$host/tmp" "$RUN/$host/home/.ssh"
  chmod 1777 "$RUN/$host/tmp"
  cp "$KEY.pub" "$RUN/$host/home/.ssh/authorized_keys"
  cat >"$RUN/$host/sshd_config" <<EOF
ListenAddress $addr
HostKey $RUN/host_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 100:30:200
EOF
  # its own PID namespace, /tmp and /root; what the hosts share with this machine (the checkout,
  # its .venv, the data root, an interpreter under /root as with pyenv) is bound into the new
  # /tmp and /root at the same path first; sshd is its first process
  mounts="true"
  for keep in "$REPO" "$VENV" "$DATA" ${PY_UNDER_ROOT:+"/root/$PY_UNDER_ROOT"}; do
    case "$keep" in
      /tmp/*) inside="$RUN/$host/tmp/${keep#/tmp/}" ;;
      /root/*) inside="$RUN/$host/home/${keep#/root/}" ;;
      *) continue ;;
    esac
    mkdir -p "$inside"
    mounts="$mounts && mount --bind '$keep' '$inside'"
  done
  mounts="$mounts && mount --rbind '$RUN/$host/tmp' /tmp && mount --rbind '$RUN/$host/home' /root"
  setsid ip netns exec "$ns" unshare --pid --fork --mount-proc --propagation private \
    bash -c "$mounts && exec /usr/sbin/sshd -D -e -f '$RUN/$host/sshd_config'" \
    >"$RUN/$host/sshd.log" 2>&1 &
  NS_PID[$host]=$!
done
for addr in "$HEAD" "$WORKER"; do
  for _ in $(seq 50); do on "$addr" true 2>/dev/null && break || sleep 0.2; done
  on "$addr" 'echo "   $(hostname -I| tr -d " ") reached over SSH: $(ps -e --no-headers | wc -l) processes in its PID namespace, HOME=$HOME"' \
    || fail "no SSH login on $addr (logs: $RUN/*/sshd.log)"
done

# --- MLflow's PostgreSQL on the head --------------------------------------------------------
step "PostgreSQL on $HEAD:5432 ($PG_BIN), database mlflow for this run"
PG="$RUN/postgres" # data folder, socket and log, owned by the postgres user
mkdir -p "$PG" "$SHARED"
chown postgres "$PG"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG/data" -U postgres --auth=trust >"$RUN/initdb.log" \
  || fail "initdb (log: $RUN/initdb.log)"
echo "host all mlflow $NET.0/24 scram-sha-256" >>"$PG/data/pg_hba.conf"
ip netns exec "$NS_HEAD" runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG/data" -l "$PG/server.log" \
  -w -o "-c listen_addresses=$HEAD -c port=5432 -c unix_socket_directories=$PG" start \
  >/dev/null || fail "PostgreSQL did not start (log: $PG/server.log)"
pg_up=1
psql_() { runuser -u postgres -- psql -q -h "$PG" -U postgres -v ON_ERROR_STOP=1 "$@"; }
psql_ -c "CREATE ROLE mlflow LOGIN PASSWORD 'mlflow'" -c "CREATE DATABASE mlflow OWNER mlflow"
echo "   $(ip netns exec "$NS_HEAD" "$PG_BIN/pg_isready" -h "$HEAD" -p 5432)"

# The test hosts have no route out: MLflow's PostgreSQL driver goes into the shared environment
# from here (the config's head_setup_commands would fetch it on a head with network access).
"$VENV/bin/python" -c "import psycopg2" 2>/dev/null \
  || "$VENV/bin/python" -m pip install -q "psycopg2-binary==2.9.13" || fail "pip install psycopg2-binary"

# --- ray up -----------------------------------------------------------------------------------
step "ray up -y on $CONFIG_SRC (head $HEAD, worker $WORKER, user root, this run's key)"
# The example paths of the config become this machine's: the checkout (seen by both hosts),
# its environment, the data root and the shared folder. This machine's 2 cores serve both test
# hosts, hence 1 CPU each and a small object store.
python - "$CONFIG_SRC" "$CONFIG" <<EOF
import sys, yaml
text = open(sys.argv[1]).read()
for old, new in [
    ("/mnt/shared/amm-sweeps/.venv", "$VENV"), ("/mnt/shared/amm-sweeps", "$REPO"),
    ("/mnt/shared/amm-data", "$DATA"), ("/mnt/shared", "$SHARED"),
    ("10.0.0.10", "$HEAD"), ("10.0.0.11", "$WORKER"),
    ("ray start --head", "ray start --head --num-cpus=1 --object-store-memory=300000000"),
    ("ray start --address", "ray start --num-cpus=1 --object-store-memory=300000000 --address"),
]:
    text = text.replace(old, new)
c = yaml.safe_load(text)
c["cluster_name"] = "$CLUSTER"
c["auth"] = {"ssh_user": "root", "ssh_private_key": "$KEY"}
yaml.safe_dump(c, open(sys.argv[2], "w"), sort_keys=False)
EOF
# The v2 autoscaler (Ray's default since 2.50) marks the head of a `local` provider cluster
# terminated and never starts its workers (seen with Ray 2.60): the v1 autoscaler does.
RAY_UP_enable_autoscaler_v2=0 ray up -y --no-config-cache "$CONFIG" >"$RUN/ray-up.log" 2>&1 || {
  tail -n 60 "$RUN/ray-up.log"
  fail "ray up (log: $RUN/ray-up.log)"
}
cluster_up=1
grep -E "Ray runtime started|Useful commands|ray submit" "$RUN/ray-up.log" | head -n 3 || true
echo "   waiting for the worker node (the head's autoscaler starts it over SSH)"
for _ in $(seq 90); do
  alive="$(python scripts/cluster_check.py alive "http://$HEAD:8265" 2>/dev/null || true)"
  [[ "$alive" == *"$WORKER"* ]] && break
  sleep 2
done
echo "   alive Ray nodes: $alive"
[[ "$alive" == *"$HEAD"* && "$alive" == *"$WORKER"* ]] || fail "both nodes did not join"
for _ in $(seq 150); do # MLflow creates its tables first (minutes on a loaded machine)
  curl -fsS "http://$HEAD:5000/health" >/dev/null 2>&1 && break
  sleep 2
done
curl -fsS "http://$HEAD:5000/health" >/dev/null || fail "MLflow on $HEAD:5000 (log: $SHARED/amm-mlflow/server.log)"
echo "   MLflow at http://$HEAD:5000 (PostgreSQL store), Ray job API at http://$HEAD:8265"

# --- sweeps -----------------------------------------------------------------------------------
SPEC="$REPO/sweeps/smoke.yaml"
TRIALS=4 # sweeps/smoke.yaml: 2 values x 2 seeds; fewer steps than its 150 (2 cores serve both hosts)
common=(--storage "$STORAGE" --tracking-uri "http://$HEAD:5000")

step "ray submit $CONFIG_SRC amm_cli/main.py -- sweep run sweeps/smoke.yaml --address auto ..."
logged "$RUN/submit.log" ray submit "$CONFIG" amm_cli/main.py -- sweep run "$SPEC" \
  --address auto --name cluster-submit --set train.steps=100 "${common[@]}" || fail "ray submit (log: $RUN/submit.log)"
python scripts/cluster_check.py nodes "$STORAGE" cluster-submit "$HEAD" "$WORKER" \
  || fail "trials of cluster-submit did not run on both hosts"

step "ray job submit --address http://$HEAD:8265 -- amm sweep run ... --name cluster-job"
logged "$RUN/job.log" ray job submit --address "http://$HEAD:8265" -- \
  amm sweep run "$SPEC" --name cluster-job --set train.steps=100 "${common[@]}" || fail "ray job submit (log: $RUN/job.log)"
python scripts/cluster_check.py nodes "$STORAGE" cluster-job "$HEAD" "$WORKER" \
  || fail "trials of cluster-job did not run on both hosts"

step "amm table cluster-submit / cluster-job --tracking-uri http://$HEAD:5000 (from this machine)"
for name in cluster-submit cluster-job; do
  amm table "$name" --tracking-uri "http://$HEAD:5000" || fail "amm table $name"
done
for name in cluster-submit cluster-job; do
  python scripts/cluster_check.py mlflow "http://$HEAD:5000" "$name" "$TRIALS" \
    || fail "MLflow runs of $name"
done

# --- a node lost ------------------------------------------------------------------------------
step "a node lost: sweep cluster-lost (250 steps a trial) through the job API, worker killed mid-trial"
ray job submit --no-wait --submission-id cluster-lost --address "http://$HEAD:8265" -- \
  amm sweep run "$SPEC" --name cluster-lost --set train.steps=250 "${common[@]}" \
  >"$RUN/lost-submit.log" 2>&1 || fail "ray job submit (cluster-lost)"
python scripts/cluster_check.py wait-checkpoint "$STORAGE" cluster-lost "$WORKER" 600 \
  || fail "no trial checkpointed on the worker"
init="$(pgrep -P "${NS_PID[worker]}" | head -n 1)"
echo "   SIGKILL to every process of host $WORKER (its PID namespace: sshd, raylet, trial workers)"
kill -9 "$init"
unset "NS_PID[worker]"
ip netns exec "$NS_WORKER" ip link set eth0 down # and its link cut: the host is gone
echo "   waiting for the sweep (Tune restarts the lost trial on the head from its checkpoint)"
for _ in $(seq 600); do
  # it ends with "Job 'cluster-lost' succeeded" (or failed, stopped)
  status="$(ray job status --address "http://$HEAD:8265" cluster-lost 2>/dev/null \
    | grep -oiE "succeeded|failed|stopped" | tail -n 1 | tr a-z A-Z || true)"
  [[ "$status" == *SUCCEEDED* || "$status" == *FAILED* || "$status" == *STOPPED* ]] && break
  sleep 3
done
ray job logs --address "http://$HEAD:8265" cluster-lost >"$RUN/lost.log" 2>&1 || true
grep -vE "^\s*$" "$RUN/lost.log" | tail -n 25
echo "   job cluster-lost: ${status:-still running after 30 minutes}"
[[ "$status" == *SUCCEEDED* ]] || fail "the sweep with a lost node did not succeed"
python scripts/cluster_check.py nodes "$STORAGE" cluster-lost "$HEAD" "$WORKER" \
  || fail "trials of cluster-lost"
python scripts/cluster_check.py mlflow "http://$HEAD:5000" cluster-lost "$TRIALS" "$WORKER" \
  || fail "MLflow runs of cluster-lost (one per trial, none RUNNING, one restarted)"
amm table cluster-lost --tracking-uri "http://$HEAD:5000" || fail "amm table cluster-lost"

# --- ray down ---------------------------------------------------------------------------------
step "ray down -y"
timeout 300 ray down -y "$CONFIG" >"$RUN/ray-down.log" 2>&1 || {
  tail -n 30 "$RUN/ray-down.log"
  fail "ray down"
}
cluster_up=0
tail -n 3 "$RUN/ray-down.log"
# by process name (-x; pgrep -f would match this command's own shell); names of <= 15 characters
left="$(on "$HEAD" "pgrep -l -x raylet; pgrep -l -x gcs_server; true")"
[ -z "$left" ] || fail "Ray still runs on the head after ray down: $left"
echo "   no Ray process left on the head"
