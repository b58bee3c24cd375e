// What the browser end-to-end scripts share: their environment, Chromium's flags and
// launcher, timed logging, checks that count and remember the last one passed, polling,
// console capture and the admin API's session list.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
export const BASE = (process.env.SLUICE_URL || 'https://127.0.0.1:8443').replace(/\/+$/, '');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = resolve(process.env.ARTIFACTS_DIR || join(HERE, '..', 'artifacts'));
/// E2E_DEADLINE_MS, the hard limit for the whole script, or `fallback`.
export const deadlineMs = (fallback) => Number(process.env.E2E_DEADLINE_MS || fallback);

// Flags from DESIGN.md's browser recipe; the certificate is self-signed (rcgen at start).
export const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--ignore-certificate-errors',
];
// For several pages in one browser: none may be throttled as a background tab.
export const NO_BACKGROUND_THROTTLING = [
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

const started = Date.now();
export const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
export const log = (msg) => console.log(`[${elapsed()}] ${msg}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class CheckFailed extends Error {}

// Read-only outside this module (live bindings).
export let passed = 0;
export let lastOk = 'nothing yet';

export function check(ok, what, detail) {
  if (!ok) throw new CheckFailed(`${what}${detail ? ` (${detail})` : ''}`);
  passed++;
  lastOk = what;
  log(`ok: ${what}${detail ? ` (${detail})` : ''}`);
}

// Polls `probe` until `done(value)` holds; returns the last value either way.
export async function pollUntil(probe, done, timeoutMs, periodMs = 250) {
  const end = Date.now() + timeoutMs;
  let value = await probe();
  while (!done(value) && Date.now() < end) {
    await sleep(periodMs);
    value = await probe();
  }
  return value;
}

export const consoleLines = [];
export function recordConsole(page, name) {
  page.on('console', (m) => {
    // 'verbose' is Chromium's DOM lint (e.g. autocomplete hints), noise for these tests.
    if (m.type() !== 'verbose') consoleLines.push(`[${elapsed()}] ${name} ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleLines.push(`[${elapsed()}] ${name} pageerror: ${e.message}`));
  page.on('crash', () => consoleLines.push(`[${elapsed()}] ${name} CRASHED`));
}

// The server's /metrics as text; '' if unreadable.
export async function metricsText(request, base = BASE) {
  try {
    const resp = await request.get(`${base}/metrics`, { timeout: 5_000 });
    return resp.ok() ? await resp.text() : '';
  } catch {
    return '';
  }
}

// The sum of every sample of `series` (a name with or without labels, e.g.
// 'sluice_relay_links{direction="out"}') in Prometheus text; NaN if there is none.
export function metricSum(text, series) {
  let sum = NaN;
  for (const line of text.split('\n')) {
    if (line.startsWith(series) && /^[ {]/.test(line.slice(series.length))) {
      sum = (Number.isNaN(sum) ? 0 : sum) + (Number(line.split(/\s+/).pop()) || 0);
    }
  }
  return sum;
}

// A shard counter summed over shards, from the Prometheus text; NaN if unreadable.
export async function shardCounter(request, name, base = BASE) {
  const text = await metricsText(request, base);
  if (!text) return NaN;
  const sum = metricSum(text, `sluice_shard_${name}_total`);
  return Number.isNaN(sum) ? 0 : sum;
}

export async function adminSessions(request, base = BASE) {
  const resp = await request.get(`${base}/admin/sessions`, { timeout: 5_000 });
  const body = await resp.text();
  if (!resp.ok()) throw new CheckFailed(`GET /admin/sessions: ${resp.status()} ${body.trim()}`);
  const list = JSON.parse(body);
  if (!Array.isArray(list)) throw new CheckFailed(`GET /admin/sessions: not an array: ${body}`);
  return list;
}

// Profile directory of each context launchChromium made, removed by closeChromium.
const profiles = new Map();

// Headless Chromium with `args` and a fresh profile, ready for pages of the self-signed server.
export async function launchChromium(args = CHROMIUM_ARGS) {
  const profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 800 },
      timeout: 30_000,
    });
  } catch (err) {
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
  profiles.set(context, profile);
  log(`chromium ${context.browser()?.version() ?? ''} started`);
  return context;
}

// Close a context from launchChromium (or nothing, if the launch failed) and remove its profile.
export async function closeChromium(context) {
  if (!context) return;
  await context.close().catch(() => {});
  rmSync(profiles.get(context), { recursive: true, force: true });
  profiles.delete(context);
}
