// Browser end-to-end, simulcast: page A publishes Chromium's fake camera at 1280x720 over WHIP
// with three rid layers (q 1/4, h 1/2, f full); page B watches over WHEP capped to the low
// layer, then raises the cap to high, mid and low again during the session. Each step must
// show the matching decoded frame size on B and frames that keep coming (no freeze). The cap
// is a maximum, so B leaving the capped layer for another one later is reported as a warning,
// not a failure. A's getStats() must show three rids sending, each at its own size. Last,
// B is capped to the base VP8 temporal layer (Chrome encodes each layer as L1T3) and must
// decode fewer frames without a stall, then every frame again once the cap is lifted.
//
// Expects a sluice server already listening (tests/suites/simulcast.sh starts one inside a
// network namespace that has only loopback).
//
// Environment:
//   SLUICE_URL     base URL of the server (default https://127.0.0.1:8443)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//   ARTIFACTS_DIR  where screenshots, console log and timeline go (default tests/artifacts)
//   E2E_DEADLINE_MS  hard limit for the whole script (default 130000)
//   CHROMIUM_EXTRA_ARGS  more browser flags, space-separated (for diagnostics)
//   SIMULCAST_SCALABILITY_MODE  e.g. L1T1: forced on A's encodings (diagnostics; Chrome's
//                  VP8 simulcast default is L1T3)

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARTIFACTS, BASE, CHROMIUM_ARGS, NO_BACKGROUND_THROTTLING, CheckFailed, adminSessions, check,
  closeChromium, launchChromium,
  consoleLines, deadlineMs, elapsed, lastOk, log, passed, pollUntil, recordConsole, shardCounter, sleep,
} from './common.mjs';

const DEADLINE_MS = deadlineMs(130_000);
const STREAM = 'sim';
const NAME = 'simulcast';

const CONNECT_TIMEOUT_MS = 20_000;
const FIRST_FRAME_TIMEOUT_MS = 15_000;
// Chrome turns layers on as its send estimate grows; on loopback that takes a few seconds.
const THREE_LAYERS_TIMEOUT_MS = 25_000;
const SWITCH_TIMEOUT_MS = 15_000;
// Frames must keep coming: over FLOW_MS, sampled every FLOW_STEP_MS, each sample must see
// new frames and the total must reach MIN_FPS frames per second (the fake camera
// runs at 20-30 fps; a 2-core host running three encoders and a decoder gets less).
const FLOW_MS = 3_000;
const FLOW_STEP_MS = 500;
const MIN_FPS = 5;

const ARGS = [
  ...CHROMIUM_ARGS,
  // Two pages share one renderer budget; keep the one not in front from being throttled.
  ...NO_BACKGROUND_THROTTLING,
  // Diagnostics, e.g. CHROMIUM_EXTRA_ARGS='--enable-logging=stderr --v=1' with DEBUG=pw:browser.
  ...(process.env.CHROMIUM_EXTRA_ARGS || '').split(/\s+/).filter(Boolean),
];

const warnings = [];
const timings = {};

const stats = (page) => page.evaluate(() => window.sluice.stats());
const pageState = (page) => page.evaluate(() => ({ ...window.sluice.state }));

// "q 320x180 412kbit/s 25fps" per layer, for logs and failure messages.
function describeLayers(layers, prev, ms) {
  return layers
    .map((l) => {
      const before = prev?.find((p) => p.ssrc === l.ssrc);
      const rate = before && ms > 0 ? ` ${Math.round(((l.bytesSent - before.bytesSent) * 8) / ms)}kbit/s` : '';
      const q = l.qualityLimitationReason && l.qualityLimitationReason !== 'none' ? ` limited:${l.qualityLimitationReason}` : '';
      return `${l.rid || '-'} ${l.frameWidth}x${l.frameHeight}${rate} ${Math.round(l.framesPerSecond)}fps` +
        `${l.scalabilityMode ? ` ${l.scalabilityMode}` : ''}${l.encoderImplementation ? ` ${l.encoderImplementation}` : ''}` +
        ` target ${Math.round(l.targetBitrate / 1000)}k${l.active ? '' : ' inactive'}${q}`;
    })
    .join('; ');
}

const sendingLayers = (s) => s.sendLayers.filter((l) => l.active && l.frameWidth > 0);

const isOurs = (role) => (s) => s.role === role && s.stream === STREAM;

async function waitConnected(page, key, name) {
  const st = await pollUntil(
    () => pageState(page),
    (s) => s[key] === 'connected' || s[key] === 'error' || s[key] === 'failed',
    CONNECT_TIMEOUT_MS,
  );
  const error = st[`${key}Error`];
  check(st[key] === 'connected', `${name} connected`,
    st[key] === 'connected' ? '' : `state ${st[key]}${error ? `: ${error}` : ''}`);
  return st;
}

// Frames keep being decoded at the expected size: no freeze, no stray layer.
async function checkFlow(viewer, width, label) {
  let prev = await stats(viewer);
  const first = prev;
  const stalls = [];
  const widths = new Set([prev.frameWidth]);
  const trace = [];
  const sample = (t, s) =>
    `${t}ms: ${s.framesDecoded}f ${s.frameWidth}w ${s.videoPacketsReceived}p ${s.keyFramesDecoded}kf ` +
    `pli ${s.pliCount} nack ${s.nackCount} lost ${s.packetsLost} drop ${s.framesDropped} freeze ${s.freezeCount}`;
  trace.push(sample(0, prev));
  for (let t = 0; t < FLOW_MS; t += FLOW_STEP_MS) {
    await sleep(FLOW_STEP_MS);
    const s = await stats(viewer);
    if (s.framesDecoded <= prev.framesDecoded) stalls.push(`${t + FLOW_STEP_MS}ms`);
    widths.add(s.frameWidth);
    trace.push(sample(t + FLOW_STEP_MS, s));
    prev = s;
  }
  const frames = prev.framesDecoded - first.framesDecoded;
  const fps = (frames * 1000) / FLOW_MS;
  const ok = stalls.length === 0 && fps >= MIN_FPS;
  if (!ok) log(`B during ${label}:\n  ${trace.join('\n  ')}`);
  check(ok,
    `${label}: frames keep being decoded`,
    `${frames} frames in ${FLOW_MS / 1000} s (${fps.toFixed(1)} fps)` +
      `${stalls.length ? `, no new frame at ${stalls.join(', ')}` : ''}`);
  // The cap is a maximum: the server may pick a lower layer when the bandwidth estimate
  // says so. On loopback there is no reason to, so note it (the summary lists it) but only
  // a freeze fails the test.
  if (widths.size === 1 && widths.has(width)) {
    log(`ok: ${label}: frame width stays ${width}`);
  } else {
    const note = `${label}: frame width left ${width} (seen ${[...widths].join(', ')})`;
    log(`warning: ${note}:\n  ${trace.join('\n  ')}`);
    warnings.push(note);
  }
  return prev;
}

// Decoded frames per second over `ms`, sampled each second; seconds without a new frame.
async function decodeRate(viewer, ms) {
  const first = await stats(viewer);
  let prev = first;
  const stalls = [];
  for (let t = 0; t < ms; t += 1000) {
    await sleep(1000);
    const s = await stats(viewer);
    if (s.framesDecoded <= prev.framesDecoded) stalls.push(`${t + 1000}ms`);
    prev = s;
  }
  return { fps: ((prev.framesDecoded - first.framesDecoded) * 1000) / ms, stalls, last: prev };
}

// Chrome encodes each simulcast layer as L1T3: a viewer capped at the base temporal layer
// gets about a quarter of the frames, still decoding (sequence numbers and picture ids
// close up behind the frames left out), and all of them again once the cap is lifted.
async function temporalCap(viewer, request) {
  const full = await decodeRate(viewer, 3_000);
  const res = await viewer.evaluate(() => window.sluice.setTemporal('0'));
  check(res?.applied === true, "setTemporal('0') accepted by the server", JSON.stringify(res));
  const shown = await viewer.evaluate(() => document.getElementById('sub-temporal').value);
  check(shown === '0', "the page's frame rate selector shows 1/4", shown);
  await sleep(1_000);
  const base = await decodeRate(viewer, 4_000);
  const leftOut = await shardCounter(request, 'temporal_left_out');
  log(`B decodes ${full.fps.toFixed(1)} fps with every temporal layer, ${base.fps.toFixed(1)} on the base ` +
    `layer; server left out ${leftOut} packets`);
  check(leftOut > 0, 'server leaves out the upper temporal layers', `temporal_left_out ${leftOut}`);
  check(base.fps > 0 && base.stalls.length === 0 && base.fps < full.fps * 0.6,
    'on the base temporal layer B decodes fewer frames, without a stall',
    `${base.fps.toFixed(1)} fps against ${full.fps.toFixed(1)}` +
      `${base.stalls.length ? `; no new frame at ${base.stalls.join(', ')}` : ''}; ` +
      `freezes ${base.last.freezeCount}, PLIs ${base.last.pliCount}`);
  const up = await viewer.evaluate(() => window.sluice.setTemporal('auto'));
  check(up?.applied === true, "setTemporal('auto') accepted", JSON.stringify(up));
  await sleep(2_000);
  const again = await decodeRate(viewer, 3_000);
  check(again.stalls.length === 0 && again.fps > base.fps * 1.5,
    'with the cap lifted B decodes every frame again',
    `${again.fps.toFixed(1)} fps (base layer ${base.fps.toFixed(1)}, before ${full.fps.toFixed(1)})`);
  timings['temporal cap'] = `${full.fps.toFixed(1)} -> ${base.fps.toFixed(1)} -> ${again.fps.toFixed(1)} fps`;
}

// A timeline of both pages, every TIMELINE_MS, written to the artifacts: per-layer send
// rates on A next to what B decodes, to tell a layer change the server chose from one asked.
const TIMELINE_MS = 250;
const timeline = [];
let timelineOn = false;
async function sampleTimeline(publisher, viewer) {
  timelineOn = true;
  let prevA = null;
  let prevAt = 0;
  while (timelineOn) {
    try {
      const [a, b] = await Promise.all([stats(publisher), stats(viewer)]);
      const now = Date.now();
      const rates = a.sendLayers.map((l) => {
        const before = prevA?.find((p) => p.ssrc === l.ssrc);
        const kbit = before ? Math.round(((l.bytesSent - before.bytesSent) * 8) / (now - prevAt)) : 0;
        return `${l.rid}:${l.frameWidth}w/${kbit}k`;
      });
      prevA = a.sendLayers;
      prevAt = now;
      timeline.push(`[${elapsed()}] A ${rates.join(' ')} est ${Math.round(a.availableOutgoingBitrate / 1000)}k | ` +
        `B cap ${b.watchLayer} ${b.frameWidth}w ${b.framesDecoded}f ${b.keyFramesDecoded}kf pli ${b.pliCount} ` +
        `freeze ${b.freezeCount} drop ${b.framesDropped} lost ${b.packetsLost} ${b.videoPacketsReceived}p`);
    } catch {
      // a page is closing
    }
    await sleep(TIMELINE_MS);
  }
}

// Raise or lower B's cap and wait for the decoded width of A's matching layer.
async function switchTo(publisher, viewer, request, layer, pick) {
  const kf0 = await shardCounter(request, 'keyframe_requests');
  const sw0 = await shardCounter(request, 'layer_switch_requests');
  const t0 = Date.now();
  const res = await viewer.evaluate((l) => window.sluice.setLayer(l), layer);
  check(res?.applied === true, `setLayer('${layer}') accepted by the server`, JSON.stringify(res));
  let want = 0;
  const last = await pollUntil(
    async () => {
      const [a, b] = await Promise.all([stats(publisher), stats(viewer)]);
      want = pick(sendingLayers(a))?.frameWidth || 0;
      return { a, b };
    },
    ({ b }) => want > 0 && b.frameWidth === want,
    SWITCH_TIMEOUT_MS,
  );
  const ms = Date.now() - t0;
  const kf1 = await shardCounter(request, 'keyframe_requests');
  const sw1 = await shardCounter(request, 'layer_switch_requests');
  timings[`switch to ${layer}`] = `${(ms / 1000).toFixed(1)} s`;
  check(last.b.frameWidth === want, `viewer switches to ${layer}: width ${want}`,
    `got ${last.b.frameWidth}x${last.b.frameHeight} after ${(ms / 1000).toFixed(1)} s; ` +
      `publisher layers: ${describeLayers(last.a.sendLayers)}; server: layer switch requests +${sw1 - sw0}, ` +
      `keyframe requests (PLI) to the publisher +${kf1 - kf0}`);
  return last.b.frameWidth;
}

async function run(context) {
  const request = context.request;
  const publisher = await context.newPage();
  recordConsole(publisher, 'A');
  const viewer = await context.newPage();
  recordConsole(viewer, 'B');

  if (process.env.SIMULCAST_SCALABILITY_MODE) {
    // Diagnostic: force a scalability mode (e.g. L1T1) on every encoding the page asks for.
    await publisher.addInitScript((mode) => {
      const add = RTCPeerConnection.prototype.addTransceiver;
      RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
        if (init?.sendEncodings) init.sendEncodings = init.sendEncodings.map((e) => ({ ...e, scalabilityMode: mode }));
        return add.call(this, trackOrKind, init);
      };
    }, process.env.SIMULCAST_SCALABILITY_MODE);
    log(`diagnostic: scalabilityMode ${process.env.SIMULCAST_SCALABILITY_MODE} on every encoding`);
  }
  await publisher.goto(`${BASE}/broadcast?publish=${STREAM}&simulcast=1`, { timeout: 10_000 });
  await viewer.goto(`${BASE}/broadcast?watch=${STREAM}&layer=low`, { timeout: 10_000 });
  await viewer.bringToFront();

  const pubState = await waitConnected(publisher, 'publish', 'publisher (A)');
  check(pubState.publishEncodings === 3 && !pubState.publishNote,
    'A set up three simulcast encodings', `${pubState.publishEncodings} encodings${pubState.publishNote ? `; ${pubState.publishNote}` : ''}`);
  const capture = await publisher.evaluate(() => {
    const t = window.sluice.pubPc.getSenders().find((s) => s.track?.kind === 'video')?.track;
    const st = t?.getSettings() || {};
    return { width: st.width, height: st.height, frameRate: st.frameRate };
  });
  log(`A captures ${capture.width}x${capture.height} @ ${capture.frameRate} fps`);
  const answer = await publisher.evaluate(() => window.sluice.pubPc.remoteDescription?.sdp || '');
  check(/a=simulcast:recv/.test(answer), 'WHIP answer accepts simulcast',
    answer.split(/\r?\n/).filter((l) => /^a=(simulcast|rid)/.test(l)).join(' | '));
  const viewState = await waitConnected(viewer, 'watch', 'viewer (B)');
  check(viewState.watchLayer === 'low', "B asked for layer 'low'", viewState.watchLayer);

  const sampler = sampleTimeline(publisher, viewer);
  const sessions = await adminSessions(request);
  check(sessions.some(isOurs('publisher')) && sessions.some(isOurs('viewer')),
    'admin API lists publisher and viewer');

  // Chrome really sends three layers: each rid has its own outbound-rtp with frames.
  const t3 = Date.now();
  let prevLayers = null;
  let prevAt = Date.now();
  let lastDesc = '';
  let growing = 0; // layers whose bytesSent grew since the previous sample
  const three = await pollUntil(
    async () => {
      const s = await stats(publisher);
      const now = Date.now();
      lastDesc = describeLayers(s.sendLayers, prevLayers, now - prevAt);
      growing = sendingLayers(s).filter((l) => {
        const before = prevLayers?.find((p) => p.ssrc === l.ssrc);
        return before && l.bytesSent > before.bytesSent;
      }).length;
      prevLayers = s.sendLayers;
      prevAt = now;
      return s;
    },
    (s) => growing === 3 && new Set(sendingLayers(s).map((l) => l.frameWidth)).size === 3,
    THREE_LAYERS_TIMEOUT_MS,
    1000,
  );
  timings['A sends three layers'] = `${((Date.now() - t3) / 1000).toFixed(1)} s after connect`;
  check(growing === 3 && sendingLayers(three).length === 3, 'A sends three distinct layers',
    `${lastDesc}; send estimate ${Math.round(three.availableOutgoingBitrate / 1000)} kbit/s` +
      `${three.qualityLimitationReason ? `; limited by ${three.qualityLimitationReason}` : ''}`);
  const rids = sendingLayers(three).map((l) => l.rid).join(',');
  check(rids === 'q,h,f', 'layers are q < h < f by width', rids);

  // B on low: the q layer's size, and frames flowing.
  const first = await pollUntil(() => stats(viewer), (s) => s.framesDecoded > 0, FIRST_FRAME_TIMEOUT_MS);
  check(first.framesDecoded > 0, 'B decodes a first frame', JSON.stringify(first));
  let qWidth = 0;
  const onLow = await pollUntil(
    async () => {
      const [a, b] = await Promise.all([stats(publisher), stats(viewer)]);
      qWidth = sendingLayers(a)[0]?.frameWidth || 0;
      return b;
    },
    (b) => qWidth > 0 && b.frameWidth === qWidth,
    5_000,
  );
  check(onLow.frameWidth === qWidth, `B on low decodes the q layer: width ${qWidth}`,
    `${onLow.frameWidth}x${onLow.frameHeight}`);
  const lowWidth = onLow.frameWidth;
  await checkFlow(viewer, lowWidth, 'low');

  // Raise the cap to high during the session.
  const highWidth = await switchTo(publisher, viewer, request, 'high', (ls) => ls[ls.length - 1]);
  check(lowWidth < highWidth, 'low layer is narrower than high', `${lowWidth} < ${highWidth}`);
  const afterHigh = await checkFlow(viewer, highWidth, 'high');
  const video = await viewer.evaluate(() => {
    const v = document.getElementById('remote-video');
    return { width: v.videoWidth, height: v.videoHeight, paused: v.paused, time: v.currentTime };
  });
  // Its size follows the decoded layer (which the server may have lowered meanwhile).
  check(video.width > 0 && !video.paused && video.time > 0, 'B <video> is playing', JSON.stringify(video));
  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = join(ARTIFACTS, `${NAME}.png`);
  await viewer.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
  const pubShot = join(ARTIFACTS, `${NAME}-publisher.png`);
  await publisher.screenshot({ path: pubShot, fullPage: true, timeout: 10_000 });
  log(`screenshots: ${shot}, ${pubShot}`);
  log(`B stats on high: ${JSON.stringify({ ...afterHigh, sendLayers: undefined })}`);

  // And down again: mid, then low.
  const midWidth = await switchTo(publisher, viewer, request, 'mid', (ls) => ls[1]);
  check(lowWidth < midWidth && midWidth < highWidth, 'mid layer lies between low and high',
    `${lowWidth} < ${midWidth} < ${highWidth}`);
  await checkFlow(viewer, midWidth, 'mid');
  await switchTo(publisher, viewer, request, 'low', (ls) => ls[0]);
  await checkFlow(viewer, lowWidth, 'low again');
  await temporalCap(viewer, request);

  const pubEnd = await stats(publisher);
  log(`A layers at the end: ${describeLayers(pubEnd.sendLayers)}; quality limitation: ${pubEnd.qualityLimitationReason || 'none'}`);
  log(`server: ${await shardCounter(request, 'keyframe_requests')} keyframe requests, ` +
    `${await shardCounter(request, 'layer_switch_requests')} layer switch requests`);

  timelineOn = false;
  await sampler;
  // Leave nothing behind, so the server's SIGTERM drain has no session to wait for.
  await viewer.click('#watch-stop', { timeout: 5_000 });
  await publisher.click('#publish-stop', { timeout: 5_000 });
  const after = await pollUntil(
    () => adminSessions(request),
    (list) => !list.some((s) => s.stream === STREAM),
    5_000,
  );
  check(!after.some((s) => s.stream === STREAM), 'sessions removed after Stop', JSON.stringify(after));
}

async function main() {
  let context;
  let failure = null;
  const deadline = setTimeout(() => {
    console.log(`FAIL ${NAME}: deadline of ${DEADLINE_MS / 1000} s exceeded; last passed check: ${lastOk}`);
    console.log(`${NAME}: ${passed} passed, 1 failed`);
    process.exit(1);
  }, DEADLINE_MS);
  try {
    context = await launchChromium(ARGS);
    await run(context);
  } catch (err) {
    failure = err;
  } finally {
    timelineOn = false;
    if (failure && context) {
      // End both sessions on the server too, so its SIGTERM drain does not wait for them.
      for (const page of context.pages()) {
        await page.evaluate(() => {
          for (const id of ['watch-stop', 'publish-stop']) {
            const button = document.getElementById(id);
            if (button && !button.disabled) button.click();
          }
        }).catch(() => {});
      }
      await sleep(500); // let the DELETEs go out
    }
    await closeChromium(context);
    clearTimeout(deadline);
  }

  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(join(ARTIFACTS, `${NAME}.console.log`), consoleLines.join('\n') + '\n');
    writeFileSync(join(ARTIFACTS, `${NAME}.timeline.log`), timeline.join('\n') + '\n');
  } catch {
    // the console log is a convenience; its absence must not hide the result
  }

  for (const w of warnings) log(`warning: ${w}`);
  log(`timings: ${Object.entries(timings).map(([k, v]) => `${k} ${v}`).join('; ') || 'none'}`);
  if (failure) {
    const why = failure instanceof CheckFailed ? failure.message : failure.stack || String(failure);
    console.log(`FAIL ${NAME}: ${why}`);
    if (consoleLines.length) {
      console.log('--- browser console (last 40 lines) ---');
      console.log(consoleLines.slice(-40).join('\n'));
    }
    console.log(`${NAME}: ${passed} passed, 1 failed`);
    process.exit(1);
  }
  log(`PASS ${NAME} in ${elapsed()}`);
  console.log(`${NAME}: ${passed} passed, 0 failed`);
}

await main();
