#!/usr/bin/env bash
# Browser end-to-end suite: Debian's chromium, driven by playwright-core, publishes its fake
# camera over WHIP and watches it back over WHEP from a sluice server; both run inside a
# fresh network namespace with only loopback up, so no test traffic can leave the machine.
#
# Usage: tests/suites/browser.sh      (stand-alone, or from tests/run)
# Environment: RUST_LOG (server log filter, default info), E2E_TIMEOUT_SECS (default 120).
# Artifacts: tests/artifacts/{whip_whep.png, whip_whep.console.log, sluice.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=browser
CLIENT=tests/browser/whip_whep.mjs
SERVER_LOG_NAME=sluice.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-120}
# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
