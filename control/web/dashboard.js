'use strict';

/*
 * sluice live dashboard: polls the admin API every second and draws per-shard packet
 * rates (from counter deltas) and sessions for the last two minutes, with tables of
 * shards (viewers split by transport: UDP or ICE-TCP) and streams, and, when the node is in a cluster, its nodes and relay tree. If
 * the admin API wants a token, asks for one and sends it as `Authorization: Bearer`; it
 * is kept for this tab only (sessionStorage).
 */

const POLL_MS = 1000;
const WINDOW_MS = 120 * 1000;
const TOKEN_KEY = 'sluice.adminToken';
// A single node answers /admin/cluster with 404; ask again now and then, not every poll.
const CLUSTER_RECHECK_MS = 30 * 1000;
// cluster.lease_ms's default, for a node record that does not say its own lease.
const DEFAULT_LEASE_MS = 5000;

const PALETTE = ['#3b82f6', '#34c77b', '#e6b341', '#ef5b5b', '#a78bfa', '#22d3ee', '#f472b6', '#a3e635'];

const $ = (id) => document.getElementById(id);

const ui = {
  status: $('status'),
  tokenPanel: $('token-panel'),
  tokenForm: $('token-form'),
  tokenInput: $('admin-token'),
  tokenReason: $('token-reason'),
  ppsPlot: $('pps-plot'),
  ppsLegend: $('pps-legend'),
  ppsStats: $('pps-stats'),
  sessionsPlot: $('sessions-plot'),
  sessionsLegend: $('sessions-legend'),
  sessionsStats: $('sessions-stats'),
  shardsBody: $('shards-body'),
  streamsBody: $('streams-body'),
  clusterPanel: $('cluster-panel'),
  clusterStats: $('cluster-stats'),
  clusterNodesBody: $('cluster-nodes-body'),
  clusterStreamsBody: $('cluster-streams-body'),
};

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  // Time-ordered samples: { t, shards: Map<id, { rx, tx, fwd, drops, sessions }> } (rates may be null).
  history: [],
  // Last raw counters per shard, for deltas: Map<id, { t, rx, tx, fwd, drops }>.
  last: new Map(),
  shardIds: [],
  timer: null,
  // When a single node's /admin/cluster is next asked (0: every poll).
  clusterRecheckAt: 0,
  // Local time of the last cluster listing shown.
  clusterTime: '',
};

/* ---------- formatting ---------- */

const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

function fmtRate(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  return intFmt.format(v);
}

/** Short axis label: 1.2k, 3.5M. */
function fmtShort(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e3) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function trim(v) {
  return Number(v.toFixed(v < 10 && v !== Math.round(v) ? 1 : 0)).toString();
}

function shardColor(index) {
  if (index < PALETTE.length) return PALETTE[index];
  return `hsl(${Math.round((index * 137.5) % 360)}, 70%, 62%)`;
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

/* ---------- status and token ---------- */

function setStatus(stateName, text) {
  ui.status.dataset.state = stateName;
  ui.status.textContent = text;
}

function askForToken(reason) {
  ui.tokenReason.textContent = reason;
  ui.tokenPanel.hidden = false;
  if (document.activeElement !== ui.tokenInput) ui.tokenInput.focus();
}

ui.tokenForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.token = ui.tokenInput.value.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  ui.tokenInput.value = '';
  setStatus('connecting', 'checking token…');
  schedule(0);
});

/* ---------- polling ---------- */

class HttpError extends Error {
  constructor(status, body) {
    super(body || `HTTP ${status}`);
    this.status = status;
  }
}

async function getJson(path) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const res = await fetch(path, { headers, cache: 'no-store', credentials: 'same-origin' });
  if (!res.ok) {
    const body = (await res.text().catch(() => '')).trim();
    throw new HttpError(res.status, body);
  }
  return res.json();
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, ms);
}

async function poll() {
  if (document.hidden) {
    schedule(POLL_MS);
    return;
  }
  const cluster = pollCluster();
  try {
    const [shards, streams] = await Promise.all([getJson('/admin/shards'), getJson('/admin/streams')]);
    ui.tokenPanel.hidden = true;
    ingest(Date.now(), Array.isArray(shards) ? shards : []);
    renderShards(Array.isArray(shards) ? shards : []);
    renderStreams(Array.isArray(streams) ? streams : []);
    const time = new Date().toLocaleTimeString();
    setStatus('connected', `live · ${shards.length} shard${shards.length === 1 ? '' : 's'} · updated ${time}`);
  } catch (err) {
    if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
      const sent = state.token ? 'The token was refused: ' : 'The admin API needs a token: ';
      askForToken(sent + err.message);
      setStatus('error', `admin API answered ${err.status}`);
    } else if (err instanceof HttpError) {
      setStatus('error', `admin API answered ${err.status}: ${err.message}`);
    } else {
      setStatus('disconnected', `server unreachable (${err.message}); retrying`);
    }
  }
  await cluster;
  draw();
  schedule(POLL_MS);
}

/** Show or hide the Cluster panel; `mode` is 'cluster' or 'single' (the tests read it). */
function setClusterMode(mode) {
  ui.clusterPanel.dataset.mode = mode;
  ui.clusterPanel.hidden = mode !== 'cluster';
}

/** One poll of /admin/cluster; never throws (the other endpoints report errors). */
async function pollCluster() {
  if (Date.now() < state.clusterRecheckAt) return;
  try {
    const c = await getJson('/admin/cluster');
    state.clusterRecheckAt = 0;
    renderCluster(c);
    setClusterMode('cluster');
  } catch (err) {
    if (!(err instanceof HttpError)) return;
    if (err.status === 404) {
      state.clusterRecheckAt = Date.now() + CLUSTER_RECHECK_MS;
      setClusterMode('single');
    } else if (err.status === 503 && ui.clusterPanel.dataset.mode === 'cluster') {
      // The registry cannot be read: keep the last tables, say how old they are.
      ui.clusterStats.textContent = `registry unreachable (${err.message}); tables as of ${state.clusterTime || '—'}`;
      ui.clusterStats.classList.add('warn');
    } else if (err.status === 503) {
      ui.clusterStats.textContent = `registry unreachable (${err.message})`;
      ui.clusterStats.classList.add('warn');
      setClusterMode('cluster');
    }
  }
}

/** Turn a poll's counters into per-shard rates and append a sample. */
function ingest(t, shards) {
  const sample = { t, shards: new Map() };
  for (const s of shards) {
    const c = s.counters || {};
    const drops = Object.keys(c)
      .filter((k) => k.startsWith('drop_'))
      .reduce((sum, k) => sum + (Number(c[k]) || 0), 0);
    const now = { t, rx: Number(c.rx_packets) || 0, tx: Number(c.tx_packets) || 0, fwd: Number(c.rtp_forwarded) || 0, drops };
    const prev = state.last.get(s.id);
    const dt = prev ? (t - prev.t) / 1000 : 0;
    // A counter going backwards means the server restarted: no rate for this step.
    const ok = prev && dt > 0 && now.rx >= prev.rx && now.tx >= prev.tx && now.fwd >= prev.fwd && now.drops >= prev.drops;
    sample.shards.set(s.id, {
      rx: ok ? (now.rx - prev.rx) / dt : null,
      tx: ok ? (now.tx - prev.tx) / dt : null,
      fwd: ok ? (now.fwd - prev.fwd) / dt : null,
      drops: ok ? (now.drops - prev.drops) / dt : null,
      sessions: (Number(s.publishers) || 0) + (Number(s.viewers) || 0),
      viewers: viewersByTransport(s),
    });
    state.last.set(s.id, now);
  }
  for (const id of state.last.keys()) {
    if (!sample.shards.has(id)) state.last.delete(id);
  }
  state.history.push(sample);
  while (state.history.length && state.history[0].t < t - WINDOW_MS - POLL_MS * 2) state.history.shift();
  state.shardIds = shards.map((s) => s.id).sort((a, b) => a - b);
}

/* ---------- tables ---------- */

function cell(tr, text, numeric) {
  const td = document.createElement('td');
  td.textContent = text;
  if (numeric) td.className = 'num';
  tr.appendChild(td);
  return td;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement('tr');
  const td = cell(tr, text, false);
  td.colSpan = columns;
  td.className = 'empty';
  tbody.replaceChildren(tr);
}

function renderShards(shards) {
  if (!shards.length) {
    emptyRow(ui.shardsBody, 11, 'no shards');
    return;
  }
  const latest = state.history.length ? state.history[state.history.length - 1].shards : new Map();
  const rows = [...shards]
    .sort((a, b) => a.id - b.id)
    .map((s) => {
      const r = latest.get(s.id) || {};
      const tr = document.createElement('tr');
      const id = cell(tr, '', false);
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = shardColor(state.shardIds.indexOf(s.id));
      id.append(sw, String(s.id));
      const tcp = Array.isArray(s.tcp_addrs) && s.tcp_addrs.length ? s.tcp_addrs : null;
      const media = cell(tr, (Array.isArray(s.addrs) && s.addrs.length ? s.addrs.join(', ') : s.addr) || '—', false);
      media.title = tcp ? `ICE-TCP: ${tcp.join(', ')} (${intFmt.format(s.tcp_conns || 0)} open)` : 'ICE-TCP off';
      cell(tr, s.core === null || s.core === undefined ? '—' : String(s.core), true);
      cell(tr, s.io || '—', false);
      cell(tr, intFmt.format(s.publishers || 0), true);
      cell(tr, intFmt.format(s.viewers || 0), true);
      const v = viewersByTransport(s);
      cell(tr, `${intFmt.format(v.udp)} / ${intFmt.format(v.tcp)}`, true).title = 'connected viewers over UDP / over ICE-TCP';
      cell(tr, fmtRate(r.rx), true);
      cell(tr, fmtRate(r.tx), true);
      cell(tr, fmtRate(r.fwd), true);
      const d = cell(tr, fmtRate(r.drops), true);
      if (r.drops > 0) d.classList.add('bad');
      return tr;
    });
  ui.shardsBody.replaceChildren(...rows);
}

/** A shard's connected viewers by transport (UDP, ICE-TCP). */
function viewersByTransport(s) {
  const v = (s.transports && s.transports.viewers) || {};
  return { udp: Number(v.udp) || 0, tcp: Number(v.tcp) || 0 };
}

function renderStreams(streams) {
  if (!streams.length) {
    emptyRow(ui.streamsBody, 5, 'no streams');
    return;
  }
  const rows = [...streams]
    .sort((a, b) => String(a.name).localeCompare(String(b.name)))
    .map((s) => {
      const tr = document.createElement('tr');
      cell(tr, String(s.name), false).className = 'name';
      cell(tr, s.publisher || 'none', false).classList.toggle('muted', !s.publisher);
      cell(tr, s.publisher_shard === null || s.publisher_shard === undefined ? '—' : String(s.publisher_shard), true);
      cell(tr, intFmt.format(s.viewers || 0), true);
      const per = Object.entries(s.viewers_per_shard || {})
        .sort((a, b) => Number(a[0]) - Number(b[0]))
        .map(([shard, n]) => `${shard}: ${n}`)
        .join(', ');
      cell(tr, per || '—', false);
      return tr;
    });
  ui.streamsBody.replaceChildren(...rows);
}

function renderCluster(c) {
  const nodes = Array.isArray(c.nodes) ? c.nodes : [];
  const streams = Array.isArray(c.streams) ? c.streams : [];
  const rooms = Array.isArray(c.rooms) ? c.rooms : [];
  state.clusterTime = new Date().toLocaleTimeString();
  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  ui.clusterStats.textContent = [
    `this node: ${c.node_id}`,
    c.healthy ? 'registry healthy' : 'registry unreachable',
    plural(nodes.length, 'node'),
    plural(streams.length, 'stream'),
    plural(rooms.length, 'room'),
  ].join(' · ');
  ui.clusterStats.classList.toggle('warn', !c.healthy);

  if (!nodes.length) {
    emptyRow(ui.clusterNodesBody, 7, 'no nodes');
  } else {
    const rows = [...nodes]
      .sort((a, b) => String(a.id).localeCompare(String(b.id)))
      .map((n) => {
        const tr = document.createElement('tr');
        cell(tr, n.id === c.node_id ? `${n.id} (this node)` : String(n.id), false).className = 'name';
        cell(tr, n.advertise || '—', false).className = 'name';
        const load = Number(n.load) || 0;
        const l = cell(tr, load.toFixed(3), true);
        if (load > 1) l.classList.add('bad');
        else if (load > 0.8) l.classList.add('warn');
        cell(tr, intFmt.format(n.sessions || 0), true);
        cell(tr, intFmt.format(n.viewers || 0), true);
        const age = Number(n.heartbeat_age_ms);
        cell(tr, Number.isFinite(age) ? `${(age / 1000).toFixed(1)} s ago` : '—', true);
        // A record is rewritten every lease/4: older than half the lease, heartbeats were missed.
        const late = !Number.isFinite(age) || age > (Number(n.lease_ms) || DEFAULT_LEASE_MS) / 2;
        cell(tr, late ? 'late' : 'yes', false).classList.add(late ? 'warn' : 'ok');
        return tr;
      });
    ui.clusterNodesBody.replaceChildren(...rows);
  }

  if (!streams.length) {
    emptyRow(ui.clusterStreamsBody, 4, 'no streams');
    return;
  }
  const live = new Set(nodes.map((n) => n.id));
  const rows = [...streams]
    .sort((a, b) => String(a.name).localeCompare(String(b.name)))
    .map((s) => {
      const tr = document.createElement('tr');
      cell(tr, String(s.name), false).className = 'name';
      const origin = cell(tr, String(s.origin), false);
      origin.className = 'name';
      if (!live.has(s.origin)) {
        origin.classList.add('bad');
        origin.title = 'no live record of this node';
      }
      const edges = (Array.isArray(s.edges) ? s.edges : [])
        .map((e) => `${e.node} ← ${e.upstream}`)
        .sort()
        .join(', ');
      cell(tr, edges || 'none', false).classList.toggle('muted', !edges);
      cell(tr, s.epoch === undefined ? '—' : String(s.epoch), true);
      return tr;
    });
  ui.clusterStreamsBody.replaceChildren(...rows);
}

/* ---------- plots ---------- */

/** The series for one plot: one point list per line, null where there is no value. */
function seriesFor(kind) {
  const out = [];
  state.shardIds.forEach((id, i) => {
    const color = shardColor(i);
    const pts = (key) => state.history.map((s) => ({ t: s.t, v: s.shards.has(id) ? s.shards.get(id)[key] : null }));
    if (kind === 'pps') {
      out.push({ label: `shard ${id} tx`, color, dash: [], points: pts('tx') });
      out.push({ label: `shard ${id} rx`, color, dash: [5, 4], points: pts('rx') });
    } else {
      out.push({ label: `shard ${id}`, color, dash: [], points: pts('sessions') });
    }
  });
  if (kind === 'sessions' && state.shardIds.length > 1) {
    out.push({
      label: 'all shards',
      color: cssVar('--text', '#e6e9ee'),
      dash: [2, 3],
      points: state.history.map((s) => ({
        t: s.t,
        v: s.shards.size ? [...s.shards.values()].reduce((a, r) => a + r.sessions, 0) : null,
      })),
    });
  }
  return out;
}

/** A round step giving about `n` intervals up to `max`. */
function niceStep(max, n) {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

function drawPlot(canvas, series, now, integer) {
  const dpr = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  const w = Math.max(1, Math.round(rect.width));
  const h = Math.max(1, Math.round(rect.height));
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const muted = cssVar('--muted', '#8d96a3');
  const grid = cssVar('--panel-edge', '#262c35');
  const font = `11px ${cssVar('--mono', 'monospace')}`;
  const left = 48;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const pw = w - left - right;
  const ph = h - top - bottom;
  if (pw < 20 || ph < 20) return;

  const t0 = now - WINDOW_MS;
  let max = 0;
  for (const s of series) {
    for (const p of s.points) {
      if (p.t >= t0 && p.v !== null && p.v > max) max = p.v;
    }
  }
  const step = niceStep(Math.max(max, integer ? 4 : 1), 4);
  const yMax = Math.max(step, Math.ceil(max / step) * step);
  const x = (t) => left + ((t - t0) / WINDOW_MS) * pw;
  const y = (v) => top + ph - (v / yMax) * ph;

  ctx.font = font;
  ctx.lineWidth = 1;
  ctx.strokeStyle = grid;
  ctx.fillStyle = muted;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let v = 0; v <= yMax + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, yy);
    ctx.lineTo(left + pw, yy);
    ctx.stroke();
    ctx.fillText(fmtShort(v), left - 6, yy);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let ago = 120; ago >= 0; ago -= 30) {
    const xx = Math.round(x(now - ago * 1000)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xx, top);
    ctx.lineTo(xx, top + ph);
    ctx.stroke();
    ctx.fillText(ago === 0 ? 'now' : `-${ago}s`, Math.min(Math.max(xx, left + 12), left + pw - 12), top + ph + 5);
  }

  let drawn = 0;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top - 1, pw, ph + 2);
  ctx.clip();
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.setLineDash(s.dash);
    ctx.beginPath();
    let pen = false;
    for (const p of s.points) {
      if (p.v === null || p.t < t0 - POLL_MS * 2) {
        pen = false;
        continue;
      }
      if (pen) ctx.lineTo(x(p.t), y(p.v));
      else ctx.moveTo(x(p.t), y(p.v));
      pen = true;
      drawn += 1;
    }
    ctx.stroke();
  }
  ctx.restore();
  ctx.setLineDash([]);
  if (!drawn) {
    ctx.fillStyle = muted;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.fillText('waiting for data…', left + pw / 2, top + ph / 2);
  }
}

function renderLegend(el, series) {
  const items = series.map((s) => {
    const span = document.createElement('span');
    const sw = document.createElement('span');
    sw.className = s.dash.length ? 'swatch dashed' : 'swatch';
    if (s.dash.length) sw.style.borderColor = s.color;
    else sw.style.background = s.color;
    span.append(sw, s.label);
    return span;
  });
  el.replaceChildren(...items);
}

function draw() {
  const now = Date.now();
  const pps = seriesFor('pps');
  const sessions = seriesFor('sessions');
  drawPlot(ui.ppsPlot, pps, now, false);
  drawPlot(ui.sessionsPlot, sessions, now, true);

  const legendKey = state.shardIds.join(',');
  if (ui.ppsLegend.dataset.key !== legendKey) {
    ui.ppsLegend.dataset.key = legendKey;
    renderLegend(ui.ppsLegend, pps);
    renderLegend(ui.sessionsLegend, sessions);
  }

  const latest = state.history.length ? state.history[state.history.length - 1].shards : new Map();
  let tx = null;
  let rx = null;
  let sessionsNow = 0;
  const viewers = { udp: 0, tcp: 0 };
  for (const r of latest.values()) {
    if (r.tx !== null) tx = (tx || 0) + r.tx;
    if (r.rx !== null) rx = (rx || 0) + r.rx;
    sessionsNow += r.sessions;
    viewers.udp += r.viewers.udp;
    viewers.tcp += r.viewers.tcp;
  }
  ui.ppsStats.textContent = `all shards: tx ${fmtRate(tx)} pkt/s · rx ${fmtRate(rx)} pkt/s`;
  ui.sessionsStats.textContent = `all shards: ${intFmt.format(sessionsNow)} sessions · viewers connected over UDP ${intFmt.format(viewers.udp)}, over TCP ${intFmt.format(viewers.tcp)}`;
}

window.addEventListener('resize', draw);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden) schedule(0);
});

setStatus('connecting', 'connecting…');
poll();
