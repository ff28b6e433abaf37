#!/usr/bin/env node
// The participant's own steps in real Chromium against the real server: the identity check
// (《人民法院在线诉讼规则》第七条), consent to taking part online and to the recording (第四条), the
// recording notice while in the session, and the rating afterwards.
//
//   node identity_consent.mjs <artifact_dir> <mediator_join_url> <party_join_url> <other_party_join_url>
//
// The session needs consent (the default); the party's invitation names who must join ("张三",
// ID number 13092519800101123X); the other party's invitation has no identity. Each page has its
// own browser context. The party is on a phone-sized viewport (390×844, touch) and opens its link
// WITHOUT autojoin, so it goes through every screen a person does; the mediator and the other party
// open theirs with autojoin=1. Every wait is bounded polling (POLL_MS) of window.qiao and the DOM,
// up to QIAO_BROWSER_TIMEOUT_MS (default 30 s) per step.
//
//  1. mediator_joins   the mediator (a host: no consent step) goes straight through: connected,
//                      window.qiao.step 'session', the recording notice shown; the page still asked
//                      GET /api/v1/join/status first (autojoin does not skip the steps).
//  2. identity         the party's page shows the identity step (step 'identity'), nothing joined.
//  3. mismatch         a wrong ID number: the server's identity_mismatch is shown in Chinese, and in
//                      English after the language switch; still at 'identity'.
//  4. consent          the right ID number (check letter in lower case): step 'consent'; the
//                      continue button stays disabled until both boxes are ticked.
//  5. prejoin          continue: the device check (step 'prejoin'); the party presses join.
//  6. in_session       the party decodes the mediator's video (and the mediator the party's), and
//                      the header shows the recording notice on both pages.
//  7. rating           the party presses leave: the rating card (step 'rating'), submit disabled
//                      until a star is chosen; 4 stars and a comment, submit: thanks (step 'rated').
//  8. refused_4015     the other party's page is told by a stubbed status answer that its consent
//                      was given (it was not): the server refuses the join with 4015, the page says
//                      why and offers to redo the steps; pressing that brings the real consent step.
//
// Saves <page>-<step>.png after each step (<page>-failed.png on failure), page-<page>.console.log
// and result.json into artifact_dir, and prints exactly one line:
//
//   RESULT {"ok":true,"steps":{"mediator_joins":{"ms":…},…},"ids":{"mediator":…,"party":…},"pages":[…]}
//
// On failure "error" names the step. Exit status 0 exactly when ok. Diagnostics go to stderr. Join
// tokens are never printed; the stubbed status answer is built from the real one in the page's own
// request, so the token stays in the browser.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  POLL_MS, launchBrowser, makeLog, openPage, plain, printResult, run, screenshot, sleep, withTimeout,
  writeConsoleLog, writeResultFile,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const log = makeLog('identity_consent');

const NAME = '张三';
const ID_RIGHT = '13092519800101123x'; // as invited, but the check letter typed in lower case
const ID_WRONG = '130925198001011230';
const COMMENT = '调解员很耐心，谢谢。';

/** A phone: 390×844 CSS pixels, touch, mobile viewport handling. Same hooks as lib.mjs openPage. */
async function openPhonePage(browser, index, url) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true,
  });
  await context.grantPermissions(['camera', 'microphone']);
  const page = await context.newPage();
  const p = { index, url, page, context, consoleErrors: [], consoleLog: [], snap: null };
  page.on('console', (msg) => {
    p.consoleLog.push(`${msg.type()}: ${msg.text()}`);
    // The identity mismatch is an HTTP 403 that Chromium logs as a failed resource: expected here.
    if (msg.type() === 'error' && !/status of 403/.test(msg.text())) p.consoleErrors.push(msg.text().slice(0, 500));
  });
  page.on('pageerror', (err) => {
    p.consoleLog.push(`pageerror: ${err.message}`);
    p.consoleErrors.push(`uncaught: ${err.message}`.slice(0, 500));
  });
  page.on('crash', () => p.consoleErrors.push('page crashed'));
  return p;
}

/** What a test reads from one page: window.qiao and what a person sees of the steps. */
function probe(page) {
  return page.evaluate(async () => {
    const q = window.qiao;
    if (!q) return null;
    const el = (id) => document.getElementById(id);
    const shown = (id) => { const e = el(id); return !!e && !e.closest('[hidden]'); };
    const text = (id) => (shown(id) ? el(id).textContent.trim() : null);
    const stats = await q.stats();
    return {
      step: q.step,
      state: q.state,
      participantId: q.participantId,
      closeCode: q.closeCode,
      decoding: [...new Set(stats.videos.filter((v) => v.framesDecoded > 0).map((v) => v.participant_id))],
      frames: Object.fromEntries(stats.videos.map((v) => [v.participant_id, v.framesDecoded])),
      lang: document.documentElement.lang,
      dom: {
        screen: document.body.dataset.screen,
        rec_badge: text('rec-badge'),
        identity_error: text('identity-error'),
        identity_error_code: el('identity-error')?.dataset.code ?? null,
        identity_why: text('step-identity') ? el('step-identity').querySelector('.legal-note').textContent : null,
        consent_submit_enabled: shown('consent-submit') ? !el('consent-submit').disabled : null,
        join_enabled: shown('join-btn') ? !el('join-btn').disabled : null,
        ended_body: text('end-body'),
        rejoin: text('rejoin-btn'),
        rating: shown('rating-form'),
        rating_submit_enabled: shown('rating-submit') ? !el('rating-submit').disabled : null,
        rating_score_text: text('rating-score-text'),
        rating_thanks: text('rating-thanks'),
      },
    };
  });
}

async function sampleOne(p) {
  try {
    p.snap = await withTimeout(probe(p.page), 5_000, 'reading window.qiao');
    p.sampleError = undefined;
  } catch (err) {
    p.sampleError = err.message;
  }
  return p.snap;
}

function describe(p) {
  if (!p.snap) return `${p.index}: ${p.sampleError ?? 'no window.qiao'}`;
  const s = p.snap;
  return `${p.index}: step ${s.step}, state ${s.state}${s.closeCode ? ` close ${s.closeCode}` : ''}, decoding [${s.decoding}]`;
}

async function main() {
  const [artifactDir, ...urls] = process.argv.slice(2);
  if (!artifactDir || urls.length !== 3) {
    printResult({ ok: false, error: 'usage: node identity_consent.mjs <artifact_dir> <mediator_join_url> <party_join_url> <other_party_join_url>' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });
  const result = { ok: false, steps: {}, ids: {} };
  const browser = await launchBrowser(urls, TIMEOUT_MS);
  const pages = [];
  let current = 'setup';
  try {
    const mediator = await openPage(browser, 'mediator', urls[0]); // with autojoin=1
    const party = await openPhonePage(browser, 'party', urls[1]); // no autojoin: every screen
    const other = await openPage(browser, 'other', urls[2]); // with autojoin=1
    pages.push(mediator, party, other);
    const statusRequests = new Map(pages.map((p) => [p, 0]));
    for (const p of pages) {
      p.page.on('request', (req) => {
        if (new URL(req.url()).pathname.endsWith('/api/v1/join/status')) statusRequests.set(p, statusRequests.get(p) + 1);
      });
    }

    const waitFor = async (ps, what, done, timeoutMs = TIMEOUT_MS) => {
      const t0 = Date.now();
      for (;;) {
        await Promise.all(ps.map(sampleOne));
        if (ps.every((p) => p.snap) && done()) return Date.now() - t0;
        if (Date.now() - t0 >= timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms (${ps.map(describe).join('; ')})`);
        await sleep(POLL_MS);
      }
    };
    const shot = (p, name) => screenshot(p, path.join(artifactDir, `${p.index}-${name}.png`), log);
    const step = async (name, fn) => {
      current = name;
      log(`step ${name}`);
      const t0 = Date.now();
      const out = await fn();
      result.steps[name] = { ms: Date.now() - t0, ...out };
      log(`step ${name}: ${JSON.stringify(result.steps[name])}`);
    };
    const click = (p, testid) => p.page.click(`[data-testid="${testid}"]`, { timeout: 5_000 });
    const fill = (p, testid, value) => p.page.fill(`[data-testid="${testid}"]`, value, { timeout: 5_000 });
    const check = (p, testid) => p.page.check(`[data-testid="${testid}"]`, { timeout: 5_000 });
    const goto = (p) => p.page.goto(p.url, { waitUntil: 'load', timeout: TIMEOUT_MS });
    const switchLang = async (p) => {
      const before = p.snap?.lang;
      await p.page.click('#lang-btn', { timeout: 5_000 });
      await waitFor([p], 'the language switch', () => p.snap.lang !== before, 5_000);
    };

    // ---- 1. the mediator (a host) goes straight through, autojoin ---------------------------
    await step('mediator_joins', async () => {
      await goto(mediator);
      const ms = await waitFor([mediator], 'the mediator connected in the session',
        () => mediator.snap.state === 'connected' && mediator.snap.step === 'session' && !!mediator.snap.dom.rec_badge);
      result.ids.mediator = mediator.snap.participantId;
      await shot(mediator, 'joined');
      return { wait_ms: ms, step: mediator.snap.step, rec_badge: mediator.snap.dom.rec_badge, status_requests: statusRequests.get(mediator) };
    });

    // ---- 2. the party's page asks who it is -------------------------------------------------
    await step('identity', async () => {
      await goto(party);
      const ms = await waitFor([party], 'the identity step', () => party.snap.step === 'identity' && party.snap.dom.identity_why);
      await shot(party, 'identity');
      return { wait_ms: ms, step: party.snap.step, state: party.snap.state, note: party.snap.dom.identity_why };
    });

    // ---- 3. a wrong ID number ------------------------------------------------------------------
    await step('mismatch', async () => {
      await fill(party, 'identity-name', NAME);
      await fill(party, 'identity-id', ID_WRONG);
      await click(party, 'identity-submit');
      await waitFor([party], 'the mismatch error', () => party.snap.dom.identity_error_code === 'identity_mismatch' && !!party.snap.dom.identity_error);
      const zh = party.snap.dom.identity_error;
      await shot(party, 'mismatch');
      await switchLang(party);
      const en = party.snap.dom.identity_error;
      await shot(party, 'mismatch-en');
      await switchLang(party);
      return { step: party.snap.step, error_code: party.snap.dom.identity_error_code, error_zh: zh, error_en: en };
    });

    // ---- 4. the right ID number, then consent ---------------------------------------------------
    await step('consent', async () => {
      await fill(party, 'identity-id', ID_RIGHT);
      await click(party, 'identity-submit');
      const ms = await waitFor([party], 'the consent step', () => party.snap.step === 'consent' && party.snap.dom.consent_submit_enabled !== null);
      const enabled = { none: party.snap.dom.consent_submit_enabled };
      await check(party, 'consent-proceeding');
      await sampleOne(party);
      enabled.proceeding_only = party.snap.dom.consent_submit_enabled;
      await shot(party, 'consent-one');
      await check(party, 'consent-recording');
      await sampleOne(party);
      enabled.both = party.snap.dom.consent_submit_enabled;
      await shot(party, 'consent');
      return { wait_ms: ms, step: party.snap.step, submit_enabled: enabled };
    });

    // ---- 5. the device check, then join ----------------------------------------------------------
    await step('prejoin', async () => {
      await click(party, 'consent-submit');
      const ms = await waitFor([party], 'the device check with the join button enabled',
        () => party.snap.step === 'prejoin' && party.snap.dom.join_enabled === true);
      await shot(party, 'prejoin');
      await click(party, 'join');
      return { wait_ms: ms, step: party.snap.step };
    });

    // ---- 6. in the session: media both ways, the recording notice -------------------------------
    await step('in_session', async () => {
      const ms = await waitFor([party, mediator], 'party and mediator decoding each other, with the recording notice',
        () => party.snap.state === 'connected' && party.snap.step === 'session'
          && party.snap.decoding.includes(result.ids.mediator)
          && mediator.snap.decoding.includes(party.snap.participantId)
          && !!party.snap.dom.rec_badge && !!mediator.snap.dom.rec_badge);
      result.ids.party = party.snap.participantId;
      await shot(party, 'session');
      await shot(mediator, 'session');
      return {
        wait_ms: ms,
        party_frames_of_mediator: party.snap.frames[result.ids.mediator] ?? 0,
        mediator_frames_of_party: mediator.snap.frames[result.ids.party] ?? 0,
        party_rec_badge: party.snap.dom.rec_badge,
        mediator_rec_badge: mediator.snap.dom.rec_badge,
      };
    });

    // ---- 7. leave, then rate ---------------------------------------------------------------------
    await step('rating', async () => {
      await click(party, 'leave');
      const ms = await waitFor([party], 'the rating card after leaving',
        () => party.snap.state === 'left' && party.snap.step === 'rating' && party.snap.dom.rating);
      const before = { submit_enabled: party.snap.dom.rating_submit_enabled, rec_badge: party.snap.dom.rec_badge };
      await shot(party, 'rating');
      await click(party, 'rating-star-4');
      await party.page.fill('#rating-comment', COMMENT, { timeout: 5_000 });
      await sampleOne(party);
      const chosen = { submit_enabled: party.snap.dom.rating_submit_enabled, score_text: party.snap.dom.rating_score_text };
      await shot(party, 'rating-chosen');
      await click(party, 'rating-submit');
      await waitFor([party], 'the thanks', () => party.snap.step === 'rated' && !!party.snap.dom.rating_thanks);
      await shot(party, 'rated');
      return { wait_ms: ms, before, chosen, thanks: party.snap.dom.rating_thanks, step: party.snap.step };
    });

    // ---- 8. a refused join (4015) and redoing the steps ---------------------------------------
    await step('refused_4015', async () => {
      // Only the first status answer is stubbed: it claims consent was given.
      let stubbed = 0;
      await other.page.route('**/api/v1/join/status', async (route) => {
        if (stubbed > 0) return route.continue();
        stubbed += 1;
        const resp = await route.fetch();
        const body = await resp.json();
        body.consent_given = true;
        await route.fulfill({ response: resp, json: body });
      });
      await goto(other);
      const ms = await waitFor([other], 'the refused join (4015) with the redo button',
        () => other.snap.step === 'ended' && other.snap.closeCode === 4015 && !!other.snap.dom.rejoin);
      const refused = { close_code: other.snap.closeCode, ended_body: other.snap.dom.ended_body, redo: other.snap.dom.rejoin };
      await shot(other, 'refused');
      await other.page.click('#rejoin-btn', { timeout: 5_000 });
      const redoMs = await waitFor([other], 'the real consent step after redo', () => other.snap.step === 'consent');
      await shot(other, 'redo-consent');
      return { wait_ms: ms, ...refused, stubbed_answers: stubbed, redo_ms: redoMs, step_after_redo: other.snap.step };
    });

    current = 'done';
    result.ok = true;
  } catch (err) {
    result.error = `${current}: ${plain(err.message).split('\n')[0]}`;
    log(err.stack || String(err));
    for (const p of pages) await screenshot(p, path.join(artifactDir, `${p.index}-failed.png`), log);
  } finally {
    result.pages = pages.map((p) => ({ page: p.index, ...(p.snap ? { step: p.snap.step, state: p.snap.state, close_code: p.snap.closeCode } : {}), console_errors: p.consoleErrors.slice(0, 20) }));
    for (const p of pages) await writeConsoleLog(p, artifactDir);
    await writeResultFile(artifactDir, result);
    printResult(result);
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

// Never hang the Rust test: eight bounded steps, each well inside its own limit.
run(main, { watchdogMs: TIMEOUT_MS * 8 + 60_000, log });
