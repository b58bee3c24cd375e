#!/usr/bin/env bash
# NACK/RTX under real packet loss: inside a fresh network namespace, nftables
# drops 5% of the UDP datagrams the server sends to clients (numgen random),
# and a decrypting viewer must still receive every video packet.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

if [ "${1:-}" = "--in-netns" ]; then
    ip link set lo up
    # Only datagrams from the media port toward clients; signaling (TCP) and
    # packets toward the server are untouched.
    nft -f - <<'NFT'
table inet sluice_loss {
    chain out {
        type filter hook output priority 0; policy accept;
        udp sport 41000 numgen random mod 100 < 5 counter drop
    }
}
NFT
    "$ROOT/target/release/lossy_link"
    status=$?
    echo "nftables rule:"
    nft list table inet sluice_loss | grep counter || true
    exit $status
fi

command -v nft >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nftables >/dev/null; }
command -v nft >/dev/null 2>&1 || { echo "netloss: nft is missing and could not be installed"; echo "netloss: 0 passed, 1 failed"; exit 1; }
cargo build --release -p sluice-tests --bin lossy_link
timeout -k 10 120 unshare -n bash "$0" --in-netns
