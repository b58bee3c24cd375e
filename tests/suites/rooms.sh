#!/usr/bin/env bash
# Rooms suite: three headless Chromium pages join one conference room through the web app
# at '/', see and hear each other, chat, mute, and leave (tests/browser/rooms.mjs). The
# server and the browser run inside a fresh network namespace with only loopback up, so no
# test traffic can leave the machine.
#
# Usage: tests/suites/rooms.sh      (stand-alone, or from tests/run)
# Environment: RUST_LOG (server log filter, default info), E2E_TIMEOUT_SECS (default 170).
# Artifacts: tests/artifacts/{room-grid.png, rooms.console.log, rooms.signaling.log,
#            rooms-sluice.log}.
set -euo pipefail
SELF=$(realpath "$0")
SUITE=rooms
CLIENT=tests/browser/rooms.mjs
SERVER_LOG_NAME=rooms-sluice.log
E2E_TIMEOUT_SECS=${E2E_TIMEOUT_SECS:-170}

# A plain GET must be refused as "not a WebSocket upgrade", not 404: the room endpoint exists.
before_client() {
    local ws_status
    ws_status=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/ws?roomId=probe&peerId=probe" || true)
    [ "$ws_status" != 404 ] || die "the server has no /ws endpoint (GET /ws answered 404)"
}

# shellcheck source-path=SCRIPTDIR source=lib/browser-netns.sh
source "$(dirname "$SELF")/lib/browser-netns.sh"
browser_suite "$@"
