#!/usr/bin/env bash
# io = xdp end to end: two network namespaces joined by a veth pair (198.18.0.0/24,
# the benchmarking range), sluice in one with its shard on AF_XDP, sluice-bench in the
# other publishing one stream over WHIP to decrypting WHEP viewers. Checks: the program is
# attached while sluice runs, every viewer gets the stream without loss, the media went
# through the AF_XDP socket (its counters, not the kernel socket's), and SIGTERM detaches
# the program. Then the same run with io = mmsg on the same pair, for the record.
#
# Usage: tests/suites/xdp.sh    (as root; stand-alone or from tests/run)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SUITE=xdp
passed=0
failed=0
pass() { echo "$SUITE: ok   $*"; passed=$((passed + 1)); }
fail() { echo "$SUITE: FAIL $*"; failed=$((failed + 1)); }
die() {
    echo "$SUITE: FAIL $*"
    echo "$SUITE: $passed passed, $((failed + 1)) failed"
    exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, XDP)"
command -v ip >/dev/null 2>&1 || die "ip (iproute2) is missing"
cargo build --release -p sluice -p sluice-bench --bins 2>&1 | tail -1
BIN=$ROOT/target/release/sluice
BENCH=$ROOT/target/release/sluice-bench
"$BIN" doctor 2>/dev/null | grep 'af_xdp' || true

S=sxs$$
C=sxc$$
TMP=$(mktemp -d)
SERVER=
cleanup() {
    [ -n "$SERVER" ] && kill -9 "$SERVER" 2>/dev/null || true
    ip netns del "$S" 2>/dev/null || true
    ip netns del "$C" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$S" || die "cannot create a network namespace"
ip netns add "$C" || die "cannot create a network namespace"
# Two queues each way: a shard's datagrams may arrive on the other shard's queue, which the
# program passes to the kernel and the shard's own UDP socket receives.
ip link add xs0 netns "$S" numtxqueues 2 numrxqueues 2 type veth peer name xc0 netns "$C" \
    numtxqueues 2 numrxqueues 2 || die "cannot create the veth pair"
ip -n "$S" addr add 198.18.0.1/24 dev xs0
ip -n "$C" addr add 198.18.0.2/24 dev xc0
for ns in "$S" "$C"; do
    ip -n "$ns" link set lo up
done
ip -n "$S" link set xs0 up
ip -n "$C" link set xc0 up

# start_server IO: sluice in the server namespace on core 1, pid in $SERVER.
start_server() {
    ip netns exec "$S" taskset -c 1 "$BIN" serve --io "$1" --xdp-interface xs0 \
        --media-bind 198.18.0.1 --announce-ip 198.18.0.1 --listen 198.18.0.1:18443 \
        --media-port 41000 --media-tcp-port 0 --shards "${SHARDS:-1}" --signal-rate 0 \
        --max-sessions-per-ip 0 --max-conns-per-ip 0 >"$TMP/server-$1.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do
        if ip netns exec "$C" curl -skf https://198.18.0.1:18443/metrics >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.2
    done
    cat "$TMP/server-$1.log"
    die "sluice --io $1 did not start"
}

stop_server() {
    kill -TERM "$SERVER"
    for _ in $(seq 100); do
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$SERVER" 2>/dev/null && die "sluice did not exit within 20 s of SIGTERM"
    wait "$SERVER" 2>/dev/null || true
    SERVER=
}

# fanout IO VIEWERS: the bench in the client namespace on core 0; JSON in $TMP/IO-VIEWERS.json.
fanout() {
    ip netns exec "$C" taskset -c 0 "$BENCH" fanout --url https://198.18.0.1:18443 --insecure \
        --allow-media-ip 198.18.0.1 --viewers "$2" --duration "${DURATION:-6s}" --warmup 2s \
        --setup-concurrency 32 --server-pid "$SERVER" --json >"$TMP/$1-$2.json" 2>"$TMP/$1-$2.err" ||
        { tail -20 "$TMP/$1-$2.err"; return 1; }
}

# field FILE EXPR: a value from a bench JSON report.
field() {
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

metric() {
    ip netns exec "$C" curl -sk https://198.18.0.1:18443/metrics |
        awk -v n="$1" '$1 ~ "^"n"\\{" { s += $2 } END { print s + 0 }'
}

# ---- refusals: one line each, nothing left attached ----
refuse() {
    local want=$1
    shift
    local out
    if out=$(ip netns exec "$S" timeout 10 env RUST_BACKTRACE=0 "$@" --announce-ip 198.18.0.1 \
        --listen 198.18.0.1:18443 --media-port 41000 2>&1); then
        fail "sluice started where it should refuse: $*"
    elif printf '%s\n' "$out" | grep -q "^Error: .*$want"; then
        pass "refused: $(printf '%s\n' "$out" | grep '^Error:' | cut -c1-110)"
    else
        fail "refusal without the reason \"$want\": $(printf '%s\n' "$out" | tail -3)"
    fi
}
refuse "missing: CAP_NET_ADMIN" setpriv --bounding-set=-bpf,-net_admin,-net_raw,-sys_admin \
    "$BIN" serve --io xdp --xdp-interface xs0 --media-bind 198.18.0.1
refuse "nope0" "$BIN" serve --io xdp --xdp-interface nope0 --media-bind 198.18.0.1
refuse "media_bind" "$BIN" serve --io xdp --xdp-interface xs0 --media-bind 0.0.0.0
if ip -n "$S" -d link show xs0 | grep -q 'prog/xdp'; then
    fail "a refused start left the XDP program attached"
fi

# ---- io = xdp ----
start_server xdp
if ip -n "$S" -d link show xs0 | grep -q 'prog/xdp'; then
    pass "the XDP program is attached to xs0 ($(grep -o 'io=\S*' "$TMP/server-xdp.log" | head -1))"
else
    fail "no XDP program on xs0 while sluice runs"
fi
if fanout xdp 50; then
    m=$TMP/xdp-50.json
    loss=$(field "$m" 'r["measurement"]["loss_percent"]')
    got=$(field "$m" 'r["measurement"]["delivered_packets"]')
    bad=$(field "$m" 'r["measurement"]["corrupt_payloads"] + r["measurement"]["silent_viewers"]')
    if [ "$got" -gt 1000 ] && [ "$bad" = 0 ] && awk -v l="$loss" 'BEGIN { exit !(l == 0) }'; then
        pass "50 viewers over AF_XDP: $got packets delivered, no loss, payloads intact"
    else
        fail "50 viewers over AF_XDP: $got packets delivered, loss $loss%, $bad corrupt payloads or silent viewers"
    fi
else
    fail "sluice-bench fanout against io xdp"
fi
tx=$(metric sluice_shard_xdp_tx_total)
rx=$(metric sluice_shard_xdp_rx_total)
ktx=$(metric sluice_shard_xdp_kernel_tx_total)
krx=$(metric sluice_shard_xdp_kernel_rx_total)
if [ "$tx" -gt 10000 ] && [ $((rx + krx)) -gt 100 ] && [ "$ktx" -lt $((tx / 100)) ]; then
    pass "media went through AF_XDP: sent $tx (kernel socket $ktx), received $rx (kernel socket $krx)"
else
    fail "AF_XDP counters: sent $tx (kernel socket $ktx), received $rx (kernel socket $krx)"
fi
stop_server
if ip -n "$S" -d link show xs0 | grep -q 'prog/xdp'; then
    fail "the XDP program is still attached after sluice exited"
else
    pass "SIGTERM: sluice exited and the program is detached"
fi

# ---- two shards on two queues ----
SHARDS=2 start_server xdp
if fanout xdp2 60; then
    m=$TMP/xdp2-60.json
    loss=$(field "$m" 'r["measurement"]["loss_percent"]')
    bad=$(field "$m" 'r["measurement"]["corrupt_payloads"] + r["measurement"]["silent_viewers"]')
    krx=$(metric sluice_shard_xdp_kernel_rx_total)
    rx=$(metric sluice_shard_xdp_rx_total)
    if [ "$bad" = 0 ] && awk -v l="$loss" 'BEGIN { exit !(l == 0) }'; then
        pass "two shards on queues 0 and 1: 60 viewers without loss (AF_XDP received $rx, the kernel sockets $krx)"
    else
        fail "two shards: loss $loss%, $bad corrupt payloads or silent viewers"
    fi
else
    fail "sluice-bench fanout against two xdp shards"
fi
stop_server

# ---- the same pair with io = mmsg, for comparison ----
start_server mmsg
if fanout mmsg 50; then
    loss=$(field "$TMP/mmsg-50.json" 'r["measurement"]["loss_percent"]')
    pass "50 viewers over mmsg on the same pair: loss $loss%"
else
    fail "sluice-bench fanout against io mmsg"
fi
stop_server
for io in xdp mmsg; do
    echo "$SUITE: $io: $(field "$TMP/$io-50.json" 'round(r["measurement"]["server"]["packets_per_cpu_second"] or 0)') delivered packets per server CPU-second" || true
done

echo "$SUITE: $passed passed, $failed failed"
[ "$failed" = 0 ]
