#!/usr/bin/env bash
# The browser end-to-end test (tests/browser/whip_whep.mjs) where UDP does not get through:
# inside its network namespace, nftables drops every UDP datagram to or from the server's
# media ports, so Chromium's publisher and viewer must reach sluice over ICE-TCP (RFC 6544
# passive candidates on the same port numbers) and the viewer must still decode video.
#
# Usage: tests/suites/browser-tcp.sh      (stand-alone, or from tests/run)
# Artifacts: tests/artifacts/{whip_whep_tcp.png, whip_whep_tcp.console.log, sluice-tcp.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=browser-tcp
CLIENT=tests/browser/whip_whep.mjs
SERVER_LOG_NAME=sluice-tcp.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-120}
export E2E_TRANSPORT=tcp
export E2E_NAME=whip_whep_tcp

NEEDS_NFT=1

before_client() {
    # Both shards' media ports (the server runs --shards 2 from port 40000), both ways.
    nft -f - <<NFT || die "cannot install the nftables rule that blocks UDP"
table inet sluice_no_udp {
    chain out {
        type filter hook output priority 0; policy accept;
        udp dport { 40000, 40001 } counter drop
        udp sport { 40000, 40001 } counter drop
    }
}
NFT
    say "dropping every UDP datagram to and from the media ports"
}

# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
