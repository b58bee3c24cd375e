'use strict';

/*
 * sluice web client: publish camera/microphone over WHIP, watch a stream over WHEP.
 *
 * The server is ICE-lite and lists its only candidate in the answer, so each offer is
 * sent once, after local candidate gathering has finished: no trickle ICE, no PATCH.
 *
 * Simulcast: the publisher may send three rid layers (RFC 8853); the server forwards one of
 * them to each viewer, the highest allowed by the viewer's cap (`?layer=` on the WHEP POST,
 * then `POST {resource}/layer?max=`) whose rate fits the viewer's bandwidth estimate.
 * A VP8 publisher's temporal layers can be capped the same way (`?temporal=`, then
 * `POST {resource}/layer?temporal=`): the "Frame rate" selector.
 */

const ICE_GATHER_TIMEOUT_MS = 1000;
const STATS_PERIOD_MS = 1000;

const VIDEO_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30 },
};
const PREFERRED_VIDEO_CODECS = ['video/vp8', 'video/h264'];

// Lowest first; the rids match what the server's `layer=low|mid|high` names by rate.
const SIMULCAST_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];
const LAYERS = ['auto', 'low', 'mid', 'high'];

const $ = (id) => document.getElementById(id);

const ui = {
  pubForm: $('publish-form'),
  pubStream: $('pub-stream'),
  pubToken: $('pub-token'),
  pubCamera: $('pub-camera'),
  pubMic: $('pub-mic'),
  pubSimulcast: $('pub-simulcast'),
  pubStart: $('publish-start'),
  pubStop: $('publish-stop'),
  pubStatus: $('pub-status'),
  pubStats: $('pub-stats'),
  localVideo: $('local-video'),

  subForm: $('watch-form'),
  subStream: $('sub-stream'),
  subToken: $('sub-token'),
  subLayer: $('sub-layer'),
  subTemporal: $('sub-temporal'),
  subStart: $('watch-start'),
  subStop: $('watch-stop'),
  subStatus: $('sub-status'),
  subStats: $('sub-stats'),
  remoteVideo: $('remote-video'),
  unmute: $('remote-unmute'),
};

// Plain, serialisable state so automated tests can read it with a single evaluate().
const state = {
  publish: 'idle', // idle | starting | negotiating | connecting | connected | disconnected | failed | closed | error
  watch: 'idle',
  publishError: '',
  watchError: '',
  publishResource: '',
  watchResource: '',
  publishNote: '', // e.g. why simulcast was not used
  watchNote: '',
  publishEncodings: 0, // video encodings the sender was set up with (3 with simulcast)
  watchLayer: 'auto', // the cap asked for: auto | low | mid | high
  watchTemporal: 'auto', // the VP8 temporal cap asked for: auto | 0 | 1 | 2
};

const sluice = { pubPc: null, subPc: null, state, stats: collectStats, setLayer, setTemporal };
window.sluice = sluice;

/* ---------- helpers ---------- */

function firstLine(text) {
  return (text || '').trim().split(/\r?\n/, 1)[0].slice(0, 300);
}

function describe(err) {
  if (!err) return 'unknown error';
  if (typeof err === 'string') return err;
  // DOMExceptions from getUserMedia carry the useful part in their name.
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  return `${name}${err.message || String(err)}`;
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function stopTracks(media) {
  media?.getTracks().forEach((t) => t.stop());
}

// WHIP/WHEP exchange: one POST with the complete offer, the answer in the body.
async function exchangeSdp(pc, url, token, signal) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
  if (signal.aborted) throw new DOMException('cancelled', 'AbortError');

  const resp = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', ...authHeaders(token) },
    body: pc.localDescription.sdp,
    signal,
  });
  const body = await resp.text();
  if (!resp.ok) {
    throw new Error(`${resp.status} ${firstLine(body) || resp.statusText || 'request failed'}`);
  }
  const location = resp.headers.get('Location');
  if (!location) throw new Error('server answer has no Location header');

  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  // Location may be relative; RFC 9725 resolves it against the request URL.
  return new URL(location, resp.url || url).href;
}

function deleteResource(url, token, keepalive = false) {
  return fetch(url, { method: 'DELETE', headers: authHeaders(token), keepalive })
    .then(() => undefined)
    .catch(() => undefined); // the session ends on the server anyway once ICE times out
}

function preferCodecs(transceiver, preferred) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  try {
    const kind = transceiver.sender.track?.kind || 'video';
    // Receiver capabilities are accepted by every browser that has setCodecPreferences;
    // older Chrome rejects sender-only entries.
    const caps = RTCRtpReceiver.getCapabilities?.(kind) || RTCRtpSender.getCapabilities?.(kind);
    if (!caps?.codecs?.length) return;
    const rank = (c) => {
      const i = preferred.indexOf(c.mimeType.toLowerCase());
      return i === -1 ? preferred.length : i;
    };
    // Stable sort: everything else (RTX, RED, FEC, other codecs) keeps the browser's order.
    const codecs = [...caps.codecs].sort((a, b) => rank(a) - rank(b));
    transceiver.setCodecPreferences(codecs);
  } catch (err) {
    console.warn('setCodecPreferences failed, using browser defaults:', err);
  }
}

/* ---------- stats ---------- */

function summarizeInbound(report) {
  const s = {
    framesDecoded: 0,
    frameWidth: 0,
    frameHeight: 0,
    framesPerSecond: 0,
    videoPacketsReceived: 0,
    audioPacketsReceived: 0,
    packetsLost: 0,
    bytesReceived: 0,
    keyFramesDecoded: 0,
    framesDropped: 0,
    freezeCount: 0,
    pliCount: 0,
    nackCount: 0,
    retransmittedPacketsReceived: 0,
  };
  report?.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const kind = r.kind || r.mediaType;
    s.bytesReceived += r.bytesReceived || 0;
    s.packetsLost += r.packetsLost || 0;
    if (kind === 'video') {
      s.videoPacketsReceived += r.packetsReceived || 0;
      s.framesDecoded += r.framesDecoded || 0;
      s.frameWidth = r.frameWidth || s.frameWidth;
      s.frameHeight = r.frameHeight || s.frameHeight;
      s.framesPerSecond = r.framesPerSecond || s.framesPerSecond;
      s.keyFramesDecoded += r.keyFramesDecoded || 0;
      s.framesDropped += r.framesDropped || 0;
      s.freezeCount += r.freezeCount || 0;
      s.pliCount += r.pliCount || 0;
      s.nackCount += r.nackCount || 0;
      s.retransmittedPacketsReceived += r.retransmittedPacketsReceived || 0;
    } else if (kind === 'audio') {
      s.audioPacketsReceived += r.packetsReceived || 0;
    }
  });
  return s;
}

function summarizeOutbound(report) {
  const s = {
    bytesSent: 0,
    packetsSent: 0,
    framesEncoded: 0,
    frameWidth: 0,
    frameHeight: 0,
    framesPerSecond: 0,
    qualityLimitationReason: '',
    // One entry per video encoding, lowest resolution first; with simulcast one per rid.
    layers: [],
  };
  report?.forEach((r) => {
    if (r.type !== 'outbound-rtp') return;
    const kind = r.kind || r.mediaType;
    s.bytesSent += r.bytesSent || 0;
    s.packetsSent += r.packetsSent || 0;
    if (kind === 'video') {
      s.framesEncoded += r.framesEncoded || 0;
      // With simulcast the size and rate shown are the largest layer's.
      if ((r.frameWidth || 0) >= s.frameWidth) {
        s.frameWidth = r.frameWidth || s.frameWidth;
        s.frameHeight = r.frameHeight || s.frameHeight;
        s.framesPerSecond = r.framesPerSecond || s.framesPerSecond;
      }
      if (r.qualityLimitationReason && r.qualityLimitationReason !== 'none') {
        s.qualityLimitationReason = r.qualityLimitationReason;
      }
      s.layers.push({
        rid: r.rid || '',
        ssrc: r.ssrc,
        active: r.active !== false,
        frameWidth: r.frameWidth || 0,
        frameHeight: r.frameHeight || 0,
        framesPerSecond: r.framesPerSecond || 0,
        framesEncoded: r.framesEncoded || 0,
        bytesSent: r.bytesSent || 0,
        packetsSent: r.packetsSent || 0,
        targetBitrate: r.targetBitrate || 0,
        qualityLimitationReason: r.qualityLimitationReason || '',
        encoderImplementation: r.encoderImplementation || '',
        scalabilityMode: r.scalabilityMode || '',
      });
    }
  });
  s.layers.sort((a, b) => a.frameWidth - b.frameWidth || a.rid.localeCompare(b.rid));
  return s;
}

// The send-side bandwidth estimate of the selected candidate pair, bits/s (0 if unknown).
function availableOutgoingBitrate(report) {
  let bps = 0;
  report?.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate) {
      bps = r.availableOutgoingBitrate;
    }
  });
  return bps;
}

async function reportOf(pc) {
  if (!pc || pc.signalingState === 'closed') return null;
  try {
    return await pc.getStats();
  } catch {
    return null; // the connection was closed while the call was in flight
  }
}

function kbps(bytesNow, bytesBefore, msElapsed) {
  if (!(msElapsed > 0) || bytesNow < bytesBefore) return 0;
  return Math.round(((bytesNow - bytesBefore) * 8) / msElapsed);
}

function resolution(s) {
  return s.frameWidth && s.frameHeight ? `${s.frameWidth}×${s.frameHeight}` : '–';
}

function formatPublishStats(s, bitrate) {
  const parts = [
    `${bitrate} kbit/s sent`,
    `${s.framesEncoded} frames encoded`,
  ];
  const sending = s.layers.filter((l) => l.frameWidth > 0);
  if (s.layers.length > 1) {
    const sizes = sending.map((l) => `${l.rid || '?'} ${resolution(l)}`).join(', ');
    parts.push(`${sending.length}/${s.layers.length} layers${sizes ? ` (${sizes})` : ''}`);
  } else {
    parts.push(resolution(s));
  }
  if (s.framesPerSecond) parts.push(`${Math.round(s.framesPerSecond)} fps`);
  if (s.qualityLimitationReason) parts.push(`limited by ${s.qualityLimitationReason}`);
  return parts.join(' · ');
}

function formatWatchStats(s, bitrate) {
  const parts = [
    `${s.framesDecoded} frames decoded`,
    resolution(s),
  ];
  if (s.framesPerSecond) parts.push(`${Math.round(s.framesPerSecond)} fps`);
  parts.push(
    `video pkts ${s.videoPacketsReceived} rcvd / ${s.packetsLost} lost`,
    `audio pkts ${s.audioPacketsReceived}`,
    `${bitrate} kbit/s`,
  );
  return parts.join(' · ');
}

// Resolves to a flat object so a test can poll it with page.evaluate().
async function collectStats() {
  const [subReport, pubReport] = await Promise.all([
    reportOf(sluice.subPc),
    reportOf(sluice.pubPc),
  ]);
  const inb = summarizeInbound(subReport);
  const out = summarizeOutbound(pubReport);
  // sendLayers holds flat objects, so the whole result survives page.evaluate().
  return {
    framesDecoded: inb.framesDecoded,
    packetsReceived: inb.videoPacketsReceived + inb.audioPacketsReceived,
    framesEncoded: out.framesEncoded,
    bytesSent: out.bytesSent,
    videoPacketsReceived: inb.videoPacketsReceived,
    audioPacketsReceived: inb.audioPacketsReceived,
    packetsLost: inb.packetsLost,
    bytesReceived: inb.bytesReceived,
    frameWidth: inb.frameWidth,
    frameHeight: inb.frameHeight,
    packetsSent: out.packetsSent,
    framesPerSecond: inb.framesPerSecond,
    keyFramesDecoded: inb.keyFramesDecoded,
    framesDropped: inb.framesDropped,
    freezeCount: inb.freezeCount,
    pliCount: inb.pliCount,
    nackCount: inb.nackCount,
    retransmittedPacketsReceived: inb.retransmittedPacketsReceived,
    sendFrameWidth: out.frameWidth,
    sendFrameHeight: out.frameHeight,
    sendLayers: out.layers,
    qualityLimitationReason: out.qualityLimitationReason,
    availableOutgoingBitrate: availableOutgoingBitrate(pubReport),
    publish: state.publish,
    watch: state.watch,
    watchLayer: state.watchLayer,
  };
}

/* ---------- sessions ---------- */

const STATE_LABELS = {
  idle: 'idle',
  starting: 'starting…',
  negotiating: 'negotiating…',
  new: 'connecting…',
  connecting: 'connecting…',
  connected: 'connected',
  disconnected: 'disconnected, waiting for the network…',
  failed: 'connection failed',
  closed: 'closed',
  error: 'error',
};

// One WHIP or WHEP session with its peer connection, server resource and status line.
class Session {
  constructor({ key, pcKey, endpoint, query, prepare, negotiated, release, summarize, format, bytesField, ui: els }) {
    this.key = key; // 'publish' | 'watch', also the field name in `state`
    this.pcKey = pcKey;
    this.endpoint = endpoint;
    this.query = query; // optional: () => '?a=b' appended to the POST URL
    this.prepare = prepare;
    this.negotiated = negotiated; // optional: (pc) => void, after the answer is applied
    this.release = release;
    this.summarize = summarize;
    this.format = format;
    this.bytesField = bytesField; // counter the bitrate is derived from
    this.els = els;
    this.pc = null;
    this.resource = '';
    this.token = '';
    this.abort = null;
    this.prev = null;
    this.detail = '';
    this.note = ''; // shown after the status until the session ends (e.g. a fallback taken)
    // Bumped on every stop so late results of an abandoned start are ignored.
    this.generation = 0;
  }

  async start(stream, token) {
    stream = stream.trim();
    token = token.trim();
    // stop() bumps the generation synchronously, so reading it right after is race-free
    // even if another start() runs while the old session's DELETE is in flight.
    const stopped = this.stop();
    const generation = this.generation;
    const stale = () => generation !== this.generation;
    // Wait for the DELETE so a republish of the same stream is not refused as a duplicate.
    await stopped;
    if (stale()) return;
    if (!stream) {
      this.fail(new Error('enter a stream name'));
      return;
    }

    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    this.pc = pc;
    sluice[this.pcKey] = pc;
    this.token = token;
    this.abort = new AbortController();
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc === pc) this.setState(pc.connectionState);
    });

    this.setState('starting');
    try {
      await this.prepare(pc, stale);
      if (stale()) return;
      this.setState('negotiating');
      const url = this.endpoint + encodeURIComponent(stream) + (this.query?.() || '');
      const resource = await exchangeSdp(pc, url, token, this.abort.signal);
      if (stale()) {
        deleteResource(resource, token);
        return;
      }
      this.resource = resource;
      state[`${this.key}Resource`] = resource;
      this.negotiated?.(pc);
      // The state event may already have fired during setRemoteDescription.
      this.setState(pc.connectionState === 'new' ? 'connecting' : pc.connectionState);
    } catch (err) {
      if (stale()) return;
      console.error(`${this.key} failed:`, err);
      this.fail(err);
    }
  }

  async stop() {
    this.generation++;
    this.abort?.abort();
    this.abort = null;
    const { resource, token } = this;
    this.teardown();
    state[`${this.key}Error`] = '';
    this.setNote('');
    this.setState('idle');
    if (resource) await deleteResource(resource, token);
  }

  // Called from pagehide: no time for an awaited request, so keepalive carries it.
  leave() {
    if (this.resource) deleteResource(this.resource, this.token, true);
    this.resource = '';
  }

  fail(err) {
    const message = describe(err);
    this.teardown();
    state[`${this.key}Error`] = message;
    this.setState('error', message);
  }

  teardown() {
    this.pc?.close();
    this.pc = null;
    sluice[this.pcKey] = null;
    this.resource = '';
    state[`${this.key}Resource`] = '';
    this.prev = null;
    this.els.stats.textContent = '';
    this.release();
  }

  setState(name, detail = '') {
    state[this.key] = name;
    this.detail = detail;
    this.render();
    const active = name !== 'idle' && name !== 'error';
    this.els.start.disabled = active;
    this.els.stop.disabled = !active;
  }

  setDetail(detail) {
    if (detail === this.detail) return;
    this.detail = detail;
    this.render();
  }

  setNote(note) {
    this.note = note;
    state[`${this.key}Note`] = note;
    this.render();
  }

  render() {
    const name = state[this.key];
    const label = STATE_LABELS[name] || name;
    let text = this.detail ? `${label}: ${this.detail}` : label;
    if (this.note) text += ` (${this.note})`;
    this.els.status.textContent = text;
    this.els.status.dataset.state = name;
  }

  async updateStats() {
    const pc = this.pc;
    const report = await reportOf(pc);
    if (!report || pc !== this.pc) return;
    const now = performance.now();
    const s = this.summarize(report);
    const bytes = s[this.bytesField];
    const bitrate = this.prev ? kbps(bytes, this.prev.bytes, now - this.prev.at) : 0;
    this.prev = { bytes, at: now };
    this.els.stats.textContent = this.format(s, bitrate);
    this.onStats?.(s);
  }
}

/* ---------- publish ---------- */

let localMedia = null;

async function preparePublish(pc, stale) {
  const wantVideo = ui.pubCamera.checked;
  const wantAudio = ui.pubMic.checked;
  if (!wantVideo && !wantAudio) throw new Error('choose a camera, a microphone or both');
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('camera access is unavailable (the page must be served over HTTPS)');
  }

  const media = await navigator.mediaDevices.getUserMedia({
    audio: wantAudio,
    video: wantVideo ? VIDEO_CONSTRAINTS : false,
  });
  // Stop was pressed while the permission prompt was open: release the devices now.
  if (stale()) {
    stopTracks(media);
    return;
  }
  localMedia = media;
  ui.localVideo.srcObject = media;

  state.publishEncodings = 0;
  for (const track of media.getTracks()) {
    if (track.kind !== 'video') {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
      continue;
    }
    const transceiver = addVideoTransceiver(pc, track, media, ui.pubSimulcast.checked);
    preferCodecs(transceiver, PREFERRED_VIDEO_CODECS);
  }
}

// Simulcast when asked for and the browser takes it, else one encoding with a note.
function addVideoTransceiver(pc, track, media, simulcast) {
  if (simulcast) {
    try {
      const transceiver = pc.addTransceiver(track, {
        direction: 'sendonly',
        streams: [media],
        sendEncodings: SIMULCAST_ENCODINGS.map((e) => ({ ...e })),
      });
      const n = transceiver.sender.getParameters().encodings?.length || 1;
      state.publishEncodings = n;
      if (n < SIMULCAST_ENCODINGS.length) {
        publisher.setNote(`simulcast: the browser kept ${n} of ${SIMULCAST_ENCODINGS.length} layers`);
      }
      return transceiver;
    } catch (err) {
      console.warn('simulcast refused, sending one encoding:', err);
      publisher.setNote(`simulcast unavailable, sending one layer: ${describe(err)}`);
    }
  }
  state.publishEncodings = 1;
  return pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
}

// After the answer: a server that does not take simulcast leaves one encoding.
function checkSimulcastAnswer(pc) {
  if (!ui.pubSimulcast.checked || state.publishEncodings < 2) return;
  const sender = pc.getSenders().find((s) => s.track?.kind === 'video');
  const n = sender?.getParameters().encodings?.length || 0;
  if (n && n < state.publishEncodings) {
    state.publishEncodings = n;
    publisher.setNote(`simulcast: the answer accepted ${n} of ${SIMULCAST_ENCODINGS.length} layers`);
  }
}

function releasePublish() {
  stopTracks(localMedia);
  localMedia = null;
  ui.localVideo.srcObject = null;
}

const publisher = new Session({
  key: 'publish',
  pcKey: 'pubPc',
  endpoint: '/whip/',
  prepare: preparePublish,
  negotiated: checkSimulcastAnswer,
  release: releasePublish,
  summarize: summarizeOutbound,
  format: formatPublishStats,
  bytesField: 'bytesSent',
  ui: { start: ui.pubStart, stop: ui.pubStop, status: ui.pubStatus, stats: ui.pubStats },
});

/* ---------- watch ---------- */

function prepareWatch(pc) {
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addTransceiver('video', { direction: 'recvonly' });

  const remote = new MediaStream();
  pc.addEventListener('track', (ev) => {
    remote.addTrack(ev.track);
    // Re-assigning makes the element reload and pick up a track added after the first one.
    ui.remoteVideo.srcObject = remote;
    ui.remoteVideo.play().catch(() => {}); // autoplay policy or a superseded load; harmless
  });
}

function releaseWatch() {
  const media = ui.remoteVideo.srcObject;
  ui.remoteVideo.srcObject = null;
  stopTracks(media);
}

let sentLayer = 'auto'; // the caps the current WHEP POST asked for
let sentTemporal = 'auto';

const viewer = new Session({
  key: 'watch',
  pcKey: 'subPc',
  endpoint: '/whep/',
  query: () => {
    sentLayer = state.watchLayer;
    sentTemporal = state.watchTemporal;
    const q = new URLSearchParams();
    if (sentLayer !== 'auto') q.set('layer', sentLayer);
    if (sentTemporal !== 'auto') q.set('temporal', sentTemporal);
    const s = q.toString();
    return s ? `?${s}` : '';
  },
  // A selector changed while the offer was in flight: apply it now.
  negotiated: () => {
    if (state.watchLayer !== sentLayer) {
      setLayer(state.watchLayer).catch((err) => console.error('layer change failed:', err));
    }
    if (state.watchTemporal !== sentTemporal) {
      setTemporal(state.watchTemporal).catch((err) => console.error('frame rate change failed:', err));
    }
  },
  prepare: prepareWatch,
  release: releaseWatch,
  summarize: summarizeInbound,
  format: formatWatchStats,
  bytesField: 'bytesReceived',
  ui: { start: ui.subStart, stop: ui.subStop, status: ui.subStatus, stats: ui.subStats },
});

// A viewer is accepted before any publisher exists, so "connected" alone can mean "no media yet".
viewer.onStats = (s) => {
  if (state.watch !== 'connected') return;
  const receiving = s.videoPacketsReceived + s.audioPacketsReceived > 0;
  viewer.setDetail(receiving ? '' : 'waiting for a publisher');
};

// Cap the simulcast layer: applies at the next Watch, and at once to a running session
// (the server switches at the layer's next keyframe). Resolves once the server took it.
async function setLayer(name) {
  name = String(name ?? '').trim().toLowerCase() || 'auto';
  if (!LAYERS.includes(name)) throw new Error(`layer must be one of ${LAYERS.join(', ')}`);
  state.watchLayer = name;
  ui.subLayer.value = name;
  return postLayer('max', name, 'layer');
}

// POST one cap to the running session's layer resource, if there is one.
async function postLayer(param, value, what) {
  const resource = viewer.resource;
  if (!resource) return { applied: false };
  const url = `${resource}/layer?${param}=${encodeURIComponent(value)}`;
  const resp = await fetch(url, { method: 'POST', headers: authHeaders(viewer.token) });
  if (!resp.ok) {
    const body = await resp.text().catch(() => '');
    throw new Error(`${what} ${value}: ${resp.status} ${firstLine(body) || resp.statusText}`);
  }
  return { applied: true };
}

// Cap the VP8 temporal layer (frame rate) the viewer gets: '0' the base layer
// only, '1', '2', or 'auto' for all of them.
async function setTemporal(value) {
  const t = String(value ?? '').trim().toLowerCase() || 'auto';
  if (!['auto', '0', '1', '2'].includes(t)) throw new Error('temporal layer must be one of auto, 0, 1, 2');
  state.watchTemporal = t;
  if ([...ui.subTemporal.options].some((o) => o.value === t)) ui.subTemporal.value = t;
  return postLayer('temporal', t, 'temporal');
}

function syncUnmuteButton() {
  const muted = ui.remoteVideo.muted;
  ui.unmute.textContent = muted ? 'Unmute' : 'Mute';
  ui.unmute.setAttribute('aria-pressed', String(!muted));
}

/* ---------- wiring ---------- */

function isOff(value) {
  return value !== null && /^(0|false|no|off)$/i.test(value);
}

function isOn(value) {
  return value !== null && /^(|1|true|yes|on)$/i.test(value);
}

function init() {
  ui.pubForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    publisher.start(ui.pubStream.value, ui.pubToken.value);
  });
  ui.pubStop.addEventListener('click', () => publisher.stop());

  ui.subForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    viewer.start(ui.subStream.value, ui.subToken.value);
  });
  ui.subStop.addEventListener('click', () => viewer.stop());
  ui.subLayer.addEventListener('change', () => {
    setLayer(ui.subLayer.value)
      .then(() => viewer.setNote(''))
      .catch((err) => {
        console.error('layer change failed:', err);
        viewer.setNote(describe(err));
      });
  });

  ui.subTemporal.addEventListener('change', () => {
    setTemporal(ui.subTemporal.value)
      .then(() => viewer.setNote(''))
      .catch((err) => {
        console.error('frame rate change failed:', err);
        viewer.setNote(describe(err));
      });
  });

  ui.unmute.addEventListener('click', () => {
    ui.remoteVideo.muted = !ui.remoteVideo.muted;
    // Unmuting is a user gesture, which lets playback resume if autoplay was blocked.
    ui.remoteVideo.play().catch(() => {});
  });
  ui.remoteVideo.addEventListener('volumechange', syncUnmuteButton);
  syncUnmuteButton();

  window.addEventListener('pagehide', () => {
    publisher.leave();
    viewer.leave();
  });

  setInterval(() => {
    publisher.updateStats();
    viewer.updateStats();
  }, STATS_PERIOD_MS);

  // ?publish=NAME / ?watch=NAME start without a click (used by browser tests).
  const params = new URLSearchParams(window.location.search);
  const token = params.get('token') || '';
  if (isOff(params.get('camera'))) ui.pubCamera.checked = false;
  if (isOff(params.get('mic'))) ui.pubMic.checked = false;
  if (isOn(params.get('simulcast'))) ui.pubSimulcast.checked = true;
  const layer = (params.get('layer') || '').toLowerCase();
  if (LAYERS.includes(layer)) {
    state.watchLayer = layer;
    ui.subLayer.value = layer;
  } else if (layer) {
    console.warn(`ignoring ?layer=${layer}: not one of ${LAYERS.join(', ')}`);
  }

  const temporal = params.get('temporal');
  if (temporal !== null && [...ui.subTemporal.options].some((o) => o.value === temporal)) {
    state.watchTemporal = temporal;
    ui.subTemporal.value = temporal;
  }

  const publishName = params.get('publish');
  if (publishName) {
    ui.pubStream.value = publishName;
    ui.pubToken.value = token;
    publisher.start(publishName, token);
  }
  const watchName = params.get('watch');
  if (watchName) {
    ui.subStream.value = watchName;
    ui.subToken.value = token;
    viewer.start(watchName, token);
  }
}

init();
