#!/usr/bin/env bash
# Runs a local DistStore cluster: N nodes on one machine, for trying the cluster out, demos and
# manual fault testing (kill -9 a node and watch the others notice and repair).
#
# Usage:
#   scripts/cluster.sh start N    start N nodes and wait until they all see each other; nodes
#                                 already running are kept, so this also fills in missing ones
#   scripts/cluster.sh restart I  stop node I (SIGTERM, then SIGKILL after the stop timeout),
#                                 start it again on its data and port, wait until it is back
#   scripts/cluster.sh stop [I]   stop every node of the cluster, or only node I (data is kept)
#   scripts/cluster.sh status     each node: URL, pid, running, node id, files, stored, peers
#   scripts/cluster.sh help       this text
#
# Environment:
#   BASE_PORT              node i listens on 127.0.0.1:$((BASE_PORT + i - 1))      (default 8080)
#   S3_BASE_PORT           node i serves S3 on 127.0.0.1:$((S3_BASE_PORT + i - 1)) (default 3900)
#   DISTSTORE_CLUSTER_DIR  data, logs, pid files and the shared secret      (default ./cluster-data)
#   DISTSTORE_NODE_ARGS    extra flags for every node, split on whitespace (no quoting),
#                          e.g. "--replication 3 --min-replicas 2"
#   DISTSTORE_API_TOKEN    the API token every node requires (they inherit it); status
#                          sends it as `Authorization: Bearer` (e.g. $(openssl rand -hex 32)).
#                          A `--api-token T` in DISTSTORE_NODE_ARGS is used the same way.
#   DISTSTORE_BIN          run this binary instead of building target/release/diststore
#   CLUSTER_START_TIMEOUT  seconds to wait for each node's /health, and again for the
#                          cluster to see all its peers up                          (default 30)
#   CLUSTER_STOP_TIMEOUT   seconds between SIGTERM and SIGKILL on stop              (default 10)
#
# Layout of the cluster dir:
#   secret        the cluster secret, generated once (mode 0600); every node must share it,
#                 since node links authenticate with it and the data key derives from it
#   nodeI/        node I's data dir (database, node id); kept by `stop`
#   nodeI.log     node I's stdout and stderr, appended to across restarts
#   nodeI.pid     node I's pid while it is meant to run; removed by `stop`
#   cluster.conf  node count and base ports of the last `start`, so that `status` and
#                 `restart` need no arguments and don't depend on the caller's BASE_PORT
#
# Exit status: 0 on success; 1 on failure, and from `status` when a node of the cluster is not
# running or not answering (so `scripts/cluster.sh status >/dev/null` works as a health check).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="scripts/cluster.sh"

BASE_PORT="${BASE_PORT:-8080}"
S3_BASE_PORT="${S3_BASE_PORT:-3900}"
# Absolute, so that pid files can be checked against a process's command line (see
# is_our_node) whatever directory the script is later called from.
CLUSTER_DIR="$(realpath -m -- "${DISTSTORE_CLUSTER_DIR:-./cluster-data}")"
DISTSTORE_NODE_ARGS="${DISTSTORE_NODE_ARGS:-}"
DISTSTORE_BIN="${DISTSTORE_BIN:-}"
CLUSTER_START_TIMEOUT="${CLUSTER_START_TIMEOUT:-30}"
CLUSTER_STOP_TIMEOUT="${CLUSTER_STOP_TIMEOUT:-10}"

SECRET_FILE="$CLUSTER_DIR/secret"
CONF_FILE="$CLUSTER_DIR/cluster.conf"

# ---------------------------------------------------------------------------------------------
# Helpers

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  # The header comment above is the usage text; print it rather than keep two copies.
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

require_uint() { # NAME VALUE
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

require_tools() {
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (e.g. apt-get install -y ${missing[*]})"
}

node_dir() { printf '%s/node%s' "$CLUSTER_DIR" "$1"; }
node_pid_file() { printf '%s/node%s.pid' "$CLUSTER_DIR" "$1"; }
node_log() { printf '%s/node%s.log' "$CLUSTER_DIR" "$1"; }
node_url() { printf 'http://127.0.0.1:%s' "$(($2 + $1 - 1))"; } # node_url I BASE_PORT

# is_our_node PID I: the process is alive and really is node I of this cluster. Pids get reused
# after a crash or reboot, so a pid file alone must never be enough to signal a process; and a
# killed node stays a zombie until something reaps it, which must count as not running.
is_our_node() {
  local pid="$1" i="$2" state cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"--data-dir $(node_dir "$i") "* ]]
}

read_pid() { # read_pid I → the pid in node I's pid file, or nothing
  local f
  f="$(node_pid_file "$1")"
  [[ -f "$f" ]] && tr -dc '0-9' <"$f"
  return 0
}

# Node numbers that have a pid file, in order (what `stop` must look at).
nodes_with_pid_files() {
  local f
  for f in "$CLUSTER_DIR"/node*.pid; do
    [[ -e "$f" ]] || continue
    f="${f##*/node}"
    printf '%s\n' "${f%.pid}"
  done | sort -n
}

# The last start's node count and base port (NODES, CONF_BASE_PORT); empty if never started.
load_conf() {
  NODES="" CONF_BASE_PORT="" CONF_S3_BASE_PORT=""
  [[ -f "$CONF_FILE" ]] || return 0
  local key value
  while IFS='=' read -r key value; do
    case "$key" in
      nodes) NODES="$value" ;;
      base_port) CONF_BASE_PORT="$value" ;;
      s3_base_port) CONF_S3_BASE_PORT="$value" ;;
    esac
  done <"$CONF_FILE"
}

health_ok() { curl -fsS --max-time 2 -o /dev/null "$1/health" 2>/dev/null; }

# The token the nodes require: DISTSTORE_API_TOKEN, or an --api-token among the node flags
# (the flag wins, as it does in the node).
api_token() {
  local extra=() k token="${DISTSTORE_API_TOKEN:-}"
  read -ra extra <<<"$DISTSTORE_NODE_ARGS"
  for k in "${!extra[@]}"; do
    case "${extra[k]}" in
      --api-token) token="${extra[k + 1]:-}" ;;
      --api-token=*) token="${extra[k]#--api-token=}" ;;
    esac
  done
  printf '%s' "$token"
}

# The API token travels only in the Authorization header (never in a URL), and is handed to
# curl on standard input, so it does not show in the process list.
api_get() {
  local token
  token="$(api_token)"
  if [[ -n "$token" ]]; then
    printf 'header = "Authorization: Bearer %s"\n' "$token" | curl -fsS --max-time 2 -K - "$1" 2>/dev/null
  else
    curl -fsS --max-time 2 "$1" 2>/dev/null
  fi
}

# Number of peers node URL reports as up; fails if the node doesn't answer.
peers_up() {
  api_get "$1/api/v1/status" | jq -e '[.peers[] | select(.state == "up")] | length'
}

# The end of a node's log since its last start (the "===" line launch_node writes), without a
# Rust backtrace (RUST_BACKTRACE=1 in the environment would otherwise push the error itself,
# which comes first, out of the last 20 lines).
show_log_tail() {
  log "--- $1, last lines since the latest start:"
  awk '/^=== / { n = 0; skip = 0 }
       /^Stack backtrace:/ { skip = 1; line[++n] = "(backtrace omitted)" }
       !skip { line[++n] = $0 }
       END { for (i = (n > 20 ? n - 19 : 1); i <= n; i++) print line[i] }' "$1" >&2 || true
  log "---"
}

# ---------------------------------------------------------------------------------------------
# start

build_binary() {
  if [[ -n "$DISTSTORE_BIN" ]]; then
    [[ -x "$DISTSTORE_BIN" ]] || die "DISTSTORE_BIN=$DISTSTORE_BIN is not an executable"
    BIN="$(realpath -- "$DISTSTORE_BIN")"
    return
  fi
  # Always ask cargo: a no-op when the binary is up to date, and it never starts a cluster on
  # a stale binary after a source change.
  log "building target/release/diststore (cargo build --release)"
  (cd "$REPO_ROOT" && cargo build --release -q) || die "cargo build --release failed"
  BIN="$REPO_ROOT/target/release/diststore"
  [[ -x "$BIN" ]] || die "no executable at $BIN after the build"
}

# The secret is made once and kept with the data: the nodes' data key derives from it, so a new
# secret would make every stored chunk unreadable. umask makes it 0600 from the first byte.
ensure_secret() {
  if [[ -s "$SECRET_FILE" ]]; then
    return
  fi
  local tmp="$SECRET_FILE.tmp.$$"
  (umask 077 && openssl rand -hex 32 >"$tmp") || die "cannot generate a secret in $CLUSTER_DIR"
  mv -f "$tmp" "$SECRET_FILE"
  log "generated the cluster secret in $SECRET_FILE"
}

# The nodes of 1..N that are not running, in order; clears pid files whose process is gone (a
# node killed with -9, or a reboot), since they would otherwise look like running nodes.
missing_nodes() { # missing_nodes N
  local i pid
  for ((i = 1; i <= $1; i++)); do
    pid="$(read_pid "$i")"
    if [[ -n "$pid" ]] && is_our_node "$pid" "$i"; then
      continue
    fi
    rm -f "$(node_pid_file "$i")"
    printf '%s\n' "$i"
  done
}

# A port held by another program would make our node fail to bind, or worse, let that program
# answer our /health checks; find out before starting anything.
check_ports_free() { # check_ports_free I...
  local i port
  for i in "$@"; do
    port=$((BASE_PORT + i - 1))
    ((port <= 65535)) || die "node$i would need port $port; lower BASE_PORT"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port (node$i) is already in use by another program; pick another BASE_PORT"
    fi
  done
}

STARTED_PIDS=() # this invocation's nodes, stopped again if the start fails half-way
STARTED_NODES=()

# Undo a failed start, so that the next `start` isn't refused over a half-started cluster.
abort_start() {
  local pid
  if ((${#STARTED_PIDS[@]} > 0)); then
    log "stopping the ${#STARTED_PIDS[@]} node(s) started so far (logs are kept in $CLUSTER_DIR)"
    for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # Only the pid files of the nodes this run started: nodes that were running stay so.
    for i in "${STARTED_NODES[@]}"; do rm -f "$(node_pid_file "$i")"; done
  fi
}

# launch_node I N: starts node I in the background, detached from this script.
launch_node() {
  local i="$1" port=$((BASE_PORT + $1 - 1)) args=() extra=()
  args=(--listen "127.0.0.1:$port" --s3-listen "127.0.0.1:$((S3_BASE_PORT + i - 1))"
    --data-dir "$(node_dir "$i")" --secret-file "$SECRET_FILE")
  # Every node joins through node 1; the members gossip the rest of the list among themselves.
  ((i == 1)) || args+=(--peer "$(node_url 1 "$BASE_PORT")")
  read -ra extra <<<"$DISTSTORE_NODE_ARGS"
  args+=("${extra[@]}")

  mkdir -p "$(node_dir "$i")"
  printf '=== %s: %s %s\n' "$(date '+%F %T')" "$BIN" "${args[*]}" >>"$(node_log "$i")"
  # setsid: own session, so Ctrl-C in this terminal or the end of this script's session doesn't
  # reach the node; nohup: nor does a hangup. As this script is not a process group leader,
  # setsid doesn't fork, so $! is the node's own pid (is_our_node checks it anyway).
  setsid nohup "$BIN" "${args[@]}" </dev/null >>"$(node_log "$i")" 2>&1 &
  local pid=$!
  STARTED_PIDS+=("$pid")
  STARTED_NODES+=("$i")
  printf '%s\n' "$pid" >"$(node_pid_file "$i")"
}

# wait_healthy I: until node I answers /health; fails fast if it exits.
wait_healthy() {
  local i="$1" url pid deadline=$((SECONDS + CLUSTER_START_TIMEOUT))
  url="$(node_url "$i" "$BASE_PORT")"
  pid="$(read_pid "$i")"
  until health_ok "$url"; do
    if ! is_our_node "$pid" "$i"; then
      show_log_tail "$(node_log "$i")"
      die "node$i (pid $pid) exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail "$(node_log "$i")"
      die "node$i did not answer $url/health within ${CLUSTER_START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  # The process could have died right after a lucky answer from someone else's; be sure.
  is_our_node "$pid" "$i" || die "node$i (pid $pid) is not running although $url answers"
}

# wait_peers N: until every node sees at least N-1 peers up. "At least", because a node also
# remembers members of earlier, larger starts of the same cluster dir, which show as down.
wait_peers() { wait_peers_of "$1" "$1"; }

# wait_peers_of N LAST: until each running node of 1..LAST sees at least N-1 peers up.
wait_peers_of() {
  local n="$1" last="$2" i url up deadline=$((SECONDS + CLUSTER_START_TIMEOUT))
  ((n > 1)) || return 0
  for ((i = 1; i <= last; i++)); do
    is_our_node "$(read_pid "$i")" "$i" || continue
    url="$(node_url "$i" "$BASE_PORT")"
    while :; do
      up="$(peers_up "$url")" || up=0
      ((up >= n - 1)) && break
      if ((SECONDS >= deadline)); then
        show_log_tail "$(node_log "$i")"
        die "node$i sees $up of $((n - 1)) peers up after ${CLUSTER_START_TIMEOUT}s"
      fi
      sleep 0.2
    done
  done
}

cmd_start() {
  local n="${1:-}"
  [[ -n "$n" ]] || die "usage: $SCRIPT start N"
  require_uint N "$n"
  require_uint BASE_PORT "$BASE_PORT"
  require_uint CLUSTER_START_TIMEOUT "$CLUSTER_START_TIMEOUT"
  require_tools curl jq openssl setsid nohup realpath
  mkdir -p "$CLUSTER_DIR"
  load_conf
  # The running nodes listen where the last start put them: a different BASE_PORT would give
  # the cluster two port ranges.
  if [[ -n "$CONF_BASE_PORT" && "$CONF_BASE_PORT" != "$BASE_PORT" ]]; then
    (($(missing_nodes "${NODES:-0}" | wc -l) == ${NODES:-0})) ||
      die "the running nodes use BASE_PORT=$CONF_BASE_PORT; stop them first or use that BASE_PORT"
  fi
  local missing=() i
  mapfile -t missing < <(missing_nodes "$n")
  if ((${#missing[@]} == 0)); then
    log "all $n nodes are running already"
  else
    check_ports_free "${missing[@]}"
    build_binary
    ensure_secret
  fi

  # From here on a failure leaves no half-started node behind (nodes running before stay).
  trap abort_start EXIT
  trap "exit 130" INT TERM
  printf 'nodes=%s\nbase_port=%s\ns3_base_port=%s\n' "$((NODES > n ? NODES : n))" "$BASE_PORT" \
    "$S3_BASE_PORT" >"$CONF_FILE"

  # Node 1 first: the others join through it, so it should be answering when they dial.
  for i in "${missing[@]}"; do
    log "starting node$i on $(node_url "$i" "$BASE_PORT")"
    launch_node "$i"
    ((i != 1)) || wait_healthy 1
  done
  for ((i = 1; i <= n; i++)); do wait_healthy "$i"; done
  log "all $n nodes answer /health; waiting for each to see its $((n - 1)) peers up"
  wait_peers "$n"
  trap - EXIT

  printf 'cluster of %s nodes running, data in %s:\n' "$n" "$CLUSTER_DIR"
  for ((i = 1; i <= n; i++)); do
    printf '  node%s  %s  (pid %s, log %s)\n' "$i" "$(node_url "$i" "$BASE_PORT")" "$(read_pid "$i")" \
      "$(node_log "$i")"
  done
}

# ---------------------------------------------------------------------------------------------
# restart

cmd_restart() {
  local i="${1:-}"
  [[ -n "$i" ]] || die "usage: $SCRIPT restart I"
  require_uint I "$i"
  require_tools curl jq setsid nohup realpath
  load_conf
  [[ -n "$NODES" ]] || die "no cluster in $CLUSTER_DIR (start one with '$SCRIPT start N')"
  ((i <= NODES)) || die "the cluster has nodes 1 to $NODES; there is no node$i"
  BASE_PORT="$CONF_BASE_PORT"
  S3_BASE_PORT="${CONF_S3_BASE_PORT:-$S3_BASE_PORT}"
  [[ -s "$SECRET_FILE" ]] || die "no cluster secret in $SECRET_FILE"
  stop_nodes "$i"
  [[ -n "$(missing_nodes "$i" | grep -x "$i")" ]] || die "node$i is still running"
  check_ports_free "$i"
  build_binary
  trap abort_start EXIT
  trap "exit 130" INT TERM
  log "starting node$i on $(node_url "$i" "$BASE_PORT")"
  launch_node "$i"
  wait_healthy "$i"
  # Every running node must see node i again (and node i them).
  local running
  running="$((NODES - $(missing_nodes "$NODES" | wc -l)))"
  log "node$i answers /health; waiting for the $running running nodes to see each other"
  wait_peers_of "$running" "$NODES"
  trap - EXIT
  printf 'node%s restarted: %s (pid %s)\n' "$i" "$(node_url "$i" "$BASE_PORT")" "$(read_pid "$i")"
}

# ---------------------------------------------------------------------------------------------
# stop

cmd_stop() {
  [[ -d "$CLUSTER_DIR" ]] || { log "no cluster in $CLUSTER_DIR"; return 0; }
  if (($# == 1)); then
    require_uint I "$1"
    stop_nodes "$1"
  else
    # shellcheck disable=SC2046 # one number a word
    stop_nodes $(nodes_with_pid_files)
  fi
}

# stop_nodes I...: SIGTERM to each running node given, SIGKILL after the stop timeout.
stop_nodes() {
  local i pid pids=() names=()
  for i in "$@"; do
    [[ -f "$(node_pid_file "$i")" ]] || { log "node$i: not running"; continue; }
    pid="$(read_pid "$i")"
    if is_our_node "$pid" "$i"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid") names+=("node$i")
    else
      log "node$i: not running (stale pid file removed)"
      rm -f "$(node_pid_file "$i")"
    fi
  done
  if ((${#pids[@]} == 0)); then
    log "no running nodes in $CLUSTER_DIR"
    return 0
  fi
  log "sent SIGTERM to ${names[*]}; waiting up to ${CLUSTER_STOP_TIMEOUT}s"

  # The nodes are not our children (setsid), so `wait` can't be used: poll. An acknowledged
  # upload is already fsynced, so SIGKILL after the grace period loses nothing acknowledged.
  local deadline=$((SECONDS + CLUSTER_STOP_TIMEOUT)) k alive
  while :; do
    alive=0
    for k in "${!pids[@]}"; do
      if is_our_node "${pids[k]}" "${names[k]#node}"; then alive=1; fi
    done
    ((alive)) || break
    if ((SECONDS >= deadline)); then
      for k in "${!pids[@]}"; do
        if is_our_node "${pids[k]}" "${names[k]#node}"; then
          log "${names[k]} (pid ${pids[k]}) still running after ${CLUSTER_STOP_TIMEOUT}s: SIGKILL"
          kill -KILL "${pids[k]}" 2>/dev/null || true
        fi
      done
      break
    fi
    sleep 0.1
  done
  for i in "${names[@]}"; do rm -f "$CLUSTER_DIR/$i.pid"; done
  log "stopped ${names[*]}; data kept in $CLUSTER_DIR"
}

# ---------------------------------------------------------------------------------------------
# status

human_bytes() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1" 2>/dev/null || printf '%s B' "$1"; }

cmd_status() {
  require_tools curl jq
  load_conf
  if [[ -z "$NODES" ]]; then
    log "no cluster in $CLUSTER_DIR (start one with '$SCRIPT start N')"
    return 1
  fi
  local base="${CONF_BASE_PORT:-$BASE_PORT}" i pid url running json info bad=0
  # Nodes beyond the last start's count that still have a pid file are shown too.
  local last="$NODES" extra
  for extra in $(nodes_with_pid_files); do ((extra > last)) && last="$extra"; done

  printf 'cluster in %s\n' "$CLUSTER_DIR"
  local fmt='%-6s %-24s %-8s %-12s %-9s %6s %12s  %s\n'
  # shellcheck disable=SC2059 # the format is ours
  printf "$fmt" NODE URL PID STATE NODE_ID FILES STORED PEERS_UP
  for ((i = 1; i <= last; i++)); do
    url="$(node_url "$i" "$base")"
    pid="$(read_pid "$i")"
    info=("-" "-" "-" "-")
    if [[ -z "$pid" ]]; then
      running="stopped"
      bad=1
    elif ! is_our_node "$pid" "$i"; then
      running="DEAD"  # a pid file without its process: it crashed or was killed
      bad=1
    elif json="$(api_get "$url/api/v1/status")"; then
      running="running"
      mapfile -t info < <(jq -r '(.node_id[0:8]), .files, .stored_bytes,
        "\([.peers[] | select(.state == "up")] | length)/\(.peers | length)"' <<<"$json")
      info[2]="$(human_bytes "${info[2]}")"
    else
      running="NO ANSWER"  # the process is there but its API doesn't respond
      bad=1
    fi
    # shellcheck disable=SC2059
    printf "$fmt" "node$i" "$url" "${pid:--}" "$running" "${info[0]}" "${info[1]}" "${info[2]}" "${info[3]}"
  done
  return "$bad"
}

# ---------------------------------------------------------------------------------------------

main() {
  local cmd="${1:-help}"
  (($# == 0)) || shift
  case "$cmd" in
    start) (($# <= 1)) || die "usage: $SCRIPT start N"; cmd_start "$@" ;;
    restart) (($# == 1)) || die "usage: $SCRIPT restart I"; cmd_restart "$@" ;;
    stop) (($# <= 1)) || die "usage: $SCRIPT stop [I]"; cmd_stop "$@" ;;
    status) (($# == 0)) || die "usage: $SCRIPT status"; cmd_status ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 1 ;;
  esac
}

main "$@"
