#!/usr/bin/env bash
# The cluster stack on one machine, for trying (and testing) everything a cluster adds:
#   PostgreSQL (private instance, own port, temp folder) -> `mlflow server` on it with basic auth and an
#   artifact destination (runs get mlflow-artifacts: URIs) -> a Ray cluster of a head and two worker
#   nodes (own ports, own temp folders, token authentication). Everything binds to 127.0.0.1.
#
#   bash cluster/local-stack.sh start      # prints where it is; `source $MMDER_STACK_DIR/env` for clients
#   bash cluster/local-stack.sh status
#   bash cluster/local-stack.sh kill-node 1   # SIGKILL worker node 1's raylet (node-loss drill)
#   bash cluster/local-stack.sh stop-mlflow; bash cluster/local-stack.sh start-mlflow   # outage drill
#   bash cluster/local-stack.sh stop       # stops exactly the processes `start` started, by PID
#
# Settings (environment): MMDER_STACK_DIR (state, default /tmp/mmder-stack-$UID; keep it short: Ray's
# socket paths live under it), MMDER_STACK_PORT (base port, default 26000; uses the next ~40),
# MMDER_STACK_NODE_CPUS (logical CPUs per worker node, default 2), MMDER_STACK_HEAD_CPUS (default 1),
# MMDER_STACK_RAY=0 (PostgreSQL + MLflow only), MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
# (the MLflow admin; generated when unset). Secrets (PostgreSQL and MLflow passwords, the Ray token)
# are generated into $MMDER_STACK_DIR/secrets (mode 700) and never leave it except through `env`.
set -Eeuo pipefail

S=${MMDER_STACK_DIR:-/tmp/mmder-stack-$(id -u)}
BASE=${MMDER_STACK_PORT:-26000}
NODE_CPUS=${MMDER_STACK_NODE_CPUS:-2}
HEAD_CPUS=${MMDER_STACK_HEAD_CPUS:-1}
WITH_RAY=${MMDER_STACK_RAY:-1}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${MMDER_PYTHON:-$HERE/.venv/bin/python}
BIN=$(dirname "$PY")
PG_PORT=$BASE MLFLOW_PORT=$((BASE + 1)) RAY_PORT=$((BASE + 2)) DASH_PORT=$((BASE + 3))

pg_bin() {  # Debian puts the server binaries outside PATH
  local ctl
  ctl=$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1)
  [ -n "$ctl" ] || { echo "local-stack: no pg_ctl (apt-get install postgresql)" >&2; exit 1; }
  dirname "$(readlink -f "$ctl")"
}

as_pg() {  # PostgreSQL refuses to run as root: run its tools as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

secret() { "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))'; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "local-stack: $what did not come up (see $S/logs)" >&2; return 1; }
    sleep 0.5
  done
}

pids_under() {  # PIDs of processes whose command line names this path (a Ray node's temp folder)
  local needle=$1 p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$needle" && echo "${p#/proc/}"
  done
  return 0
}

with_descendants() {  # the given PIDs and every process below them (Ray workers rename themselves)
  local -A kids=()
  local stat pid ppid rest queue=("$@") p
  for stat in /proc/[0-9]*/stat; do
    read -r pid _ rest 2>/dev/null <"$stat" || continue
    rest=${rest##*) }  # the command name may hold spaces: skip to after its closing parenthesis
    read -r _ ppid _ <<<"$rest"
    kids[$ppid]+="$pid "
  done
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    echo "$p"
    for pid in ${kids[$p]:-}; do queue+=("$pid"); done
  done
}

start_postgres() {
  local bin pgdata pw
  bin=$(pg_bin) pgdata=$S/pg
  pw=$(secret)
  echo "$pw" >"$S/secrets/pg_password"
  mkdir -p "$pgdata"
  [ "$(id -u)" = 0 ] && chown postgres "$pgdata"
  chmod 700 "$pgdata"
  # initdb reads the password from a file the postgres user can read; it is removed right after
  local pwfile=$pgdata/.pw
  echo "$pw" >"$pwfile"
  [ "$(id -u)" = 0 ] && chown postgres "$pwfile"
  as_pg "$bin/initdb" -D "$pgdata/data" -U mlflow --pwfile="$pwfile" -A scram-sha-256 >"$S/logs/initdb.log"
  rm -f "$pwfile"
  as_pg "$bin/pg_ctl" -D "$pgdata/data" -l "$pgdata/server.log" -w -t 60 \
    -o "-p $PG_PORT -h 127.0.0.1 -k $pgdata" start >"$S/logs/pg_ctl.log"
  head -1 "$pgdata/data/postmaster.pid" >"$S/pids/postgres"
  for db in mlflow mlflow_auth; do
    PGPASSWORD=$pw "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlflow "$db"
  done
}

start_mlflow() {
  local pw user mpw uri
  pw=$(cat "$S/secrets/pg_password")
  if [ -s "$S/secrets/mlflow_password" ]; then  # a restart (start-mlflow): the same admin
    user=$(cat "$S/secrets/mlflow_username") mpw=$(cat "$S/secrets/mlflow_password")
  else
    user=${MLFLOW_TRACKING_USERNAME:-mmder}
    mpw=${MLFLOW_TRACKING_PASSWORD:-$(secret)}
    echo "$user" >"$S/secrets/mlflow_username"
    echo "$mpw" >"$S/secrets/mlflow_password"
  fi
  uri="postgresql+psycopg2://mlflow:$pw@127.0.0.1:$PG_PORT"
  mkdir -p "$S/artifacts"
  cat >"$S/secrets/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $uri/mlflow_auth
admin_username = $user
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
  # its own process group (setsid), so `stop` ends the server and its uvicorn workers and nothing else
  MLFLOW_AUTH_CONFIG_PATH=$S/secrets/basic_auth.ini MLFLOW_AUTH_ADMIN_PASSWORD=$mpw \
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret) \
    setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 \
    --backend-store-uri "$uri/mlflow" --artifacts-destination "$S/artifacts" --serve-artifacts \
    --app-name basic-auth >>"$S/logs/mlflow.log" 2>&1 </dev/null &
  echo $! >"$S/pids/mlflow"
  wait_for 300 "mlflow server" mlflow_up  # minutes under load: two workers import MLflow
}

mlflow_up() {  # up, or fail at once when the server process is gone
  kill -0 "$(cat "$S/pids/mlflow")" 2>/dev/null || { tail -3 "$S/logs/mlflow.log" >&2; exit 1; }
  curl -sf "http://127.0.0.1:$MLFLOW_PORT/health"
}

ray_env() {
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$S/secrets/ray_token RAY_ENABLE_UV_RUN_RUNTIME_ENV=0
  export RAY_USAGE_STATS_ENABLED=0
  # a dead node is noticed in seconds, not half a minute (the node-loss drill)
  export RAY_health_check_period_ms=1000 RAY_health_check_failure_threshold=3
}

start_ray_node() {  # start_ray_node NAME INDEX ARGS...: one node, own temp folder and ports
  local name=$1 i=$2; shift 2
  local p=$((BASE + 10 + 6 * i)) tmp=$S/ray/$name
  mkdir -p "$tmp"
  "$BIN/ray" start --node-ip-address=127.0.0.1 --temp-dir="$tmp" --disable-usage-stats \
    --node-manager-port=$p --object-manager-port=$((p + 1)) --metrics-export-port=$((p + 2)) \
    --runtime-env-agent-port=$((p + 3)) --dashboard-agent-listen-port=$((p + 4)) \
    --dashboard-agent-grpc-port=$((p + 5)) --min-worker-port=$((BASE + 100 + 200 * i)) \
    --max-worker-port=$((BASE + 299 + 200 * i)) "$@" >"$S/logs/ray-$name.log" 2>&1
  pids_under "$tmp" >"$S/pids/ray-$name"
}

start_ray() {
  ray_env
  "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$S/secrets/ray_token"
  chmod 600 "$S/secrets/ray_token"
  start_ray_node head 0 --head --port="$RAY_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT" \
    --ray-client-server-port=$((BASE + 4)) --include-dashboard=true --num-cpus="$HEAD_CPUS" \
    --resources='{"mmder_head": 1}'
  for i in 1 2; do
    start_ray_node "node$i" "$i" --address="127.0.0.1:$RAY_PORT" --num-cpus="$NODE_CPUS" \
      --resources="{\"mmder_node_$i\": 1}"
  done
}

write_env() {
  {
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
    echo "export MLFLOW_TRACKING_USERNAME=$(cat "$S/secrets/mlflow_username")"
    echo "export MLFLOW_TRACKING_PASSWORD=$(cat "$S/secrets/mlflow_password")"
    if [ "$WITH_RAY" = 1 ]; then
      echo "export RAY_ADDRESS=127.0.0.1:$RAY_PORT RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$S/secrets/ray_token"
      echo "export RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 RAY_DASHBOARD=http://127.0.0.1:$DASH_PORT"
    fi
  } >"$S/env"
  chmod 600 "$S/env"
}

stop_pids() {  # SIGTERM, then SIGKILL what is left after a grace period
  local pids=("$@") p left
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 20); do
    left=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ $left = 0 ] && return 0
    sleep 0.25
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

stop() {
  [ -d "$S" ] || { echo "local-stack: nothing at $S"; return 0; }
  local f pids
  # Ray nodes: the PIDs recorded at start, any process since started with the node's own temp folder
  # in its command line, and every descendant of those (workers, agents); worker nodes first
  for f in node2 node1 head; do
    [ -d "$S/ray/$f" ] || continue
    mapfile -t pids < <(with_descendants $(cat "$S/pids/ray-$f" 2>/dev/null) $(pids_under "$S/ray/$f") | sort -u)
    stop_pids "${pids[@]}"
  done
  if [ -s "$S/pids/mlflow" ]; then
    kill -TERM -- "-$(cat "$S/pids/mlflow")" 2>/dev/null || true  # its process group
    sleep 1
    kill -KILL -- "-$(cat "$S/pids/mlflow")" 2>/dev/null || true
  fi
  if [ -d "$S/pg/data" ] && [ -s "$S/pids/postgres" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$S/pg/data" -m fast -w stop >/dev/null 2>&1 ||
      kill -TERM "$(cat "$S/pids/postgres")" 2>/dev/null || true
  fi
  rm -rf "$S"
  echo "local-stack: stopped and removed $S"
}

status() {
  [ -d "$S" ] || { echo "local-stack: not running ($S absent)"; return 1; }
  local ok=0 f
  for f in postgres mlflow; do
    if [ -s "$S/pids/$f" ] && kill -0 "$(cat "$S/pids/$f")" 2>/dev/null; then
      echo "$f: running (pid $(cat "$S/pids/$f"))"
    else
      echo "$f: DOWN"; ok=1
    fi
  done
  if [ -d "$S/ray" ]; then
    ray_env
    for f in head node1 node2; do
      if pids_under "$S/ray/$f" | xargs -r -I{} cat /proc/{}/cmdline 2>/dev/null | tr '\0' ' ' |
        grep -q '/raylet '; then
        echo "ray $f: running ($(with_descendants $(pids_under "$S/ray/$f") | wc -l) processes)"
      else
        echo "ray $f: DOWN"; ok=1
      fi
    done
  fi
  echo "clients: source $S/env"
  return $ok
}

kill_node() {  # SIGKILL one worker node's raylet: the node is lost as on a hardware failure
  local tmp=$S/ray/node$1 p
  for p in $(pids_under "$tmp"); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '/raylet '; then
      kill -KILL "$p" && echo "local-stack: killed node$1's raylet (pid $p)"
    fi
  done
}

case "${1:-}" in
  start)
    if [ -e "$S/pids" ]; then echo "local-stack: already started at $S (stop it first)" >&2; exit 1; fi
    mkdir -p "$S"/{secrets,pids,logs}
    chmod 755 "$S"
    chmod 700 "$S/secrets"
    trap 'tail -n 5 "$S"/logs/* >&2; echo "local-stack: start failed; stopping what started" >&2; stop' ERR
    start_postgres
    start_mlflow
    [ "$WITH_RAY" = 1 ] && start_ray
    write_env
    trap - ERR
    echo "local-stack: up at $S; clients: source $S/env"
    ;;
  stop) stop ;;
  status) status ;;
  kill-node) kill_node "${2:?usage: $0 kill-node 1|2}" ;;
  stop-mlflow)  # the tracking-server outage drill: SIGKILL the server (PostgreSQL keeps the data)
    kill -KILL -- "-$(cat "$S/pids/mlflow")" && echo "local-stack: mlflow server killed" ;;
  start-mlflow) start_mlflow && echo "local-stack: mlflow server up again" ;;
  *) echo "usage: $0 start|status|stop|kill-node N|stop-mlflow|start-mlflow" >&2; exit 2 ;;
esac
