#!/usr/bin/env node
// The clerk's notes (笔录) and the supervisor's console (纪委 / 检察 监督) in real Chromium against
// the real server:
//
//   QIAO_ADMIN_TOKEN=… node supervision.mjs <artifact_dir> <base_url> <county_site_id> <session_id> \
//       <judge_join_url> <clerk_join_url> <party_join_url>
//
// The session is a hearing without a lobby or consent step, held at a township site below the
// county; another county's session is open too (tests/browser_supervision.rs sets this up). The
// admin token comes from the environment and is never printed.
//
//  1. join        judge, clerk and party open their links (autojoin): all connected in `main`, the
//                 judge decoding both others.
//  1b. network    the party's page stops sending (its senders' tracks replaced by null, the
//                 camera and microphone left open): the server sees its media stop while its
//                 signalling stays, and the judge's roster shows the party's network as lost
//                 (网络中断 chip); the clerk and the party itself are told too. Once the tracks are
//                 back, the judge's roster shows it good again, without a chip.
//  2. notes       the clerk's notes panel is open by itself (the clerk keeps the record); the judge
//                 has the 笔录 button too (its panel opens, empty), the party has none. An empty
//                 note is refused on the page. The clerk types a note and presses 记录, then a
//                 second one and presses Ctrl+Enter: both are listed, saved, with the timecode the
//                 server stamped shown as mm:ss, the clerk's name and role, in order; the text box
//                 is empty again.
//  3. supervise   supervise.html: the token and the observer's name are typed in; 查看 lists every
//                 live session (ours and the other county's); choosing the county in 辖区 lists ours
//                 only, with its kind, case number, site (the township), the recording state and
//                 the three present (role, zone `main`, connected); the list refreshes by itself.
//  4. observe     旁听 opens the observer's page in a new tab: it shows the observer card (no device
//                 check, no camera), 进入旁听 joins: connected in `main`, role observer, no local
//                 track, no mic/camera buttons, the observer banner, and it decodes the judge. The
//                 judge's, clerk's and party's pages list the observer (role observer, zone main),
//                 show its tile and the 监督旁听中 badge; the supervisor's list shows it present.
//  5. english     the supervisor's page and the clerk's page switched to English (screenshots).
//
// Screenshots <role>-<step>.png (supervisor and observer included) and page-<role>.console.log in
// artifact_dir, result.json, and exactly one RESULT line; exit 0 exactly when ok.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  launchBrowser, makeLog, openPage, pollUntil, printResult, received, roomState, run, sampleRooms,
  screenshot, sleep, trackPeerConnections, withTimeout, writeConsoleLog, writeResultFile, plain, POLL_MS,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const log = makeLog('supervision');
const NOTE_1 = '原告陈述诉讼请求：要求被告归还借款人民币五万元及利息。';
const NOTE_2 = '被告对借款事实无异议，对利息计算有异议。';
const OBSERVER_NAME = '县纪委监督员 周明';

/** The web client's own format (notes.js formatTimecode). */
function formatTimecode(ms) {
  const total = Math.max(0, Math.floor((Number(ms) || 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

async function main() {
  const [artifactDir, baseUrl, countySiteId, sessionId, ...urls] = process.argv.slice(2);
  const adminToken = process.env.QIAO_ADMIN_TOKEN || '';
  if (!artifactDir || !baseUrl || !countySiteId || !sessionId || urls.length !== 3 || !adminToken) {
    printResult({ ok: false, pages: [], error: 'usage: QIAO_ADMIN_TOKEN=… node supervision.mjs <artifact_dir> <base_url> <county_site_id> <session_id> <judge_url> <clerk_url> <party_url>' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });
  // Never let the admin token reach stdout, stderr or a file.
  const scrub = (text) => String(text).split(adminToken).join('<admin-token>');

  const result = { ok: false, steps: {} };
  const browser = await launchBrowser([baseUrl, ...urls], TIMEOUT_MS);
  const pages = [];
  let supervisor = null;
  let observer = null;
  const shots = async (suffix) => {
    for (const p of [...pages, supervisor, observer]) {
      if (p?.opened) await screenshot(p, path.join(artifactDir, `${p.name}-${suffix}.png`), log);
    }
  };
  let current = 'setup';
  try {
    for (const [i, name] of ['judge', 'clerk', 'party'].entries()) {
      const p = await openPage(browser, name, urls[i]);
      p.name = name;
      await trackPeerConnections(p.page);
      pages.push(p);
    }
    const [judge, clerk, party] = pages;
    const live = () => [...pages, observer].filter((p) => p?.opened && p.name !== 'supervisor');
    const wait = (what, done, timeoutMs = TIMEOUT_MS) => pollUntil(live(), done, { timeoutMs, what });
    const step = async (name, fn) => {
      current = name;
      log(`step ${name}`);
      const t0 = Date.now();
      const out = await fn();
      result.steps[name] = { ms: Date.now() - t0, ...out };
      log(`step ${name}: ${scrub(JSON.stringify(result.steps[name]))}`);
      await shots(name);
    };
    const id = (p) => p.snap?.participantId;
    const evaluate = (p, fn, arg) => withTimeout(p.page.evaluate(fn, arg), 5_000, `reading the ${p.name}'s page`);

    // ---- 1. judge, clerk and party join ---------------------------------------------------------
    await step('join', async () => {
      await Promise.all(pages.map(async (p) => {
        p.opened = true;
        await p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS });
      }));
      const ms = await wait('judge, clerk and party connected in main, the judge decoding both others',
        () => pages.every((p) => p.snap?.state === 'connected' && p.snap.zone === 'main' && p.snap.roster.length === 3)
          && [clerk, party].every((p) => received(judge.snap, id(p), 'video') > 0));
      return { wait_ms: ms, roles: Object.fromEntries(pages.map((p) => [p.name, p.snap.roster[0]?.role ?? null])) };
    });

    // ---- 1b. the party's media stops arriving; the judge's roster says so -------------------------
    await step('network', async () => {
      const partyId = id(party);
      const shown = (p) => p.snap?.roster.find((r) => r.id === partyId)?.network ?? null;
      const chip = () => evaluate(judge, (pid) => {
        const el = document.querySelector(`[data-testid="network-${pid}"]`);
        return el ? { text: el.textContent, state: el.dataset.state } : null;
      }, partyId);
      // The party's senders send nothing from now on (its camera and microphone stay open): what a
      // link that drops every packet looks like to the server, while the signalling stays up.
      const held = await evaluate(party, () => {
        window.__heldTracks = [];
        for (const pc of window.__qiaoTestPcs || []) {
          for (const s of pc.getSenders()) {
            if (!s.track) continue;
            window.__heldTracks.push([s, s.track]);
            s.replaceTrack(null);
          }
        }
        return window.__heldTracks.length;
      });
      if (held < 2) throw new Error(`the party's page had ${held} tracks to hold`);
      const lostMs = await wait("the judge's roster showing the party's network lost", () => shown(judge) === 'lost');
      const lostChip = await chip();
      if (lostChip?.text !== '网络中断' || lostChip.state !== 'lost') throw new Error(`the judge's chip: ${JSON.stringify(lostChip)}`);
      const others = { clerk: shown(clerk), party: shown(party) };
      await evaluate(party, () => Promise.all(window.__heldTracks.map(([s, t]) => s.replaceTrack(t))));
      const backMs = await wait("the judge's roster showing the party's network good again", () => shown(judge) === 'good');
      const back = await chip();
      if (back !== null) throw new Error(`a chip is still shown for a good network: ${JSON.stringify(back)}`);
      return { tracks_held: held, lost_after_ms: lostMs, chip: lostChip, others_see: others, good_again_after_ms: backMs };
    });

    // ---- 2. the clerk keeps the record ------------------------------------------------------------
    await step('notes', async () => {
      const panel = '[data-testid="notes-panel"]';
      const toggle = '[data-testid="notes-toggle"]';
      const visible = async (p, sel) => withTimeout(p.page.isVisible(sel), 5_000, `${sel} on the ${p.name}'s page`);
      const clerkPanelOpen = await visible(clerk, panel);
      const buttons = {
        judge: await visible(judge, toggle), clerk: await visible(clerk, toggle), party: await visible(party, toggle),
      };
      if (!clerkPanelOpen) throw new Error("the clerk's notes panel is not open");
      if (!buttons.judge || !buttons.clerk || buttons.party) throw new Error(`the 笔录 button: ${JSON.stringify(buttons)}`);
      // The judge keeps the record too: its panel opens (empty: the clerk's notes are not sent to it).
      await judge.page.click(toggle, { timeout: 10_000 });
      const judgePanel = await visible(judge, panel);
      const judgeNotesShown = await judge.page.locator(`${panel} [data-testid="note"]`).count();
      await screenshot(judge, path.join(artifactDir, 'judge-notes_panel.png'), log);
      await judge.page.click(toggle, { timeout: 10_000 });
      const judgePanelClosed = !(await visible(judge, panel));

      // An empty note is refused on the page.
      await clerk.page.click('[data-testid="note-add"]', { timeout: 10_000 });
      const emptyRefused = await visible(clerk, '#note-error');

      // 记录 with the button, then Ctrl+Enter.
      const box = '[data-testid="note-text"]';
      await clerk.page.fill(box, NOTE_1);
      await clerk.page.click('[data-testid="note-add"]', { timeout: 10_000 });
      const saved = async (n) => {
        const t0 = Date.now();
        for (;;) {
          const notes = await evaluate(clerk, () => window.qiao.notes());
          if (notes.filter((x) => x.state === 'saved').length >= n) return notes;
          if (notes.some((x) => x.state === 'failed' || x.state === 'unknown')) throw new Error(`a note failed: ${JSON.stringify(notes)}`);
          if (Date.now() - t0 > TIMEOUT_MS) throw new Error(`note ${n} not saved: ${JSON.stringify(notes)}`);
          await sleep(POLL_MS);
        }
      };
      await saved(1);
      const boxEmptyAfterClick = (await clerk.page.inputValue(box)) === '';
      await sleep(1_500); // a later timecode for the second note
      await clerk.page.fill(box, NOTE_2);
      await clerk.page.press(box, 'Control+Enter');
      const notes = await saved(2);
      const boxEmptyAfterShortcut = (await clerk.page.inputValue(box)) === '';
      const focusInBox = await evaluate(clerk, () => document.activeElement?.dataset?.testid ?? null);
      // What the clerk sees: each note's timecode, author, role and text, in order.
      const shown = await clerk.page.$$eval('[data-testid="notes-list"] [data-testid="note"]', (items) => items.map((li) => ({
        state: li.dataset.state,
        timecode: li.querySelector('[data-testid="note-timecode"]')?.textContent ?? null,
        timecode_ms: Number(li.querySelector('[data-testid="note-timecode"]')?.dataset.timecodeMs ?? NaN),
        author: li.querySelector('.note-author')?.textContent ?? null,
        role: li.querySelector('.chip.role')?.textContent ?? null,
        text: li.querySelector('.note-text')?.textContent ?? null,
      })));
      const title = await clerk.page.textContent('#notes-title');
      const problems = [];
      if (shown.length !== 2) problems.push(`${shown.length} notes listed`);
      [NOTE_1, NOTE_2].forEach((text, i) => {
        const s = shown[i];
        if (!s) return;
        if (s.text !== text) problems.push(`note ${i + 1} text ${s.text}`);
        if (s.state !== 'saved') problems.push(`note ${i + 1} ${s.state}`);
        if (!/^\d{2}:\d{2}$/.test(s.timecode ?? '') || s.timecode !== formatTimecode(s.timecode_ms)) problems.push(`note ${i + 1} timecode ${s.timecode} (${s.timecode_ms} ms)`);
        if (s.role !== '书记员') problems.push(`note ${i + 1} role ${s.role}`);
      });
      if (shown.length === 2 && !(shown[1].timecode_ms > shown[0].timecode_ms)) problems.push('the timecodes do not increase');
      if (!emptyRefused) problems.push('an empty note was not refused');
      if (!boxEmptyAfterClick || !boxEmptyAfterShortcut) problems.push('the text box kept the note');
      if (problems.length) throw new Error(`the clerk's notes: ${problems.join('; ')}: ${JSON.stringify(shown)}`);
      return {
        clerk_panel_open: clerkPanelOpen,
        buttons,
        judge_panel: { opened: judgePanel, notes_shown: judgeNotesShown, closed: judgePanelClosed },
        empty_refused: emptyRefused,
        box_emptied: boxEmptyAfterClick && boxEmptyAfterShortcut,
        focus_after: focusInBox,
        title,
        shown,
        notes: notes.map(({ id: noteId, timecode_ms: ms, timecode, text, state, author, role }) => ({ id: noteId, timecode_ms: ms, timecode, text, state, author, role })),
      };
    });

    // ---- 3. the supervisor's console ---------------------------------------------------------------
    await step('supervise', async () => {
      const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
      await trackPeerConnections(context); // for the observer page it will open
      const page = await context.newPage();
      supervisor = { name: 'supervisor', index: 'supervisor', page, context, consoleLog: [], consoleErrors: [], opened: true };
      watchConsole(supervisor, scrub);
      await page.goto(new URL('supervise.html', baseUrl).href, { waitUntil: 'load', timeout: TIMEOUT_MS });
      await page.fill('[data-testid="admin-token"]', adminToken);
      await page.fill('[data-testid="observer-name"]', OBSERVER_NAME);
      await page.click('[data-testid="show"]', { timeout: 10_000 });
      const sup = () => evaluate(supervisor, () => {
        const q = window.qiaoSupervise;
        return { state: q.state, error: q.error, refreshes: q.refreshes, siteId: q.siteId, sessions: q.sessions };
      });
      const until = async (what, done, timeoutMs = TIMEOUT_MS) => {
        const t0 = Date.now();
        for (;;) {
          const s = await sup();
          if (done(s)) return s;
          if (Date.now() - t0 > timeoutMs) throw new Error(`supervisor: ${what}: ${scrub(JSON.stringify(s))}`);
          await sleep(POLL_MS);
        }
      };
      const all = await until('every live session listed (ours and the other county\'s)',
        (s) => s.state === 'listed' && s.sessions.length >= 2 && s.sessions.some((x) => x.id === sessionId));
      const tokenShown = await page.inputValue('[data-testid="admin-token"]');
      await screenshot(supervisor, path.join(artifactDir, 'supervisor-all_sites.png'), log);
      // The county: its township's session, not the other county's.
      await page.selectOption('[data-testid="site-select"]', countySiteId);
      const county = await until('the county chosen: our session only, with its three present',
        (s) => s.state === 'listed' && s.siteId === countySiteId && s.sessions.length === 1 && s.sessions[0].id === sessionId
          && s.sessions[0].participants.length === 3);
      // The list refreshes by itself.
      const before = county.refreshes;
      const refreshed = await until('an automatic refresh', (s) => s.refreshes >= before + 1, 15_000);
      const row = `[data-testid="live-session"][data-session-id="${sessionId}"]`;
      const dom = await page.$eval(row, (li) => ({
        kind: li.querySelector('.sup-kind')?.textContent ?? null,
        title: li.querySelector('.sup-title')?.textContent ?? null,
        case_number: li.querySelector('.sup-case dd')?.textContent ?? null,
        site: li.querySelector('.sup-site dd')?.textContent ?? null,
        recording: li.querySelector('[data-testid="recording-state"]')?.textContent ?? null,
        people: [...li.querySelectorAll('.sup-person')].map((tr) => ({
          name: tr.querySelector('.sup-name')?.textContent ?? null,
          role: tr.dataset.role,
          role_text: tr.querySelector('.chip.role')?.textContent ?? null,
          zone: tr.querySelector('.sup-zone')?.textContent ?? null,
          connection: tr.querySelector('.sup-conn')?.textContent ?? null,
        })),
        observe: li.querySelector(`[data-testid^="observe-"]`)?.textContent ?? null,
      }));
      const where = await page.textContent('#live-where');
      const url = page.url();
      return {
        all_sites: all.sessions.map((x) => ({ id: x.id, site_name: x.site_name, participants: x.participants.length })),
        token_field_cleared: tokenShown === '',
        county: county.sessions,
        refreshes: { before, after: refreshed.refreshes },
        dom,
        where,
        site_in_address: new URL(url).searchParams.get('site'),
      };
    });

    // ---- 4. the supervisor observes ----------------------------------------------------------------
    await step('observe', async () => {
      const [popup] = await Promise.all([
        supervisor.context.waitForEvent('page', { timeout: 15_000 }),
        supervisor.page.click(`[data-testid="observe-${sessionId}"]`, { timeout: 10_000 }),
      ]);
      observer = { name: 'observer', index: 'observer', page: popup, context: supervisor.context, consoleLog: [], consoleErrors: [], opened: true };
      watchConsole(observer, scrub);
      await popup.waitForLoadState('load', { timeout: TIMEOUT_MS });
      await popup.waitForSelector('[data-testid="observer-prejoin"]', { state: 'visible', timeout: TIMEOUT_MS });
      const prejoin = await evaluate(observer, () => ({
        step: window.qiao.step,
        role: window.qiao.role,
        local_tracks: window.qiao.localTracks,
        heading: document.getElementById('prejoin-heading').textContent,
        devices_shown: !document.getElementById('prejoin-devices').hidden,
        join: document.querySelector('[data-testid="join"]').textContent,
      }));
      const linkShown = await supervisor.page.isVisible(`[data-testid="observe-link-${sessionId}"]`);
      await screenshot(observer, path.join(artifactDir, 'observer-prejoin.png'), log);
      await popup.click('[data-testid="join"]', { timeout: 10_000 });
      const clicked = Date.now();
      const oid = () => observer.snap?.participantId;
      const seenBy = (p) => p.snap?.roster.find((r) => r.id === oid());
      const ms = await wait('the observer in main, decoding the judge, and listed with its tile by judge, clerk and party',
        () => observer.snap?.state === 'connected' && observer.snap.zone === 'main' && received(observer.snap, id(judge), 'video') > 0
          && pages.every((p) => seenBy(p)?.role === 'observer' && seenBy(p)?.zone === 'main' && p.snap.dom.tiles.includes(oid())));
      const badges = {};
      for (const p of [...pages, observer]) {
        badges[p.name] = await evaluate(p, () => {
          const b = document.getElementById('observer-badge');
          return b && !b.hidden ? { text: b.textContent.trim(), count: b.dataset.count ?? null, label: b.getAttribute('aria-label') } : null;
        });
      }
      const self = await evaluate(observer, () => ({
        role: window.qiao.role,
        local_tracks: window.qiao.localTracks,
        banner: !document.getElementById('observer-banner').hidden,
        mic_shown: !document.getElementById('mic-btn').hidden,
        cam_shown: !document.getElementById('cam-btn').hidden,
        hand_shown: !document.getElementById('hand-btn').hidden,
        notes_shown: !document.getElementById('notes-btn').hidden,
        self_view_shown: !document.getElementById('self-view').hidden,
      }));
      const problems = [];
      for (const p of pages) if (!badges[p.name]?.text?.includes('监督旁听中')) problems.push(`no 监督旁听中 badge on the ${p.name}'s page`);
      if (self.role !== 'observer' || self.local_tracks !== 0) problems.push(`the observer page: ${JSON.stringify(self)}`);
      if (self.mic_shown || self.cam_shown || self.hand_shown || self.notes_shown || self.self_view_shown || !self.banner) problems.push(`the observer's controls: ${JSON.stringify(self)}`);
      if (prejoin.devices_shown || prejoin.local_tracks !== 0) problems.push(`the observer's card: ${JSON.stringify(prejoin)}`);
      if (problems.length) throw new Error(problems.join('; '));
      // The supervisor's list shows the observer present (next automatic refresh).
      const t0 = Date.now();
      let listed = null;
      for (;;) {
        listed = await evaluate(supervisor, (sid) => window.qiaoSupervise.sessions.find((s) => s.id === sid) ?? null, sessionId);
        if (listed?.participants.some((p) => p.role === 'observer')) break;
        if (Date.now() - t0 > 15_000) throw new Error(`the supervisor's list does not show the observer: ${JSON.stringify(listed)}`);
        await sleep(POLL_MS);
      }
      const observed = await evaluate(supervisor, () => window.qiaoSupervise.observed);
      return {
        click_to_seen_ms: Date.now() - clicked,
        wait_ms: ms,
        prejoin,
        link_shown: linkShown,
        observer_id: oid(),
        observed,
        self,
        seen_by: Object.fromEntries(pages.map((p) => [p.name, { ...seenBy(p), tile: p.snap.dom.tiles.includes(oid()) }])),
        badges,
        observer_frames_of_judge: received(observer.snap, id(judge), 'video'),
        supervisor_lists: listed.participants.map((p) => ({ role: p.role, zone: p.zone, display_name: p.display_name })),
      };
    });

    // ---- 5. the same in English ----------------------------------------------------------------------
    await step('english', async () => {
      await supervisor.page.click('#lang-btn');
      await clerk.page.click('#lang-btn');
      await sleep(300);
      return {
        supervisor_title: await supervisor.page.textContent('#live-title'),
        supervisor_observe: await supervisor.page.textContent(`[data-testid="observe-${sessionId}"]`),
        clerk_notes_title: await clerk.page.textContent('#notes-title'),
        clerk_add: await clerk.page.textContent('[data-testid="note-add"]'),
      };
    });

    result.ok = true;
    result.pages = summaries([...pages, observer], false);
    await finish(artifactDir, [...pages, supervisor, observer], result, scrub);
  } catch (err) {
    log(scrub(err.stack || String(err)));
    result.ok = false;
    result.failed_step = current;
    result.error = scrub(`${current}: ${plain(err.message || err).slice(0, 1500)}`);
    await sampleRooms([...pages, observer].filter((p) => p?.opened)).catch(() => {});
    result.pages = summaries([...pages, observer].filter(Boolean), true);
    for (const p of [...pages, supervisor, observer]) if (p?.opened) await screenshot(p, path.join(artifactDir, `${p.name}-failed.png`), log);
    await finish(artifactDir, [...pages, supervisor, observer].filter(Boolean), result, scrub);
  } finally {
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

/** Console capture for a page not opened by openPage (the supervisor's, the observer's tab). */
function watchConsole(p, scrub) {
  p.page.on('console', (msg) => {
    const line = scrub(`${msg.type()}: ${msg.text()}`);
    p.consoleLog.push(line);
    if (msg.type() === 'error') p.consoleErrors.push(line.slice(0, 500));
  });
  p.page.on('pageerror', (err) => {
    p.consoleLog.push(scrub(`pageerror: ${err.message}`));
    p.consoleErrors.push(scrub(`uncaught: ${err.message}`).slice(0, 500));
  });
}

function summaries(pages, withDiagnostics) {
  return pages.filter(Boolean).map((p) => {
    const out = {
      role: p.name,
      participant_id: p.snap?.participantId ?? null,
      state: p.snap?.state ?? null,
      zone: p.snap?.zone ?? null,
    };
    if (withDiagnostics) {
      out.now = roomState(p);
      out.roster = p.snap?.roster ?? [];
      out.console_errors = p.consoleErrors.slice(0, 20);
    }
    return out;
  });
}

async function finish(artifactDir, pages, result, scrub) {
  for (const p of pages) {
    if (!p) continue;
    p.consoleLog = p.consoleLog.map(scrub);
    await writeConsoleLog(p, artifactDir);
  }
  const clean = JSON.parse(scrub(JSON.stringify(result)));
  await writeResultFile(artifactDir, clean);
  printResult(clean);
}

// Never hang the Rust test: a hard limit well beyond the five bounded steps.
run(main, { watchdogMs: TIMEOUT_MS * 8 + 90_000, log });
