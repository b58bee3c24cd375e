'use strict';

/*
 * sluice rooms, second of four scripts (room.js has the overview): a participant's
 * tile, sound that autoplay refused, the grid's layout and toasts.
 */

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
        sel.title = `${source === 'cam' ? 'Camera' : 'Screen'} quality (simulcast layer and frame rate received)`;
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
