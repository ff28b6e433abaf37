#!/usr/bin/env node
// Automatic reconnection of the Qiao web client after a network drop, in real Chromium against the
// real server.
//
//   node reconnect.mjs <artifact_dir> <join_url_1> <join_url_2> <join_url_3>
//
// 1. Three pages join (each in its own browser context) and wait until each decodes video from and
//    receives audio from both others (bounded by QIAO_BROWSER_TIMEOUT_MS, default 30 s).
// 2. Page 2's network drops: page 2 reaches the server only through a loopback TCP relay
//    (lib.mjs TcpLink), and the relay resets every connection of page 2 (TCP RST both ways) and
//    refuses new ones for QIAO_DROP_MS (default 3000 ms, must stay well inside the server's 15 s
//    reconnect grace). The browser's own network stack reports the loss (ERR_CONNECTION_RESET,
//    WebSocket close 1006), so the client takes its real network-loss path; no test hook is used.
// 3. Checks: page 2's window.qiao.state goes to 'reconnecting'; pages 1 and 3 keep page 2's tile and
//    show it as reconnecting; page 2's media stops reaching them. Then the link is restored, and
//    page 2 must be 'connected' again with the same participantId, decode both others again and be
//    decoded by both again (framesDecoded and audio packetsReceived increasing between two samples
//    taken after the reconnection), with the reconnecting badge gone on pages 1 and 3.
//
// Saves page-<i>-before.png, page-<i>-during.png, page-<i>-after.png, page-<i>.console.log and
// result.json into artifact_dir and prints exactly one line to stdout:
//
//   RESULT {"ok":true,"reconnect_ms":4567,"since_restore_ms":1234,"drop":{…},"page2":{…},
//           "seen_by_others":[…],"pages":[…]}
//
// reconnect_ms is drop → everyone decoding again (it includes the drop itself); since_restore_ms
// is restore → everyone decoding again. Exit status 0 exactly when ok. Diagnostics go to stderr.
// Join URLs carry secrets (the token): they are never printed.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  POLL_MS, TcpLink, describeState, gotoAll, launchBrowser, makeLog, openPage, printResult,
  run, sampleAll, screenshot, sleep, summarise, withTimeout, writeConsoleLog,
  writeResultFile,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const DROP_MS = Number(process.env.QIAO_DROP_MS) || 3_000;
/** The server's default reconnect grace (docs/protocol.md); the drop must end well before it. */
const GRACE_MS = 15_000;
/** The client notices a reset socket at once; allow for a slow, loaded machine. */
const DETECT_LIMIT_MS = 10_000;
const DROPPED = 2; // url_index of the page whose network drops

const log = makeLog('reconnect');

/** What pages 1 and 3 show for page 2: is its tile there, and is its "reconnecting" badge shown? */
async function tileOf(p, participantId) {
  return withTimeout(p.page.evaluate((id) => {
    const tile = [...document.querySelectorAll('.tile')].find((t) => t.dataset.participantId === id);
    if (!tile) return { present: false, reconnecting: false };
    const badge = tile.querySelector('.tile-state');
    return { present: true, reconnecting: !!badge && !badge.hidden };
  }, participantId), 5_000, 'reading the tile').catch(() => null);
}

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length !== 3) {
    printResult({ ok: false, pages: [], error: 'usage: node reconnect.mjs <artifact_dir> <join_url_1> <join_url_2> <join_url_3>' });
    return;
  }
  if (!(DROP_MS > 0 && DROP_MS <= GRACE_MS - 7_000)) {
    printResult({ ok: false, pages: [], error: `QIAO_DROP_MS=${DROP_MS} must be between 1 and ${GRACE_MS - 7_000} (inside the reconnect grace)` });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });

  const target = new URL(urls[DROPPED - 1]);
  const link = new TcpLink(target.hostname.replace(/^\[|\]$/g, ''), Number(target.port) || (target.protocol === 'https:' ? 443 : 80));
  await link.listen();

  const result = { ok: false, drop: { method: 'tcp_reset', planned_ms: DROP_MS } };
  const browser = await launchBrowser(urls, TIMEOUT_MS);
  const pages = [];
  const shots = async (suffix) => {
    for (const p of pages) await screenshot(p, path.join(artifactDir, `page-${p.index}-${suffix}.png`), log);
  };
  try {
    for (const [i, url] of urls.entries()) {
      pages.push(await openPage(browser, i + 1, i + 1 === DROPPED ? link.rewrite(url) : url));
    }
    const dropped = pages[DROPPED - 1];
    const others = pages.filter((p) => p !== dropped);

    // ---- 1. everyone joins and decodes everyone -----------------------------------------------
    await gotoAll(pages, TIMEOUT_MS);
    log(`opened ${pages.length} pages (page ${DROPPED} through the relay); waiting for media`);
    const allDecoding = () => pages.every((p) => {
      const s = summarise(p.snap);
      return s.videos >= 2 && s.audios >= 2;
    });
    let deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      await sampleAll(pages);
      if (allDecoding() || Date.now() >= deadline || pages.some((p) => p.loadError)) break;
      await sleep(POLL_MS);
    }
    if (!allDecoding()) {
      return await fail(result, pages, `before the drop, not every page decoded both others within ${TIMEOUT_MS} ms`);
    }
    const participantId = dropped.snap.participantId;
    result.page2 = { url_index: DROPPED, participant_id: participantId, states: [dropped.snap.state] };
    await shots('before');

    // ---- 2. drop page 2's network ---------------------------------------------------------------
    const seen = new Map(others.map((p) => [p, { url_index: p.index, tile_kept: true, reconnecting_badge_seen: false }]));
    const noteState = () => {
      const st = dropped.snap?.state;
      const list = result.page2.states;
      if (st && list[list.length - 1] !== st) list.push(st);
    };
    /** Sample all pages and what pages 1 and 3 show for page 2. */
    const observe = async () => {
      await sampleAll(pages);
      noteState();
      await Promise.all(others.map(async (p) => {
        const tile = await tileOf(p, participantId);
        p.tile = tile;
        if (!tile) return;
        const s = seen.get(p);
        if (!tile.present) s.tile_kept = false;
        if (tile.reconnecting) s.reconnecting_badge_seen = true;
      }));
    };

    const consoleBefore = dropped.consoleLog.length;
    const tDrop = Date.now();
    result.drop.connections_reset = link.cut();
    log(`dropped page ${DROPPED}'s network (${result.drop.connections_reset} connections reset)`);

    // Page 2 notices, and the others see it as reconnecting (not gone).
    deadline = tDrop + DETECT_LIMIT_MS;
    let detected = false;
    for (;;) {
      await observe();
      detected = dropped.snap?.state === 'reconnecting' && others.every((p) => p.tile?.reconnecting);
      if (detected || Date.now() >= deadline) break;
      await sleep(POLL_MS);
    }
    result.page2.detect_ms = Date.now() - tDrop;
    if (!detected) {
      link.restore();
      return await fail(result, pages, `within ${DETECT_LIMIT_MS} ms of the drop, page ${DROPPED} was '${dropped.snap?.state}' and pages ${others.map((p) => p.index).join(', ')} showed it as reconnecting: ${others.map((p) => JSON.stringify(p.tile)).join(', ')}`);
    }
    await shots('during');

    // Hold the drop for its planned duration (the one fixed wait), still watching: page 2's media
    // must stop reaching the others, and no page may drop page 2's tile.
    let frozenFrom = null; // the others' samples one second into the drop
    while (Date.now() < tDrop + DROP_MS) {
      await sleep(Math.min(POLL_MS, Math.max(0, tDrop + DROP_MS - Date.now())));
      await observe();
      if (!frozenFrom && Date.now() >= tDrop + 1_000) frozenFrom = new Map(others.map((p) => [p, p.snap]));
    }
    for (const p of others) {
      seen.get(p).frames_of_page2_during_drop = frozenFrom ? gained(frozenFrom.get(p), p.snap, participantId, 'videos') : null;
    }
    link.restore();
    const tRestore = Date.now();
    result.drop.held_ms = tRestore - tDrop;
    result.drop.new_connections_refused = link.refused;
    // Every "signalling closed …; reconnecting" after the first (the drop itself) is a refused retry.
    result.page2.failed_reconnect_attempts = Math.max(0, dropped.consoleLog.slice(consoleBefore)
      .filter((l) => /signalling closed \d+ .*reconnecting/.test(l)).length - 1);
    log(`restored page ${DROPPED}'s network after ${result.drop.held_ms} ms`);

    // ---- 3. page 2 comes back, and media flows both ways again ------------------------------------
    // "Decoding again" = counts rising between two samples both taken after page 2 is back.
    let prev = null; // per page: its previous sample taken after page 2 was back
    let tConnected = null;
    let back = false;
    const rising = (from, to, id) => gained(from, to, id, 'videos') > 0 && gained(from, to, id, 'audios') > 0;
    deadline = tRestore + TIMEOUT_MS;
    for (;;) {
      await observe();
      const connected = dropped.snap?.state === 'connected';
      if (connected && tConnected === null) tConnected = Date.now();
      if (connected) {
        const cur = new Map(pages.map((p) => [p, p.snap]));
        if (prev) {
          const othersIds = others.map((p) => p.snap?.participantId);
          const page2Decodes = othersIds.every((id) => id && rising(prev.get(dropped), cur.get(dropped), id));
          const othersDecode = others.every((p) => rising(prev.get(p), cur.get(p), participantId));
          const badgesGone = others.every((p) => p.tile?.present && !p.tile.reconnecting);
          back = page2Decodes && othersDecode && badgesGone;
        }
        prev = cur;
      }
      if (back || Date.now() >= deadline) break;
      await sleep(POLL_MS);
    }
    const tBack = Date.now();
    result.page2.participant_id_after = dropped.snap?.participantId ?? null;
    result.page2.same_participant = result.page2.participant_id_after === participantId;
    result.page2.connected_ms = tConnected === null ? null : tConnected - tDrop;
    result.seen_by_others = others.map((p) => ({ ...seen.get(p), reconnecting_badge_cleared: !!(p.tile?.present && !p.tile.reconnecting) }));
    await shots('after');

    const problems = [];
    if (!back) problems.push(`within ${TIMEOUT_MS} ms of the restore, media did not flow both ways again`);
    if (!result.page2.same_participant) problems.push(`page ${DROPPED} came back as ${result.page2.participant_id_after}, not ${participantId}`);
    const bad = result.page2.states.filter((s) => !['connected', 'reconnecting'].includes(s));
    if (bad.length) problems.push(`page ${DROPPED} went through state(s) ${bad.join(', ')}`);
    for (const s of result.seen_by_others) {
      if (!s.tile_kept) problems.push(`page ${s.url_index} dropped page ${DROPPED}'s tile during the drop`);
      if (s.frames_of_page2_during_drop > 0) problems.push(`page ${s.url_index} still decoded ${s.frames_of_page2_during_drop} frames of page ${DROPPED} during the drop`);
    }
    if (problems.length) return await fail(result, pages, problems.join('; '));

    result.ok = true;
    result.reconnect_ms = tBack - tDrop;
    result.since_restore_ms = tBack - tRestore;
    result.pages = pageSummaries(pages, false);
    log(`page ${DROPPED} reconnected: drop → decoding again ${result.reconnect_ms} ms (restore → decoding again ${result.since_restore_ms} ms)`);
    await finish(artifactDir, pages, result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
    await link.close().catch(() => {});
  }

  async function fail(res, pagesNow, error) {
    res.ok = false;
    res.error = error;
    res.pages = pageSummaries(pagesNow, true);
    await shots('failed');
    await finish(artifactDir, pagesNow, res);
  }
}

/**
 * What a page has received from one publisher so far, summed over that publisher's tracks: video
 * frames decoded (kind 'videos') or audio packets received ('audios'). Totals, not per track: after
 * a reconnection a reused transceiver can report an old and a new stream under one track id.
 */
function total(snap, publisherId, kind) {
  const field = kind === 'videos' ? 'framesDecoded' : 'packetsReceived';
  return (snap?.stats[kind] ?? []).filter((s) => s.participant_id === publisherId).reduce((sum, s) => sum + s[field], 0);
}

/** How much more a later sample has than an earlier one (0 if less: statistics of a removed track went away). */
function gained(from, to, publisherId, kind) {
  return Math.max(0, total(to, publisherId, kind) - total(from, publisherId, kind));
}

function pageSummaries(pages, withDiagnostics) {
  return pages.map((p) => {
    const s = summarise(p.snap);
    const out = {
      url_index: p.index,
      participant_id: p.snap?.participantId ?? null,
      remote_videos_decoding: s.videos,
      remote_audios_receiving: s.audios,
      state: describeState(p),
    };
    if (p.snap?.closeCode) out.close_code = p.snap.closeCode;
    if (withDiagnostics) {
      out.remote_participants = p.snap?.remote ?? [];
      out.console_errors = p.consoleErrors.slice(0, 20);
    }
    return out;
  });
}

async function finish(artifactDir, pages, result) {
  for (const p of pages) await writeConsoleLog(p, artifactDir);
  await writeResultFile(artifactDir, result);
  printResult(result);
}

// Never hang the Rust test: a hard limit well beyond the three bounded waits and the drop.
run(main, { watchdogMs: TIMEOUT_MS * 3 + DETECT_LIMIT_MS + DROP_MS + 60_000, log });
