#!/usr/bin/env bash
# Simulcast browser suite: Debian's chromium, driven by playwright-core, publishes its fake
# camera at 1280x720 over WHIP with three rid layers; a second page watches over WHEP capped
# to the low layer, then raises and lowers the cap during the session and must decode the
# matching layer each time, then capped to the base VP8 temporal layer must decode fewer
# frames without a stall, and all of them once the cap is lifted. Server and browser run inside a fresh network namespace with
# only loopback up, so no test traffic can leave the machine.
#
# Usage: tests/suites/simulcast.sh    (stand-alone, or from tests/run)
# Environment: RUST_LOG (server log filter, default info), E2E_TIMEOUT_SECS (default 140).
# Diagnostics: CHROMIUM_EXTRA_ARGS='--enable-logging=stderr' with DEBUG=pw:browser shows
# Chromium's WebRTC warnings; SIMULCAST_SCALABILITY_MODE=L1T1 overrides the publisher's
# scalability mode (Chrome's VP8 simulcast default is L1T3).
# Artifacts: tests/artifacts/{simulcast.png (viewer on high), simulcast-publisher.png,
# simulcast.console.log, simulcast.timeline.log (both pages every 250 ms), simulcast-sluice.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=simulcast
CLIENT=tests/browser/simulcast.mjs
SERVER_LOG_NAME=simulcast-sluice.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-140}
# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
