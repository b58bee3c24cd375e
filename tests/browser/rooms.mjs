// Browser end-to-end for conference rooms: three Chromium pages (A, B, C) join one room
// through the web app at '/', each sending its fake camera and microphone. Every page must
// show the other two as tiles and decode their video and receive their audio; chat, mute
// and a screen share must reach the others; when C leaves, A and B must drop C's tile and
// keep decoding each other; a late joiner D must be seen and heard on the mids C released;
// the server's session count must follow (two transports per participant).
//
// Expects a sluice server already listening (tests/suites/rooms.sh starts one inside a
// network namespace that has only loopback).
//
// Environment:
//   SLUICE_URL       base URL of the server (default https://127.0.0.1:8443)
//   CHROMIUM         browser executable (default /usr/bin/chromium)
//   ARTIFACTS_DIR    where screenshots and logs go (default tests/artifacts)
//   E2E_DEADLINE_MS  hard limit for the whole script (default 150000)

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARTIFACTS, BASE, CHROMIUM_ARGS, NO_BACKGROUND_THROTTLING, CheckFailed, adminSessions, check,
  closeChromium, launchChromium,
  consoleLines, deadlineMs, elapsed, lastOk, log, passed, pollUntil, recordConsole, sleep,
} from './common.mjs';

const DEADLINE_MS = deadlineMs(150_000);
const ROOM = 'e2e';
const NAMES = ['A', 'B', 'C'];

const JOIN_TIMEOUT_MS = 20_000;
const TILES_TIMEOUT_MS = 15_000;
const FIRST_MEDIA_TIMEOUT_MS = 20_000;
const MEASURE_WINDOW_MS = 8_000;
const MIN_FRAMES_IN_WINDOW = 20; // the fake camera gives ~30 fps; slack for a loaded 2-core host
const NOTIFY_TIMEOUT_MS = 5_000;
const SCREEN_TIMEOUT_MS = 10_000;
const SESSIONS_TIMEOUT_MS = 10_000;
const SESSIONS_PER_PEER = 2; // a send transport and a receive transport

// Three pages share one browser; none of them may be throttled as a background tab.
const ARGS = [...CHROMIUM_ARGS, ...NO_BACKGROUND_THROTTLING];

const wsLines = [];
function record(page, name) {
  recordConsole(page, name);
  // The signaling trace is what a protocol bug report needs.
  page.on('websocket', (ws) => {
    wsLines.push(`[${elapsed()}] ${name} open ${ws.url()}`);
    ws.on('framesent', (f) => wsLines.push(`[${elapsed()}] ${name} C→S ${f.payload}`));
    ws.on('framereceived', (f) => wsLines.push(`[${elapsed()}] ${name} S→C ${f.payload}`));
    ws.on('close', () => wsLines.push(`[${elapsed()}] ${name} closed`));
  });
}

const roomState = (page) =>
  page.evaluate(() => ({ state: window.room?.state, error: window.room?.error, peerId: window.room?.peerId, warnings: window.room?.warnings }));
const stats = (page) => page.evaluate(() => window.room.stats());
const remoteTileIds = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#grid .tile.remote')].map((t) => t.dataset.peerId).sort());

async function expectSessions(request, count, why) {
  const list = await pollUntil(() => adminSessions(request), (l) => l.length === count, SESSIONS_TIMEOUT_MS);
  check(list.length === count, `server has ${count} sessions ${why}`,
    list.length === count ? '' : `has ${list.length}: ${JSON.stringify(list.map((s) => `${s.role}:${s.stream}`))}`);
}

// Waits until `page` decodes >= MIN_FRAMES_IN_WINDOW new frames and new audio packets
// from every peer in `from`, within MEASURE_WINDOW_MS; then checks each pair.
async function expectFlowing(pages, peerIds, label) {
  const before = {};
  for (const [name, page] of pages) before[name] = (await stats(page)).remote;
  const deltas = () =>
    Promise.all(
      [...pages].map(async ([name, page]) => {
        const now = (await stats(page)).remote;
        const out = {};
        for (const [other] of pages) {
          if (other === name) continue;
          const id = peerIds[other];
          const a = before[name][id] || {};
          const b = now[id] || {};
          out[other] = {
            frames: (b.framesDecoded || 0) - (a.framesDecoded || 0),
            audio: (b.audioPacketsReceived || 0) - (a.audioPacketsReceived || 0),
            video: (b.videoPacketsReceived || 0) - (a.videoPacketsReceived || 0),
            width: b.frameWidth || 0,
          };
        }
        return [name, out];
      }),
    ).then(Object.fromEntries);
  const good = (d) => d.frames >= MIN_FRAMES_IN_WINDOW && d.audio > 0;
  const t0 = Date.now();
  const result = await pollUntil(
    deltas,
    (all) => Object.values(all).every((per) => Object.values(per).every(good)),
    MEASURE_WINDOW_MS,
    500,
  );
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  for (const [name, per] of Object.entries(result)) {
    for (const [other, d] of Object.entries(per)) {
      check(d.frames >= MIN_FRAMES_IN_WINDOW,
        `${label}: ${name} decodes ${other}'s video (>= ${MIN_FRAMES_IN_WINDOW} frames within ${MEASURE_WINDOW_MS / 1000} s)`,
        `+${d.frames} frames, +${d.video} packets in ${secs} s, ${d.width}px wide`);
      check(d.audio > 0, `${label}: ${name} receives ${other}'s audio`, `+${d.audio} packets`);
    }
  }
}

async function open(context, name) {
  const page = await context.newPage();
  record(page, name);
  await page.goto(`${BASE}/?roomId=${ROOM}&displayName=${name}`, { timeout: 10_000 });
  return page;
}

async function expectJoined(name, page, peerIds) {
  const st = await pollUntil(() => roomState(page), (s) => s.state === 'joined' || s.state === 'error', JOIN_TIMEOUT_MS);
  check(st.state === 'joined', `${name} joined`, st.state === 'joined' ? `peer ${st.peerId}` : `state ${st.state}: ${st.error}`);
  check(!st.warnings?.length, `${name} sends camera and microphone without warnings`, (st.warnings || []).join('; '));
  peerIds[name] = st.peerId;
}

// Each page shows exactly the other pages' participants as remote tiles.
async function expectTiles(pages, peerIds, label) {
  for (const [name, page] of pages) {
    const want = [...pages.keys()].filter((n) => n !== name).map((n) => peerIds[n]).sort();
    const ids = await pollUntil(() => remoteTileIds(page), (v) => JSON.stringify(v) === JSON.stringify(want), TILES_TIMEOUT_MS);
    check(JSON.stringify(ids) === JSON.stringify(want), `${label}: ${name} shows ${want.length} remote tiles`,
      `${JSON.stringify(ids)}, want ${JSON.stringify(want)}`);
  }
}

// A page may have joined before another's first keyframe was forwarded.
async function expectFirstMedia(pages, peerIds, label) {
  for (const [name, page] of pages) {
    const others = [...pages.keys()].filter((n) => n !== name).map((n) => peerIds[n]);
    const has = (v) => others.every((id) => v.remote[id]?.framesDecoded > 0 && v.remote[id]?.audioPacketsReceived > 0);
    const s = await pollUntil(() => stats(page), has, FIRST_MEDIA_TIMEOUT_MS);
    check(has(s), `${label}: ${name} gets first frames and audio from everyone else`, JSON.stringify(s.remote));
  }
}

async function run(context) {
  const request = context.request;

  // Old broadcast links keep working. An empty name makes the broadcast page start no
  // session, which would otherwise linger in the session counts below.
  const probe = await context.newPage();
  await probe.goto(`${BASE}/?watch=`, { timeout: 10_000 });
  await probe.waitForURL((u) => u.pathname === '/broadcast', { timeout: 5_000 }).catch(() => {});
  const broadcast = new URL(probe.url()).pathname === '/broadcast' && (await probe.locator('#watch-form').count()) === 1;
  check(broadcast, '?watch= link is redirected to the /broadcast page', probe.url());
  await probe.close();

  const pages = new Map();
  const peerIds = {};
  for (const name of NAMES) pages.set(name, await open(context, name));
  for (const [name, page] of pages) await expectJoined(name, page, peerIds);
  await expectTiles(pages, peerIds, 'three in the room');
  await expectSessions(request, NAMES.length * SESSIONS_PER_PEER, 'with three participants');
  await expectFirstMedia(pages, peerIds, 'three in the room');
  await expectFlowing(pages, peerIds, 'three in the room');

  // The tiles' <video> elements must be playing what is decoded.
  for (const [name, page] of pages) {
    const videos = await page.evaluate(() =>
      [...document.querySelectorAll('#grid .tile.remote .main-video')].map((v) => ({ w: v.videoWidth, paused: v.paused, t: v.currentTime })));
    check(videos.length === 2 && videos.every((v) => v.w > 0 && !v.paused && v.t > 0), `${name}'s remote tiles play video`, JSON.stringify(videos));
  }

  mkdirSync(ARTIFACTS, { recursive: true });
  const pageA = pages.get('A');
  const pageB = pages.get('B');
  await pageA.bringToFront();
  // One tile's stats panel open, to show it in the picture.
  await pageA.click(`.tile[data-peer-id="${peerIds.B}"] .stats-toggle`);
  await sleep(1_500);
  const shot = join(ARTIFACTS, 'room-grid.png');
  await pageA.screenshot({ path: shot, timeout: 10_000 });
  log(`screenshot: ${shot}`);

  // Chat: sent by A, echoed to A, delivered to B and C.
  const text = `hello from A ${Date.now() % 100000}`;
  await pageA.fill('#chat-input', text);
  await pageA.click('#chat-send');
  for (const [name, page] of pages) {
    const ok = await pollUntil(() => page.evaluate((t) => document.getElementById('chat-log').textContent.includes(t), text), Boolean, NOTIFY_TIMEOUT_MS);
    check(ok, `${name} sees A's chat message`);
  }

  // Mute: A pauses its microphone; B sees the muted icon, then sees it cleared.
  const tileOfA = () => pageB.evaluate((id) => {
    const t = document.querySelector(`.tile[data-peer-id="${id}"]`);
    const v = t?.querySelector('.main-video');
    return t && { mic: t.dataset.mic, screen: t.dataset.screen, showsScreen: t.classList.contains('main-is-screen'), width: v.videoWidth, height: v.videoHeight };
  }, peerIds.A);
  await pageA.click('#toggle-mic');
  let a = await pollUntil(tileOfA, (v) => v?.mic === 'off', NOTIFY_TIMEOUT_MS);
  check(a?.mic === 'off', "B sees A's microphone muted (producerPaused)", JSON.stringify(a));
  await pageA.click('#toggle-mic');
  a = await pollUntil(tileOfA, (v) => v?.mic === 'on', NOTIFY_TIMEOUT_MS);
  check(a?.mic === 'on', "B sees A's microphone unmuted (producerResumed)", JSON.stringify(a));

  // Screen share: a third producer of A's, consumed by B; stopping it closes the consumer.
  await pageA.click('#share-screen');
  // Switching the element to the screen's stream resets its size until that stream's first frame.
  a = await pollUntil(tileOfA, (v) => v?.showsScreen && v.width > 0, SCREEN_TIMEOUT_MS);
  check(a?.showsScreen && a.width > 0, "B shows A's shared screen", JSON.stringify(a));
  await pageA.click('#share-screen');
  a = await pollUntil(tileOfA, (v) => v?.screen === 'off' && !v.showsScreen, NOTIFY_TIMEOUT_MS);
  check(a?.screen === 'off' && !a.showsScreen, "B drops A's screen after A stops sharing (consumerClosed)", JSON.stringify(a));

  // C leaves: A and B drop C's tile and keep decoding each other.
  const pageC = pages.get('C');
  await pageC.click('#leave');
  pages.delete('C');
  for (const [name, page] of pages) {
    const ids = await pollUntil(() => remoteTileIds(page), (v) => !v.includes(peerIds.C), NOTIFY_TIMEOUT_MS);
    check(!ids.includes(peerIds.C) && ids.length === 1, `${name} drops C's tile after C leaves`, JSON.stringify(ids));
  }
  // C goes idle once its own leave request is answered and its transports are closed,
  // which can finish after the server has already told A and B.
  const cState = await pollUntil(() => roomState(pageC), (v) => v.state === 'idle', NOTIFY_TIMEOUT_MS);
  check(cState.state === 'idle', 'C is back on the landing page', cState.state);
  await pageC.close();
  await expectSessions(request, 2 * SESSIONS_PER_PEER, 'after C leaves');
  await expectFlowing(pages, peerIds, 'after C left');

  // A late joiner: A and B consume D on the mids that C's consumers released.
  pages.set('D', await open(context, 'D'));
  await expectJoined('D', pages.get('D'), peerIds);
  await expectTiles(pages, peerIds, 'D joined');
  await expectSessions(request, 3 * SESSIONS_PER_PEER, 'after D joins');
  await expectFirstMedia(pages, peerIds, 'D joined');
  await expectFlowing(pages, peerIds, 'D joined');

  for (const [, page] of pages) await page.click('#leave');
  await expectSessions(request, 0, 'after everyone leaves');
}

async function main() {
  let context;
  let failure = null;
  const deadline = setTimeout(() => {
    flushLogs();
    console.log(`FAIL rooms: deadline of ${DEADLINE_MS / 1000} s exceeded; last passed check: ${lastOk}`);
    console.log(`rooms: ${passed} passed, 1 failed`);
    process.exit(1);
  }, DEADLINE_MS);
  try {
    context = await launchChromium(ARGS);
    await run(context);
  } catch (err) {
    failure = err;
  } finally {
    clearTimeout(deadline);
    await closeChromium(context);
  }
  flushLogs();

  if (failure) {
    const why = failure instanceof CheckFailed ? failure.message : failure.stack || String(failure);
    console.log(`FAIL rooms: ${why}`);
    if (consoleLines.length) {
      console.log('--- browser console (last 40 lines) ---');
      console.log(consoleLines.slice(-40).join('\n'));
    }
    console.log(`rooms: ${passed} passed, 1 failed`);
    process.exit(1);
  }
  log('PASS rooms');
  console.log(`rooms: ${passed} passed, 0 failed`);
}

function flushLogs() {
  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, 'rooms.console.log'), consoleLines.join('\n') + '\n');
    writeFileSync(join(ARTIFACTS, 'rooms.signaling.log'), wsLines.join('\n') + '\n');
  } catch {
    // the logs are a convenience; their absence must not hide the result
  }
}

await main();
