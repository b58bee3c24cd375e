'use strict';

/*
 * sluice rooms, first of four scripts (room.js has the overview): constants, small
 * helpers and the signaling connection (docs/rooms.md).
 */

// Links to the WHIP/WHEP page that predate the room app ('?publish=' / '?watch=').
const REDIRECTING = (() => {
  const q = new URLSearchParams(location.search);
  if (!q.has('publish') && !q.has('watch')) return false;
  location.replace('/broadcast' + location.search);
  return true;
})();

const REQUEST_TIMEOUT_MS = 10_000;
const LEAVE_TIMEOUT_MS = 3_000;
const ICE_GATHER_TIMEOUT_MS = 2_000;
const STATS_PERIOD_MS = 1_000;
const TOAST_MS = 4_000;
const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

const VIDEO_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30 },
};
const PREFERRED_VIDEO_CODECS = ['video/vp8', 'video/h264'];
// Choices of a remote video's quality select -> setConsumerPreferredLayers spatialLayer.
// [spatialLayer, temporalLayer]; 'low 1/4 fps' keeps the base VP8 temporal layer only.
const LAYER_CHOICES = {
  auto: [null, null], low: [0, null], mid: [1, null], high: [2, null], 'low 1/4 fps': [0, 0],
};
const PC_CONFIG = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };

const $ = (id) => document.getElementById(id);
let ui = null; // filled in init(), once the DOM exists

/* ---------- small helpers ---------- */

function describe(err) {
  if (!err) return 'unknown error';
  if (typeof err === 'string') return err;
  // DOMExceptions from getUserMedia carry the useful part in their name.
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  return `${name}${err.message || String(err)}`;
}

function randomId(length = 10) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

function isOff(value) {
  return value !== null && /^(0|false|no|off)$/i.test(value);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs async jobs one after another; a failed job does not stop the ones behind it.
function serialQueue() {
  let tail = Promise.resolve();
  return (job) => {
    const run = tail.then(job);
    tail = run.catch(() => {});
    return run;
  };
}

function preferCodecs(transceiver, preferred) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  try {
    const caps = RTCRtpReceiver.getCapabilities?.('video') || RTCRtpSender.getCapabilities?.('video');
    if (!caps?.codecs?.length) return;
    const rank = (c) => {
      const i = preferred.indexOf(c.mimeType.toLowerCase());
      return i === -1 ? preferred.length : i;
    };
    // Stable sort: RTX, RED, FEC and other codecs keep the browser's order.
    transceiver.setCodecPreferences([...caps.codecs].sort((a, b) => rank(a) - rank(b)));
  } catch (err) {
    console.warn('setCodecPreferences failed, using browser defaults:', err);
  }
}

async function reportOf(pc) {
  if (!pc || pc.signalingState === 'closed') return null;
  try {
    return await pc.getStats();
  } catch {
    return null; // closed while the call was in flight
  }
}

function kbps(bytesNow, bytesBefore, msElapsed) {
  if (!(msElapsed > 0) || !(bytesNow >= bytesBefore)) return 0;
  return Math.round(((bytesNow - bytesBefore) * 8) / msElapsed);
}

function lossPercent(lost, received) {
  const total = lost + received;
  return total > 0 ? ((100 * Math.max(0, lost)) / total).toFixed(1) : '0.0';
}

/* ---------- signaling ---------- */

class RequestError extends Error {
  constructor(method, code, reason) {
    super(`${method} refused: ${code} ${reason || 'no reason given'}`);
    this.code = code;
    this.reason = reason;
  }
}

// Why this node refused the room's WebSocket, asked with a plain GET (a browser cannot read
// a refused upgrade): the wss:// origin of the node where the room lives (421 + Location), or
// null; any other refusal is thrown with the server's one-line reason.
async function roomHome(q) {
  let res;
  try {
    res = await fetch(`/ws?${q}`, { cache: 'no-store' });
  } catch {
    return null;
  }
  if (res.status === 421 && res.headers.get('Location')) {
    const there = new URL(res.headers.get('Location'), location.href);
    return `${there.protocol === 'https:' ? 'wss:' : 'ws:'}//${there.host}`;
  }
  const reason = (await res.text()).trim();
  if (!res.ok && res.status !== 426 && reason) throw new Error(`cannot join the room: ${reason}`);
  return null;
}

// A protoo-style JSON request/response/notification channel over one WebSocket.
class Signaling {
  constructor(url, { onRequest, onNotification, onClose }) {
    this.url = url;
    this.onRequest = onRequest;
    this.onNotification = onNotification;
    this.onClose = onClose;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> { resolve, reject, timer, method }
    this.closed = false;
  }

  open() {
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.addEventListener('open', () => {
        opened = true;
        resolve();
      });
      ws.addEventListener('message', (ev) => this.handleMessage(ev.data));
      ws.addEventListener('close', (ev) => {
        const why = `connection to the server closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`;
        this.failPending(why);
        const wasClosed = this.closed;
        this.closed = true;
        if (!opened) {
          // Refusals come as an HTTP status on the upgrade, which browsers do not expose.
          reject(new Error(
            `cannot open the room connection to ${location.host} (${ev.code}): the server is unreachable ` +
            'or refused it (peer id already in the room, missing or invalid token, server draining)',
          ));
        } else if (!wasClosed) {
          this.onClose(why);
        }
      });
    });
  }

  request(method, data = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (this.closed || this.ws?.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error(`${method}: not connected`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no response within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, method });
      this.send({ request: true, id, method, data });
    });
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  handleMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn('ignoring a message that is not JSON:', text);
      return;
    }
    if (msg.response) {
      const p = this.pending.get(msg.id);
      if (!p) return; // timed out already
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.data || {});
      else p.reject(new RequestError(p.method, msg.errorCode, msg.errorReason));
    } else if (msg.request) {
      Promise.resolve()
        .then(() => this.onRequest(msg.method, msg.data || {}))
        .then(
          (data) => this.send({ response: true, id: msg.id, ok: true, data: data || {} }),
          (err) => {
            console.error(`server request ${msg.method} failed:`, err);
            this.send({
              response: true,
              id: msg.id,
              ok: false,
              errorCode: err.code || 500,
              errorReason: describe(err).split('\n', 1)[0].slice(0, 300),
            });
          },
        );
    } else if (msg.notification) {
      try {
        this.onNotification(msg.method, msg.data || {});
      } catch (err) {
        console.error(`notification ${msg.method} failed:`, err);
      }
    }
  }

  failPending(why) {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`${p.method}: ${why}`));
      this.pending.delete(id);
    }
  }

  close() {
    this.closed = true;
    this.failPending('closed');
    try {
      this.ws?.close(1000, 'bye');
    } catch {
      // already closing
    }
  }
}
