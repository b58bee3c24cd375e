#!/usr/bin/env bash
# systemd suite: the unit file parses cleanly and points at a real binary
# (systemd-analyze verify), its sandbox rates "OK" or better
# (systemd-analyze security --offline), and the example TOML holds every config
# key and is accepted by `sluice config print`.
#
# Usage: tests/suites/systemd.sh      (stand-alone, or from tests/run)
# Needs: systemd-analyze (installed with apt-get when missing, as root).
# Environment: EXPOSURE_MAX (default 2.0): highest accepted exposure score, so a
# weakened sandbox fails here long before its rating drops below "OK" (< 5.0).
set -euo pipefail
SELF=$(realpath "$0")
cd "$(dirname "$SELF")/../.."
ROOT=$PWD
UNIT=$ROOT/systemd/sluice.service
EXAMPLE=$ROOT/systemd/sluice.toml.example
BIN=$ROOT/target/release/sluice
EXPOSURE_MAX=${EXPOSURE_MAX:-2.0}
export RUST_BACKTRACE=0

passed=0
failed=0
say() { printf 'systemd: %s\n' "$*"; }
pass() {
    passed=$((passed + 1))
    say "ok   $*"
}
fail() {
    failed=$((failed + 1))
    say "FAIL $*"
}
finish() {
    echo "systemd: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x "$BIN" ]; then
    say "building $BIN"
    cargo build --release -p sluice
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# ---- the unit as shipped names the installed paths ----
if grep -qx 'ExecStart=/usr/local/bin/sluice serve --config /etc/sluice/sluice.toml' "$UNIT"; then
    pass "ExecStart runs /usr/local/bin/sluice with /etc/sluice/sluice.toml"
else
    fail "ExecStart is not '/usr/local/bin/sluice serve --config /etc/sluice/sluice.toml'"
fi

# ---- readiness is signalled by the binary ----
if grep -qx 'Type=notify' "$UNIT" && grep -qx 'NotifyAccess=main' "$UNIT" &&
    grep -q 'READY=1' "$ROOT/control/src/main.rs"; then
    pass "Type=notify with NotifyAccess=main; the binary sends READY=1"
else
    fail "the unit is not Type=notify/NotifyAccess=main, or the binary sends no READY=1"
fi

# ---- systemd-analyze verify ----
# A copy of the unit whose ExecStart names the binary just built and the
# example config, so "is not executable" checks a real file. verify exits 0
# on directives it ignores, so any output at all is a failure.
sed -e "s#/usr/local/bin/sluice#$BIN#" \
    -e "s#/etc/sluice/sluice.toml#$EXAMPLE#" \
    "$UNIT" >"$TMP/sluice.service"
if out=$(systemd-analyze verify "$TMP/sluice.service" 2>&1) && [ -z "$out" ]; then
    pass "systemd-analyze verify: clean"
else
    fail "systemd-analyze verify:"
    printf '%s\n' "$out" | sed 's/^/    /'
fi

# ---- the AF_XDP drop-in verifies with the unit and only adds ----
mkdir -p "$TMP/xdp/sluice.service.d"
cp "$TMP/sluice.service" "$TMP/xdp/sluice.service"
cp "$ROOT/systemd/sluice-xdp.conf" "$TMP/xdp/sluice.service.d/xdp.conf"
if out=$(cd "$TMP/xdp" && SYSTEMD_UNIT_PATH="$TMP/xdp:" systemd-analyze verify "$TMP/xdp/sluice.service" 2>&1) &&
    [ -z "$out" ] && grep -q '^AmbientCapabilities=CAP_NET_ADMIN CAP_BPF CAP_NET_RAW$' "$ROOT/systemd/sluice-xdp.conf" &&
    ! grep -v '^#' "$UNIT" | grep -qE 'CAP_(NET_ADMIN|BPF|NET_RAW)|AF_XDP'; then
    pass "sluice-xdp.conf verifies as a drop-in; the default unit holds none of its rights"
else
    fail "sluice-xdp.conf drop-in:"
    printf '%s\n' "$out" | sed 's/^/    /'
fi

# ---- systemd-analyze security (offline) ----
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    sec=$(systemd-analyze security --offline=yes "$TMP/sluice.service" 2>&1 || true)
    overall=$(printf '%s\n' "$sec" | grep -o 'Overall exposure level for sluice.service: [0-9.]* [A-Z]*' || true)
    score=$(printf '%s\n' "$overall" | awk '{print $(NF-1)}')
    rating=$(printf '%s\n' "$overall" | awk '{print $NF}')
    case "$rating" in
        SAFE | OK)
            pass "systemd-analyze security: exposure $score $rating"
            if awk -v s="$score" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(s <= m) }'; then
                pass "exposure $score is at most $EXPOSURE_MAX"
            else
                fail "exposure $score is above $EXPOSURE_MAX; what is exposed:"
                printf '%s\n' "$sec" | grep '✗' | sed 's/^/    /'
            fi
            ;;
        "")
            fail "systemd-analyze security: no overall exposure line"
            printf '%s\n' "$sec" | tail -5 | sed 's/^/    /'
            ;;
        *)
            fail "systemd-analyze security: exposure $score $rating (want OK or SAFE)"
            printf '%s\n' "$sec" | grep '✗' | sed 's/^/    /'
            ;;
    esac
else
    fail "systemd-analyze $(systemd-analyze --version | head -1) has no --offline security review"
fi

# ---- io_uring stays allowed by the syscall filter ----
if grep -qE '^SystemCallFilter=.*io_uring_setup.*io_uring_enter.*io_uring_register' "$UNIT" &&
    ! grep -qE '^SystemCallFilter=~.*(io_uring|@aio|@system-service)' "$UNIT"; then
    pass "SystemCallFilter allows io_uring_setup/enter/register"
else
    fail "SystemCallFilter does not keep the io_uring system calls"
fi

# ---- stopping outlasts the drain ----
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\?$/\1/p' "$UNIT")
drain=$(sed -n 's/^drain_timeout_secs *= *\([0-9]*\).*/\1/p' "$EXAMPLE")
if [ -n "$stop" ] && [ -n "$drain" ] && [ "$stop" -ge $((drain + 5)) ]; then
    pass "TimeoutStopSec=$stop covers drain_timeout_secs=$drain + 5 s of shutdown"
else
    fail "TimeoutStopSec=${stop:-?} must be at least drain_timeout_secs (${drain:-?}) + 5"
fi

# ---- the example config ----
if out=$("$BIN" config print --config "$EXAMPLE" 2>&1); then
    pass "sluice config print accepts systemd/sluice.toml.example"
else
    fail "sluice config print --config systemd/sluice.toml.example:"
    printf '%s\n' "$out" | sed 's/^/    /'
fi

# Every field of `Config` is documented, set or commented out; a field whose
# type is another `*Config` struct is a table, and its fields are checked too.
struct_fields() {
    awk -v s="$1" '$0 ~ "^pub struct "s" \\{" {on=1; next} on && /^\}/{exit} on' \
        "$ROOT/control/src/config.rs" |
        sed -n 's/^ *pub \([a-z_][a-z0-9_]*\): *\([A-Za-z]*\).*/\1 \2/p'
}
missing=()
count=0
while read -r k ty; do
    count=$((count + 1))
    if [[ $ty == *Config ]]; then
        grep -qE "^\[$k\]" "$EXAMPLE" || missing+=("[$k]")
        while read -r sub _; do
            count=$((count + 1))
            grep -qE "^#? ?$sub = " "$EXAMPLE" || missing+=("$k.$sub")
        done < <(struct_fields "$ty")
    else
        grep -qE "^#? ?$k = " "$EXAMPLE" || missing+=("$k")
    fi
done < <(struct_fields Config)
if [ "$count" -eq 0 ]; then
    fail "found no Config fields in control/src/config.rs"
elif [ ${#missing[@]} -eq 0 ]; then
    pass "example lists all $count Config keys"
else
    fail "example lacks keys: ${missing[*]}"
fi

# The commented-out examples are valid too once uncommented.
sed -E 's/^#([a-z_]+ = )/\1/' "$EXAMPLE" >"$TMP/all-keys.toml"
if out=$("$BIN" config print --config "$TMP/all-keys.toml" 2>&1); then
    pass "example with every key uncommented is accepted"
else
    fail "example with every key uncommented:"
    printf '%s\n' "$out" | sed 's/^/    /'
fi

finish
