#!/usr/bin/env node
// The staff's recordings page (web-client/recordings.html) in real Chromium against the real
// server, once a session's recording is final and its composite rendered.
//
//   QIAO_ADMIN_TOKEN=… node recordings.mjs <artifact_dir> <base_url> <case_number> <case_id>
//
// The administrator's token comes in the environment, never on the command line, and is never
// printed or saved. Steps (each wait bounded polling, up to QIAO_BROWSER_TIMEOUT_MS, default 30 s):
//
//  1. wrong_token  recordings.html with a wrong token and the case number: the page says the
//                  token is wrong (error code `unauthorized`), and lists nothing.
//  2. list         the right token and the case number (e.g. (2024)冀0925民初1234号, resolved to the
//                  case through GET /api/v1/cases?case_id=): the case's recordings are listed with
//                  their status, times, segments, composite state and integrity value; the token
//                  field is emptied (the token is kept in sessionStorage) and the address names
//                  the case (?case=case_…), not the token.
//  3. manifest     查看录像清单 on the first recording: the manifest, as formatted JSON.
//  4. play         播放 on the first recording: a <video controls> gets a signed link to
//                  composite.mp4 and plays it: readyState ≥ 2, a duration > 0, a picture
//                  (videoWidth > 0), and currentTime moving on.
//  5. reload       recordings.html?case=<case_id> in the same tab: listed again by itself with the
//                  token this tab kept, nothing typed.
//  6. english      the language switch: the page in English.
//
// Saves <step>.png for each step (failed.png on failure), page.console.log and result.json into
// artifact_dir, and prints exactly one line: RESULT {"ok":…,"steps":{…}}; exit status 0 exactly
// when ok.

import fs from 'node:fs/promises';
import path from 'node:path';
import {
  POLL_MS, launchBrowser, makeLog, plain, printResult, run, sleep, withTimeout, writeResultFile,
} from './lib.mjs';

const TIMEOUT_MS = Number(process.env.QIAO_BROWSER_TIMEOUT_MS) || 30_000;
const ADMIN_TOKEN = process.env.QIAO_ADMIN_TOKEN || '';
const baseLog = makeLog('recordings');
/** The admin token is a credential: out of everything printed or saved. */
const hide = (text) => (ADMIN_TOKEN ? String(text).split(ADMIN_TOKEN).join('<admin-token>') : String(text));
const log = (...args) => baseLog(...args.map(hide));

async function main() {
  const [artifactDir, baseUrl, caseNumber, caseId] = process.argv.slice(2);
  if (!artifactDir || !baseUrl || !caseNumber || !caseId || !ADMIN_TOKEN) {
    printResult({ ok: false, error: 'usage: QIAO_ADMIN_TOKEN=… node recordings.mjs <artifact_dir> <base_url> <case_number> <case_id>' });
    return;
  }
  await fs.mkdir(artifactDir, { recursive: true });
  const result = { ok: false, steps: {} };
  const browser = await launchBrowser([baseUrl], TIMEOUT_MS);
  const consoleLog = [];
  let current = 'setup';
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
    page = await context.newPage();
    page.on('console', (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLog.push(`pageerror: ${e.message}`));
    const shot = async (name) => {
      await withTimeout(page.screenshot({ path: path.join(artifactDir, `${name}.png`), fullPage: true }), 10_000, 'screenshot')
        .catch((e) => log(`screenshot ${name}: ${e.message}`));
    };
    const step = async (name, fn) => {
      current = name;
      log(`step ${name}`);
      const t0 = Date.now();
      const out = await fn();
      result.steps[name] = { ms: Date.now() - t0, ...out };
      log(`step ${name}: ${JSON.stringify(result.steps[name])}`);
      await shot(name);
    };
    /** Poll `probe` (run in the page) until `done(value)`; returns the value. */
    const until = async (what, probe, done, arg) => {
      const t0 = Date.now();
      let last;
      for (;;) {
        last = await withTimeout(page.evaluate(probe, arg), 5_000, `reading the page (${what})`);
        if (done(last)) return last;
        if (Date.now() - t0 > TIMEOUT_MS) throw new Error(`${what}: not within ${TIMEOUT_MS} ms (last: ${JSON.stringify(last)})`);
        await sleep(POLL_MS);
      }
    };
    const readList = () => {
      const q = window.qiaoRecordings;
      const shown = (el) => !!el && !el.closest('[hidden]');
      const err = document.getElementById('lookup-error');
      return {
        state: q?.state ?? null,
        error: q?.error ?? null,
        error_shown: shown(err) ? { code: err.dataset.code ?? null, text: err.textContent.trim() } : null,
        results_shown: shown(document.getElementById('results')),
        title: document.getElementById('results-title')?.textContent ?? null,
        rows: [...document.querySelectorAll('[data-testid="recording-row"]')].map((li) => ({
          id: li.dataset.recordingId,
          status: li.dataset.status,
          status_text: li.querySelector('.recs-status')?.textContent ?? null,
          composite: li.querySelector('[data-testid="composite-state"]')?.dataset.composite ?? null,
          composite_text: li.querySelector('[data-testid="composite-state"]')?.textContent ?? null,
          chain_head: li.querySelector('[data-testid="chain-head"]')?.textContent ?? null,
          facts: [...li.querySelectorAll('.recs-fact')].map((f) => [f.querySelector('dt').textContent, f.querySelector('dd').textContent]),
          play_enabled: !li.querySelector('[data-testid^="play-"]')?.disabled,
        })),
        token_field_empty: document.getElementById('admin-token').value === '',
        token_kept: !!sessionStorage.getItem('qiao.admin_token'),
        search: location.search,
        lang: document.documentElement.lang,
        heading: document.querySelector('h1')?.textContent ?? null,
      };
    };
    const url = new URL('recordings.html', baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`).href;

    // ---- 1. a wrong token is refused -------------------------------------------------------------
    await step('wrong_token', async () => {
      await page.goto(url, { waitUntil: 'load', timeout: TIMEOUT_MS });
      await page.fill('[data-testid="admin-token"]', 'not-the-admin-token');
      await page.fill('[data-testid="case-input"]', caseNumber);
      await page.click('[data-testid="lookup"]');
      const seen = await until('the wrong token refused', readList, (v) => v.state === 'error' && !!v.error_shown);
      return { error: seen.error, error_shown: seen.error_shown, results_shown: seen.results_shown, token_kept: seen.token_kept };
    });

    // ---- 2. the right token and the case number --------------------------------------------------
    await step('list', async () => {
      await page.fill('[data-testid="admin-token"]', ADMIN_TOKEN);
      await page.fill('[data-testid="case-input"]', caseNumber);
      await page.click('[data-testid="lookup"]');
      const seen = await until('the recordings listed', readList, (v) => v.state === 'listed' && v.rows.length > 0);
      return { ...seen, search_names_case: new URLSearchParams(seen.search).get('case') === caseId };
    });
    const first = result.steps.list.rows[0];

    // ---- 3. the manifest ---------------------------------------------------------------------------
    await step('manifest', async () => {
      await page.click(`[data-testid="manifest-${first.id}"]`);
      const text = await until('the manifest shown', (id) => {
        const pre = document.getElementById('manifest-json');
        return pre && !pre.closest('[hidden]') && pre.dataset.recordingId === id ? pre.textContent : null;
      }, (v) => !!v, first.id);
      const m = JSON.parse(text);
      return {
        formatted: text.includes('\n  "'),
        format: m.format ?? null,
        status: m.status ?? null,
        chain_head: m.chain_head ?? null,
        segments: Array.isArray(m.segments) ? m.segments.length : null,
        renditions: (m.renditions ?? []).map((r) => r.path),
      };
    });

    // ---- 4. the composite plays ------------------------------------------------------------------------
    await step('play', async () => {
      await page.click(`[data-testid="play-${first.id}"]`);
      const t0 = Date.now();
      const probe = () => {
        const v = document.getElementById('player');
        const box = document.getElementById('player-box');
        const src = v.currentSrc || v.getAttribute('src') || '';
        return {
          shown: !box.closest('[hidden]') && !box.hidden,
          // the link itself is a credential for five minutes: only its shape leaves the page
          signed_link: /\/api\/v1\/recordings\/[^/]+\/files\/composite\.mp4\?exp=\d+&sig=/.test(src),
          readyState: v.readyState,
          duration: Number.isFinite(v.duration) ? v.duration : null,
          videoWidth: v.videoWidth,
          videoHeight: v.videoHeight,
          currentTime: v.currentTime,
          paused: v.paused,
          error: v.error ? v.error.code : null,
          error_text: document.getElementById('player-error').hidden ? null : document.getElementById('player-error').textContent,
          playing: window.qiaoRecordings.playing,
        };
      };
      const ready = await until('the composite loaded (readyState ≥ 2, a duration)', probe,
        (v) => v.error !== null || (v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0));
      if (ready.error !== null) throw new Error(`the video failed: ${JSON.stringify(ready)}`);
      const readyMs = Date.now() - t0;
      const moving = await until('the composite playing (currentTime moving on)', probe, (v) => v.currentTime > 0.5 || v.error !== null);
      return { ready_ms: readyMs, ready, playing: moving };
    });

    // ---- 5. the same tab lists the case again by itself ---------------------------------------------
    await step('reload', async () => {
      await page.goto(`${url}?case=${encodeURIComponent(caseId)}`, { waitUntil: 'load', timeout: TIMEOUT_MS });
      const seen = await until('the recordings listed again with the kept token', readList, (v) => v.state === 'listed' && v.rows.length > 0);
      return { rows: seen.rows.length, first_id: seen.rows[0].id, typed_nothing: seen.token_field_empty };
    });

    // ---- 6. English ------------------------------------------------------------------------------------
    await step('english', async () => {
      await page.click('#lang-btn');
      const seen = await until('the page in English', readList, (v) => v.lang === 'en');
      return { heading: seen.heading, title: seen.title, status_text: seen.rows[0]?.status_text, composite_text: seen.rows[0]?.composite_text };
    });

    result.ok = true;
  } catch (err) {
    log(err.stack || String(err));
    result.ok = false;
    result.failed_step = current;
    result.error = hide(`${current}: ${plain(err.message || err).slice(0, 1500)}`);
    if (page) await withTimeout(page.screenshot({ path: path.join(artifactDir, 'failed.png'), fullPage: true }), 10_000, 'screenshot').catch(() => {});
  } finally {
    await fs.writeFile(path.join(artifactDir, 'page.console.log'), hide(consoleLog.join('\n')) + '\n').catch(() => {});
    const safe = JSON.parse(hide(JSON.stringify(result)));
    await writeResultFile(artifactDir, safe);
    printResult(safe);
    await withTimeout(browser.close(), 10_000, 'closing the browser').catch((err) => log(err.message));
  }
}

run(main, { watchdogMs: TIMEOUT_MS * 6 + 60_000, log });
