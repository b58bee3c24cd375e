// Browser end-to-end: Chromium publishes its fake camera and microphone over WHIP, a
// second page watches over WHEP, and both sides' getStats() must show media flowing.
// Stopping the publisher must remove its session from the server's admin API. The
// dashboard must show a Cluster panel exactly when the viewer's server is in a cluster.
//
// Expects a sluice server already listening (tests/suites/browser.sh starts one inside a
// network namespace that has only loopback), or a cluster (tests/suites/cascade-browser.sh:
// the publisher on one node, the viewer on another).
//
// Environment:
//   SLUICE_URL     base URL of the server (default https://127.0.0.1:8443)
//   SLUICE_WHIP_URL  base URL the publisher's page comes from and publishes to (default SLUICE_URL)
//   SLUICE_WHEP_URL  base URL the viewer's page comes from and watches on (default SLUICE_URL)
//   E2E_CLUSTER    set by cascade-browser.sh: JSON {"origin": id, "nodes": {id: base URL},
//                  "edges": [[node, upstream], ...]}, the relay tree the stream must take;
//                  unset, the server must not be in a cluster
//   E2E_NAME       name of the artifacts and of the result line (default whip_whep)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//   ARTIFACTS_DIR  where the screenshot and the console log go (default tests/artifacts)
//   E2E_DEADLINE_MS  hard limit for the whole script (default 100000)
//   E2E_LOSS_PERCENT  set by tests/suites/browser-loss.sh, which drops that share of the
//                     server's datagrams: the viewer must then NACK and sluice resend
//   E2E_TRANSPORT  "tcp" from tests/suites/browser-tcp.sh, where UDP to the media ports is
//                  dropped: both pages must reach sluice over ICE-TCP; otherwise over UDP

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ARTIFACTS, BASE, CHROMIUM_ARGS, CheckFailed, adminSessions, check, closeChromium, launchChromium,
  consoleLines, deadlineMs, lastOk, log, metricSum, metricsText, pollUntil, recordConsole,
  shardCounter, sleep,
} from './common.mjs';

const DEADLINE_MS = deadlineMs(100_000);
const STREAM = 'e2e';
const NAME = process.env.E2E_NAME || 'whip_whep';
const SUITE = NAME === 'whip_whep' ? 'browser' : NAME;
const WHIP_BASE = (process.env.SLUICE_WHIP_URL || BASE).replace(/\/+$/, '');
const WHEP_BASE = (process.env.SLUICE_WHEP_URL || BASE).replace(/\/+$/, '');
const CLUSTER = process.env.E2E_CLUSTER ? JSON.parse(process.env.E2E_CLUSTER) : null;

const CONNECT_TIMEOUT_MS = 20_000; // ICE + DTLS on loopback takes well under a second
const FIRST_FRAME_TIMEOUT_MS = 15_000;
const MEASURE_MS = 5_000;
const MIN_FRAMES_IN_WINDOW = 30; // ~100 arrive here (the fake camera sends 20 fps); slack for slow hosts
const SESSION_GONE_TIMEOUT_MS = 5_000;
const CLUSTER_TIMEOUT_MS = 10_000; // node records and pulls are rewritten every lease/4
// An edge lets a pull go 5 s after its last viewer; the upstream closes its end on the
// release call, or 5 s after the last authentic packet.
const RELAY_GONE_TIMEOUT_MS = 15_000;

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
  if (CLUSTER) await checkClusterFormed(request);
  const publisher = await context.newPage();
  recordConsole(publisher, 'publisher');
  const viewer = await context.newPage();
  recordConsole(viewer, 'viewer');

  await publisher.goto(`${WHIP_BASE}/broadcast?publish=${STREAM}`, { timeout: 10_000 });
  await viewer.goto(`${WHEP_BASE}/broadcast?watch=${STREAM}`, { timeout: 10_000 });
  await viewer.bringToFront();

  await waitConnected(publisher, 'publish', 'publisher');
  await waitConnected(viewer, 'watch', 'viewer');

  const pubSessions = await adminSessions(request, WHIP_BASE);
  check(pubSessions.some(isOurPublisher), 'admin API lists the publisher', JSON.stringify(pubSessions));
  const viewSessions = await adminSessions(request, WHEP_BASE);
  check(viewSessions.some(isOurViewer), 'admin API lists the viewer', JSON.stringify(viewSessions));

  // The viewer may have joined before the publisher's first keyframe was forwarded.
  const first = await pollUntil(
    () => stats(viewer),
    (s) => s.framesDecoded > 0,
    FIRST_FRAME_TIMEOUT_MS,
  );
  check(first.framesDecoded > 0, 'viewer decodes a first frame', JSON.stringify(first));

  const pub0 = await stats(publisher);
  const view0 = await stats(viewer);
  const relay0 = CLUSTER ? await relaySnapshot(request) : null;
  await sleep(MEASURE_MS);
  const pub1 = await stats(publisher);
  const view1 = await stats(viewer);
  const relay1 = CLUSTER ? await relaySnapshot(request) : null;
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
    const resent = await shardCounter(request, 'rtx_sent', WHEP_BASE);
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
  const direct = await shardCounter(request, 'direct_sessions', WHEP_BASE);
  const reports = await shardCounter(request, 'sender_reports', WHEP_BASE);
  check(direct >= 1 && reports >= 2, 'viewer is sent to by sluice\'s own send path',
    `direct sessions ${direct}, sender reports ${reports}`);
  await checkTransport(request);
  if (CLUSTER) {
    checkRelayCounters(relay0, relay1);
    await checkClusterListing(request);
  }

  mkdirSync(ARTIFACTS, { recursive: true });
  const shot = join(ARTIFACTS, `${NAME}.png`);
  await viewer.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
  log(`screenshot: ${shot}`);
  await checkDashboard(context);

  await publisher.click('#publish-stop', { timeout: 5_000 });
  const afterStop = await pollUntil(
    () => adminSessions(request, WHIP_BASE),
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
    () => adminSessions(request, WHEP_BASE),
    (list) => !list.some(isOurViewer),
    SESSION_GONE_TIMEOUT_MS,
  );
  check(!afterWatchStop.some(isOurViewer), 'viewer session removed after Stop',
    JSON.stringify(afterWatchStop));
  if (CLUSTER) await checkClusterReleased(request);
}

/* ---------- transport (E2E_TRANSPORT) ---------- */

// Each page's session reports the transport its media took: TCP where UDP is blocked, UDP
// (the higher-priority candidate) where it is not.
async function checkTransport(request) {
  const want = process.env.E2E_TRANSPORT === 'tcp' ? 'tcp' : 'udp';
  for (const [base, isOurs, who] of [[WHIP_BASE, isOurPublisher, 'publisher'], [WHEP_BASE, isOurViewer, 'viewer']]) {
    const list = await adminSessions(request, base);
    const s = list.find(isOurs);
    const got = s && s.stats ? s.stats.transport : undefined;
    check(got === want, `${who} reaches sluice over ${want.toUpperCase()}`, `transport ${got}`);
  }
  const accepted = await shardCounter(request, 'tcp_accepted', WHEP_BASE);
  if (want === 'tcp') {
    check(accepted >= 1, 'sluice accepted ICE-TCP connections', `tcp_accepted ${accepted}`);
  }
}

/* ---------- cluster (E2E_CLUSTER) ---------- */

async function adminCluster(request, base) {
  const resp = await request.get(`${base}/admin/cluster`, { timeout: 5_000 });
  const body = await resp.text();
  if (!resp.ok()) throw new CheckFailed(`GET ${base}/admin/cluster: ${resp.status()} ${body.trim()}`);
  return JSON.parse(body);
}

const clusterIds = () => Object.keys(CLUSTER.nodes).sort();
const nodeIds = (listing) => (listing.nodes || []).map((n) => n.id).sort();
const sameList = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Every node answers /admin/cluster and sees every other node's record.
async function checkClusterFormed(request) {
  for (const [id, base] of Object.entries(CLUSTER.nodes)) {
    const listing = await pollUntil(
      () => adminCluster(request, base),
      (l) => sameList(nodeIds(l), clusterIds()),
      CLUSTER_TIMEOUT_MS,
    );
    check(listing.node_id === id && listing.healthy === true, `node ${id} is in the cluster and its registry healthy`,
      `node_id ${listing.node_id}, healthy ${listing.healthy}`);
    check(sameList(nodeIds(listing), clusterIds()), `node ${id} lists every node`, nodeIds(listing).join(', '));
  }
}

/** Each node's relay gauges and counters from its /metrics. */
async function relaySnapshot(request) {
  const out = {};
  for (const [id, base] of Object.entries(CLUSTER.nodes)) {
    const text = await metricsText(request, base);
    if (!text) throw new CheckFailed(`GET ${base}/metrics failed`);
    out[id] = {
      served: metricSum(text, 'sluice_relay_served'),
      pulls: metricSum(text, 'sluice_relay_pulls'),
      linksOut: metricSum(text, 'sluice_relay_links{direction="out"}'),
      linksIn: metricSum(text, 'sluice_relay_links{direction="in"}'),
      packetsOut: metricSum(text, 'sluice_shard_relay_packets_out_total'),
      packetsIn: metricSum(text, 'sluice_shard_relay_packets_in_total'),
      rtpIn: metricSum(text, 'sluice_shard_rtp_in_total'),
    };
  }
  return out;
}

// The relay tree in the nodes' gauges: each upstream serves its edges, each edge pulls the
// stream once, and the origin sends one copy per edge over the measurement window.
function checkRelayCounters(before, after) {
  for (const id of clusterIds()) {
    const served = CLUSTER.edges.filter(([, up]) => up === id).length;
    const pulls = CLUSTER.edges.filter(([node]) => node === id).length;
    const b = before[id];
    const a = after[id];
    check(a.served === served && a.linksOut === (served ? 1 : 0),
      `node ${id} serves the stream to ${served} edge${served === 1 ? '' : 's'}`,
      `sluice_relay_served ${a.served}, links out ${a.linksOut}`);
    check(a.pulls === pulls && a.linksIn === pulls,
      `node ${id} ${pulls ? 'pulls the stream once' : 'pulls nothing'}`,
      `sluice_relay_pulls ${a.pulls}, links in ${a.linksIn}`);
    if (served) {
      check(a.packetsOut - b.packetsOut > 200, `node ${id} relays packets downstream`,
        `relay_packets_out ${b.packetsOut} -> ${a.packetsOut}`);
    }
    if (pulls) {
      check(a.packetsIn - b.packetsIn > 200, `node ${id} receives relayed packets`,
        `relay_packets_in ${b.packetsIn} -> ${a.packetsIn}`);
    }
  }
  const o = CLUSTER.origin;
  const published = after[o].rtpIn - before[o].rtpIn;
  const relayed = after[o].packetsOut - before[o].packetsOut;
  const edges = CLUSTER.edges.filter(([, up]) => up === o).length;
  // Repairs and keyframe resends add a little; a second copy to an edge would double it.
  check(published > 200 && relayed >= 0.8 * edges * published && relayed <= 1.25 * edges * published,
    `origin ${o} relays each published packet once per edge (${edges} edge${edges === 1 ? '' : 's'})`,
    `${published} packets published, ${relayed} relayed in ${MEASURE_MS / 1000} s`);
}

// /admin/cluster on the viewer's node names the stream's origin and the relay tree.
async function checkClusterListing(request) {
  const want = [...CLUSTER.edges].sort((x, y) => x[0].localeCompare(y[0]));
  const edgesOf = (l) => {
    const s = (l.streams || []).find((x) => x.name === STREAM);
    return s ? (s.edges || []).map((e) => [e.node, e.upstream]) : null;
  };
  const listing = await pollUntil(
    () => adminCluster(request, WHEP_BASE),
    (l) => sameList(edgesOf(l), want),
    CLUSTER_TIMEOUT_MS,
  );
  const stream = (listing.streams || []).find((x) => x.name === STREAM);
  check(stream && stream.origin === CLUSTER.origin, `/admin/cluster names ${CLUSTER.origin} the origin`,
    JSON.stringify(stream));
  check(sameList(edgesOf(listing), want), '/admin/cluster lists the edges and their upstreams',
    JSON.stringify(edgesOf(listing)));
  for (const n of listing.nodes) {
    check(n.advertise === CLUSTER.nodes[n.id] && n.heartbeat_age_ms >= 0,
      `node ${n.id} advertises ${CLUSTER.nodes[n.id]}`, `${n.advertise}, heartbeat ${n.heartbeat_age_ms} ms ago`);
  }
  const viewerNode = (listing.nodes || []).find((n) => n.id === listing.node_id);
  check(viewerNode && viewerNode.viewers >= 1, `the viewer's node ${listing.node_id} counts its viewer`,
    JSON.stringify(viewerNode));
}

// With publisher and viewer gone, the claim is released and every relay closes.
async function checkClusterReleased(request) {
  const listing = await pollUntil(
    () => adminCluster(request, WHIP_BASE),
    (l) => !(l.streams || []).some((s) => s.name === STREAM),
    SESSION_GONE_TIMEOUT_MS,
  );
  check(!(listing.streams || []).some((s) => s.name === STREAM), 'the stream\'s claim is released',
    JSON.stringify(listing.streams));
  const idle = (snap) => Object.values(snap).every((r) => r.served === 0 && r.pulls === 0 &&
    r.linksOut === 0 && r.linksIn === 0);
  const snap = await pollUntil(() => relaySnapshot(request), idle, RELAY_GONE_TIMEOUT_MS, 500);
  check(idle(snap), 'every relay is closed',
    Object.entries(snap).map(([id, r]) => `${id}: served ${r.served}, pulls ${r.pulls}, links ${r.linksOut}/${r.linksIn}`).join('; '));
}

/* ---------- dashboard ---------- */

// The dashboard on the viewer's node: a Cluster panel listing the nodes and the stream's
// relay tree in a cluster, no such panel on a single node.
async function checkDashboard(context) {
  const page = await context.newPage();
  recordConsole(page, 'dashboard');
  try {
    await page.goto(`${WHEP_BASE}/dashboard`, { timeout: 10_000 });
    const panel = page.locator('#cluster-panel');
    // The panel's data-mode is set once the dashboard has heard /admin/cluster's answer.
    await page.waitForFunction(
      () => document.getElementById('cluster-panel')?.dataset.mode,
      null,
      { timeout: 10_000 },
    ).catch(() => {});
    const mode = await panel.getAttribute('data-mode', { timeout: 2_000 }).catch(() => null);
    if (!CLUSTER) {
      check(mode === 'single' && await panel.isHidden(), 'dashboard hides the Cluster panel on a single node',
        `data-mode ${mode}`);
      return;
    }
    check(mode === 'cluster' && await panel.isVisible(), 'dashboard shows the Cluster panel', `data-mode ${mode}`);
    const tables = async () => page.evaluate(() => {
      const rows = (id) => [...document.querySelectorAll(`#${id} tr`)].map((tr) =>
        [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()));
      return { nodes: rows('cluster-nodes-body'), streams: rows('cluster-streams-body') };
    });
    const wantEdges = [...CLUSTER.edges].sort((x, y) => x[0].localeCompare(y[0]))
      .map(([n, up]) => `${n} ← ${up}`).join(', ');
    const t = await pollUntil(tables, (v) => v.streams.some((r) => r[0] === STREAM && r[2] === wantEdges), 5_000);
    const ids = t.nodes.map((r) => r[0].replace(/ \(this node\)$/, '')).sort();
    check(sameList(ids, clusterIds()), 'dashboard lists every node', JSON.stringify(t.nodes));
    check(t.nodes.every((r) => r[1] === CLUSTER.nodes[r[0].replace(/ \(this node\)$/, '')] && r[6] === 'yes'),
      'dashboard shows each node\'s address and health', JSON.stringify(t.nodes));
    const row = t.streams.find((r) => r[0] === STREAM);
    check(row && row[1] === CLUSTER.origin && row[2] === wantEdges,
      'dashboard shows the stream\'s origin and its edges with their upstreams', JSON.stringify(t.streams));
    const shot = join(ARTIFACTS, `${NAME}-dashboard.png`);
    await page.screenshot({ path: shot, fullPage: true, timeout: 10_000 });
    log(`screenshot: ${shot}`);
  } finally {
    await page.close().catch(() => {});
  }
}

async function main() {
  let context;
  let failure = null;
  const deadline = setTimeout(() => {
    console.log(`FAIL ${NAME}: deadline of ${DEADLINE_MS / 1000} s exceeded; last passed check: ${lastOk}`);
    console.log(`${SUITE}: 0 passed, 1 failed`);
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
    writeFileSync(join(ARTIFACTS, `${NAME}.console.log`), consoleLines.join('\n') + '\n');
  } catch {
    // the console log is a convenience; its absence must not hide the result
  }

  if (failure) {
    const why = failure instanceof CheckFailed ? failure.message : failure.stack || String(failure);
    console.log(`FAIL ${NAME}: ${why}`);
    if (consoleLines.length) {
      console.log('--- browser console (last 40 lines) ---');
      console.log(consoleLines.slice(-40).join('\n'));
    }
    console.log(`${SUITE}: 0 passed, 1 failed`);
    process.exit(1);
  }
  log(`PASS ${NAME}`);
  console.log(`${SUITE}: 1 passed, 0 failed`);
}

await main();
