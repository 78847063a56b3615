#!/usr/bin/env bash
# A throwaway Redis Cluster (3 masters + 3 replicas) on loopback, for tests and local runs.
#
#   ops/redis-cluster.sh start DIR   # prints redis://127.0.0.1:p1,...,redis://127.0.0.1:p6
#   ops/redis-cluster.sh stop DIR    # kills the nodes and removes DIR; idempotent
#
# `start` needs DIR absent or empty. It starts 6 daemonized redis-server nodes on free
# loopback ports, probed upward from a random point in 20000-21999; a node's cluster bus
# port, port + 10000, must be free too. Both stay below Linux's ephemeral range (32768 and
# up), where tests pick ports by binding port 0. Each node keeps its config, log and pid
# file under DIR, persists nothing, and runs with cluster-node-timeout 2000 (a killed
# master is replaced within a few seconds), cluster-replica-validity-factor 0 (a replica
# may always take over) and repl-diskless-sync-delay 0 (replicas sync at once, not after
# 5 s). Then `redis-cli --cluster create`, and a wait until every node reports
# cluster_state:ok with all 16384 slots assigned. The only line on stdout is the node list,
# also written to DIR/url; everything else goes to stderr. A port taken between the probe
# and the bind (another run, another program) makes that node move on to the next port.
# On failure the nodes started are killed, the log tails printed and DIR kept for a look.
#
# Environment: CHATSTREAM_CLUSTER_READY_SECS (default 60), how long `start` waits for the
# cluster to become ok.
#
# Never touches a server it did not start: `stop` only signals the pids in DIR's pid files
# whose process is still the cluster node of that port, and only removes a DIR that `start`
# marked.
set -euo pipefail

NODES=6
MARKER=.chatstream-redis-cluster
READY_SECS=${CHATSTREAM_CLUSTER_READY_SECS:-60}

log() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() { die "usage: $0 start DIR | $0 stop DIR"; }

# Whether something listens on a loopback port.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether pid $1 is the live (not zombie) cluster node of port $2: its process title is
# "redis-server 127.0.0.1:<port> [cluster]", so a recycled pid is never signalled.
is_node() {
    local ps_line
    ps_line=$(ps -o stat=,args= -p "$1" 2>/dev/null) || return 1
    [[ $ps_line != Z* && $ps_line == *"redis-server 127.0.0.1:$2 [cluster]"* ]]
}

# The pid recorded for a port, or nothing.
pid_of() {
    local file="$DIR/$1.pid"
    [[ -s $file ]] && tr -dc '0-9' <"$file"
    return 0
}

cli() { timeout 3 redis-cli -h 127.0.0.1 -p "$@"; }

# Starts one node on $1 and waits until it answers as itself. Returns 2 when the port (or
# its bus port) was taken, 1 on any other failure.
start_node() {
    local port=$1 node_dir="$DIR/$1" pid served i
    mkdir -p "$node_dir"
    if ! redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --save "" --appendonly no --dir "$node_dir" \
        --cluster-enabled yes --cluster-config-file "$node_dir/nodes.conf" \
        --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
        --repl-diskless-sync-delay 0 \
        --logfile "$DIR/$port.log" --pidfile "$DIR/$port.pid" >&2; then
        return 1
    fi
    for ((i = 0; i < 200; i++)); do
        pid=$(pid_of "$port")
        if [[ -n $pid ]] && is_node "$pid" "$port"; then
            served=$(cli "$port" INFO server 2>/dev/null | tr -d '\r' |
                sed -n 's/^process_id://p') || true
            [[ $served == "$pid" ]] && return 0
        fi
        if grep -qs 'Could not create server TCP listening socket' "$DIR/$port.log"; then
            return 2
        fi
        sleep 0.05
    done
    return 1
}

# Forgets a node that did not come up: kills it if it lives, removes its files.
discard_node() {
    local port=$1 pid
    pid=$(pid_of "$port")
    if [[ -n $pid ]] && is_node "$pid" "$port"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "${DIR:?}/$port" "$DIR/$port.pid" "$DIR/$port.log"
}

# Sends SIGTERM to the nodes of DIR, then SIGKILL to those alive after 5 s.
kill_nodes() {
    local file port pid ports=() i
    for file in "$DIR"/*.pid; do
        [[ -e $file ]] || continue
        port=$(basename "$file" .pid)
        pid=$(pid_of "$port")
        if [[ -n $pid ]] && is_node "$pid" "$port"; then
            kill -TERM "$pid" 2>/dev/null || true
            ports+=("$port:$pid")
        fi
    done
    for ((i = 0; i < 50 && ${#ports[@]} > 0; i++)); do
        local alive=()
        for port in "${ports[@]}"; do is_node "${port#*:}" "${port%%:*}" && alive+=("$port"); done
        ports=("${alive[@]+"${alive[@]}"}")
        ((${#ports[@]} > 0)) && sleep 0.1
    done
    for port in "${ports[@]+"${ports[@]}"}"; do
        log "node ${port%%:*} (pid ${port#*:}) ignored SIGTERM; SIGKILL"
        kill -KILL "${port#*:}" 2>/dev/null || true
    done
}

print_log_tails() {
    local file
    for file in "$DIR"/*.log; do
        [[ -e $file ]] || continue
        log "--- tail of $file"
        tail -n 15 "$file" >&2 || true
    done
}

# Whether every node says cluster_state:ok, 16384 slots assigned, 6 nodes known, 3 masters.
cluster_ready() {
    local port info
    for port in "${PORTS[@]}"; do
        info=$(cli "$port" CLUSTER INFO 2>/dev/null | tr -d '\r') || return 1
        grep -qx 'cluster_state:ok' <<<"$info" || return 1
        grep -qx 'cluster_slots_assigned:16384' <<<"$info" || return 1
        grep -qx "cluster_known_nodes:$NODES" <<<"$info" || return 1
        grep -qx "cluster_size:$((NODES / 2))" <<<"$info" || return 1
    done
}

START_OK=0
on_start_exit() {
    if ((START_OK == 0)); then
        print_log_tails
        kill_nodes
        log "start failed; logs kept in $DIR (\`$0 stop $DIR\` removes it)"
    fi
}

start() {
    if [[ -e $DIR ]] && [[ -n $(ls -A "$DIR") ]]; then
        die "$DIR is not empty (a running cluster? \`$0 stop $DIR\` first)"
    fi
    command -v redis-server >/dev/null || die "redis-server not found on PATH"
    command -v redis-cli >/dev/null || die "redis-cli not found on PATH"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    : >"$DIR/$MARKER"
    trap on_start_exit EXIT
    trap 'exit 130' INT TERM

    PORTS=()
    local port=$((20000 + RANDOM % 2000)) tries=0 rc
    while ((${#PORTS[@]} < NODES)); do
        ((tries++ < 200)) || die "no free port pair found after 200 tries"
        if port_in_use "$port" || port_in_use $((port + 10000)); then
            port=$((port + 1))
            continue
        fi
        rc=0
        start_node "$port" || rc=$?
        if ((rc == 0)); then
            PORTS+=("$port")
        elif ((rc == 2)); then
            log "port $port (or bus port $((port + 10000))) was taken meanwhile; next port"
            discard_node "$port"
        else
            die "redis-server on port $port did not come up"
        fi
        port=$((port + 1))
    done
    log "nodes up on ports ${PORTS[*]}"

    local addrs=()
    for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >&2 ||
        die "redis-cli --cluster create failed"

    local deadline=$((SECONDS + READY_SECS))
    until cluster_ready; do
        ((SECONDS < deadline)) || die "cluster not ok on every node within ${READY_SECS} s"
        sleep 0.1
    done

    local url
    url=$(printf 'redis://%s,' "${addrs[@]}")
    url=${url%,}
    printf '%s\n' "$url" >"$DIR/url"
    START_OK=1
    log "cluster ok in ${SECONDS} s"
    printf '%s\n' "$url"
}

stop() {
    [[ -e $DIR ]] || return 0
    [[ -d $DIR ]] || die "$DIR is not a directory"
    if [[ ! -e $DIR/$MARKER ]]; then
        [[ -z $(ls -A "$DIR") ]] || die "$DIR was not made by \`$0 start\`; not touching it"
    fi
    kill_nodes
    rm -rf "$DIR"
}

(($# == 2)) || usage
DIR=$2
[[ -n $DIR ]] || usage
case $1 in
start) start ;;
stop) stop ;;
*) usage ;;
esac
