'use strict';

/*
 * sluice rooms, third of four scripts (room.js has the overview): the test hook and the
 * room session, from join to leave.
 */

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
      const [spatialLayer, temporalLayer] = LAYER_CHOICES[choice] ?? [null, null];
      await this.signaling.request('setConsumerPreferredLayers', { consumerId, spatialLayer, temporalLayer });
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
