#!/usr/bin/env node
// End-to-end media check of the Qiao web client with N headless Chromium participants.
//
//   node three_party.mjs <artifact_dir> <join_url_1> <join_url_2> <join_url_3> [...]
//
// Opens every join link (with &autojoin=1) in its own browser context of one Chromium, waits until
// every page decodes video from and receives audio packets from each of the other N-1
// participants (polling window.qiao.stats() every 250 ms, up to QIAO_BROWSER_TIMEOUT_MS, default
// 30 s), saves page-<i>.png (and page-<i>.console.log) into artifact_dir, and prints exactly one
// line to stdout:
//
//   RESULT {"ok":true,"pages":[{"url_index":1,"remote_videos_decoding":2,"remote_audios_receiving":2,
//                               "first_frame_ms":1234,"state":"connected"}, …]}
//
// url_index is 1-based, like the screenshot names. On failure the result also has "error" and,
// per page, "console_errors", "remote_participants" and (if the server stopped the page)
// "close_code". Exit status 0 when ok, 1 otherwise. Diagnostics go to stderr.
// Join URLs carry secrets (the token): they are never printed.

import { chromium } from 'playwright-core';
import fs from 'node:fs/promises';
import path from 'node:path';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const POLL_MS = 250;
const EVALUATE_LIMIT_MS = 5_000;

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--use-fake-device-for-media-stream', // synthetic camera (test pattern) and microphone (beeps)
  '--use-fake-ui-for-media-stream', // no permission prompt
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--allow-loopback-in-peer-connection', // the server under test listens on 127.0.0.1
  '--autoplay-policy=no-user-gesture-required', // remote audio plays without a click
];

/** Join tokens are credentials: keep them out of everything we print or save. */
const redact = (text) => String(text).replace(/token=[^&\s"'\\]+/g, 'token=<redacted>');
const plain = (text) => String(text).replace(/\u001b\[[0-9;]*m/g, '');

let resultPrinted = false;
function printResult(result) {
  if (resultPrinted) return;
  resultPrinted = true;
  process.stdout.write(`RESULT ${redact(JSON.stringify(result))}\n`);
  process.exitCode = result.ok ? 0 : 1;
}

const log = (...args) => console.error('[three_party]', ...args.map(redact));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
  ]);
}

/** Append autojoin=1 to the fragment without re-encoding the token. */
function withAutojoin(url) {
  return url.includes('#') ? `${url}&autojoin=1` : `${url}#autojoin=1`;
}

/** getUserMedia needs a secure context; plain http is only one on loopback addresses. */
function insecureOrigins(urls) {
  const origins = new Set();
  for (const u of urls) {
    const url = new URL(u);
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname) || url.hostname.endsWith('.localhost');
    if (url.protocol === 'http:' && !loopback) origins.add(url.origin);
  }
  return [...origins];
}

/** Read the page's test hook (web-client/app.js: window.qiao). */
async function sample(page) {
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

function summarise(snap) {
  if (!snap) return { videos: 0, audios: 0 };
  const distinct = (list, pred) => new Set(list.filter(pred).map((s) => s.participant_id)).size;
  return {
    videos: distinct(snap.stats.videos, (v) => v.framesDecoded > 0),
    audios: distinct(snap.stats.audios, (a) => a.packetsReceived > 0),
  };
}

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length < 2) {
    printResult({ ok: false, pages: [], error: 'usage: node three_party.mjs <artifact_dir> <join_url_1> <join_url_2> [<join_url_3> ...]' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });
  const expected = urls.length - 1;

  const args = [...CHROMIUM_ARGS];
  const insecure = insecureOrigins(urls);
  if (insecure.length) args.push(`--unsafely-treat-insecure-origin-as-secure=${insecure.join(',')}`);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    timeout: TIMEOUT_MS,
  });
  const pages = [];
  try {
    for (const [i, url] of urls.entries()) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 960, height: 600 } });
      await context.grantPermissions(['camera', 'microphone']);
      const page = await context.newPage();
      const p = { index: i + 1, url: withAutojoin(url), page, consoleErrors: [], consoleLog: [], snap: null, polledFirstFrameMs: null };
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
      pages.push(p);
    }

    // Open all pages at once, as people arriving for a hearing would.
    await Promise.all(pages.map((p) => p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS })
      .catch((err) => { p.loadError = plain(err.message).split('\n')[0]; })));
    log(`opened ${pages.length} pages; waiting for media`);

    const deadline = Date.now() + TIMEOUT_MS;
    let allGood = false;
    while (!allGood) {
      await Promise.all(pages.map(async (p) => {
        try {
          p.snap = await withTimeout(sample(p.page), EVALUATE_LIMIT_MS, 'reading window.qiao');
        } catch (err) {
          p.sampleError = err.message;
          return;
        }
        const s = p.snap && summarise(p.snap);
        if (s && s.videos > 0 && p.polledFirstFrameMs === null && p.snap.timing.joinStarted !== null) {
          p.polledFirstFrameMs = Math.round(p.snap.now - p.snap.timing.joinStarted);
        }
      }));
      allGood = pages.every((p) => {
        const s = summarise(p.snap);
        return s.videos >= expected && s.audios >= expected;
      });
      if (allGood || Date.now() >= deadline || pages.some((p) => p.loadError)) break;
      await sleep(POLL_MS);
    }

    for (const p of pages) {
      try {
        await withTimeout(p.page.screenshot({ path: path.join(artifactDir, `page-${p.index}.png`) }), 10_000, 'screenshot');
      } catch (err) {
        log(`page ${p.index}: screenshot failed: ${err.message}`);
      }
      await fs.writeFile(path.join(artifactDir, `page-${p.index}.console.log`), redact(p.consoleLog.join('\n')) + '\n').catch(() => {});
    }

    const result = {
      ok: allGood,
      pages: pages.map((p) => {
        const s = summarise(p.snap);
        const t = p.snap?.timing;
        // Prefer the page's own first-frame time (requestVideoFrameCallback); else our poll's.
        const pageMs = t && t.firstRemoteFrame !== null && t.joinStarted !== null
          ? Math.round(t.firstRemoteFrame - t.joinStarted) : null;
        const out = {
          url_index: p.index,
          participant_id: p.snap?.participantId ?? null,
          remote_videos_decoding: s.videos,
          remote_audios_receiving: s.audios,
          first_frame_ms: pageMs ?? p.polledFirstFrameMs,
          state: p.loadError ? `load failed: ${p.loadError}`
            : p.snap ? p.snap.state : (p.sampleError ? `unreadable: ${p.sampleError}` : 'no window.qiao'),
        };
        if (p.snap?.closeCode) out.close_code = p.snap.closeCode; // why the server stopped this page
        if (!allGood) {
          out.remote_participants = p.snap?.remote ?? [];
          out.console_errors = p.consoleErrors.slice(0, 20);
        }
        return out;
      }),
    };
    if (!allGood) {
      const short = result.pages
        .filter((r) => r.remote_videos_decoding < expected || r.remote_audios_receiving < expected)
        .map((r) => `page ${r.url_index} (${r.state}): ${r.remote_videos_decoding}/${expected} videos, ${r.remote_audios_receiving}/${expected} audios`);
      const why = pages.some((p) => p.loadError) ? 'a page failed to load' : `timed out after ${TIMEOUT_MS} ms`;
      result.error = `${why}: ${short.join('; ')}`;
    }
    await fs.writeFile(path.join(artifactDir, 'result.json'), redact(JSON.stringify(result, null, 2)) + '\n').catch(() => {});
    printResult(result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

// Never hang the Rust test: a hard limit well beyond the media wait.
const watchdog = setTimeout(() => {
  printResult({ ok: false, pages: [], error: 'watchdog: the script did not finish in time' });
  process.exit(1);
}, TIMEOUT_MS * 2 + 60_000);

main()
  .catch((err) => {
    log(err.stack || String(err));
    printResult({ ok: false, pages: [], error: plain(err.message || err).slice(0, 1000) });
  })
  .finally(() => {
    clearTimeout(watchdog);
    // Leftover handles (a stuck browser) must not keep the process alive.
    setTimeout(() => process.exit(process.exitCode ?? 1), 2_000).unref();
  });
