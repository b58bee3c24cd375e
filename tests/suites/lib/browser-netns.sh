# shellcheck shell=bash
# Shared body of the Chromium suites (browser.sh, browser-loss.sh, rooms.sh, simulcast.sh,
# cascade-browser.sh): install what is missing (chromium, iproute2, util-linux, curl,
# playwright-core), build the server, then re-run the suite inside a fresh network namespace
# with only loopback up, where it starts sluice (or the suite's own servers), waits for
# /healthz, runs one Node client against it and always stops every process it started.
#
# Sourced by a suite after it sets:
#   SELF               the suite's own path (re-run inside the namespace)
#   SUITE              name used in messages and the pass/fail line
#   CLIENT             the Node script to run (tests/browser/*.mjs)
#   SERVER_LOG_NAME    the default server's log file name in tests/artifacts
#   E2E_TIMEOUT_SECS   the whole run's limit
# and optionally defines
#   NEEDS_NFT          set to 1 when before_client installs nftables rules
#   before_client      run once the servers answer
#   start_servers      start the servers itself (several nodes, a Redis) instead of the one
#                      default server, with start_sluice and track_pid below; whatever it
#                      exports reaches the client
# The suite then calls
#   browser_suite "$@"
# This file lives outside tests/suites/*.sh so that tests/run does not run it as a suite.

cd "$(dirname "$SELF")/../.." || exit 1
ROOT=$PWD
ARTIFACTS=$ROOT/tests/artifacts
CHROMIUM=/usr/bin/chromium
LISTEN=127.0.0.1:8443
BASE=https://$LISTEN

say() { printf '%s: %s\n' "$SUITE" "$*"; }
die() {
    say "FAIL: $*"
    echo "$SUITE: 0 passed, 1 failed"
    exit 1
}

# ---- inside the namespace: servers + browser, always cleaned up ----
servers=()     # pids of sluice serve processes, stopped first (SIGTERM drains)
server_logs=() # their logs, shown when the client fails
helpers=()     # pids of other processes (redis-server), stopped after the servers

# Start `sluice serve` with ARGS, logging to tests/artifacts/LOG_NAME, and wait until
# BASE/healthz answers.   start_sluice LOG_NAME BASE ARGS...
start_sluice() {
    local log_name=$1 base=$2 pid up=
    shift 2
    RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 target/release/sluice serve "$@" \
        >"$ARTIFACTS/$log_name" 2>&1 &
    pid=$!
    servers+=("$pid")
    server_logs+=("$log_name")
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        if curl -skf --max-time 1 "$base/healthz" >/dev/null 2>&1; then
            up=1
            break
        fi
        sleep 0.1
    done
    if [ -z "$up" ]; then
        tail -n 40 "$ARTIFACTS/$log_name" | sed 's/^/  sluice| /'
        die "server did not answer $base/healthz within 10 s"
    fi
    say "server up on $base (pid $pid)"
}

# Stop PID (started by the suite) with the servers, after them.
track_pid() { helpers+=("$1"); }

# SIGTERM to every pid in the arguments, then wait up to 5 s before SIGKILL.
stop_pids() {
    [ $# -gt 0 ] || return 0
    local pid alive
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 50); do
        alive=
        for pid in "$@"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ -n "$alive" ] || break
        sleep 0.1
    done
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then
            say "warning: pid $pid still running 5 s after SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

in_netns() {
    stop_all() {
        # With every session ended by the test, the servers' drain should be quick; they
        # go before the helpers (a cluster node releases its claims in Redis on the way out).
        stop_pids "${servers[@]}"
        servers=()
        stop_pids "${helpers[@]}"
        helpers=()
    }
    trap stop_all EXIT
    trap 'exit 143' TERM INT HUP

    ip link set lo up || die "cannot bring up loopback in the new network namespace"
    mkdir -p "$ARTIFACTS"
    if declare -F start_servers >/dev/null; then
        start_servers
    else
        start_sluice "$SERVER_LOG_NAME" "$BASE" --listen "$LISTEN" --media-port 40000 --shards 2
    fi
    if declare -F before_client >/dev/null; then
        before_client
    fi

    # In the background so the TERM trap runs at once instead of after node returns.
    # The client's own deadline comes first, so a hang is reported with its context.
    deadline=$((E2E_TIMEOUT_SECS - 15))
    [ "$deadline" -ge 5 ] || deadline=5
    ARTIFACTS_DIR=$ARTIFACTS SLUICE_URL=$BASE CHROMIUM=$CHROMIUM \
        E2E_DEADLINE_MS=$((deadline * 1000)) \
        node "$CLIENT" &
    client=$!
    rc=0
    wait "$client" || rc=$?
    if [ "$rc" -ne 0 ]; then
        for log_name in "${server_logs[@]}"; do
            echo "--- $log_name (last 60 lines; all of it in tests/artifacts/$log_name) ---"
            tail -n 60 "$ARTIFACTS/$log_name" | sed 's/^/  sluice| /'
        done
    fi
    exit "$rc"
}

# ---- outside: install what is missing, build, then enter the namespace ----
prepare_and_enter() {
    export DEBIAN_FRONTEND=noninteractive
    apt_updated=
    apt_install() {
        say "installing $*"
        if [ -z "$apt_updated" ]; then
            timeout 300 apt-get update -qq || true
            apt_updated=1
        fi
        timeout 600 apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
            die "apt-get install $* failed"
    }

    [ -x "$CHROMIUM" ] || apt_install chromium
    [ -x "$CHROMIUM" ] || die "$CHROMIUM is still missing after apt-get install chromium"
    need=()
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v unshare >/dev/null 2>&1 || need+=(util-linux)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    if [ -n "${NEEDS_NFT:-}" ]; then
        command -v nft >/dev/null 2>&1 || need+=(nftables)
    fi
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if [ -n "${NEEDS_NFT:-}" ]; then
        command -v nft >/dev/null 2>&1 || die "nft is missing after apt-get install nftables"
    fi

    command -v node >/dev/null 2>&1 || die "node is missing (playwright-core needs Node.js >= 20)"
    command -v npm >/dev/null 2>&1 || die "npm is missing"
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || die "node $(node --version) is too old; playwright-core needs >= 20"

    # playwright-core ships no browser and downloads none; the variable guards against a
    # future version that tries.
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    # Every dependency in package.json must be installed at its pinned version.
    missing=$(cd tests/browser && node -e '
        const deps = require("./package.json").dependencies || {};
        const bad = Object.entries(deps).filter(([name, want]) => {
            try { return require(`./node_modules/${name}/package.json`).version !== want; }
            catch { return true; }
        });
        console.log(bad.map(([n, v]) => `${n}@${v}`).join(" "));
    ')
    if [ -n "$missing" ]; then
        say "npm ci ($missing)"
        (cd tests/browser && timeout 300 npm ci --no-audit --no-fund --loglevel=error) ||
            die "npm ci in tests/browser failed"
    fi

    unshare -n true 2>/dev/null ||
        die "unshare -n failed: a new network namespace needs root (or CAP_SYS_ADMIN)"

    # Also picks up edits to control/web/*, which are compiled into the binary.
    timeout 1800 cargo build --release -p sluice || die "cargo build --release -p sluice failed"

    rc=0
    timeout -k 10 "$E2E_TIMEOUT_SECS" unshare -n bash "$SELF" --in-netns || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        die "timed out after $E2E_TIMEOUT_SECS s"
    fi
    exit "$rc"
}

browser_suite() {
    if [ "${1:-}" = "--in-netns" ]; then
        in_netns
    else
        prepare_and_enter
    fi
}
