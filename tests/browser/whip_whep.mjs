// Browser end-to-end: Chromium publishes its fake camera and microphone over WHIP, a
// second page watches over WHEP, and both sides' getStats() must show media flowing.
// Stopping the publisher must remove its session from the server's admin API.
//
// Expects a sluice server already listening (tests/suites/browser.sh starts one inside a
// network namespace that has only loopback).
//
// Environment:
//   SLUICE_URL     base URL of the server (default https://127.0.0.1:8443)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//   ARTIFACTS_DIR  where the screenshot and the console log go (default tests/artifacts)
//   E2E_DEADLINE_MS  hard limit for the whole script (default 100000)
//   E2E_LOSS_PERCENT  set by tests/suites/browser-loss.sh, which drops that share of the
//                     server's datagrams: the viewer must then NACK and sluice resend

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARTIFACTS, BASE, CHROMIUM_ARGS, CheckFailed, adminSessions, check, closeChromium, launchChromium,
  consoleLines, deadlineMs, lastOk, log, pollUntil, recordConsole, shardCounter, sleep,
} from './common.mjs';

const DEADLINE_MS = deadlineMs(100_000);
const STREAM = 'e2e';

const CONNECT_TIMEOUT_MS = 20_000; // ICE + DTLS on loopback takes well under a second
const FIRST_FRAME_TIMEOUT_MS = 15_000;
const MEASURE_MS = 5_000;
const MIN_FRAMES_IN_WINDOW = 30; // ~100 arrive here (the fake camera sends 20 fps); slack for slow hosts
const SESSION_GONE_TIMEOUT_MS = 5_000;

const stats = (page) => page.evaluate(() => window.sluice.stats());
const pageState = (page) => page.evaluate(() => ({ ...window.sluice.state }));

const isOurPublisher = (s) => s.role === 'publisher' && s.stream === STREAM;
const isOurViewer = (s) => s.role === 'viewer' && s.stream === STREAM;

async function waitConnected(page, key, name) {
  const st = await pollUntil(
    () => pageState(page),
    (s) => s[key] === 'connected' || s[key] === 'error' || s[key] === 'failed',
    CONNECT_TIMEOUT_MS,
  );
  const error = st[`${key}Error`];
  check(st[key] === 'connected', `${name} connected`, st[key] === 'connected' ? '' : `state ${st[key]}${error ? `: ${error}` : ''}`);
}

async function run(context) {
  const request = context.request;
  const publisher = await context.newPage();
  recordConsole(publisher, 'publisher');
  const viewer = await context.newPage();
  recordConsole(viewer, 'viewer');

  await publisher.goto(`${BASE}/broadcast?publish=${STREAM}`, { timeout: 10_000 });
  await viewer.goto(`${BASE}/broadcast?watch=${STREAM}`, { timeout: 10_000 });
  await viewer.bringToFront();

  await waitConnected(publisher, 'publish', 'publisher');
  await waitConnected(viewer, 'watch', 'viewer');

  const sessions = await adminSessions(request);
  check(sessions.some(isOurPublisher), 'admin API lists the publisher', JSON.stringify(sessions));
  check(sessions.some(isOurViewer), 'admin API lists the viewer');

  // The viewer may have joined before the publisher's first keyframe was forwarded.
  const first = await pollUntil(
    () => stats(viewer),
    (s) => s.framesDecoded > 0,
    FIRST_FRAME_TIMEOUT_MS,
  );
  check(first.framesDecoded > 0, 'viewer decodes a first frame', JSON.stringify(first));

  const pub0 = await stats(publisher);
  const view0 = await stats(viewer);
  await sleep(MEASURE_MS);
  const pub1 = await stats(publisher);
  const view1 = await stats(viewer);
  log(`publisher stats: ${JSON.stringify(pub1)}`);
  log(`viewer stats: ${JSON.stringify(view1)}`);

  check(pub1.framesEncoded > pub0.framesEncoded, 'publisher framesEncoded increases',
    `${pub0.framesEncoded} -> ${pub1.framesEncoded}`);
  check(pub1.bytesSent > pub0.bytesSent, 'publisher bytesSent increases',
    `${pub0.bytesSent} -> ${pub1.bytesSent}`);
  const decoded = view1.framesDecoded - view0.framesDecoded;
  check(decoded >= MIN_FRAMES_IN_WINDOW,
    `viewer decodes >= ${MIN_FRAMES_IN_WINDOW} frames in ${MEASURE_MS / 1000} s`,
    `${decoded} frames`);
  check(view1.frameWidth > 0 && view1.frameHeight > 0, 'viewer frame size is known',
    `${view1.frameWidth}x${view1.frameHeight}`);
  check(view1.audioPacketsReceived > view0.audioPacketsReceived, 'viewer receives audio',
    `${view0.audioPacketsReceived} -> ${view1.audioPacketsReceived} packets`);
  check(view1.videoPacketsReceived > view0.videoPacketsReceived, 'viewer receives video',
    `${view0.videoPacketsReceived} -> ${view1.videoPacketsReceived} packets`);
  if (process.env.E2E_LOSS_PERCENT) {
    // Unrepaired, this much loss breaks most VP8 frames and the viewer falls back to
    // asking for keyframes; repaired by RTX, it keeps decoding at the camera's rate.
    const nacks = view1.nackCount - view0.nackCount;
    const resent = await shardCounter(request, 'rtx_sent');
    check(nacks > 0, 'viewer NACKs lost video packets', `${nacks} NACKs in ${MEASURE_MS / 1000} s`);
    check(resent > 0, 'sluice resends them', `rtx_sent ${resent}`);
    const repaired = view1.retransmittedPacketsReceived - view0.retransmittedPacketsReceived;
    check(repaired > 0, 'Chromium accepts the resent packets (RTX decrypts and demuxes)',
      `${repaired} retransmitted packets received`);
    check(view1.pliCount - view0.pliCount <= 1,
      'lost video is repaired, not replaced by keyframes (at most 1 PLI in the window)',
      `${view1.pliCount - view0.pliCount} PLIs`);
    check(decoded >= 2 * MIN_FRAMES_IN_WINDOW,
      `under loss the viewer still decodes >= ${2 * MIN_FRAMES_IN_WINDOW} frames in ${MEASURE_MS / 1000} s`,
      `${decoded} frames, ${view1.pliCount - view0.pliCount} PLIs, ` +
      `${view1.freezeCount - view0.freezeCount} freezes, ${view1.packetsLost} lost (audio and video)`);
  }

  // The <video> element must actually be playing what was decoded.
  const video = await viewer.evaluate(() => {
    const v = document.getElementById('remote-video');
    return { width: v.videoWidth, height: v.videoHeight, paused: v.paused, time: v.currentTime };
  });
  check(video.width > 0 && !video.paused && video.time > 0, 'viewer <video> is playing',
    JSON.stringify(video));
  // A WHEP viewer of a stream without simulcast estimates no bandwidth: sluice's own
  // RTP/SRTP path sends its media and sender reports, and Chromium decoded them above.
  const direct = await shardCounter(request, 'direct_sessions');
  const reports = await shardCounter(request, 'sender_reports');
  check(direct >= 1 && reports >= 2, 'viewer is sent to by sluice\'s own send path',
    `direct sessions ${direct}, sender reports ${reports}`);

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = join(ARTIFACTS, 'whip_whep.png');
  await viewer.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
  log(`screenshot: ${shot}`);

  await publisher.click('#publish-stop', { timeout: 5_000 });
  const afterStop = await pollUntil(
    () => adminSessions(request),
    (list) => !list.some(isOurPublisher),
    SESSION_GONE_TIMEOUT_MS,
  );
  check(!afterStop.some(isOurPublisher), 'publisher session removed after Stop',
    JSON.stringify(afterStop));
  const pubState = await pageState(publisher);
  check(pubState.publish === 'idle', 'publisher page is idle after Stop', pubState.publish);

  // Leave nothing behind, so the server's SIGTERM drain has no session to wait for.
  await viewer.click('#watch-stop', { timeout: 5_000 });
  const afterWatchStop = await pollUntil(
    () => adminSessions(request),
    (list) => !list.some(isOurViewer),
    SESSION_GONE_TIMEOUT_MS,
  );
  check(!afterWatchStop.some(isOurViewer), 'viewer session removed after Stop',
    JSON.stringify(afterWatchStop));
}

async function main() {
  let context;
  let failure = null;
  const deadline = setTimeout(() => {
    console.log(`FAIL whip_whep: deadline of ${DEADLINE_MS / 1000} s exceeded; last passed check: ${lastOk}`);
    console.log('browser: 0 passed, 1 failed');
    process.exit(1);
  }, DEADLINE_MS);
  try {
    context = await launchChromium(CHROMIUM_ARGS);
    await run(context);
  } catch (err) {
    failure = err;
  } finally {
    await closeChromium(context);
    clearTimeout(deadline);
  }

  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, 'whip_whep.console.log'), consoleLines.join('\n') + '\n');
  } catch {
    // the console log is a convenience; its absence must not hide the result
  }

  if (failure) {
    const why = failure instanceof CheckFailed ? failure.message : failure.stack || String(failure);
    console.log(`FAIL whip_whep: ${why}`);
    if (consoleLines.length) {
      console.log('--- browser console (last 40 lines) ---');
      console.log(consoleLines.slice(-40).join('\n'));
    }
    console.log('browser: 0 passed, 1 failed');
    process.exit(1);
  }
  log('PASS whip_whep');
  console.log('browser: 1 passed, 0 failed');
}

await main();
