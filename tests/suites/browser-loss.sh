#!/usr/bin/env bash
# The browser end-to-end test (tests/browser/whip_whep.mjs) over a lossy path: inside its
# network namespace, nftables drops 5% of the UDP datagrams the server's media ports send,
# so Chromium's viewer must NACK and decode what sluice resends (RTX) to keep its video.
#
# Usage: tests/suites/browser-loss.sh      (stand-alone, or from tests/run)
# Artifacts: tests/artifacts/{whip_whep.png, whip_whep.console.log, sluice-loss.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=browser-loss
CLIENT=tests/browser/whip_whep.mjs
SERVER_LOG_NAME=sluice-loss.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-120}
export E2E_LOSS_PERCENT=5

NEEDS_NFT=1

before_client() {
    # Both shards' media ports (the server runs --shards 2 from port 40000).
    nft -f - <<NFT || die "cannot install the nftables loss rule"
table inet sluice_loss {
    chain out {
        type filter hook output priority 0; policy accept;
        udp sport { 40000, 40001 } numgen random mod 100 < $E2E_LOSS_PERCENT counter drop
    }
}
NFT
    say "dropping $E2E_LOSS_PERCENT% of the datagrams sent from the media ports"
}

# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
