// recordings.html: a case's recordings for staff (docs/api.md "Recordings"), with the
// administrator's bearer token. Lists GET /api/v1/cases/{id}/recordings (status, start and end,
// integrity value 完整性校验值, segments, the composite's state); 播放 fetches a five-minute link
// to composite.mp4 (GET /api/v1/recordings/{id}/link) and plays it; 查看录像清单 shows the signed
// manifest (GET /api/v1/recordings/{id}/manifest) as formatted JSON. Every such access is audited
// by the server.
//
// The token is kept in sessionStorage (this tab only, gone when it closes), never in the address.
// The case is a Qiao case ID (case_…) or a case number such as (2024)冀0925民初1234号, from the
// form or from ?case=…; with both a saved token and ?case= the list loads by itself.
//
// Test hook: window.qiaoRecordings ({state, error, recordings, playing}).

import { initI18n, setLang, currentLang, onLangChange, setText, setLiteral, t } from './i18n.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'qiao.admin_token';

const page = {
  /** 'idle' | 'loading' | 'listed' | 'error' */
  state: 'idle',
  /** the last error's code (unauthorized, not_found, network, …) or null */
  error: null,
  /** {id, case_id} of the case listed */
  kase: null,
  /** the recordings listed (the API's objects) */
  recordings: [],
  /** the recording whose composite is in the player, or null */
  playing: null,
  /** the recording whose manifest is shown, and the manifest */
  manifest: null,
};

window.qiaoRecordings = Object.freeze({
  get state() { return page.state; },
  get error() { return page.error; },
  get recordings() { return page.recordings.map((r) => ({ ...r })); },
  get playing() { return page.playing; },
});

// ---- the API ------------------------------------------------------------------------------------

function savedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}
function saveToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  } catch { /* storage disabled: the field keeps it for this page */ }
}

/** GET an admin endpoint; never throws: {ok, status, code, message: {zh, en} | null, body}. */
async function api(path, token) {
  const url = new URL(`api/v1/${path}`, document.baseURI).href;
  let resp;
  try {
    resp = await fetch(url, {
      headers: { Authorization: `Bearer ${token}` },
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
  } catch {
    return { ok: false, status: 0, code: 'network', message: null, body: null };
  }
  let body = null;
  try { body = await resp.json(); } catch { /* no JSON */ }
  if (resp.ok) return { ok: true, status: resp.status, code: null, message: null, body };
  // The server's messages are "中文 / English" in one string.
  const text = body?.error?.message ?? null;
  const at = text ? text.indexOf(' / ') : -1;
  const message = text ? (at < 0 ? { zh: text, en: text } : { zh: text.slice(0, at), en: text.slice(at + 3) }) : null;
  return { ok: false, status: resp.status, code: body?.error?.code ?? `http_${resp.status}`, message, body };
}

/** Shows a failed request: a key of ours for what we can explain, else the server's words. */
function showError(box, res, params = {}) {
  box.hidden = false;
  box.dataset.code = res.code ?? '';
  if (res.code === 'network') return setText(box, 'recs.network');
  if (res.status === 401) return setText(box, 'recs.bad_token');
  if (res.status === 404 && params.case) return setText(box, 'recs.no_case', { case: params.case });
  if (res.message) return setLiteral(box, res.message.zh, res.message.en);
  return setText(box, 'recs.failed');
}

// ---- looking up a case ----------------------------------------------------------------------------

/** The token in the field, else the one this tab saved. */
function currentToken() {
  return $('admin-token').value.trim() || savedToken();
}

async function lookup() {
  const token = currentToken();
  const wanted = $('case-input').value.trim();
  const errorBox = $('lookup-error');
  errorBox.hidden = true;
  if (!token) { errorBox.hidden = false; setText(errorBox, 'recs.need_token'); $('admin-token').focus(); return; }
  if (!wanted) { errorBox.hidden = false; setText(errorBox, 'recs.need_case'); $('case-input').focus(); return; }

  page.state = 'loading';
  page.error = null;
  $('lookup-btn').disabled = true;
  setText($('lookup-btn'), 'recs.looking');
  try {
    const res = await listRecordings(wanted, token);
    if (!res.ok) {
      page.state = 'error';
      page.error = res.code;
      if (res.status === 401) { saveToken(''); renderTokenNote(); }
      showError(errorBox, res, { case: wanted });
      return;
    }
    saveToken(token);
    $('admin-token').value = '';
    renderTokenNote();
    page.kase = { id: res.body.case, case_id: res.body.case_id };
    page.recordings = res.body.recordings ?? [];
    page.state = 'listed';
    // The address says which case is shown (for a reload or a colleague), never the token.
    const url = new URL(location.href);
    url.searchParams.set('case', page.kase.id);
    history.replaceState(null, '', url.href);
    renderList();
  } finally {
    $('lookup-btn').disabled = false;
    setText($('lookup-btn'), 'recs.lookup');
  }
}

/** GET /cases/{id}/recordings for a case ID (case_…) or, failing that, a case number. */
async function listRecordings(wanted, token) {
  if (/^case_[A-Za-z0-9_-]+$/.test(wanted)) {
    const res = await api(`cases/${encodeURIComponent(wanted)}/recordings`, token);
    if (res.ok || res.status !== 404) return res;
  }
  const found = await api(`cases?case_id=${encodeURIComponent(wanted)}`, token);
  if (!found.ok) return found;
  const kase = found.body?.cases?.[0];
  if (!kase) return { ok: false, status: 404, code: 'not_found', message: null, body: null };
  return api(`cases/${encodeURIComponent(kase.id)}/recordings`, token);
}

async function refresh() {
  if (!page.kase) return;
  const token = currentToken();
  const res = await api(`cases/${encodeURIComponent(page.kase.id)}/recordings`, token);
  if (!res.ok) { showError($('lookup-error'), res, { case: page.kase.case_id }); return; }
  page.recordings = res.body.recordings ?? [];
  renderList();
}

// ---- the list ---------------------------------------------------------------------------------------

/** An RFC 3339 time in Beijing time, as staff read it. */
function beijing(iso) {
  if (!iso) return t('recs.not_yet');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(currentLang() === 'en' ? 'en-GB' : 'zh-CN', { timeZone: 'Asia/Shanghai', hour12: false });
}

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** A label/value pair of a recording's facts. */
function fact(labelKey, value, extraClass = '') {
  const wrap = el('div', `recs-fact ${extraClass}`.trim());
  const dt = el('dt');
  setText(dt, labelKey);
  const dd = el('dd');
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  wrap.append(dt, dd);
  return wrap;
}

function knownKey(key, fallback) {
  return t(key) !== key ? t(key) : fallback;
}

function renderList() {
  $('results').hidden = false;
  const list = page.recordings;
  setText($('results-title'), 'recs.results_title', { n: list.length });
  setText($('results-case'), 'recs.results_case', { case_id: page.kase.case_id ?? '', id: page.kase.id });
  $('results-empty').hidden = list.length > 0;
  $('recording-list').replaceChildren(...list.map(renderRecording));
}

function renderRecording(r) {
  const li = el('li', 'recs-item', { 'data-testid': 'recording-row', 'data-recording-id': r.id, 'data-status': r.status });
  const head = el('div', 'recs-item-head');
  const title = el('strong', 'recs-item-title');
  title.textContent = r.id;
  const status = el('span', 'chip recs-status', { 'data-status': r.status });
  status.textContent = knownKey(`recs.status.${r.status}`, r.status);
  head.append(title, status);

  const facts = el('dl', 'recs-facts');
  const composite = r.composite ?? 'none';
  const compositeChip = el('span', 'chip recs-composite', { 'data-composite': composite, 'data-testid': 'composite-state' });
  compositeChip.textContent = knownKey(`recs.composite.${composite}`, composite);
  const chain = el('code', 'recs-chain', { 'data-testid': 'chain-head' });
  chain.textContent = r.chain_head ?? t('recs.not_yet');
  facts.append(
    fact('recs.session', r.session_id),
    fact('recs.started', beijing(r.started_at)),
    fact('recs.ended', beijing(r.ended_at)),
    fact('recs.segments', String(r.segments ?? 0)),
    fact('recs.composite', compositeChip),
    fact('recs.chain_head', chain, 'wide'),
  );

  const actions = el('div', 'recs-actions');
  const play = el('button', 'act primary', { type: 'button', 'data-testid': `play-${r.id}` });
  setText(play, 'recs.play');
  play.title = t('recs.play_label');
  play.disabled = r.composite !== 'done'; // nothing to play before the composite is rendered
  play.addEventListener('click', () => playComposite(r, play));
  const manifest = el('button', 'act', { type: 'button', 'data-testid': `manifest-${r.id}` });
  setText(manifest, 'recs.manifest');
  manifest.addEventListener('click', () => showManifest(r, manifest));
  actions.append(play, manifest);

  li.append(head, facts, actions);
  return li;
}

// ---- playing the composite, the manifest ----------------------------------------------------------

async function playComposite(r, btn) {
  btn.disabled = true;
  const box = $('player-box');
  const errorBox = $('player-error');
  errorBox.hidden = true;
  try {
    const res = await api(`recordings/${encodeURIComponent(r.id)}/link?path=composite.mp4`, currentToken());
    box.hidden = false;
    setText($('player-which'), 'recs.which', { id: r.id, session: r.session_id });
    if (!res.ok || typeof res.body?.url !== 'string') {
      showError(errorBox, res);
      return;
    }
    page.playing = r.id;
    const video = $('player');
    video.dataset.recordingId = r.id;
    video.src = res.body.url;
    box.scrollIntoView({ block: 'nearest' });
    video.play().catch(() => { /* autoplay refused: the controls are there */ });
  } finally {
    btn.disabled = r.composite !== 'done';
  }
}

async function showManifest(r, btn) {
  btn.disabled = true;
  const box = $('manifest-box');
  try {
    const res = await api(`recordings/${encodeURIComponent(r.id)}/manifest`, currentToken());
    box.hidden = false;
    setText($('manifest-which'), 'recs.which', { id: r.id, session: r.session_id });
    const pre = $('manifest-json');
    if (!res.ok) {
      page.manifest = null;
      pre.dataset.recordingId = '';
      showError(pre, res);
      return;
    }
    page.manifest = { id: r.id, body: res.body };
    pre.dataset.recordingId = r.id;
    delete pre.dataset.i18n; delete pre.dataset.zh; delete pre.dataset.en;
    pre.textContent = JSON.stringify(res.body, null, 2);
    box.scrollIntoView({ block: 'nearest' });
  } finally {
    btn.disabled = false;
  }
}

function closePlayer() {
  const video = $('player');
  video.pause();
  video.removeAttribute('src');
  video.load();
  page.playing = null;
  $('player-box').hidden = true;
}

$('player').addEventListener('error', () => {
  if (!$('player').getAttribute('src')) return;
  $('player-error').hidden = false;
  setText($('player-error'), 'recs.player_failed');
});

// ---- start ----------------------------------------------------------------------------------------

function renderTokenNote() {
  const saved = !!savedToken();
  setText($('token-note'), saved ? 'recs.token_saved' : 'recs.token_note');
  $('token-forget').hidden = !saved;
}

function main() {
  initI18n();
  $('lang-btn').addEventListener('click', () => setLang(currentLang() === 'en' ? 'zh-CN' : 'en'));
  onLangChange(() => { if (page.state === 'listed') renderList(); });
  $('lookup-form').addEventListener('submit', (e) => { e.preventDefault(); lookup(); });
  $('refresh-btn').addEventListener('click', refresh);
  $('token-forget').addEventListener('click', () => { saveToken(''); renderTokenNote(); $('admin-token').focus(); });
  $('player-close').addEventListener('click', closePlayer);
  $('manifest-close').addEventListener('click', () => { $('manifest-box').hidden = true; page.manifest = null; });
  renderTokenNote();
  const wanted = new URLSearchParams(location.search).get('case');
  if (wanted) $('case-input').value = wanted;
  if (wanted && savedToken()) lookup();
}

main();
