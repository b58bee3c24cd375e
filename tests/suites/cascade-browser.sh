#!/usr/bin/env bash
# Browser cascade suite: three sluice nodes sharing one redis-server, all inside a fresh
# network namespace with only loopback up. Debian's chromium publishes its fake camera over
# WHIP to node a (127.0.0.1); a second page watches over WHEP on node c (127.0.0.3), which
# pulls the stream through node b (127.0.0.2, c's cluster.parent), so media takes the chain
# a → b → c. The viewer must decode video; every node's /metrics must show the relay tree
# (a serves b, b serves c, one copy per edge) and /admin/cluster and the dashboard's
# Cluster panel must list it. Client: tests/browser/whip_whep.mjs with E2E_CLUSTER set.
#
# Usage: tests/suites/cascade-browser.sh   (stand-alone, or from tests/run)
# Environment: RUST_LOG (server log filter, default info), E2E_TIMEOUT_SECS (default 150).
# Artifacts: tests/artifacts/{cascade.png, cascade-dashboard.png, cascade.console.log,
#            cascade-sluice-{a,b,c}.log, cascade-redis.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=cascade
CLIENT=tests/browser/whip_whep.mjs
SERVER_LOG_NAME=cascade-sluice-a.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-150}
REDIS_PORT=6379

# redis-server is this suite's own, started inside the namespace; install it if missing.
if [ "${1:-}" != "--in-netns" ] && ! command -v redis-server >/dev/null 2>&1; then
    echo "cascade: installing redis-server"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || true
    timeout 600 apt-get install -y -qq --no-install-recommends redis-server >/dev/null || true
fi

start_servers() {
    command -v redis-server >/dev/null 2>&1 ||
        die "redis-server is missing and could not be installed (Debian package redis-server)"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --protected-mode yes --daemonize no >"$ARTIFACTS/cascade-redis.log" 2>&1 &
    track_pid "$!"
    local up=
    for _ in $(seq 100); do
        if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -qx PONG; then
            up=1
            break
        fi
        sleep 0.1
    done
    [ -n "$up" ] || die "redis-server did not answer PING on 127.0.0.1:$REDIS_PORT within 10 s"
    say "redis-server up on 127.0.0.1:$REDIS_PORT"

    # Shared by every node; the per-node keys go on the command line.
    export SLUICE_CLUSTER_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
    export SLUICE_CLUSTER_SECRET=cascade-browser-secret-0123456789
    unset SLUICE_CONFIG
    local id ip media parent args
    for node in a:127.0.0.1:40000: b:127.0.0.2:40010: c:127.0.0.3:40020:b; do
        IFS=: read -r id ip media parent <<<"$node"
        args=(--listen "$ip:8443" --announce-ip "$ip" --media-port "$media" --shards 1
            --cluster-node-id "$id" --cluster-advertise "https://$ip:8443")
        [ -z "$parent" ] || args+=(--cluster-parent "$parent")
        start_sluice "cascade-sluice-$id.log" "https://$ip:8443" "${args[@]}"
    done

    export SLUICE_WHIP_URL=https://127.0.0.1:8443
    export SLUICE_WHEP_URL=https://127.0.0.3:8443
    export E2E_NAME=cascade
    export E2E_CLUSTER='{"origin": "a",
        "nodes": {"a": "https://127.0.0.1:8443", "b": "https://127.0.0.2:8443", "c": "https://127.0.0.3:8443"},
        "edges": [["b", "a"], ["c", "b"]]}'
}

# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
