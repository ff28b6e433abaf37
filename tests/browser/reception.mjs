#!/usr/bin/env node
// A three-level petition reception (三级联动接访) in real Chromium against the real server: the
// county and the township petition officers in one county reception with a lobby, two petitioners
// queueing, 叫号 (call next), a petitioner handed to the township office's own reception, and a
// village station admitted from the queue panel.
//
//   node reception.mjs <artifact_dir> <county_officer_url> <township_officer_url> <village_url>
//                      <petitioner_1_url> <petitioner_2_url>
//
// The county session must have a lobby. Each page has its own browser context; every wait is
// bounded polling of window.qiao, the page's own peer connections (lib.mjs sampleRoom) and the
// queue panel / waiting screen, up to QIAO_BROWSER_TIMEOUT_MS (default 30 s) per step.
//
//  1. officers_join     both officers open their links: connected in `main`, decoding each other.
//  2. queue             petitioner 1 opens its link, then petitioner 2: both in the lobby, their
//                       waiting screens say positions 1 and 2 (您前面还有 0 / 1 人); the county
//                       officer's queue panel lists them in that order, petitioner 2 with its group.
//  3. call_next         the county officer clicks 叫号 (data-testid=call-next): petitioner 1 is in
//                       `main` and decodes both officers' video; petitioner 2's screen says position 1.
//  4. transfer          PHASE {"phase":"transfer","participant_id":…}: the driver hands petitioner 2
//                       to the township session (REST). Its page shows the "transferred" card with
//                       close code 4016 and no error, follows the new link by itself and ends up in
//                       the township session's lobby (another session id, position 1).
//  5. village_admit     the village station opens its link (lobby, position 1) and the county
//                       officer admits it with the row's 准入 button: it decodes both officers.
//
// Saves <page>-<step>.png for each open page after each step (<page>-failed.png on failure),
// officer-queue-panel.png (the panel with both petitioners), petitioner2-transferred-card.png,
// page-<name>.console.log and result.json into artifact_dir, and prints exactly one RESULT line.
// Exit status 0 exactly when ok. Diagnostics go to stderr. Join tokens are never printed.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  EVALUATE_LIMIT_MS, POLL_MS, flowing, launchBrowser, makeLog, openPage, plain, printResult, received,
  roomState, run, sampleRooms, screenshot, sleep, trackPeerConnections, withTimeout, writeConsoleLog,
  writeResultFile,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const NAMES = ['county_officer', 'township_officer', 'village', 'petitioner1', 'petitioner2'];
const log = makeLog('reception');

/** What the reception pages show beyond window.qiao: the queue panel and the waiting screen's place. */
async function probe(page) {
  return page.evaluate(() => {
    const shown = (el) => !!el && !el.hidden && !el.closest('[hidden]');
    const panel = document.getElementById('queue-panel');
    const place = document.getElementById('waiting-queue');
    const endTitle = document.getElementById('end-title');
    return {
      queue_panel: shown(panel),
      queue_rows: shown(panel) ? [...panel.querySelectorAll('.queue-row')].map((r) => ({
        id: r.dataset.participantId,
        position: Number(r.dataset.queuePosition),
        group: r.querySelector('.chip.group')?.textContent ?? null,
        text: r.textContent,
      })) : [],
      call_next_text: shown(panel) ? document.getElementById('call-next-btn').textContent : null,
      waiting_place: shown(place) ? { position: Number(place.dataset.queuePosition), text: place.textContent } : null,
      transferred_card: document.body.dataset.transferred === 'true' && shown(endTitle)
        ? { title_key: endTitle.dataset.i18n, title: endTitle.textContent, body: document.getElementById('end-body').textContent }
        : null,
      session: window.qiao?.session() ?? null,
      transfer: window.qiao?.transfer ?? null,
      href_has_transferred: /[#&]transferred=1/.test(location.hash),
    };
  });
}

/** sampleRooms plus probe() on every page (bounded); a page navigating away keeps its last sample. */
async function sampleAll(pages) {
  await sampleRooms(pages);
  await Promise.all(pages.map(async (p) => {
    try {
      p.view = await withTimeout(probe(p.page), EVALUATE_LIMIT_MS, 'probing the page');
    } catch (err) {
      p.probeError = err.message;
    }
  }));
}

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length !== NAMES.length) {
    printResult({ ok: false, pages: [], error: `usage: node reception.mjs <artifact_dir> ${NAMES.map((n) => `<${n}_url>`).join(' ')}` });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });

  const result = { ok: false, steps: {} };
  const browser = await launchBrowser(urls, TIMEOUT_MS);
  const pages = [];
  const shots = async (suffix) => {
    for (const p of pages) if (p.opened) await screenshot(p, path.join(artifactDir, `${p.name}-${suffix}.png`), log);
  };
  let current = 'setup';
  try {
    for (const [i, name] of NAMES.entries()) {
      const p = await openPage(browser, name, urls[i]);
      p.name = name;
      await trackPeerConnections(p.page);
      pages.push(p);
    }
    const [county, township, village, pet1, pet2] = pages;
    const open = async (p) => {
      p.opened = true;
      await p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS });
    };
    const live = () => pages.filter((p) => p.opened);
    const wait = async (what, done, timeoutMs = TIMEOUT_MS) => {
      const t0 = Date.now();
      for (;;) {
        await sampleAll(live());
        if (done()) return Date.now() - t0;
        if (Date.now() - t0 >= timeoutMs) {
          const detail = live().map((p) => `${p.name}: ${roomState(p)} ${JSON.stringify({ ...p.view, session: undefined })}`).join('; ');
          throw new Error(`${what}: not within ${timeoutMs} ms (${detail})`);
        }
        await sleep(POLL_MS);
      }
    };
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
    const inLobbyAt = (p, position) => p.snap?.state === 'connected' && p.snap.zone === 'lobby' && p.snap.dom.waiting_card
      && p.view?.waiting_place?.position === position;

    // ---- 1. both officers straight into main ------------------------------------------------------
    await step('officers_join', async () => {
      await Promise.all([open(county), open(township)]);
      const ms = await wait('both officers connected in main, decoding each other',
        () => [county, township].every((p) => p.snap?.state === 'connected' && p.snap.zone === 'main')
          && flowing(county, id(township)) && flowing(township, id(county)));
      return { wait_ms: ms, queue_panel_shown: county.view.queue_panel };
    });
    if (result.steps.officers_join.queue_panel_shown) throw new Error('the queue panel shows while nobody waits');

    // ---- 2. two petitioners queue ---------------------------------------------------------------
    await step('queue', async () => {
      await open(pet1);
      await wait('petitioner 1 in the lobby at position 1', () => inLobbyAt(pet1, 1));
      await open(pet2);
      const ms = await wait('petitioner 2 at position 2, and the county officer\'s queue panel listing both in order',
        () => inLobbyAt(pet1, 1) && inLobbyAt(pet2, 2)
          && county.view?.queue_panel && county.view.queue_rows.map((r) => r.id).join() === [id(pet1), id(pet2)].join()
          && township.view?.queue_panel);
      // Element shots of the two things this test is about.
      await withTimeout(county.page.locator('#queue-panel').screenshot({ path: path.join(artifactDir, 'officer-queue-panel.png') }), 10_000, 'panel shot')
        .catch((err) => log(`panel screenshot: ${err.message}`));
      return {
        wait_ms: ms,
        petitioner1_place: pet1.view.waiting_place,
        petitioner2_place: pet2.view.waiting_place,
        petitioner2_waiting_title: await pet2.page.textContent('#waiting-title'),
        queue_rows: county.view.queue_rows.map(({ id: rid, position, group }) => ({ id: rid, position, group })),
        call_next_text: county.view.call_next_text,
        petitioner_roster_queue_positions: county.snap.roster.filter((r) => r.zone === 'lobby').map((r) => [r.id, r.queue_position, r.group]),
        lobby_raw_frames: pet2.snap.stats.videos.length,
      };
    });

    // ---- 3. 叫号: the first in the queue comes in ---------------------------------------------------
    await step('call_next', async () => {
      await county.page.click('[data-testid="call-next"]', { timeout: 10_000 });
      const clicked = Date.now();
      const ms = await wait('petitioner 1 in main decoding both officers, petitioner 2 now at position 1, one row left in the panel',
        () => pet1.snap?.zone === 'main' && flowing(pet1, id(county)) && flowing(pet1, id(township))
          && flowing(county, id(pet1)) && inLobbyAt(pet2, 1)
          && county.view?.queue_rows.map((r) => r.id).join() === id(pet2));
      return {
        call_to_media_ms: Date.now() - clicked,
        wait_ms: ms,
        petitioner1_zone: pet1.snap.zone,
        petitioner1_frames_of_county: received(pet1.snap, id(county), 'video'),
        petitioner1_frames_of_township: received(pet1.snap, id(township), 'video'),
        petitioner2_place: pet2.view.waiting_place,
        queue_rows: county.view.queue_rows.map(({ id: rid, position }) => ({ id: rid, position })),
      };
    });

    // ---- 4. petitioner 2 handed to the township office's reception ------------------------------
    await step('transfer', async () => {
      const before = pet2.view.session.id;
      const pid = id(pet2);
      process.stdout.write(`PHASE ${JSON.stringify({ phase: 'transfer', participant_id: pid })}\n`);
      const t0 = Date.now();
      // The card and the 4016 last about 1.5 s before the page opens the new link: watch closely.
      let card = null;
      let closeCode = null;
      let endedWithError = null;
      while (Date.now() - t0 < TIMEOUT_MS && !pet2.view?.href_has_transferred) {
        try {
          const v = await withTimeout(probe(pet2.page), EVALUATE_LIMIT_MS, 'probing petitioner 2');
          pet2.view = v;
          const code = await pet2.page.evaluate(() => window.qiao.closeCode);
          if (v.transferred_card && !card) {
            card = v.transferred_card;
            await screenshot(pet2, path.join(artifactDir, 'petitioner2-transferred-card.png'), log);
          }
          if (code !== null) closeCode ??= code;
          const endTitleKey = await pet2.page.evaluate(() => document.getElementById('end-title').dataset.i18n ?? null);
          if (code !== null && endTitleKey && endTitleKey !== 'transfer.title') endedWithError ??= endTitleKey;
        } catch { /* navigating */ }
        await sleep(80);
      }
      const ms = await wait('petitioner 2 in the township session\'s lobby (a new session id), at position 1',
        () => inLobbyAt(pet2, 1) && pet2.view.session?.id && pet2.view.session.id !== before
          && !county.snap.roster.some((r) => r.id === pid));
      return {
        wait_ms: ms,
        phase_to_new_lobby_ms: Date.now() - t0,
        card,
        close_code_before_leaving: closeCode,
        ended_with_error: endedWithError,
        from_session: before,
        to_session: pet2.view.session.id,
        new_participant_id: id(pet2),
        petitioner2_place: pet2.view.waiting_place,
        console_errors: pet2.consoleErrors.slice(0, 10),
      };
    });
    const tr = result.steps.transfer;
    if (!tr.card || tr.card.title_key !== 'transfer.title') throw new Error(`the transferred card was not shown: ${JSON.stringify(tr)}`);
    if (tr.ended_with_error) throw new Error(`petitioner 2's page showed an end screen other than the transfer: ${tr.ended_with_error}`);

    // ---- 5. the village station, admitted from its queue row ------------------------------------
    await step('village_admit', async () => {
      await open(village);
      await wait('the village station in the lobby at position 1, listed in the county officer\'s queue',
        () => inLobbyAt(village, 1) && county.view?.queue_rows.some((r) => r.id === id(village)));
      await county.page.click(`[data-testid="queue-admit-${id(village)}"]`, { timeout: 10_000 });
      const ms = await wait('the village station in main, decoding both officers; the queue panel gone',
        () => village.snap?.zone === 'main' && flowing(village, id(county)) && flowing(village, id(township))
          && county.view && !county.view.queue_panel);
      return { wait_ms: ms, village_zone: village.snap.zone, county_tiles: county.snap.dom.tiles.length };
    });

    result.ok = true;
    result.participants = Object.fromEntries(pages.map((p) => [p.name, id(p) ?? null]));
    result.pages = summaries(pages, false);
    await finish(artifactDir, pages, result);
  } catch (err) {
    log(err.stack || String(err));
    result.ok = false;
    result.failed_step = current;
    result.error = `${current}: ${plain(err.message || err).slice(0, 2000)}`;
    await sampleAll(pages.filter((p) => p.opened)).catch(() => {});
    result.pages = summaries(pages, true);
    for (const p of pages) if (p.opened) await screenshot(p, path.join(artifactDir, `${p.name}-failed.png`), log);
    await finish(artifactDir, pages, result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

function summaries(pages, withDiagnostics) {
  return pages.map((p) => {
    const out = {
      name: p.name,
      participant_id: p.snap?.participantId ?? null,
      opened: !!p.opened,
      state: p.snap?.state ?? null,
      zone: p.snap?.zone ?? null,
      close_code: p.snap?.closeCode ?? null,
    };
    if (withDiagnostics) {
      out.now = roomState(p);
      out.view = p.view ?? null;
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

// Never hang the Rust test: a hard limit well beyond the five bounded steps.
run(main, { watchdogMs: TIMEOUT_MS * 8 + 90_000, log });
