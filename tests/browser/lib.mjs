// Shared helpers of the headless-Chromium checks (three_party.mjs, reconnect.mjs, hearing.mjs,
// caucus.mjs): launching Chromium with fake devices, opening join links, reading the page's test
// hook (window.qiao), artifacts, the RESULT line, a watchdog, TcpLink, a loopback TCP relay whose
// connections a test can cut to drop one page's network, and (at the end) what the zone tests
// share: a room sample with zone, roster and what the page shows, raw receive counters of every
// peer connection, per-publisher gains between samples, and bounded polling.
//
// Conventions every script keeps: exactly one `RESULT {json}` line on stdout, exit status 0 exactly
// when result.ok, diagnostics on stderr, join tokens never printed or saved.

import { chromium } from 'playwright-core';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

export const POLL_MS = 250;
export const EVALUATE_LIMIT_MS = 5_000;

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  // Synthetic camera (test pattern) and microphone (beeps); with the next flag, getDisplayMedia
  // too gets a synthetic screen (Chromium's fake desktop capture, label "screen:…"), headless.
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream', // no permission prompt, no screen picker
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--allow-loopback-in-peer-connection', // the server under test listens on 127.0.0.1
  '--autoplay-policy=no-user-gesture-required', // remote audio plays without a click
];

/** Join tokens are credentials: keep them out of everything we print or save. */
export const redact = (text) => String(text).replace(/token=[^&\s"'\\]+/g, 'token=<redacted>');
export const plain = (text) => String(text).replace(/\u001b\[[0-9;]*m/g, '');
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A stderr logger with a tag, e.g. `[three_party] …`. Redacts tokens. */
export const makeLog = (tag) => (...args) => console.error(`[${tag}]`, ...args.map(redact));

let resultPrinted = false;
/** Prints the one RESULT line (only the first call counts) and sets the exit status from `ok`. */
export function printResult(result) {
  if (resultPrinted) return;
  resultPrinted = true;
  process.stdout.write(`RESULT ${redact(JSON.stringify(result))}\n`);
  process.exitCode = result.ok ? 0 : 1;
}

export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
  ]);
}

/** Append autojoin=1 to the fragment without re-encoding the token. */
export function withAutojoin(url) {
  return url.includes('#') ? `${url}&autojoin=1` : `${url}#autojoin=1`;
}

/** getUserMedia needs a secure context; plain http is only one on loopback addresses. */
export function insecureOrigins(urls) {
  const origins = new Set();
  for (const u of urls) {
    const url = new URL(u);
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname) || url.hostname.endsWith('.localhost');
    if (url.protocol === 'http:' && !loopback) origins.add(url.origin);
  }
  return [...origins];
}

/** One Chromium for all pages, with fake capture devices. */
export async function launchBrowser(urls, timeoutMs) {
  const args = [...CHROMIUM_ARGS];
  const insecure = insecureOrigins(urls);
  if (insecure.length) args.push(`--unsafely-treat-insecure-origin-as-secure=${insecure.join(',')}`);
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: timeoutMs,
  });
}

/**
 * A page in its own browser context (own cookies, own network emulation) for one join link.
 * Returns the page record the scripts pass around: {index (1-based), url (with autojoin), page,
 * context, consoleLog, consoleErrors, snap (last sample), ...}.
 */
export async function openPage(browser, index, url) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 960, height: 600 } });
  await context.grantPermissions(['camera', 'microphone']);
  const page = await context.newPage();
  const p = { index, url: withAutojoin(url), page, context, consoleErrors: [], consoleLog: [], snap: null };
  page.on('console', (msg) => {
    const line = `${msg.type()}: ${msg.text()}`;
    p.consoleLog.push(line);
    if (msg.type() === 'error') p.consoleErrors.push(msg.text().slice(0, 500));
  });
  page.on('pageerror', (err) => {
    p.consoleLog.push(`pageerror: ${err.message}`);
    p.consoleErrors.push(`uncaught: ${err.message}`.slice(0, 500));
  });
  page.on('crash', () => p.consoleErrors.push('page crashed'));
  return p;
}

/** Navigate every page at once, as people arriving for a hearing would; failures land in p.loadError. */
export async function gotoAll(pages, timeoutMs) {
  await Promise.all(pages.map((p) => p.page.goto(p.url, { waitUntil: 'load', timeout: timeoutMs })
    .catch((err) => { p.loadError = plain(err.message).split('\n')[0]; })));
}

/** Read the page's test hook (web-client/app.js: window.qiao). */
export async function sample(page) {
  return page.evaluate(async () => {
    const q = window.qiao;
    if (!q) return null;
    return {
      state: q.state,
      participantId: q.participantId,
      closeCode: q.closeCode,
      remote: q.remoteParticipants(),
      stats: await q.stats(),
      timing: q.timing,
      now: performance.now(),
    };
  });
}

/** Sample every page (bounded); sets p.snap, or p.sampleError when the page does not answer. */
export async function sampleAll(pages) {
  await Promise.all(pages.map(async (p) => {
    try {
      p.snap = await withTimeout(sample(p.page), EVALUATE_LIMIT_MS, 'reading window.qiao');
      p.sampleError = undefined;
    } catch (err) {
      p.sampleError = err.message;
    }
  }));
}

/** How many distinct remote participants a sample decodes video from / receives audio from. */
export function summarise(snap) {
  if (!snap) return { videos: 0, audios: 0 };
  const distinct = (list, pred) => new Set(list.filter(pred).map((s) => s.participant_id)).size;
  return {
    videos: distinct(snap.stats.videos, (v) => v.framesDecoded > 0),
    audios: distinct(snap.stats.audios, (a) => a.packetsReceived > 0),
  };
}

/** A short description of a page's state for results and errors. */
export function describeState(p) {
  if (p.loadError) return `load failed: ${p.loadError}`;
  if (p.snap) return p.snap.state;
  return p.sampleError ? `unreadable: ${p.sampleError}` : 'no window.qiao';
}

export async function screenshot(p, file, log) {
  try {
    await withTimeout(p.page.screenshot({ path: file }), 10_000, 'screenshot');
  } catch (err) {
    log(`page ${p.index}: screenshot ${path.basename(file)} failed: ${err.message}`);
  }
}

export async function writeConsoleLog(p, artifactDir) {
  await fs.writeFile(path.join(artifactDir, `page-${p.index}.console.log`), redact(p.consoleLog.join('\n')) + '\n').catch(() => {});
}

export async function writeResultFile(artifactDir, result) {
  await fs.writeFile(path.join(artifactDir, 'result.json'), redact(JSON.stringify(result, null, 2)) + '\n').catch(() => {});
}

/**
 * Runs `main` with a hard watchdog so the Rust test never hangs: an exception becomes a failed
 * RESULT, and leftover handles (a stuck browser) cannot keep the process alive.
 */
export function run(main, { watchdogMs, log }) {
  const watchdog = setTimeout(() => {
    printResult({ ok: false, pages: [], error: 'watchdog: the script did not finish in time' });
    process.exit(1);
  }, watchdogMs);
  main()
    .catch((err) => {
      log(err.stack || String(err));
      printResult({ ok: false, pages: [], error: plain(err.message || err).slice(0, 1000) });
    })
    .finally(() => {
      clearTimeout(watchdog);
      setTimeout(() => process.exit(process.exitCode ?? 1), 2_000).unref();
    });
}

/**
 * A TCP relay on 127.0.0.1 in front of the server, for ONE page: that page loads its join link
 * through the relay, so its HTTP requests and its signalling WebSocket use the relay, while the
 * other pages talk to the server directly. `cut()` is a network drop as the browser and the server
 * see it: every live connection is reset (TCP RST both ways, so Chromium reports
 * ERR_CONNECTION_RESET and the WebSocket closes with 1006; the server sees its socket fail), and
 * new connections are reset at once until `restore()`. Media (UDP, straight to the server's media
 * port) does not pass the relay.
 */
export class TcpLink {
  constructor(upstreamHost, upstreamPort) {
    this.upstreamHost = upstreamHost;
    this.upstreamPort = upstreamPort;
    this.pairs = new Set();
    this.isCut = false;
    this.accepted = 0;
    this.refused = 0;
    this.server = net.createServer((down) => this.#accept(down));
  }

  /** Listens on an ephemeral loopback port; returns it. */
  async listen() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    return this.server.address().port;
  }

  /** The same URL with its origin replaced by the relay (path and fragment kept as they are). */
  rewrite(url) {
    const u = new URL(url);
    const rest = url.slice(u.origin.length);
    return `${u.protocol}//127.0.0.1:${this.server.address().port}${rest}`;
  }

  #accept(down) {
    if (this.isCut) {
      this.refused += 1;
      reset(down);
      return;
    }
    this.accepted += 1;
    const up = net.connect(this.upstreamPort, this.upstreamHost);
    const pair = { down, up };
    this.pairs.add(pair);
    down.setNoDelay(true);
    up.setNoDelay(true);
    down.pipe(up);
    up.pipe(down);
    const end = () => {
      this.pairs.delete(pair);
      if (!down.destroyed) down.destroy();
      if (!up.destroyed) up.destroy();
    };
    for (const s of [down, up]) {
      s.on('error', end);
      s.on('close', end);
    }
  }

  /** Drop the link: reset every live connection and refuse new ones. Returns how many were reset. */
  cut() {
    this.isCut = true;
    const live = [...this.pairs];
    for (const { down, up } of live) {
      reset(down);
      reset(up);
    }
    this.pairs.clear();
    return live.length;
  }

  restore() { this.isCut = false; }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Close a socket with a TCP RST (what a dead path looks like), falling back to a plain destroy. */
function reset(socket) {
  if (socket.destroyed) return;
  socket.on('error', () => {}); // the reset itself may report an error; nothing to do about it
  try {
    if (typeof socket.resetAndDestroy === 'function') socket.resetAndDestroy();
    else socket.destroy();
  } catch {
    socket.destroy();
  }
}

// ---- zones and host controls (hearing.mjs, caucus.mjs) --------------------------------------

/**
 * Test-side instrumentation, installed before the page's own scripts: every RTCPeerConnection the
 * page creates is kept in window.__qiaoTestPcs, so that a sample can count everything the page
 * receives (all inbound-rtp of all its peer connections), whether or not the client attributes it
 * to a publisher. The client's own window.qiao.stats() only reports streams it can attribute; a
 * leak from another zone under an unexpected id would not show there, but shows here.
 */
export async function trackPeerConnections(pageOrContext) {
  await pageOrContext.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    if (!Native || window.__qiaoTestPcs) return;
    const pcs = [];
    Object.defineProperty(window, '__qiaoTestPcs', { value: pcs });
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        pcs.push(this);
      }
    };
  });
}

/**
 * Everything a zone test reads from one page: the window.qiao hook (state, zone, roster, session,
 * recording, stats) plus `raw` (every inbound-rtp of every peer connection, keyed "<pc index>/<stats
 * id>") and `dom`, what a person sees: the waiting card (lobby / witness waiting), the caucus
 * banner, the "ended" screen and its text, the stage's tiles and the note an empty stage shows, the
 * recording indicator, warning and integrity value, and the host's pause / resume button.
 */
export async function sampleRoom(page) {
  return page.evaluate(async () => {
    const q = window.qiao;
    if (!q) return null;
    const raw = {};
    const pcs = window.__qiaoTestPcs || [];
    await Promise.all(pcs.map(async (pc, i) => {
      let report;
      try { report = await pc.getStats(); } catch { return; }
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        raw[`${i}/${s.id}`] = { kind: s.kind, framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0 };
      });
    }));
    const shown = (id) => {
      const el = document.getElementById(id);
      return !!el && !el.closest('[hidden]');
    };
    const banner = document.getElementById('zone-banner');
    return {
      state: q.state,
      participantId: q.participantId,
      zone: q.zone,
      closeCode: q.closeCode,
      remote: q.remoteParticipants(),
      roster: q.roster(),
      session: q.session(),
      // the last recording_status ({state, cause, message_zh, message_en, chain_head}) or null
      recording: q.recording ?? null,
      stats: await q.stats(),
      raw,
      timing: q.timing,
      now: performance.now(),
      dom: {
        waiting_card: shown('waiting-card'),
        zone_banner: shown('zone-banner') ? (banner.dataset.kind || 'shown') : null,
        ended: shown('screen-ended'),
        ended_text: shown('screen-ended') ? document.getElementById('end-body').textContent : null,
        stage_shown: shown('stage'),
        // the i18n key of the note an empty stage shows ("waiting for others", …), if shown
        stage_note: shown('stage-empty') ? (document.getElementById('stage-empty').dataset.i18n ?? null) : null,
        tiles: [...document.querySelectorAll('#stage .tile')].map((t) => t.dataset.participantId),
        // the recording indicator in the top bar: its text and state, when shown
        rec_badge: shown('rec-badge') ? document.getElementById('rec-badge').textContent.trim() : null,
        rec_badge_state: shown('rec-badge') ? (document.getElementById('rec-badge').dataset.state ?? null) : null,
        // the recording's warning banner (degraded / failed), when shown
        rec_banner: shown('rec-banner') ? document.getElementById('rec-banner').textContent.trim() : null,
        // the integrity value (完整性校验值) shown once the recording is final, and where
        rec_final: shown('rec-final') ? document.getElementById('rec-final-value').textContent : null,
        rec_final_on_ended: shown('rec-final') && !!document.getElementById('rec-final').closest('#screen-ended'),
        // the presiding host's pause / resume button: the action it offers, when shown
        rec_control: shown('rec-btn') ? (document.getElementById('rec-btn').dataset.action ?? null) : null,
        pause_dialog_open: !!document.getElementById('pause-dialog')?.open,
      },
    };
  });
}

/**
 * Sample every page once (bounded): p.prev becomes the previous sample, p.snap the new one
 * (p.sampleError when the page did not answer; p.snap is then kept).
 */
export async function sampleRooms(pages) {
  await Promise.all(pages.map(async (p) => {
    try {
      const snap = await withTimeout(sampleRoom(p.page), EVALUATE_LIMIT_MS, 'reading window.qiao');
      p.prev = p.snap;
      p.snap = snap;
      p.sampleError = undefined;
    } catch (err) {
      p.sampleError = err.message;
    }
  }));
}

/**
 * Poll every page every POLL_MS until `done()` (which reads p.snap / p.prev) is true, for at most
 * `timeoutMs`. Returns the milliseconds it took; throws `what` (with the pages' states) on timeout.
 */
export async function pollUntil(pages, done, { timeoutMs, what }) {
  const t0 = Date.now();
  for (;;) {
    await sampleRooms(pages);
    if (done()) return Date.now() - t0;
    if (Date.now() - t0 >= timeoutMs) {
      const detail = pages.map((p) => `${p.name}: ${roomState(p)}`).join('; ');
      throw new Error(`${what}: not within ${timeoutMs} ms (${detail})`);
    }
    await sleep(POLL_MS);
  }
}

/** A one-line description of a page for errors: state, zone, tiles, what it decodes. */
export function roomState(p) {
  const s = p.snap;
  if (p.loadError) return `load failed: ${p.loadError}`;
  if (!s) return p.sampleError ? `unreadable: ${p.sampleError}` : 'no window.qiao';
  const dec = [...new Set(s.stats.videos.filter((v) => v.framesDecoded > 0).map((v) => v.participant_id))];
  return `${s.state}/${s.zone ?? '-'}${s.closeCode ? ` close ${s.closeCode}` : ''}, tiles [${s.dom.tiles.join(',')}], decoding [${dec.join(',')}]`;
}

/** Per-stream counters of what a sample got from one publisher: "<track_id>" → count. */
function perTrack(snap, publisherId, kind) {
  const field = kind === 'video' ? 'framesDecoded' : 'packetsReceived';
  const out = new Map();
  for (const s of snap?.stats[kind === 'video' ? 'videos' : 'audios'] ?? []) {
    if (s.participant_id !== publisherId) continue;
    out.set(s.track_id, (out.get(s.track_id) ?? 0) + s[field]);
  }
  return out;
}

/** All video frames decoded ('video') or audio packets received ('audio') from one publisher, per window.qiao.stats(). */
export function received(snap, publisherId, kind) {
  let sum = 0;
  for (const v of perTrack(snap, publisherId, kind).values()) sum += v;
  return sum;
}

/**
 * How much a later sample got from one publisher beyond an earlier one, stream by stream (a stream
 * that went away counts 0, a new one counts in full).
 */
export function gainedFrom(from, to, publisherId, kind) {
  const before = perTrack(from, publisherId, kind);
  let sum = 0;
  for (const [id, n] of perTrack(to, publisherId, kind)) sum += Math.max(0, n - (before.get(id) ?? 0));
  return sum;
}

/**
 * Raw totals of a sample, over every inbound-rtp of every peer connection of the page:
 * {video_frames, video_packets, audio_packets}.
 */
export function rawTotals(snap) {
  const t = { video_frames: 0, video_packets: 0, audio_packets: 0 };
  for (const s of Object.values(snap?.raw ?? {})) {
    if (s.kind === 'video') { t.video_frames += s.framesDecoded; t.video_packets += s.packetsReceived; }
    else if (s.kind === 'audio') t.audio_packets += s.packetsReceived;
  }
  return t;
}

/** The same totals, gained between two samples stream by stream. */
export function rawGained(from, to) {
  const t = { video_frames: 0, video_packets: 0, audio_packets: 0 };
  for (const [id, s] of Object.entries(to?.raw ?? {})) {
    const b = from?.raw?.[id];
    const d = (field) => Math.max(0, s[field] - (b?.[field] ?? 0));
    if (s.kind === 'video') { t.video_frames += d('framesDecoded'); t.video_packets += d('packetsReceived'); }
    else if (s.kind === 'audio') t.audio_packets += d('packetsReceived');
  }
  return t;
}

/** Whether a page's media from `publisherId` is flowing: video frames and audio packets both rose since its previous sample. */
export function flowing(p, publisherId) {
  return gainedFrom(p.prev, p.snap, publisherId, 'video') > 0 && gainedFrom(p.prev, p.snap, publisherId, 'audio') > 0;
}

/** The zone of `participantId` as page p's roster shows it (null if not listed). */
export function zoneIn(p, participantId) {
  if (!p.snap) return null;
  return p.snap.roster.find((r) => r.id === participantId)?.zone ?? null;
}

/**
 * Run a host control in the page through window.qiao.control(); resolves with the control_ack, or
 * with {rejected: <the error object>} (the page catches the rejection itself).
 */
export async function controlIn(p, action, target, extra) {
  return withTimeout(p.page.evaluate(async ([a, t, x]) => window.qiao.control(a, t, x ?? {})
    .then((ack) => ack, (err) => ({ rejected: err })), [action, target, extra ?? null]), 10_000, `control ${action}`);
}
