#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for the tests, the conformance checks and the benchmarks.
#
#   tools/pg.sh install              PostgreSQL 15 (server + libpq-dev) from Debian's packages, when missing
#   tools/pg.sh start DIR PORT       initdb in DIR (when it holds no cluster yet) and start it on 127.0.0.1:PORT
#   tools/pg.sh stop DIR             stop the cluster in DIR (fast shutdown) and delete DIR
#   tools/pg.sh stop-server DIR      stop it, keeping DIR (a "PostgreSQL outage")
#   tools/pg.sh start-server DIR     start it again after stop-server
#   tools/pg.sh restart DIR          stop-server + start-server
#   tools/pg.sh url PORT             the superuser URL to print for PORT
#
# PostgreSQL refuses to run as root, so when this runs as root the cluster belongs to the `postgres` user
# (created by Debian's package) and every server command runs through `runuser -u postgres`.
# It only ever listens on 127.0.0.1 (listen_addresses, no Unix socket outside DIR) with trust authentication:
# a test cluster, never a production one.
set -euo pipefail

BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else "$@"; fi
}

install() {
    local need=()
    [ -x "$BIN/initdb" ] || need+=(postgresql-15)
    pkg-config --exists libpq 2>/dev/null || need+=(libpq-dev pkg-config)
    if ((${#need[@]})); then
        echo "pg.sh: installing ${need[*]}" >&2
        as_root apt-get update -qq </dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" </dev/null >/dev/null
    fi
}

start_server() {
    local dir="$1"
    as_postgres "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
}

stop_server() {
    local dir="$1"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_postgres "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
    fi
}

cmd="${1:-}"
case "$cmd" in
install)
    install
    ;;
start)
    dir="$2"
    port="$3"
    install
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = on
synchronous_commit = on
shared_buffers = 128MB
logging_collector = off
EOF
    fi
    start_server "$dir"
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir="$2"
    stop_server "$dir"
    rm -rf "$dir"
    ;;
stop-server)
    stop_server "$2"
    ;;
start-server)
    start_server "$2"
    ;;
restart)
    stop_server "$2"
    start_server "$2"
    ;;
url)
    echo "postgres://postgres@127.0.0.1:$2/postgres"
    ;;
*)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
