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
 *
 * The client is four classic scripts that share one global scope, loaded in this
 * order by room.html: room-signaling.js (constants, helpers, the WebSocket requests),
 * room-tiles.js (a participant's tile, sound, the grid, toasts), room-session.js (a
 * joined room: its transports, producers and consumers) and room.js (the page: state,
 * chat, invite link, joining).
 */

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
