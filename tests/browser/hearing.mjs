#!/usr/bin/env node
// A full remote hearing (网上开庭) in real Chromium against the real server: lobby, admission, a
// witness waiting, called and dismissed, the recording paused for a recess and resumed from the
// judge's console, and the session closed with the recording's integrity value on every page.
//
//   node hearing.mjs <artifact_dir> <judge_join_url> <party_join_url> <witness_join_url>
//
// The session must have a lobby (TestServer::create_session_with_lobby). Each page has its own
// browser context; every wait is bounded polling (POLL_MS) of window.qiao and of the page's own
// peer connections (lib.mjs sampleRoom), up to QIAO_BROWSER_TIMEOUT_MS (default 30 s) per step.
//
//  1. judge_joins      the judge opens its link: connected, zone `main`, the recording indicator
//                      (● 录音录像中, state `recording`) in its top bar.
//  2. party_in_lobby   the party opens its link: zone `lobby`, the waiting card and the recording
//                      indicator shown, and for a
//                      2 s window nothing received at all (no frame decoded, no audio packet, on any
//                      of its peer connections), and nothing by the judge either (alone in main);
//                      the judge's roster button shows someone waiting.
//  3. admit            the judge opens the roster (data-testid=roster-toggle) and clicks
//                      `admit-<party>`: the party is in `main`, and judge and party decode each
//                      other's video and receive each other's audio (counters rising).
//  4. witness_waiting  the witness opens its link: zone `witness_waiting`, waiting card (and the
//                      recording indicator), and for a
//                      2 s window zero frames decoded and zero audio packets from anyone, while
//                      judge and party keep decoding each other and get nothing of the witness. The
//                      party's attempt to call the witness (window.qiao.control) is refused with
//                      `not_allowed`.
//  5. call_witness     the judge clicks `call-<witness>` in the roster: the witness is in `main`
//                      and decodes (and hears) the judge and the party, and they decode it.
//  6. dismiss_witness  window.qiao.control('dismiss_witness', <witness>) on the judge's page: the
//                      witness is back in `witness_waiting` with the waiting card; once its
//                      counters have settled, for a 2 s window it decodes no more frames of the judge
//                      (or of anyone) and receives no audio, while judge and party go on.
//  7. pause_recording  every page first shows ● 录音录像中 (window.qiao.recording.state
//                      `recording`); the party has no pause button and its attempt through
//                      window.qiao.control is refused with `not_allowed`; the judge's attempt with
//                      a reason the rules do not know (`lunch`) is refused with `bad_reason`. Then
//                      the judge presses 暂停录像 (data-testid=recording-control): a dialog asks for
//                      the statutory reason, its confirm button disabled until one is chosen; the
//                      judge chooses 休庭 (recess) and confirms. Every page, the witness waiting
//                      outside included, then shows 录音录像已暂停（休庭） (state `paused`, cause
//                      `recess`), the judge's button offers 恢复录像, and judge and party still see
//                      and hear each other (a pause stops the recording, not the hearing).
//  8. resume_recording the judge presses 恢复录像: every page shows ● 录音录像中 again.
//  9. close            the script prints `PHASE {"phase":"close_session"}` on stdout; its driver
//                      (tests/browser_hearing.rs) closes the session through the REST API
//                      (POST /api/v1/sessions/{id}/close with the admin token, which this script
//                      never sees). Every page must then stop with close code 4005 and show the
//                      "session ended" screen with the recording's integrity value (完整性校验值:
//                      64 hex digits, equal to window.qiao.recording.chain_head of the `final`
//                      status); the driver compares it with the close response's chain_head.
//
// Saves <role>-<step>.png for each page after each step (<role>-failed.png on failure),
// page-<role>.console.log and result.json into artifact_dir, and prints exactly one RESULT line:
//
//   RESULT {"ok":true,"steps":{"judge_joins":{"ms":…},…},"pages":[{"role":"judge",…},…]}
//
// Each step has "ms" (how long its wait took) and what it observed; on failure "error" names the
// step. Exit status 0 exactly when ok. Diagnostics go to stderr. Join tokens are never printed.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  POLL_MS, controlIn, flowing, gainedFrom, launchBrowser, makeLog, openPage, pollUntil, printResult,
  rawGained, rawTotals, received, roomState, run, sampleRooms, screenshot, sleep, trackPeerConnections,
  withTimeout, writeConsoleLog, writeResultFile, plain,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
/** How long the "nothing arrives" / "keeps flowing" windows watch. */
const WINDOW_MS = 2_000;
/** The server's close reaches every page at once; allow for a slow machine. */
const CLOSE_LIMIT_MS = 15_000;
const log = makeLog('hearing');

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length !== 3) {
    printResult({ ok: false, pages: [], error: 'usage: node hearing.mjs <artifact_dir> <judge_join_url> <party_join_url> <witness_join_url>' });
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
    for (const [i, name] of ['judge', 'party', 'witness'].entries()) {
      const p = await openPage(browser, name, urls[i]); // its console log is page-<role>.console.log
      p.name = name;
      await trackPeerConnections(p.page);
      pages.push(p);
    }
    const [judge, party, witness] = pages;
    const open = async (p) => {
      p.opened = true;
      await p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS });
    };
    const live = () => pages.filter((p) => p.opened);
    const wait = (what, done, timeoutMs = TIMEOUT_MS) => pollUntil(live(), done, { timeoutMs, what });
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

    // ---- 1. the judge joins straight into main ---------------------------------------------------
    await step('judge_joins', async () => {
      await open(judge);
      const ms = await wait('the judge connected in main, showing the recording indicator',
        () => judge.snap?.state === 'connected' && judge.snap.zone === 'main' && recordingShown(judge));
      return { wait_ms: ms, zone: judge.snap.zone, participant_id: id(judge), recording: recordingSeen(judge) };
    });

    // ---- 2. the party waits in the lobby, receiving nothing -------------------------------------
    await step('party_in_lobby', async () => {
      await open(party);
      const ms = await wait('the party connected in the lobby, with the waiting card, and listed there by the judge',
        () => party.snap?.state === 'connected' && party.snap.zone === 'lobby' && party.snap.dom.waiting_card
          && judge.snap?.roster.find((r) => r.id === id(party))?.zone === 'lobby' && recordingShown(party));
      const w = await watch(live(), WINDOW_MS, (leak) => {
        noneReceived(party, leak, 'party (lobby)');
        // The judge is alone in main: anything at all it receives can only be the lobby's.
        noneReceived(judge, leak, 'judge (alone in main)');
        if (judge.snap.dom.tiles.includes(id(party))) leak('the judge shows a tile of the lobby party');
        if (party.snap.dom.tiles.length > 0 || party.snap.dom.stage_shown) leak(`the lobby party shows the stage (tiles ${party.snap.dom.tiles})`);
        if (party.snap.zone !== 'lobby') leak(`the party left the lobby by itself (${party.snap.zone})`);
      });
      const badge = await withTimeout(judge.page.evaluate(() => document.querySelector('#roster-btn .badge')?.textContent ?? null), 5_000, 'reading the roster badge');
      return {
        wait_ms: ms,
        zone: party.snap.zone,
        waiting_card: party.snap.dom.waiting_card,
        window: w,
        party_raw: rawTotals(party.snap),
        judge_roster_badge: badge,
        party_recording: recordingSeen(party),
      };
    });

    // ---- 3. the judge admits the party from the roster panel ------------------------------------
    await step('admit', async () => {
      const button = `[data-testid="admit-${id(party)}"]`;
      await judge.page.click('[data-testid="roster-toggle"]', { timeout: 10_000 });
      await judge.page.click(button, { timeout: 10_000 });
      const clicked = Date.now();
      const ms = await wait('after the admission, judge and party decoding and hearing each other, each with the other\'s tile',
        () => party.snap?.zone === 'main' && !party.snap.dom.waiting_card
          && flowing(party, id(judge)) && flowing(judge, id(party))
          && party.snap.dom.tiles.includes(id(judge)) && judge.snap.dom.tiles.includes(id(party)));
      return {
        admit_to_media_ms: Date.now() - clicked,
        wait_ms: ms,
        party_zone: party.snap.zone,
        party_frames_of_judge: received(party.snap, id(judge), 'video'),
        judge_frames_of_party: received(judge.snap, id(party), 'video'),
      };
    });

    // ---- 4. the witness waits, isolated; a party may not call it --------------------------------
    await step('witness_waiting', async () => {
      await open(witness);
      const ms = await wait('the witness connected in witness_waiting, with the waiting card, listed there by the judge, with a call button',
        () => witness.snap?.state === 'connected' && witness.snap.zone === 'witness_waiting' && witness.snap.dom.waiting_card
          && judge.snap.roster.find((r) => r.id === id(witness))?.zone === 'witness_waiting' && recordingShown(witness));
      await judge.page.waitForSelector(`[data-testid="call-${id(witness)}"]`, { state: 'visible', timeout: 10_000 });
      // Only the judge may call a witness: the party's attempt is refused by the server.
      const attempt = await controlIn(party, 'call_witness', id(witness));
      const w = await watch(live(), WINDOW_MS, (leak) => {
        noneReceived(witness, leak, 'witness (waiting)');
        for (const p of [judge, party]) {
          for (const kind of ['video', 'audio']) {
            if (received(p.snap, id(witness), kind) > 0) leak(`the ${p.name} received the waiting witness's ${kind}`);
          }
        }
        if ([judge, party].some((p) => p.snap.dom.tiles.includes(id(witness)))) leak('judge or party shows a tile of the waiting witness');
        if (witness.snap.dom.tiles.length > 0 || witness.snap.dom.stage_shown) leak(`the waiting witness shows the stage (tiles ${witness.snap.dom.tiles})`);
        if (witness.snap.zone !== 'witness_waiting') leak(`the witness left witness_waiting (${witness.snap.zone}) without being called`);
      }, [[judge, party], [party, judge]]);
      return {
        wait_ms: ms,
        zone: witness.snap.zone,
        waiting_card: witness.snap.dom.waiting_card,
        window: w,
        witness_raw: rawTotals(witness.snap),
        party_call_attempt: attempt?.rejected ? { rejected: attempt.rejected.code } : { accepted: attempt },
        witness_recording: recordingSeen(witness),
      };
    });
    const attempt = result.steps.witness_waiting.party_call_attempt;
    if (attempt.rejected !== 'not_allowed') {
      throw new Error(`the party's call_witness was not refused with not_allowed: ${JSON.stringify(attempt)}`);
    }

    // ---- 5. the judge calls the witness from the roster -----------------------------------------
    await step('call_witness', async () => {
      await judge.page.click(`[data-testid="call-${id(witness)}"]`, { timeout: 10_000 });
      const clicked = Date.now();
      const ms = await wait('after the call, the witness in main decoding and hearing judge and party, and they it',
        () => witness.snap?.zone === 'main' && !witness.snap.dom.waiting_card
          && flowing(witness, id(judge)) && flowing(witness, id(party))
          && flowing(judge, id(witness)) && flowing(party, id(witness))
          && [id(judge), id(party)].every((x) => witness.snap.dom.tiles.includes(x)));
      return {
        call_to_media_ms: Date.now() - clicked,
        wait_ms: ms,
        witness_zone: witness.snap.zone,
        witness_tiles: witness.snap.dom.tiles.length,
        witness_frames_of_judge: received(witness.snap, id(judge), 'video'),
        witness_frames_of_party: received(witness.snap, id(party), 'video'),
      };
    });

    // ---- 6. the judge dismisses the witness (window.qiao.control) --------------------------------
    await step('dismiss_witness', async () => {
      await sampleRooms(live());
      const before = received(witness.snap, id(judge), 'video');
      const t0 = Date.now();
      const ack = await controlIn(judge, 'dismiss_witness', id(witness));
      if (ack?.type !== 'control_ack' || ack.action !== 'dismiss_witness' || ack.target !== id(witness)) {
        throw new Error(`dismiss_witness was not acknowledged: ${JSON.stringify(ack)}`);
      }
      const ackMs = Date.now() - t0;
      const zoneMs = await wait('the witness back in witness_waiting, with the waiting card and no tiles, and its tile gone from judge and party',
        () => witness.snap?.zone === 'witness_waiting' && witness.snap.dom.waiting_card && witness.snap.dom.tiles.length === 0
          && !witness.snap.dom.stage_shown && judge.snap.roster.find((r) => r.id === id(witness))?.zone === 'witness_waiting'
          && ![judge, party].some((p) => p.snap.dom.tiles.includes(id(witness))));
      // Frames already on their way may still be decoded: wait (bounded) for two quiet samples in a row.
      let quiet = 0;
      const settleMs = await wait('the witness\'s receive counters settling', () => {
        const g = rawGained(witness.prev, witness.snap);
        quiet = g.video_frames + g.video_packets + g.audio_packets === 0 ? quiet + 1 : 0;
        return quiet >= 2;
      }, 10_000);
      const settledMs = Date.now() - t0;
      const w = await watch(live(), WINDOW_MS, null, [[judge, party], [party, judge]]);
      const noMore = {
        frames_of_judge: gainedFrom(w.first.get(witness), witness.snap, id(judge), 'video'),
        frames_of_party: gainedFrom(w.first.get(witness), witness.snap, id(party), 'video'),
        audio_packets_of_judge: gainedFrom(w.first.get(witness), witness.snap, id(judge), 'audio'),
        audio_packets_of_party: gainedFrom(w.first.get(witness), witness.snap, id(party), 'audio'),
        raw: rawGained(w.first.get(witness), witness.snap),
      };
      if (Object.values({ ...noMore, ...noMore.raw }).some((n) => typeof n === 'number' && n > 0)) {
        throw new Error(`after the dismissal the witness still received media over ${WINDOW_MS} ms: ${JSON.stringify(noMore)}`);
      }
      return {
        ack_ms: ackMs,
        zone_ms: zoneMs,
        settle_ms: settleMs,
        // dismiss sent → no more media arriving at the witness (upper bound: two quiet samples)
        stop_ms: settledMs,
        witness_zone: witness.snap.zone,
        // frames of the judge the witness had decoded just before the dismissal, and at the end of
        // the window (0 when the stream is no longer listed, see below)
        witness_frames_of_judge_before: before,
        witness_frames_of_judge_after_window: received(witness.snap, id(judge), 'video'),
        // Whether the judge's stream is still listed in the witness's stats (the server may
        // renegotiate it away, as it does now, or keep the transceiver and just stop forwarding).
        judge_stream_still_listed: witness.snap.stats.videos.some((v) => v.participant_id === id(judge)),
        gained_in_window: noMore,
        window: { ms: w.ms, samples: w.samples, flows: w.flows },
      };
    });

    // ---- 7. the judge pauses the recording for a recess, from its console -----------------------
    await step('pause_recording', async () => {
      // Before: every page says the session is being recorded.
      const beforeMs = await wait('every page showing ● 录音录像中 (state recording)', () => pages.every(recordingShown));
      const before = Object.fromEntries(pages.map((p) => [p.name, recordingSeen(p)]));
      // Only presiding hosts get the button, and the server refuses anyone else, and any reason
      // the rules do not know.
      const buttons = Object.fromEntries(pages.map((p) => [p.name, p.snap.dom.rec_control]));
      if (buttons.judge !== 'pause_recording' || buttons.party !== null || buttons.witness !== null) {
        throw new Error(`the pause button should be the judge's only: ${JSON.stringify(buttons)}`);
      }
      const partyAttempt = await controlIn(party, 'pause_recording', undefined, { reason: 'recess' });
      const badReason = await controlIn(judge, 'pause_recording', undefined, { reason: 'lunch' });
      if (partyAttempt?.rejected?.code !== 'not_allowed') throw new Error(`the party's pause was not refused with not_allowed: ${JSON.stringify(partyAttempt)}`);
      if (badReason?.rejected?.code !== 'bad_reason') throw new Error(`a pause for "lunch" was not refused with bad_reason: ${JSON.stringify(badReason)}`);
      await sampleRooms(live());
      if (!pages.every(recordingShown)) throw new Error('a refused pause changed the indicator');

      // The judge's console: 暂停录像 → choose the reason → confirm.
      await judge.page.click('[data-testid="recording-control"]', { timeout: 10_000 });
      await judge.page.waitForSelector('[data-testid="pause-dialog"]', { state: 'visible', timeout: 10_000 });
      const confirm = '[data-testid="pause-confirm"]';
      const disabledWithoutReason = await judge.page.isDisabled(confirm);
      const options = await judge.page.$$eval('[data-testid="pause-reason"] option',
        (os) => os.map((o) => ({ value: o.value, text: o.textContent.trim(), disabled: o.disabled })));
      await judge.page.selectOption('[data-testid="pause-reason"]', 'recess');
      await screenshot(judge, path.join(artifactDir, 'judge-pause_dialog.png'), log);
      const enabledWithReason = !(await judge.page.isDisabled(confirm));
      await judge.page.click(confirm, { timeout: 10_000 });
      const clicked = Date.now();
      const ms = await wait('every page showing 录音录像已暂停（休庭） (paused, recess), the judge offered 恢复录像, judge and party still seeing each other',
        () => pages.every((p) => p.snap?.recording?.state === 'paused' && p.snap.recording.cause === 'recess'
          && p.snap.dom.rec_badge_state === 'paused' && p.snap.dom.rec_badge?.includes('录音录像已暂停（休庭）'))
          && judge.snap.dom.rec_control === 'resume_recording' && !judge.snap.dom.pause_dialog_open
          && flowing(judge, id(party)) && flowing(party, id(judge)));
      return {
        before_wait_ms: beforeMs,
        before,
        buttons,
        party_attempt: partyAttempt?.rejected ? { rejected: partyAttempt.rejected.code } : { accepted: partyAttempt },
        bad_reason_attempt: badReason?.rejected ? { rejected: badReason.rejected.code } : { accepted: badReason },
        dialog: { disabled_without_reason: disabledWithoutReason, enabled_with_reason: enabledWithReason, options },
        click_to_paused_ms: Date.now() - clicked,
        wait_ms: ms,
        paused: Object.fromEntries(pages.map((p) => [p.name, recordingSeen(p)])),
        judge_control: judge.snap.dom.rec_control,
      };
    });

    // ---- 8. … and resumes it ---------------------------------------------------------------------
    await step('resume_recording', async () => {
      await judge.page.click('[data-testid="recording-control"][data-action="resume_recording"]', { timeout: 10_000 });
      const clicked = Date.now();
      const ms = await wait('every page showing ● 录音录像中 again, the judge offered 暂停录像',
        () => pages.every(recordingShown) && judge.snap.dom.rec_control === 'pause_recording');
      return {
        click_to_recording_ms: Date.now() - clicked,
        wait_ms: ms,
        resumed: Object.fromEntries(pages.map((p) => [p.name, recordingSeen(p)])),
      };
    });

    // ---- 9. the session is closed through the REST API ------------------------------------------
    await step('close', async () => {
      process.stdout.write(`PHASE ${JSON.stringify({ phase: 'close_session' })}\n`);
      const t0 = Date.now();
      const ms = await wait('every page stopped with close code 4005, showing the "ended" screen with the integrity value of the final recording status',
        () => pages.every((p) => p.snap?.closeCode === 4005 && p.snap.state === 'disconnected' && p.snap.dom.ended
          && p.snap.recording?.state === 'final' && /^[0-9a-f]{64}$/.test(p.snap.recording.chain_head ?? '')
          && p.snap.dom.rec_final === p.snap.recording.chain_head && p.snap.dom.rec_final_on_ended
          && p.snap.dom.rec_badge === null),
        CLOSE_LIMIT_MS);
      // The value stays on the screen: sample again a moment later.
      await sleep(1_000);
      await sampleRooms(live());
      const integrity = Object.fromEntries(pages.map((p) => [p.name, p.snap.dom.rec_final]));
      if (pages.some((p) => p.snap.dom.rec_final !== p.snap.recording?.chain_head)) {
        throw new Error(`the integrity value did not stay on every page: ${JSON.stringify(integrity)}`);
      }
      return {
        phase_to_closed_ms: Date.now() - t0,
        wait_ms: ms,
        close_codes: Object.fromEntries(pages.map((p) => [p.name, p.snap.closeCode])),
        ended_text: Object.fromEntries(pages.map((p) => [p.name, p.snap.dom.ended_text])),
        // what each page shows as 完整性校验值, and the final status it came with
        integrity,
        final_status: Object.fromEntries(pages.map((p) => [p.name, p.snap.recording])),
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
    await sampleRooms(pages.filter((p) => p.opened)).catch(() => {});
    result.pages = summaries(pages, true);
    for (const p of pages) if (p.opened) await screenshot(p, path.join(artifactDir, `${p.name}-failed.png`), log);
    await finish(artifactDir, pages, result);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

/** Whether a page shows ● 录音录像中: the hook's last status is `recording` and so is the top bar's indicator. */
function recordingShown(p) {
  return p.snap?.recording?.state === 'recording' && p.snap.dom.rec_badge_state === 'recording'
    && !!p.snap.dom.rec_badge?.includes('录音录像中');
}

/** What a page shows of the recording: {state, cause, badge (its text)}. */
function recordingSeen(p) {
  return { state: p.snap?.recording?.state ?? null, cause: p.snap?.recording?.cause ?? null, badge: p.snap?.dom.rec_badge ?? null };
}

/** Fails the window when a page received anything at all (video frames or packets, audio packets) on any peer connection. */
function noneReceived(p, leak, who) {
  const raw = rawTotals(p.snap);
  const attributed = p.snap.stats.videos.reduce((n, v) => n + v.framesDecoded, 0) + p.snap.stats.audios.reduce((n, a) => n + a.packetsReceived, 0);
  if (raw.video_frames + raw.video_packets + raw.audio_packets + attributed > 0) {
    leak(`${who} received media: ${JSON.stringify({ raw, stats: p.snap.stats })}`);
  }
}

/**
 * Watch for `ms`: sample every POLL_MS, call `check(leak)` on every sample (leak(msg) fails the
 * window), and require that for every [receiver, publisher] of `mustFlow` the receiver decodes
 * more video frames and receives more audio packets of the publisher at the end than at the start.
 * Returns {ms, samples, first (the first sample per page), flows}.
 */
async function watch(pages, ms, check, mustFlow = []) {
  await sampleRooms(pages);
  const first = new Map(pages.map((p) => [p, p.snap]));
  const problems = [];
  const leak = (msg) => { if (problems.length < 5) problems.push(msg); };
  const t0 = Date.now();
  let samples = 1;
  check?.(leak);
  while (Date.now() - t0 < ms) {
    await sleep(POLL_MS);
    await sampleRooms(pages);
    samples += 1;
    check?.(leak);
  }
  const flows = mustFlow.map(([rx, tx]) => ({
    receiver: rx.name,
    publisher: tx.name,
    frames: gainedFrom(first.get(rx), rx.snap, tx.snap.participantId, 'video'),
    audio_packets: gainedFrom(first.get(rx), rx.snap, tx.snap.participantId, 'audio'),
  }));
  for (const f of flows) {
    if (!(f.frames > 0 && f.audio_packets > 0)) problems.push(`${f.receiver} stopped receiving ${f.publisher}: ${JSON.stringify(f)}`);
  }
  if (problems.length) throw new Error(`over ${Date.now() - t0} ms: ${problems.join('; ')}`);
  return { ms: Date.now() - t0, samples, first, flows, toJSON() { return { ms: this.ms, samples: this.samples, flows: this.flows }; } };
}

function summaries(pages, withDiagnostics) {
  return pages.map((p) => {
    const out = {
      role: p.name,
      participant_id: p.snap?.participantId ?? null,
      opened: !!p.opened,
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

// Never hang the Rust test: a hard limit well beyond the nine bounded steps.
run(main, { watchdogMs: TIMEOUT_MS * 9 + 90_000, log });
