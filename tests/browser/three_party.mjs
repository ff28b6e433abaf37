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
// Join URLs carry secrets (the token): they are never printed. QIAO_HOLD_MS keeps the pages in the
// session that much longer once media flows (for a recording with some seconds in it).
// Shared helpers live in lib.mjs.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  POLL_MS, describeState, gotoAll, launchBrowser, makeLog, openPage, printResult, run, sampleAll,
  screenshot, sleep, summarise, withTimeout, writeConsoleLog, writeResultFile,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
// How long the pages stay in the session once media flows (default 0): a test that needs some
// seconds of recording (tests/browser_recordings.rs) asks for it. At most 20 s.
const HOLD_MS = Math.min(Number(process.env.QIAO_HOLD_MS) || 0, 20_000);
const log = makeLog('three_party');

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length < 2) {
    printResult({ ok: false, pages: [], error: 'usage: node three_party.mjs <artifact_dir> <join_url_1> <join_url_2> [<join_url_3> ...]' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });
  const expected = urls.length - 1;

  const browser = await launchBrowser(urls, TIMEOUT_MS);
  const pages = [];
  try {
    for (const [i, url] of urls.entries()) {
      const p = await openPage(browser, i + 1, url);
      p.polledFirstFrameMs = null;
      pages.push(p);
    }

    await gotoAll(pages, TIMEOUT_MS);
    log(`opened ${pages.length} pages; waiting for media`);

    const deadline = Date.now() + TIMEOUT_MS;
    let allGood = false;
    while (!allGood) {
      await sampleAll(pages);
      for (const p of pages) {
        const s = p.snap && summarise(p.snap);
        if (s && s.videos > 0 && p.polledFirstFrameMs === null && p.snap.timing.joinStarted !== null) {
          p.polledFirstFrameMs = Math.round(p.snap.now - p.snap.timing.joinStarted);
        }
      }
      allGood = pages.every((p) => {
        const s = summarise(p.snap);
        return s.videos >= expected && s.audios >= expected;
      });
      if (allGood || Date.now() >= deadline || pages.some((p) => p.loadError)) break;
      await sleep(POLL_MS);
    }
    if (allGood && HOLD_MS > 0) {
      log(`media flowing; staying in the session for ${HOLD_MS} ms`);
      await sleep(HOLD_MS);
    }

    for (const p of pages) {
      await screenshot(p, path.join(artifactDir, `page-${p.index}.png`), log);
      await writeConsoleLog(p, artifactDir);
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
          state: describeState(p),
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
    await writeResultFile(artifactDir, result);
    printResult(result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

// Never hang the Rust test: a hard limit well beyond the media wait.
run(main, { watchdogMs: TIMEOUT_MS * 2 + 60_000, log });
