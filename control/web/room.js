'use strict';

/*
 * sluice rooms: a conferencing client for the room protocol (docs/rooms.md).
 *
 * One WebSocket per participant carries JSON requests, responses and notifications.
 * Media uses two peer connections so offers never collide: the send transport (we
 * offer, once, with three sendonly transceivers: mic, cam, screen; tracks are swapped
 * with replaceTrack and never renegotiated) and the receive transport (the server offers
 * whenever it adds consumers; we answer). The server is ICE-lite and takes no trickled
 * candidates, so the first description each way is sent after gathering completes.
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
const LAYER_CHOICES = { auto: null, low: 0, mid: 1, high: 2 };
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

/* ---------- tiles ---------- */

// One participant's square in the grid: camera or screen, audio, name, state icons, stats.
class Tile {
  constructor(peerId, displayName, { self = false } = {}) {
    const node = $('tile-template').content.firstElementChild.cloneNode(true);
    this.el = node;
    this.self = self;
    node.dataset.peerId = peerId;
    node.classList.add(self ? 'self' : 'remote');
    this.mainVideo = node.querySelector('.main-video');
    this.pipVideo = node.querySelector('.pip-video');
    this.audio = node.querySelector('.peer-audio');
    this.nameEl = node.querySelector('.name');
    this.avatar = node.querySelector('.avatar');
    this.statsPanel = node.querySelector('.stats-panel');
    this.statsButton = node.querySelector('.stats-toggle');
    this.statsOpen = false;
    this.statsPrev = null;
    this.tracks = { cam: null, screen: null, mic: null };
    this.streams = { cam: null, screen: null };
    this.setName(displayName);
    if (self) this.audio.remove(); // never play our own microphone back

    // Remote videos: a cap on the simulcast layer received, one per shown source.
    this.layerSelects = {};
    if (!self) {
      const top = node.querySelector('.tile-top');
      for (const source of ['screen', 'cam']) {
        const sel = document.createElement('select');
        sel.className = 'layer-select';
        sel.title = `${source === 'cam' ? 'Camera' : 'Screen'} quality (simulcast layer received)`;
        sel.setAttribute('aria-label', sel.title);
        for (const choice of Object.keys(LAYER_CHOICES)) sel.add(new Option(`${source} ${choice}`, choice));
        sel.style.marginRight = '0.3rem';
        sel.addEventListener('change', () => current?.preferLayer(peerId, source, sel.value));
        top.prepend(sel);
        this.layerSelects[source] = sel;
      }
    }

    this.statsButton.addEventListener('click', () => this.toggleStats());
    for (const v of [this.mainVideo, this.pipVideo]) {
      // Muted video may always autoplay; play() covers a srcObject set while detached.
      v.addEventListener('loadedmetadata', () => v.play().catch(() => {}));
    }
    this.render();
  }

  setName(displayName) {
    const label = displayName || 'guest';
    this.nameEl.textContent = this.self ? `${label} (you)` : label;
    this.avatar.textContent = label.trim().charAt(0).toUpperCase() || '?';
    // A stable hue per name tells avatars apart at a glance.
    let h = 0;
    for (const ch of label) h = (h * 31 + ch.codePointAt(0)) % 360;
    this.avatar.style.setProperty('--hue', String(h));
  }

  // Binds (or with null, unbinds) the track shown for a source.
  setTrack(source, track) {
    if (this.tracks[source] === track) return;
    this.tracks[source] = track;
    if (source === 'mic') {
      if (this.self) return;
      this.audio.srcObject = track ? new MediaStream([track]) : null;
      if (track) playAudio(this.audio);
    } else {
      this.streams[source] = track ? new MediaStream([track]) : null;
    }
    this.render();
  }

  // Only unbinds when `track` is still the one shown, so a rebind elsewhere is not undone.
  clearTrack(source, track) {
    if (this.tracks[source] === track) this.setTrack(source, null);
  }

  // state: { mic: 'on'|'off', cam: 'on'|'off', screen: 'on'|'off' } — what the icons show.
  setMediaState(state) {
    for (const k of ['mic', 'cam', 'screen']) {
      if (state[k] && this.el.dataset[k] !== state[k]) this.el.dataset[k] = state[k];
    }
    this.render();
  }

  render() {
    const camShown = this.el.dataset.cam === 'on' && this.streams.cam;
    const screenShown = this.el.dataset.screen === 'on' && this.streams.screen;
    const main = screenShown ? this.streams.screen : camShown ? this.streams.cam : null;
    const pip = screenShown && camShown ? this.streams.cam : null;
    if (this.mainVideo.srcObject !== main) this.mainVideo.srcObject = main;
    if (this.pipVideo.srcObject !== pip) this.pipVideo.srcObject = pip;
    this.el.classList.toggle('has-video', Boolean(main));
    this.el.classList.toggle('has-pip', Boolean(pip));
    this.el.classList.toggle('main-is-screen', Boolean(screenShown));
    if (this.layerSelects.cam) {
      this.layerSelects.cam.hidden = !camShown;
      this.layerSelects.screen.hidden = !screenShown;
    }
  }

  setSpeaking(on) {
    this.el.classList.toggle('speaking', on);
  }

  toggleStats() {
    this.statsOpen = !this.statsOpen;
    this.statsPrev = null;
    this.statsButton.setAttribute('aria-pressed', String(this.statsOpen));
    this.statsPanel.hidden = !this.statsOpen;
    this.statsPanel.textContent = this.statsOpen ? 'collecting…' : '';
    if (this.statsOpen) current?.updateTileStats();
  }

  remove() {
    this.mainVideo.srcObject = null;
    this.pipVideo.srcObject = null;
    if (!this.self) this.audio.srcObject = null;
    this.el.remove();
  }
}

// Audio may be refused autoplay until the user interacts; then offer a button.
const blockedAudio = new Set();
function playAudio(el) {
  el.play().then(
    () => {
      blockedAudio.delete(el);
      syncSoundButton();
    },
    (err) => {
      if (err?.name === 'NotAllowedError') {
        blockedAudio.add(el);
        syncSoundButton();
      }
    },
  );
}

function syncSoundButton() {
  for (const el of blockedAudio) if (!el.isConnected) blockedAudio.delete(el);
  if (ui) ui.enableSound.hidden = blockedAudio.size === 0;
  room.audioBlocked = blockedAudio.size > 0;
}

function enableSound() {
  for (const el of document.querySelectorAll('audio.peer-audio')) {
    if (el.srcObject) playAudio(el);
  }
}

function layoutGrid() {
  const grid = ui.grid;
  const tiles = grid.children.length;
  if (!tiles) return;
  const style = getComputedStyle(grid);
  const gap = parseFloat(style.columnGap) || 0;
  const width = grid.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const height = grid.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
  // Pick the column count that makes 16:9 tiles largest within the grid's box.
  let best = 0;
  for (let cols = 1; cols <= tiles; cols++) {
    const rows = Math.ceil(tiles / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * (16 / 9));
    if (w > best) best = w;
  }
  grid.style.setProperty('--tile-w', `${Math.max(160, Math.floor(best))}px`);
}

/* ---------- toast ---------- */

let toastTimer = 0;
function toast(text, kind = 'info') {
  const el = ui.toast;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.hidden = true;
  }, kind === 'error' ? TOAST_MS * 2 : TOAST_MS);
}

/* ---------- the room session ---------- */

// The test hook and the page's observable state; `peers` and `stats()` are computed.
const room = {
  state: 'idle', // idle | joining | joined | error
  error: '',
  roomId: '',
  peerId: '',
  displayName: '',
  inviteLink: '',
  audioBlocked: false,
  warnings: [],
  get peers() {
    const out = {};
    for (const p of current?.peers.values() ?? []) out[p.id] = p.snapshot();
    return out;
  },
  stats: () => (current ? current.stats() : Promise.resolve({ remote: {}, framesEncoded: 0 })),
  leave: () => current?.leave(),
};
if (!REDIRECTING) window.room = room;

let current = null; // the RoomSession in progress, if any

class RemotePeer {
  constructor(id, displayName) {
    this.id = id;
    this.displayName = displayName || id;
    this.tile = new Tile(id, this.displayName);
    this.producers = new Map(); // producerId -> { kind, source, paused }
    this.consumers = new Map(); // consumerId -> { mid, kind, source, producerId, paused }
  }

  renderState() {
    const live = (source) => {
      for (const p of this.producers.values()) if (p.source === source && !p.paused) return 'on';
      return 'off';
    };
    this.tile.setMediaState({ mic: live('mic'), cam: live('cam'), screen: live('screen') });
  }

  snapshot() {
    return {
      id: this.id,
      displayName: this.displayName,
      tiles: this.tile.el.isConnected ? 1 : 0,
      producers: [...this.producers].map(([id, p]) => ({ id, ...p })),
      consumers: [...this.consumers].map(([id, c]) => ({ id, ...c })),
    };
  }
}

class RoomSession {
  constructor({ roomId, peerId, displayName, token, audio, video }) {
    this.roomId = roomId;
    this.peerId = peerId;
    this.displayName = displayName;
    this.token = token;
    this.want = { mic: audio, cam: video };
    this.closed = false;
    this.peers = new Map(); // peerId -> RemotePeer
    this.closedPeers = new Set(); // left peers whose late notifications must not revive them
    this.signaling = null;

    this.sendPc = null;
    this.tx = null; // { mic, cam, screen } transceivers of the send transport
    this.sendQueue = serialQueue();
    // Local sources: track, server producer id, paused.
    this.local = {
      mic: { track: null, producerId: null, paused: false },
      cam: { track: null, producerId: null, paused: false },
      screen: { track: null, producerId: null, paused: false },
    };

    this.recvPc = null;
    this.recvQueue = serialQueue();
    this.bindings = new Map(); // mid -> { consumerId, peerId, producerId, kind, source, track, baseline }
    this.unbound = new Map(); // mid -> newConsumer data that arrived before its transceiver
    this.usedMids = new Set(); // mids bound at least once: a later consumer there needs a baseline

    this.selfTile = new Tile(peerId, displayName, { self: true });
    this.statsTimer = 0;
  }

  /* ----- lifecycle ----- */

  async start() {
    setRoomState('joining');
    showRoom(this);
    ui.grid.append(this.selfTile.el);
    updatePeerCount();
    layoutGrid();
    setConn('connecting', 'connecting…');

    await this.openLocalMedia();
    if (this.closed) return;

    const q = new URLSearchParams({ roomId: this.roomId, peerId: this.peerId });
    if (this.token) q.set('token', this.token);
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const connect = (origin) => new Signaling(`${origin}/ws?${q}`, {
      onRequest: (method, data) => this.handleRequest(method, data),
      onNotification: (method, data) => this.handleNotification(method, data),
      onClose: (why) => this.fail(new Error(why)),
    });
    this.signaling = connect(`${scheme}//${location.host}`);
    try {
      await this.signaling.open();
    } catch (err) {
      // On a cluster the room may live on another node: ask, and follow it there.
      const home = await roomHome(q);
      if (!home) throw err;
      if (this.closed) return;
      setConn('connecting', `room lives on ${new URL(home).host}…`);
      this.signaling = connect(home);
      await this.signaling.open();
    }
    if (this.closed) return;

    const joined = await this.signaling.request('join', { displayName: this.displayName });
    if (this.closed) return;
    for (const p of joined.peers || []) {
      const peer = this.ensurePeer(p.id, p.displayName);
      for (const prod of p.producers || []) {
        peer.producers.set(prod.id, { kind: prod.kind, source: prod.source, paused: Boolean(prod.paused) });
      }
      peer.renderState();
    }

    try {
      await this.sendQueue(() => this.setupSendTransport());
    } catch (err) {
      if (this.closed) return;
      // Without a send transport the room still works for watching and chat.
      console.error('send transport failed:', err);
      warn(`cannot send media: ${describe(err)}`);
    }
    if (this.closed) return;
    setRoomState('joined');
    this.statsTimer = setInterval(() => this.updateTileStats(), STATS_PERIOD_MS);
    syncControls(this);
  }

  async openLocalMedia() {
    const { mic, cam } = this.want;
    if (!mic && !cam) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      warn('camera and microphone are unavailable (the page must be served over HTTPS)');
      return;
    }
    let media = null;
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: mic, video: cam ? VIDEO_CONSTRAINTS : false });
    } catch (err) {
      // One missing device must not cost the other: try each alone before giving up.
      const alone = [];
      for (const [kind, want] of [['audio', mic], ['video', cam]]) {
        if (!want) continue;
        try {
          const m = await navigator.mediaDevices.getUserMedia({ [kind]: kind === 'video' ? VIDEO_CONSTRAINTS : true });
          alone.push(...m.getTracks());
        } catch {
          // reported below
        }
      }
      if (!alone.length) {
        warn(`joining without camera or microphone: ${describe(err)}`);
        return;
      }
      media = new MediaStream(alone);
    }
    if (this.closed) {
      media.getTracks().forEach((t) => t.stop());
      return;
    }
    this.local.mic.track = media.getAudioTracks()[0] || null;
    this.local.cam.track = media.getVideoTracks()[0] || null;
    this.renderSelf();
  }

  async leave() {
    if (this.closed) return;
    const sig = this.signaling;
    if (sig && !sig.closed) {
      try {
        await sig.request('leave', {}, LEAVE_TIMEOUT_MS);
      } catch (err) {
        console.warn('leave request:', describe(err)); // closing the socket leaves too
      }
    }
    this.teardown();
    setRoomState('idle');
    showLanding();
  }

  fail(err) {
    if (this.closed) return;
    console.error('room failed:', err);
    this.teardown();
    setRoomState('error', describe(err));
    showLanding();
  }

  teardown() {
    this.closed = true;
    clearInterval(this.statsTimer);
    this.signaling?.close();
    this.sendPc?.close();
    this.recvPc?.close();
    for (const s of Object.values(this.local)) s.track?.stop();
    for (const p of this.peers.values()) p.tile.remove();
    this.peers.clear();
    this.bindings.clear();
    this.selfTile.remove();
    blockedAudio.clear();
    syncSoundButton();
    if (current === this) current = null;
  }

  /* ----- send transport ----- */

  async setupSendTransport() {
    const pc = new RTCPeerConnection(PC_CONFIG);
    this.sendPc = pc;
    // The order is the contract: audio (mic), video (cam), video (screen).
    this.tx = {
      mic: pc.addTransceiver('audio', { direction: 'sendonly' }),
      cam: pc.addTransceiver('video', { direction: 'sendonly' }),
      screen: pc.addTransceiver('video', { direction: 'sendonly' }),
    };
    preferCodecs(this.tx.cam, PREFERRED_VIDEO_CODECS);
    preferCodecs(this.tx.screen, PREFERRED_VIDEO_CODECS);
    for (const source of ['mic', 'cam']) {
      if (this.local[source].track) await this.tx[source].sender.replaceTrack(this.local[source].track);
    }
    pc.addEventListener('connectionstatechange', () => this.syncConnState());

    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    if (this.closed) return;
    const { sdp } = await this.signaling.request('createSendTransport', { sdp: pc.localDescription.sdp });
    if (this.closed) return;
    await pc.setRemoteDescription({ type: 'answer', sdp });

    for (const source of ['mic', 'cam']) {
      if (!this.local[source].track) continue;
      try {
        await this.produce(source);
      } catch (err) {
        if (this.closed) return;
        warn(`cannot send ${source === 'mic' ? 'microphone' : 'camera'}: ${describe(err)}`);
      }
    }
  }

  async produce(source) {
    const t = this.tx[source];
    if (!t?.mid) throw new Error(`the ${source} transceiver has no mid`);
    const kind = source === 'mic' ? 'audio' : 'video';
    const { id } = await this.signaling.request('produce', { kind, source, mid: t.mid });
    this.local[source].producerId = id;
    this.local[source].paused = false;
  }

  // Mic and camera: off (no track) → on → paused → on … Runs on the send queue.
  async toggleSource(source) {
    const s = this.local[source];
    if (!this.tx) throw new Error('media sending is not available in this room');
    if (!s.track) {
      const kind = source === 'mic' ? 'audio' : 'video';
      const media = await navigator.mediaDevices.getUserMedia({ [kind]: kind === 'video' ? VIDEO_CONSTRAINTS : true });
      const track = media.getTracks()[0];
      if (this.closed) {
        track.stop();
        return;
      }
      s.track = track;
      await this.tx[source].sender.replaceTrack(track);
      await this.produce(source);
    } else if (!s.producerId) {
      await this.produce(source);
    } else if (!s.paused) {
      s.track.enabled = false; // silence at once, even before the server confirms
      s.paused = true;
      this.renderSelf();
      await this.signaling.request('pauseProducer', { producerId: s.producerId });
    } else {
      s.track.enabled = true;
      s.paused = false;
      this.renderSelf();
      await this.signaling.request('resumeProducer', { producerId: s.producerId });
    }
  }

  // `track` comes from getDisplayMedia(), called in the click handler for user activation.
  async startScreen(track) {
    const s = this.local.screen;
    if (!this.tx || this.closed) {
      track.stop();
      if (!this.tx) throw new Error('media sending is not available in this room');
      return;
    }
    if (s.track) await this.stopScreen();
    track.contentHint = 'detail';
    s.track = track;
    // Ending the share from the browser's own UI ends the track.
    track.addEventListener('ended', () => {
      if (this.local.screen.track === track) this.sendQueue(() => this.stopScreen()).catch(() => {});
    });
    await this.tx.screen.sender.replaceTrack(track);
    this.renderSelf();
    try {
      await this.produce('screen');
    } catch (err) {
      await this.stopScreen();
      throw err;
    }
  }

  async stopScreen() {
    const s = this.local.screen;
    const { producerId, track } = s;
    s.track = null;
    s.producerId = null;
    track?.stop();
    this.renderSelf();
    await this.tx?.screen.sender.replaceTrack(null).catch(() => {});
    if (producerId && !this.closed) await this.signaling.request('closeProducer', { producerId });
  }

  renderSelf() {
    const { mic, cam, screen } = this.local;
    this.selfTile.setTrack('cam', cam.track);
    this.selfTile.setTrack('screen', screen.track);
    this.selfTile.setMediaState({
      mic: mic.track && !mic.paused ? 'on' : 'off',
      cam: cam.track && !cam.paused ? 'on' : 'off',
      screen: screen.track ? 'on' : 'off',
    });
    syncControls(this);
  }

  /* ----- receive transport ----- */

  async handleReceiveOffer(sdp) {
    let first = false;
    if (!this.recvPc) {
      this.recvPc = new RTCPeerConnection(PC_CONFIG);
      this.recvPc.addEventListener('connectionstatechange', () => this.syncConnState());
      first = true;
    }
    const pc = this.recvPc;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    // Later answers reuse the bundled transport, whose candidates are already gathered.
    if (first) await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    return { sdp: pc.localDescription.sdp };
  }

  transceiverOf(mid) {
    return this.recvPc?.getTransceivers().find((t) => t.mid === mid) || null;
  }

  async bindConsumer(c) {
    const peer = this.peers.get(c.peerId);
    if (!peer) return; // left already
    peer.consumers.set(c.id, { mid: c.mid, kind: c.kind, source: c.source, producerId: c.producerId, paused: Boolean(c.paused) });
    peer.producers.set(c.producerId, { kind: c.kind, source: c.source, paused: Boolean(c.paused) });
    const t = this.transceiverOf(c.mid);
    if (!t) {
      // The offer that creates this mid has not been applied yet; bind when it is.
      this.unbound.set(c.mid, c);
      peer.renderState();
      return;
    }
    this.unbound.delete(c.mid);
    const track = t.receiver.track;
    let baseline = null;
    if (this.usedMids.has(c.mid)) {
      // A reused mid keeps its counters: count this consumer's share from here on.
      this.unbind(c.mid);
      baseline = await this.inboundSnapshot(c.mid);
      if (this.closed || !this.peers.has(c.peerId) || !peer.consumers.has(c.id)) return;
    }
    this.usedMids.add(c.mid);
    this.bindings.set(c.mid, {
      consumerId: c.id,
      peerId: c.peerId,
      producerId: c.producerId,
      kind: c.kind,
      source: c.source,
      track,
      baseline,
    });
    peer.tile.setTrack(c.source === 'screen' ? 'screen' : c.kind === 'audio' ? 'mic' : 'cam', track);
    peer.renderState();
    // A new consumer starts uncapped: carry over the quality chosen for this video.
    const choice = c.kind === 'video' ? peer.tile.layerSelects[c.source === 'screen' ? 'screen' : 'cam']?.value : null;
    if (choice && choice !== 'auto') this.requestLayer(c.id, choice);
  }

  // Caps the simulcast layer received of one of a peer's videos ('auto' lifts the cap).
  async preferLayer(peerId, source, choice) {
    const peer = this.peers.get(peerId);
    for (const [id, c] of peer?.consumers ?? []) {
      if (c.kind === 'video' && (c.source === 'screen' ? 'screen' : 'cam') === source) await this.requestLayer(id, choice);
    }
  }

  async requestLayer(consumerId, choice) {
    try {
      await this.signaling.request('setConsumerPreferredLayers', { consumerId, spatialLayer: LAYER_CHOICES[choice] ?? null });
    } catch (err) {
      // 404: the consumer closed meanwhile, so there is nothing to cap.
      if (err.code !== 404 && !this.closed) toast(`cannot change the video quality: ${describe(err)}`, 'error');
    }
  }

  bindPending() {
    for (const c of [...this.unbound.values()]) {
      if (this.transceiverOf(c.mid)) this.bindConsumer(c).catch((err) => console.error('newConsumer:', err));
    }
  }

  unbind(mid) {
    const b = this.bindings.get(mid);
    if (!b) return;
    this.bindings.delete(mid);
    const peer = this.peers.get(b.peerId);
    peer?.tile.clearTrack(b.source === 'screen' ? 'screen' : b.kind === 'audio' ? 'mic' : 'cam', b.track);
  }

  closeConsumer({ consumerId, peerId, producerId, mid }) {
    const peer = this.peers.get(peerId);
    const c = peer?.consumers.get(consumerId);
    const m = mid ?? c?.mid;
    if (m !== undefined && this.bindings.get(m)?.consumerId === consumerId) this.unbind(m);
    if (this.unbound.get(m)?.id === consumerId) this.unbound.delete(m);
    if (peer) {
      peer.consumers.delete(consumerId);
      peer.producers.delete(producerId ?? c?.producerId);
      peer.renderState();
    }
  }

  /* ----- peers ----- */

  ensurePeer(id, displayName) {
    let peer = this.peers.get(id);
    if (!peer) {
      peer = new RemotePeer(id, displayName);
      this.peers.set(id, peer);
      peer.renderState();
      ui.grid.append(peer.tile.el);
      updatePeerCount();
      layoutGrid();
    } else if (displayName && displayName !== peer.displayName) {
      peer.displayName = displayName;
      peer.tile.setName(displayName);
    }
    return peer;
  }

  removePeer(id) {
    const peer = this.peers.get(id);
    if (!peer) return;
    for (const [mid, b] of [...this.bindings]) if (b.peerId === id) this.unbind(mid);
    for (const [mid, c] of [...this.unbound]) if (c.peerId === id) this.unbound.delete(mid);
    peer.tile.remove();
    this.peers.delete(id);
    syncSoundButton();
    updatePeerCount();
    layoutGrid();
  }

  /* ----- messages from the server ----- */

  handleRequest(method, data) {
    if (method === 'receiveOffer') {
      if (typeof data.sdp !== 'string') {
        return Promise.reject(Object.assign(new Error('receiveOffer without sdp'), { code: 400 }));
      }
      return this.recvQueue(async () => {
        const answer = await this.handleReceiveOffer(data.sdp);
        this.bindPending();
        return answer;
      });
    }
    return Promise.reject(Object.assign(new Error(`unknown method ${method}`), { code: 404 }));
  }

  handleNotification(method, data) {
    if (this.closed) return;
    switch (method) {
      case 'newPeer':
        this.closedPeers.delete(data.id);
        this.ensurePeer(data.id, data.displayName);
        toast(`${data.displayName || data.id} joined`);
        break;
      case 'peerClosed': {
        const name = this.peers.get(data.peerId)?.displayName;
        this.closedPeers.add(data.peerId);
        this.removePeer(data.peerId);
        if (name) toast(`${name} left`);
        break;
      }
      case 'newConsumer':
        if (this.closedPeers.has(data.peerId)) break;
        this.ensurePeer(data.peerId);
        // Behind any receiveOffer still being answered, so the mid exists when bound.
        this.recvQueue(() => this.bindConsumer(data)).catch((err) => console.error('newConsumer:', err));
        break;
      case 'consumerClosed':
        this.recvQueue(() => this.closeConsumer(data)).catch((err) => console.error('consumerClosed:', err));
        break;
      case 'producerPaused':
      case 'producerResumed':
        this.setProducerPaused(data.peerId, data.producerId, method === 'producerPaused');
        break;
      case 'activeSpeaker':
        this.setActiveSpeaker(data.peerId ?? null);
        break;
      case 'chat':
        appendChat(data, data.peerId === this.peerId);
        break;
      default:
        // layersChanged and anything newer: nothing to show yet.
        break;
    }
  }

  setProducerPaused(peerId, producerId, paused) {
    const peer = this.peers.get(peerId);
    if (!peer) return;
    const p = peer.producers.get(producerId);
    if (p) p.paused = paused;
    for (const c of peer.consumers.values()) if (c.producerId === producerId) c.paused = paused;
    peer.renderState();
  }

  setActiveSpeaker(peerId) {
    room.activeSpeaker = peerId;
    for (const tile of ui.grid.querySelectorAll('.tile')) {
      tile.classList.toggle('speaking', peerId !== null && tile.dataset.peerId === peerId);
    }
  }

  syncConnState() {
    const states = [this.sendPc, this.recvPc].filter(Boolean).map((pc) => pc.connectionState);
    if (states.includes('failed')) setConn('failed', 'media connection failed');
    else if (states.includes('disconnected')) setConn('connecting', 'reconnecting…');
    else if (states.length && states.every((s) => s === 'connected')) setConn('connected', 'connected');
    else setConn('connecting', 'connecting…');
  }

  /* ----- stats ----- */

  midOf(r, midByTrack) {
    if (r.mid !== undefined) return String(r.mid);
    return midByTrack.get(r.trackIdentifier);
  }

  midsByTrack() {
    const m = new Map();
    for (const t of this.recvPc?.getTransceivers() ?? []) if (t.mid !== null) m.set(t.receiver.track.id, t.mid);
    return m;
  }

  async inboundSnapshot(mid) {
    const report = await reportOf(this.recvPc);
    const snap = new Map();
    const byTrack = this.midsByTrack();
    report?.forEach((r) => {
      if (r.type === 'inbound-rtp' && this.midOf(r, byTrack) === mid) snap.set(r.id, counters(r));
    });
    return snap;
  }

  // Per remote peer, from the receive transport's inbound-rtp entries grouped by mid.
  async remoteStats() {
    const out = new Map();
    for (const id of this.peers.keys()) {
      out.set(id, {
        framesDecoded: 0,
        audioPacketsReceived: 0,
        videoPacketsReceived: 0,
        packetsLost: 0,
        audioBytesReceived: 0,
        videoBytesReceived: 0,
        frameWidth: 0,
        frameHeight: 0,
        framesPerSecond: 0,
        audioPacketsLost: 0,
        videoPacketsLost: 0,
      });
    }
    const report = await reportOf(this.recvPc);
    const byTrack = this.midsByTrack();
    report?.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const b = this.bindings.get(this.midOf(r, byTrack));
      const s = b && out.get(b.peerId);
      if (!s) return;
      const base = b.baseline?.get(r.id);
      const now = counters(r);
      const d = (k) => Math.max(0, now[k] - (base?.[k] || 0));
      const kind = r.kind || r.mediaType;
      if (kind === 'video') {
        s.framesDecoded += d('framesDecoded');
        s.videoPacketsReceived += d('packetsReceived');
        s.videoPacketsLost += d('packetsLost');
        s.videoBytesReceived += d('bytesReceived');
        // The camera's size wins over the screen's when both are there.
        if (r.frameWidth && (b.source === 'cam' || !s.frameWidth)) {
          s.frameWidth = r.frameWidth;
          s.frameHeight = r.frameHeight || 0;
          s.framesPerSecond = r.framesPerSecond || 0;
        }
      } else if (kind === 'audio') {
        s.audioPacketsReceived += d('packetsReceived');
        s.audioPacketsLost += d('packetsLost');
        s.audioBytesReceived += d('bytesReceived');
      }
      s.packetsLost = s.audioPacketsLost + s.videoPacketsLost;
    });
    return out;
  }

  async sendStats() {
    const s = { framesEncoded: 0, bytesSent: 0, packetsSent: 0, frameWidth: 0, frameHeight: 0, framesPerSecond: 0, qualityLimitationReason: '' };
    const report = await reportOf(this.sendPc);
    report?.forEach((r) => {
      if (r.type !== 'outbound-rtp') return;
      s.bytesSent += r.bytesSent || 0;
      s.packetsSent += r.packetsSent || 0;
      if ((r.kind || r.mediaType) === 'video') {
        s.framesEncoded += r.framesEncoded || 0;
        if (r.frameWidth && (r.mid === this.tx?.cam.mid || !s.frameWidth)) {
          s.frameWidth = r.frameWidth;
          s.frameHeight = r.frameHeight || 0;
          s.framesPerSecond = r.framesPerSecond || 0;
        }
        if (r.qualityLimitationReason && r.qualityLimitationReason !== 'none') {
          s.qualityLimitationReason = r.qualityLimitationReason;
        }
      }
    });
    return s;
  }

  async stats() {
    const [remote, send] = await Promise.all([this.remoteStats(), this.sendStats()]);
    return { remote: Object.fromEntries(remote), ...send };
  }

  // Refreshes the stats panels that are open.
  async updateTileStats() {
    const open = [...this.peers.values()].filter((p) => p.tile.statsOpen);
    const selfOpen = this.selfTile.statsOpen;
    if (!open.length && !selfOpen) return;
    const now = performance.now();
    if (open.length) {
      const remote = await this.remoteStats();
      for (const p of open) {
        const s = remote.get(p.id);
        if (!s) continue;
        const bytes = s.audioBytesReceived + s.videoBytesReceived;
        const prev = p.tile.statsPrev;
        p.tile.statsPrev = { bytes, at: now };
        const lines = [
          `bitrate  ${prev ? kbps(bytes, prev.bytes, now - prev.at) : '…'} kbit/s`,
          `video    ${s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : '–'}${s.framesPerSecond ? ` @ ${Math.round(s.framesPerSecond)} fps` : ''}`,
          `loss     video ${lossPercent(s.videoPacketsLost, s.videoPacketsReceived)}% · audio ${lossPercent(s.audioPacketsLost, s.audioPacketsReceived)}%`,
          `packets  video ${s.videoPacketsReceived} · audio ${s.audioPacketsReceived}`,
          `frames   ${s.framesDecoded} decoded`,
        ];
        p.tile.statsPanel.textContent = lines.join('\n');
      }
    }
    if (selfOpen) {
      const s = await this.sendStats();
      const prev = this.selfTile.statsPrev;
      this.selfTile.statsPrev = { bytes: s.bytesSent, at: now };
      this.selfTile.statsPanel.textContent = [
        `sending  ${prev ? kbps(s.bytesSent, prev.bytes, now - prev.at) : '…'} kbit/s`,
        `video    ${s.frameWidth ? `${s.frameWidth}×${s.frameHeight}` : '–'}${s.framesPerSecond ? ` @ ${Math.round(s.framesPerSecond)} fps` : ''}`,
        `frames   ${s.framesEncoded} encoded`,
        `packets  ${s.packetsSent} sent`,
        ...(s.qualityLimitationReason ? [`limited  by ${s.qualityLimitationReason}`] : []),
      ].join('\n');
    }
  }
}

function counters(r) {
  return {
    framesDecoded: r.framesDecoded || 0,
    packetsReceived: r.packetsReceived || 0,
    packetsLost: r.packetsLost || 0,
    bytesReceived: r.bytesReceived || 0,
  };
}

/* ---------- page state ---------- */

function setRoomState(state, error = '') {
  room.state = state;
  room.error = error;
  document.body.dataset.state = state;
  if (ui) ui.joinError.textContent = error;
}

function warn(text) {
  room.warnings.push(text);
  toast(text, 'error');
}

function setConn(state, label) {
  ui.connStatus.dataset.state = state;
  ui.connStatus.textContent = label;
}

function updatePeerCount() {
  const n = (current?.peers.size ?? 0) + 1;
  ui.peerCount.textContent = n === 1 ? 'just you' : `${n} participants`;
}

function showRoom(session) {
  ui.roomLabel.textContent = session.roomId;
  ui.chatLog.replaceChildren();
  ui.chatUnread.hidden = true;
  unread = 0;
  document.body.dataset.view = 'room';
  ui.landing.hidden = true;
  ui.room.hidden = false;
  document.title = `${session.roomId} · sluice`;
  syncControls(session);
}

function showLanding() {
  document.body.dataset.view = 'landing';
  ui.room.hidden = true;
  ui.landing.hidden = false;
  ui.join.disabled = false;
  document.title = 'sluice rooms';
  // A reload after leaving shows the form again instead of rejoining at once.
  const q = new URLSearchParams(location.search);
  for (const k of ['displayName', 'peerId', 'audio', 'video']) q.delete(k);
  history.replaceState(null, '', q.size ? `/?${q}` : '/');
}

function syncControls(session) {
  if (!ui || !session) return;
  const ready = room.state === 'joined' && Boolean(session.tx);
  const set = (button, source, onLabel, offLabel) => {
    const s = session.local[source];
    const on = Boolean(s.track) && !s.paused;
    button.setAttribute('aria-pressed', String(on));
    button.classList.toggle('off', !on);
    button.title = on ? onLabel : offLabel;
    button.disabled = !ready;
  };
  set(ui.toggleMic, 'mic', 'Mute microphone', 'Unmute microphone');
  set(ui.toggleCam, 'cam', 'Turn camera off', 'Turn camera on');
  const sharing = Boolean(session.local.screen.track);
  ui.shareScreen.setAttribute('aria-pressed', String(sharing));
  ui.shareScreen.classList.toggle('active', sharing);
  ui.shareScreen.querySelector('.label').textContent = sharing ? 'Stop sharing' : 'Share screen';
  ui.shareScreen.title = sharing ? 'Stop sharing your screen' : 'Share your screen';
  ui.shareScreen.disabled = !ready || !navigator.mediaDevices?.getDisplayMedia;
  ui.chatSend.disabled = room.state !== 'joined';
  ui.chatInput.disabled = room.state !== 'joined';
}

/* ---------- chat ---------- */

let unread = 0;

function appendChat({ displayName, peerId, text, ts }, mine) {
  const li = document.createElement('li');
  li.className = mine ? 'mine' : '';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = mine ? 'You' : displayName || peerId || 'someone';
  const when = document.createElement('time');
  const date = new Date(Number(ts) || Date.now());
  when.dateTime = date.toISOString();
  when.textContent = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  meta.append(who, when);
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = String(text ?? '');
  li.append(meta, body);
  const log = ui.chatLog;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atBottom || mine) log.scrollTop = log.scrollHeight;
  if (!mine && document.body.classList.contains('chat-hidden')) {
    unread++;
    ui.chatUnread.textContent = String(unread);
    ui.chatUnread.hidden = false;
  }
}

async function sendChat() {
  const text = ui.chatInput.value.trim();
  const session = current;
  if (!text || !session?.signaling) return;
  ui.chatSend.disabled = true;
  try {
    await session.signaling.request('chat', { text: text.slice(0, 1000) });
    ui.chatInput.value = ''; // our own message comes back as a notification
  } catch (err) {
    toast(`message not sent: ${describe(err)}`, 'error');
  } finally {
    ui.chatSend.disabled = room.state !== 'joined';
    ui.chatInput.focus();
  }
}

/* ---------- invite link ---------- */

async function copyInvite() {
  const session = current;
  if (!session) return;
  const link = `${location.origin}/?roomId=${encodeURIComponent(session.roomId)}`;
  room.inviteLink = link;
  let copied = false;
  try {
    await navigator.clipboard.writeText(link);
    copied = true;
  } catch {
    // No clipboard permission (e.g. some embedded views): the old selection trick.
    const area = document.createElement('textarea');
    area.value = link;
    area.setAttribute('readonly', '');
    area.className = 'offscreen';
    document.body.append(area);
    area.select();
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
    area.remove();
  }
  toast(copied ? `Invite link copied: ${link}` : `Invite link: ${link}`);
}

/* ---------- joining ---------- */

function join({ roomId, displayName, token, audio, video, peerId }) {
  roomId = roomId.trim();
  displayName = displayName.trim();
  if (!ID_RE.test(roomId)) {
    setRoomState('error', 'room names are 1–64 letters, digits, ".", "-" or "_"');
    ui.roomName.focus();
    return;
  }
  if (!displayName) {
    setRoomState('error', 'enter your name');
    ui.displayName.focus();
    return;
  }
  if (peerId && !ID_RE.test(peerId)) {
    setRoomState('error', 'peerId must be 1–64 letters, digits, ".", "-" or "_"');
    return;
  }
  if (current) current.teardown();
  try {
    localStorage.setItem('sluice.displayName', displayName);
  } catch {
    // storage may be disabled; remembering the name is a convenience
  }
  room.roomId = roomId;
  room.peerId = peerId || randomId();
  room.displayName = displayName;
  room.warnings = [];
  room.activeSpeaker = null;
  ui.join.disabled = true;
  const session = new RoomSession({ roomId, peerId: room.peerId, displayName, token: token.trim(), audio, video });
  current = session;
  session.start().catch((err) => session.fail(err));
}

function init() {
  ui = {
    landing: $('landing'),
    joinForm: $('join-form'),
    roomName: $('room-name'),
    displayName: $('display-name'),
    token: $('token'),
    joinAudio: $('join-audio'),
    joinVideo: $('join-video'),
    join: $('join'),
    joinError: $('join-error'),
    room: $('room'),
    roomLabel: $('room-label'),
    peerCount: $('peer-count'),
    connStatus: $('conn-status'),
    grid: $('grid'),
    toggleMic: $('toggle-mic'),
    toggleCam: $('toggle-cam'),
    shareScreen: $('share-screen'),
    leave: $('leave'),
    copyLink: $('copy-link'),
    enableSound: $('enable-sound'),
    toggleChat: $('toggle-chat'),
    chatUnread: $('chat-unread'),
    chatForm: $('chat-form'),
    chatInput: $('chat-input'),
    chatSend: $('chat-send'),
    chatLog: $('chat-log'),
    toast: $('toast'),
  };

  const params = new URLSearchParams(location.search);
  const remembered = (() => {
    try {
      return localStorage.getItem('sluice.displayName') || '';
    } catch {
      return '';
    }
  })();
  ui.roomName.value = params.get('roomId') || '';
  ui.displayName.value = params.get('displayName') || remembered;
  ui.token.value = params.get('token') || '';
  ui.joinAudio.checked = !isOff(params.get('audio'));
  ui.joinVideo.checked = !isOff(params.get('video'));

  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    join({
      roomId: ui.roomName.value,
      displayName: ui.displayName.value,
      token: ui.token.value,
      audio: ui.joinAudio.checked,
      video: ui.joinVideo.checked,
      peerId: params.get('peerId') || '',
    });
  });

  const onSend = (fn) => () => {
    const session = current;
    if (!session) return;
    session
      .sendQueue(() => fn(session))
      .catch((err) => {
        if (!session.closed) toast(describe(err), 'error');
      })
      .finally(() => {
        session.renderSelf();
      });
  };
  ui.toggleMic.addEventListener('click', onSend((s) => s.toggleSource('mic')));
  ui.toggleCam.addEventListener('click', onSend((s) => s.toggleSource('cam')));
  ui.shareScreen.addEventListener('click', () => {
    const session = current;
    if (!session) return;
    if (session.local.screen.track) {
      onSend((s) => s.stopScreen())();
      return;
    }
    // Called right here, inside the click, where the browser grants the picker.
    navigator.mediaDevices
      .getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false })
      .then((media) => onSend((s) => s.startScreen(media.getVideoTracks()[0]))())
      .catch((err) => {
        if (err?.name !== 'NotAllowedError') toast(`cannot share the screen: ${describe(err)}`, 'error');
      });
  });
  ui.leave.addEventListener('click', () => current?.leave());
  ui.copyLink.addEventListener('click', copyInvite);
  ui.enableSound.addEventListener('click', enableSound);
  ui.toggleChat.addEventListener('click', () => {
    const hidden = document.body.classList.toggle('chat-hidden');
    ui.toggleChat.setAttribute('aria-pressed', String(!hidden));
    if (!hidden) {
      unread = 0;
      ui.chatUnread.hidden = true;
    }
    layoutGrid();
  });
  ui.chatForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendChat();
  });

  new ResizeObserver(() => layoutGrid()).observe(ui.grid);
  window.addEventListener('pagehide', () => current?.signaling?.close());

  // ?roomId=R&displayName=N joins at once (used by links and browser tests).
  if (params.get('roomId') && params.get('displayName')) {
    join({
      roomId: params.get('roomId'),
      displayName: params.get('displayName'),
      token: params.get('token') || '',
      audio: !isOff(params.get('audio')),
      video: !isOff(params.get('video')),
      peerId: params.get('peerId') || '',
    });
  } else if (ui.roomName.value) {
    ui.displayName.focus();
  } else {
    ui.roomName.focus();
  }
}

if (!REDIRECTING) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}
