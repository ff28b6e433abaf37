#!/usr/bin/env node
// A mediation with a private caucus (背对背调解) in real Chromium against the real server.
//
//   node caucus.mjs <artifact_dir> <mediator_join_url> <party_a_join_url> <party_b_join_url>
//
// The session has no lobby. Each page has its own browser context; every wait is bounded polling
// (POLL_MS) of window.qiao and of the page's own peer connections (lib.mjs sampleRoom), up to
// QIAO_BROWSER_TIMEOUT_MS (default 30 s) per step.
//
//  1. all_in_main   all three join; each decodes and hears both others (counters rising).
//  2. to_caucus     the mediator opens the roster (data-testid=roster-toggle) and moves party A to
//                   caucus:1 with A's move select (data-testid=move-<A>), then itself with
//                   window.qiao.control('move', <mediator>, {zone: 'caucus:1'}). Checks: both are in
//                   caucus:1 (their own pages and B's roster say so), A's and the mediator's pages
//                   show the caucus banner and B's does not, B's stage has no tile of either (its
//                   empty stage says the others are in a private room, not "waiting for others to
//                   join"), and A
//                   and the mediator decode and hear each other. Once B's receive counters have
//                   settled (frames already on their way), for a 2 s window B decodes no frame and
//                   receives no audio packet of the mediator or of A (window.qiao.stats(), and
//                   nothing at all on any of B's peer connections: B is alone in main), while A's
//                   frames of the mediator keep rising. B's attempt to move itself into caucus:1 is
//                   refused with `not_allowed`.
//  3. back_to_main  the mediator moves itself back with its own move select (move-<mediator>) and A
//                   with window.qiao.control('move', <A>, {zone: 'main'}): everyone in main, no
//                   banner, B has both tiles again and decodes and hears both, and they B.
//
// Saves <role>-<step>.png for each page after each step (<role>-failed.png on failure),
// page-<role>.console.log and result.json into artifact_dir (roles: mediator, a, b), and prints
// exactly one RESULT line:
//
//   RESULT {"ok":true,"steps":{"all_in_main":{"ms":…},"to_caucus":{…},"back_to_main":{…}},"pages":[…]}
//
// Exit status 0 exactly when ok. Diagnostics go to stderr. Join tokens are never printed.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  controlIn, flowing, gainedFrom, launchBrowser, makeLog, openPage, plain, pollUntil, printResult,
  rawGained, received, roomState, run, sampleRooms, screenshot, sleep, trackPeerConnections, withTimeout,
  writeConsoleLog, writeResultFile, zoneIn, POLL_MS,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const WINDOW_MS = 2_000;
const CAUCUS = 'caucus:1';
const log = makeLog('caucus');

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length !== 3) {
    printResult({ ok: false, pages: [], error: 'usage: node caucus.mjs <artifact_dir> <mediator_join_url> <party_a_join_url> <party_b_join_url>' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });

  const result = { ok: false, steps: {} };
  const browser = await launchBrowser(urls, TIMEOUT_MS);
  const pages = [];
  const shots = async (suffix) => {
    for (const p of pages) await screenshot(p, path.join(artifactDir, `${p.name}-${suffix}.png`), log);
  };
  let current = 'setup';
  try {
    for (const [i, name] of ['mediator', 'a', 'b'].entries()) {
      const p = await openPage(browser, name, urls[i]); // its console log is page-<role>.console.log
      p.name = name;
      await trackPeerConnections(p.page);
      pages.push(p);
    }
    const [mediator, a, b] = pages;
    const wait = (what, done, timeoutMs = TIMEOUT_MS) => pollUntil(pages, done, { timeoutMs, what });
    const step = async (name, fn) => {
      current = name;
      log(`step ${name}`);
      const t0 = Date.now();
      const out = await fn();
      result.steps[name] = { ms: Date.now() - t0, ...out };
      log(`step ${name}: ${JSON.stringify(result.steps[name])}`);
      await shots(name);
    };
    const id = (p) => p.snap?.participantId;
    const others = (p) => pages.filter((o) => o !== p);

    // ---- 1. everyone in main, seeing and hearing everyone ----------------------------------------
    await step('all_in_main', async () => {
      await Promise.all(pages.map((p) => p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS })));
      const ms = await wait('every page connected in main, decoding and hearing both others',
        () => pages.every((p) => p.snap?.state === 'connected' && p.snap.zone === 'main')
          && pages.every((p) => others(p).every((o) => flowing(p, id(o)) && p.snap.dom.tiles.includes(id(o)))));
      const firstFrame = (p) => {
        const t = p.snap.timing;
        return t.firstRemoteFrame !== null && t.joinStarted !== null ? Math.round(t.firstRemoteFrame - t.joinStarted) : null;
      };
      return { wait_ms: ms, first_frame_ms: Object.fromEntries(pages.map((p) => [p.name, firstFrame(p)])) };
    });

    // ---- 2. the mediator takes A into a private caucus --------------------------------------------
    await step('to_caucus', async () => {
      await mediator.page.click('[data-testid="roster-toggle"]', { timeout: 10_000 });
      const t0 = Date.now();
      await mediator.page.selectOption(`[data-testid="move-${id(a)}"]`, CAUCUS, { timeout: 10_000 });
      const ack = await controlIn(mediator, 'move', id(mediator), { zone: CAUCUS });
      if (ack?.type !== 'control_ack' || ack.action !== 'move') throw new Error(`the mediator's own move was not acknowledged: ${JSON.stringify(ack)}`);
      const inCaucus = (p) => p.snap?.zone === CAUCUS;
      const ms = await wait('mediator and A in caucus:1 (as they and B see it), banners on their pages, no tiles of them on B\'s, and A and the mediator decoding and hearing each other',
        () => inCaucus(mediator) && inCaucus(a) && b.snap.zone === 'main'
          && zoneIn(b, id(a)) === CAUCUS && zoneIn(b, id(mediator)) === CAUCUS
          && a.snap.dom.zone_banner === 'caucus' && mediator.snap.dom.zone_banner === 'caucus' && b.snap.dom.zone_banner === null
          && !b.snap.dom.tiles.includes(id(a)) && !b.snap.dom.tiles.includes(id(mediator))
          && b.snap.dom.stage_note === 'stage.others_private'
          && !b.snap.remote.includes(id(a)) && !b.snap.remote.includes(id(mediator))
          && flowing(a, id(mediator)) && flowing(mediator, id(a))
          && !a.snap.dom.tiles.includes(id(b)) && !mediator.snap.dom.tiles.includes(id(b)));
      const inCaucusMs = Date.now() - t0;
      // Frames already on their way may still reach B: wait (bounded) for two quiet samples in a row.
      let quiet = 0;
      const settleMs = await wait('B\'s receive counters settling', () => {
        const g = rawGained(b.prev, b.snap);
        quiet = g.video_frames + g.video_packets + g.audio_packets === 0 ? quiet + 1 : 0;
        return quiet >= 2;
      }, 10_000);
      const stopMs = Date.now() - t0;

      // A party may not move anyone, itself included: B cannot follow them in.
      const attempt = await controlIn(b, 'move', id(b), { zone: CAUCUS });

      // The 2 s window: nothing of the two reaches B; A keeps getting the mediator.
      await sampleRooms(pages);
      const first = new Map(pages.map((p) => [p, p.snap]));
      const problems = [];
      const t1 = Date.now();
      let samples = 1;
      while (Date.now() - t1 < WINDOW_MS) {
        await sleep(POLL_MS);
        await sampleRooms(pages);
        samples += 1;
        if (b.snap.zone !== 'main') problems.push(`B is in ${b.snap.zone}`);
        if ([id(a), id(mediator)].some((x) => b.snap.dom.tiles.includes(x))) problems.push(`B shows a tile of the caucus: ${b.snap.dom.tiles}`);
        if (!inCaucus(a) || !inCaucus(mediator)) problems.push(`the caucus broke up: A ${a.snap.zone}, mediator ${mediator.snap.zone}`);
      }
      const gained = (rx, tx, kind) => gainedFrom(first.get(rx), rx.snap, id(tx), kind);
      const bGot = {
        frames_of_mediator: gained(b, mediator, 'video'),
        frames_of_a: gained(b, a, 'video'),
        audio_packets_of_mediator: gained(b, mediator, 'audio'),
        audio_packets_of_a: gained(b, a, 'audio'),
        raw: rawGained(first.get(b), b.snap),
      };
      const caucusFlow = {
        a_frames_of_mediator: gained(a, mediator, 'video'),
        a_audio_packets_of_mediator: gained(a, mediator, 'audio'),
        mediator_frames_of_a: gained(mediator, a, 'video'),
        mediator_audio_packets_of_a: gained(mediator, a, 'audio'),
      };
      if ([bGot.frames_of_mediator, bGot.frames_of_a, bGot.audio_packets_of_mediator, bGot.audio_packets_of_a,
        ...Object.values(bGot.raw)].some((n) => n > 0)) {
        problems.push(`B received media while the others were in the caucus: ${JSON.stringify(bGot)}`);
      }
      if (Object.values(caucusFlow).some((n) => n === 0)) problems.push(`media inside the caucus stopped: ${JSON.stringify(caucusFlow)}`);
      if (problems.length) throw new Error(`over ${Date.now() - t1} ms: ${[...new Set(problems)].slice(0, 5).join('; ')}`);

      return {
        move_to_in_caucus_ms: inCaucusMs,
        move_to_b_quiet_ms: stopMs,
        wait_ms: ms,
        settle_ms: settleMs,
        zones: { mediator: mediator.snap.zone, a: a.snap.zone, b: b.snap.zone },
        zones_seen_by_b: { mediator: zoneIn(b, id(mediator)), a: zoneIn(b, id(a)) },
        banners: { mediator: mediator.snap.dom.zone_banner, a: a.snap.dom.zone_banner, b: b.snap.dom.zone_banner },
        b_tiles: b.snap.dom.tiles,
        b_stage_note: b.snap.dom.stage_note,
        b_frames_of_mediator_total: received(b.snap, id(mediator), 'video'),
        b_frames_of_a_total: received(b.snap, id(a), 'video'),
        // Whether the caucus's streams are still listed in B's stats (renegotiated away, or kept
        // and just no longer forwarded).
        b_still_lists_their_streams: b.snap.stats.videos.some((v) => [id(a), id(mediator)].includes(v.participant_id)),
        window: { ms: Date.now() - t1, samples, b_gained: bGot, caucus_gained: caucusFlow },
        b_move_attempt: attempt?.rejected ? { rejected: attempt.rejected.code } : { accepted: attempt },
      };
    });
    const attempt = result.steps.to_caucus.b_move_attempt;
    if (attempt.rejected !== 'not_allowed') throw new Error(`B's move into the caucus was not refused with not_allowed: ${JSON.stringify(attempt)}`);

    // ---- 3. back to main ---------------------------------------------------------------------------
    await step('back_to_main', async () => {
      const t0 = Date.now();
      await mediator.page.selectOption(`[data-testid="move-${id(mediator)}"]`, 'main', { timeout: 10_000 });
      const ack = await controlIn(mediator, 'move', id(a), { zone: 'main' });
      if (ack?.type !== 'control_ack' || ack.action !== 'move') throw new Error(`moving A back was not acknowledged: ${JSON.stringify(ack)}`);
      const ms = await wait('everyone in main again, no banners, all tiles back, everyone decoding and hearing everyone',
        () => pages.every((p) => p.snap?.zone === 'main' && p.snap.dom.zone_banner === null)
          && pages.every((p) => others(p).every((o) => flowing(p, id(o)) && p.snap.dom.tiles.includes(id(o)))));
      return {
        move_to_media_ms: Date.now() - t0,
        wait_ms: ms,
        zones: { mediator: mediator.snap.zone, a: a.snap.zone, b: b.snap.zone },
        b_tiles: b.snap.dom.tiles.length,
        b_frames_of_mediator_total: received(b.snap, id(mediator), 'video'),
        b_frames_of_a_total: received(b.snap, id(a), 'video'),
      };
    });

    result.ok = true;
    result.pages = summaries(pages, false);
    await finish(artifactDir, pages, result);
  } catch (err) {
    log(err.stack || String(err));
    result.ok = false;
    result.failed_step = current;
    result.error = `${current}: ${plain(err.message || err).slice(0, 1500)}`;
    await sampleRooms(pages).catch(() => {});
    result.pages = summaries(pages, true);
    for (const p of pages) await screenshot(p, path.join(artifactDir, `${p.name}-failed.png`), log);
    await finish(artifactDir, pages, result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

function summaries(pages, withDiagnostics) {
  return pages.map((p) => {
    const out = {
      role: p.name,
      participant_id: p.snap?.participantId ?? null,
      state: p.snap?.state ?? null,
      zone: p.snap?.zone ?? null,
      close_code: p.snap?.closeCode ?? null,
    };
    if (withDiagnostics) {
      out.now = roomState(p);
      out.roster = p.snap?.roster ?? [];
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

// Never hang the Rust test: a hard limit well beyond the bounded steps.
run(main, { watchdogMs: TIMEOUT_MS * 4 + 60_000, log });
