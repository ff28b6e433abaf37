// supervise.html: the supervisor's console (纪委 / 检察 监督; docs/api.md "Supervision and the
// record"), with the administrator's bearer token (the live view is an admin endpoint).
//
// - 查看 lists GET /api/v1/live?site_id=… : the sessions under way at the chosen site and every
//   site below it (a county sees its townships and villages), each with its kind, case number,
//   title, site, start, who is present (name, role, zone, connection, mutes) and its recording
//   (GET /api/v1/cases/{case}/recordings: the session's latest recording, its state and segments).
//   The list refreshes every REFRESH_MS while the tab is visible. The server audits every view
//   (live.view), so a hidden tab does not poll.
// - 旁听 invites the supervisor to that session as an `observer` (POST
//   /api/v1/sessions/{id}/participants, the name given here) and opens the join link in a new tab.
//   The server lets an observer publish nothing, tells everyone it joined, and audits the join.
//
// The token is kept in sessionStorage (this tab only; the recordings page uses the same key), never
// in the address; the site is in the address (?site=…), so a reload or a bookmark keeps it.
//
// Test hook: window.qiaoSupervise ({state, error, refreshes, lastRefresh, sessions, observed}).

import { initI18n, setLang, currentLang, onLangChange, setText, setLiteral, roleName, t } from './i18n.js';
import { zoneKind, zoneText } from './roles.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'qiao.admin_token';
const NAME_KEY = 'qiao.supervisor_name';
const REFRESH_MS = 5000;
/** An observer link lasts a working day at most. */
const OBSERVER_TTL_SECONDS = 8 * 3600;
const KIND_ORDER = ['hearing', 'mediation', 'reception'];

const page = {
  /** 'idle' | 'loading' | 'listed' | 'error' */
  state: 'idle',
  /** the last error's code (unauthorized, not_found, network, …) or null */
  error: null,
  /** every site (GET /sites), and id → site */
  sites: [],
  siteById: new Map(),
  /** the site whose subtree is shown ('' = all) */
  siteId: '',
  /** GET /live's sessions: [{session, participants}] */
  live: [],
  /** session id → its latest recording (GET /cases/{case}/recordings), or null */
  recordings: new Map(),
  /** successful refreshes of the list, and when the last one was (ms since the epoch) */
  refreshes: 0,
  lastRefresh: null,
  refreshFailedAt: null,
  inFlight: false,
  /** session ids whose 旁听 is on its way; session id → {participant_id, join_url} once created */
  observing: new Set(),
  observed: new Map(),
};

window.qiaoSupervise = Object.freeze({
  get state() { return page.state; },
  get error() { return page.error; },
  get refreshes() { return page.refreshes; },
  get lastRefresh() { return page.lastRefresh; },
  get siteId() { return page.siteId; },
  /** What the list shows: [{id, kind, case_id, title, site_id, site_name, recording, participants}] */
  get sessions() {
    return page.live.map(({ session: s, participants }) => ({
      id: s.id, kind: s.kind, case_id: s.case_id, title: s.title ?? null, site_id: s.site_id ?? null,
      site_name: page.siteById.get(s.site_id)?.name ?? null,
      recording: page.recordings.get(s.id)?.status ?? null,
      participants: participants.map((p) => ({
        id: p.id, display_name: p.display_name, role: p.role, zone: p.zone, connection: p.connection,
      })),
    }));
  },
  /** The observer invitations made from this page: [{session_id, participant_id}] (never the link). */
  get observed() {
    return [...page.observed].map(([sessionId, o]) => ({ session_id: sessionId, participant_id: o.participant_id }));
  },
});

// ---- the API ------------------------------------------------------------------------------------

function stored(key) {
  try { return sessionStorage.getItem(key) || ''; } catch { return ''; }
}
function store(key, value) {
  try {
    if (value) sessionStorage.setItem(key, value); else sessionStorage.removeItem(key);
  } catch { /* storage disabled: the fields keep it for this page */ }
}

/** An admin call; never throws: {ok, status, code, message: {zh, en} | null, body}. */
async function api(path, token, { method = 'GET', body } = {}) {
  const url = new URL(`api/v1/${path}`, document.baseURI).href;
  const headers = { Authorization: `Bearer ${token}` };
  if (body) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(url, {
      method, headers, body: body ? JSON.stringify(body) : undefined,
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer',
    });
  } catch {
    return { ok: false, status: 0, code: 'network', message: null, body: null };
  }
  let json = null;
  try { json = await resp.json(); } catch { /* no JSON */ }
  if (resp.ok) return { ok: true, status: resp.status, code: null, message: null, body: json };
  // The server's messages are "中文 / English" in one string.
  const text = json?.error?.message ?? null;
  const at = text ? text.indexOf(' / ') : -1;
  const message = text ? (at < 0 ? { zh: text, en: text } : { zh: text.slice(0, at), en: text.slice(at + 3) }) : null;
  return { ok: false, status: resp.status, code: json?.error?.code ?? `http_${resp.status}`, message, body: json };
}

function showError(box, res) {
  box.hidden = false;
  box.dataset.code = res.code ?? '';
  if (res.code === 'network') return setText(box, 'recs.network');
  if (res.status === 401) return setText(box, 'recs.bad_token');
  if (res.message) return setLiteral(box, res.message.zh, res.message.en);
  return setText(box, 'recs.failed');
}

function currentToken() {
  return $('admin-token').value.trim() || stored(TOKEN_KEY);
}

// ---- showing the live sessions --------------------------------------------------------------------

async function show() {
  const token = currentToken();
  const errorBox = $('sup-error');
  errorBox.hidden = true;
  if (!token) { errorBox.hidden = false; setText(errorBox, 'recs.need_token'); $('admin-token').focus(); return; }
  const name = $('observer-name').value.trim();
  if (name) store(NAME_KEY, name);

  page.state = 'loading';
  page.error = null;
  $('show-btn').disabled = true;
  setText($('show-btn'), 'sup.loading');
  try {
    const sites = await api('sites', token);
    if (!sites.ok) return fail(sites);
    store(TOKEN_KEY, token);
    $('admin-token').value = '';
    renderTokenNote();
    page.sites = sites.body?.sites ?? [];
    page.siteById = new Map(page.sites.map((s) => [s.id, s]));
    page.siteId = $('site-select').value; // '' = every site (the address's site is an option from the start)
    if (page.siteId && !page.siteById.has(page.siteId)) page.siteId = '';
    renderSites();
    const url = new URL(location.href);
    if (page.siteId) url.searchParams.set('site', page.siteId); else url.searchParams.delete('site');
    history.replaceState(null, '', url.href);
    const ok = await refresh({ initial: true });
    if (ok) page.state = 'listed';
  } finally {
    $('show-btn').disabled = false;
    setText($('show-btn'), 'sup.show');
  }
}

function fail(res) {
  page.state = 'error';
  page.error = res.code;
  if (res.status === 401) { store(TOKEN_KEY, ''); renderTokenNote(); }
  showError($('sup-error'), res);
  return false;
}

/** GET /live (and the sessions' recordings); the list is redrawn. Returns whether it worked. */
async function refresh({ initial = false } = {}) {
  if (page.inFlight) return false;
  page.inFlight = true;
  try {
    const token = currentToken();
    const query = page.siteId ? `?site_id=${encodeURIComponent(page.siteId)}` : '';
    const res = await api(`live${query}`, token);
    if (!res.ok) {
      if (initial || res.status === 401) return fail(res);
      page.refreshFailedAt = Date.now(); // a passing failure: keep the list, say so, try again
      renderRefreshed();
      return false;
    }
    const live = res.body?.sessions ?? [];
    page.recordings = await latestRecordings(live, token);
    page.live = live;
    page.refreshes += 1;
    page.lastRefresh = Date.now();
    page.refreshFailedAt = null;
    $('sup-error').hidden = true;
    renderList();
    return true;
  } finally {
    page.inFlight = false;
  }
}

/** Each live session's latest recording, from its case's list (one request per case). */
async function latestRecordings(live, token) {
  const cases = [...new Set(live.map((l) => l.session.case).filter(Boolean))];
  const out = new Map();
  await Promise.all(cases.map(async (kase) => {
    const res = await api(`cases/${encodeURIComponent(kase)}/recordings`, token);
    if (!res.ok) return;
    for (const r of res.body?.recordings ?? []) out.set(r.session_id, r); // oldest first: the last one stays
  }));
  return out;
}

// ---- observing ------------------------------------------------------------------------------------

async function observe(sessionId) {
  const errorBox = $('sup-error');
  const name = $('observer-name').value.trim() || stored(NAME_KEY);
  if (!name) {
    errorBox.hidden = false;
    setText(errorBox, 'sup.need_name');
    $('observer-name').focus();
    return;
  }
  store(NAME_KEY, name);
  if (page.observing.has(sessionId)) return;
  page.observing.add(sessionId);
  renderList();
  try {
    const res = await api(`sessions/${encodeURIComponent(sessionId)}/participants`, currentToken(), {
      method: 'POST',
      body: { display_name: name, role: 'observer', ttl_seconds: OBSERVER_TTL_SECONDS },
    });
    if (!res.ok || typeof res.body?.join_url !== 'string') {
      if (res.ok) res.code = 'internal';
      showError(errorBox, res);
      return;
    }
    page.observed.set(sessionId, { participant_id: res.body.participant?.id ?? null, join_url: res.body.join_url });
    // A new tab, with no way back to this one (the token stays here).
    window.open(res.body.join_url, '_blank', 'noopener,noreferrer');
  } finally {
    page.observing.delete(sessionId);
    renderList();
  }
  // The observer appears in the list once its page has joined.
  setTimeout(() => refresh(), 2000);
}

// ---- rendering --------------------------------------------------------------------------------------

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function textEl(tag, className, key, params, attrs) {
  const node = el(tag, className, attrs);
  setText(node, key, params);
  return node;
}

/** Beijing time, as staff read it. */
function beijing(iso, opts = {}) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(currentLang() === 'en' ? 'en-GB' : 'zh-CN', { timeZone: 'Asia/Shanghai', hour12: false, ...opts });
}

function knownKey(key, fallback) {
  return t(key) !== key ? t(key) : fallback;
}

/** The site select: all sites, then the tree (county → township → village), indented. */
function renderSites() {
  const select = $('site-select');
  const children = new Map();
  for (const s of page.sites) {
    const parent = s.parent_id && page.siteById.has(s.parent_id) ? s.parent_id : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const options = [textEl('option', '', 'sup.site_all', undefined, { value: '' })];
  const walk = (parent, depth) => {
    for (const s of (children.get(parent) ?? []).sort((a, b) => a.name.localeCompare(b.name, 'zh-CN'))) {
      const o = el('option', '', { value: s.id });
      o.textContent = `${'\u3000'.repeat(depth)}${s.name}`;
      options.push(o);
      if (depth < 8) walk(s.id, depth + 1);
    }
  };
  walk('', 0);
  select.replaceChildren(...options);
  select.value = page.siteId;
}

/** A time of day in Beijing, HH:MM:SS. */
function clock(ms) {
  return new Date(ms).toLocaleTimeString('zh-CN', { timeZone: 'Asia/Shanghai', hour12: false });
}

function renderRefreshed() {
  const box = $('live-refreshed');
  if (page.refreshFailedAt) {
    box.dataset.failed = 'true';
    setText(box, 'sup.refresh_failed', { time: clock(page.refreshFailedAt) });
    return;
  }
  delete box.dataset.failed;
  if (!page.lastRefresh) { box.textContent = ''; return; }
  setText(box, 'sup.refreshed', { s: REFRESH_MS / 1000, time: clock(page.lastRefresh) });
}

/** session id → {sig, li}: a row is rebuilt only when what it shows changed (a refresh keeps focus). */
const rows = new Map();

function renderList({ relabel = false } = {}) {
  $('live').hidden = false;
  const list = [...page.live].sort((a, b) => KIND_ORDER.indexOf(a.session.kind) - KIND_ORDER.indexOf(b.session.kind)
    || String(a.session.opened_at).localeCompare(String(b.session.opened_at)));
  setText($('live-title'), 'sup.results_title', { n: list.length });
  const site = page.siteById.get(page.siteId);
  setText($('live-where'), 'sup.results_where', { site: site ? site.name : t('sup.site_all') });
  renderRefreshed();
  $('live-empty').hidden = list.length > 0;

  // Whatever had the focus in the list gets it back if it is still there after the redraw.
  const focused = document.activeElement?.closest?.('#live-list') ? document.activeElement.dataset.testid : null;
  const items = list.map((entry) => {
    const id = entry.session.id;
    const minutes = entry.session.opened_at ? Math.floor((Date.now() - new Date(entry.session.opened_at).getTime()) / 60000) : null;
    const sig = JSON.stringify([entry, page.recordings.get(id) ?? null, page.observing.has(id), page.observed.get(id) ?? null,
      page.siteById.get(entry.session.site_id)?.name ?? null, minutes, currentLang()]);
    const known = rows.get(id);
    if (known && known.sig === sig && !relabel) return known.li;
    const li = renderSession(entry);
    rows.set(id, { sig, li });
    return li;
  });
  const live = new Set(list.map((e) => e.session.id));
  for (const id of rows.keys()) if (!live.has(id)) rows.delete(id);
  const box = $('live-list');
  if (items.length !== box.children.length || items.some((li, i) => box.children[i] !== li)) box.replaceChildren(...items);
  if (focused && !box.contains(document.activeElement)) box.querySelector(`[data-testid="${CSS.escape(focused)}"]`)?.focus();
}

function renderSession({ session: s, participants }) {
  const li = el('li', 'recs-item sup-item', { 'data-testid': 'live-session', 'data-session-id': s.id, 'data-kind': s.kind });
  const head = el('div', 'recs-item-head sup-item-head');
  const kind = textEl('span', 'chip sup-kind', `kind.${s.kind}`, undefined, { 'data-kind': s.kind });
  const title = el('strong', 'sup-title');
  if (s.title) title.textContent = s.title; else setText(title, 'sup.untitled');
  const observeBtn = el('button', 'act primary sup-observe', { type: 'button', 'data-testid': `observe-${s.id}` });
  const busy = page.observing.has(s.id);
  setText(observeBtn, busy ? 'sup.observing' : 'sup.observe');
  observeBtn.title = t('sup.observe_label');
  observeBtn.disabled = busy;
  observeBtn.addEventListener('click', () => observe(s.id));
  head.append(kind, title, observeBtn);

  const facts = el('dl', 'recs-facts sup-facts');
  const caseKey = s.kind === 'reception' ? 'case.label_reception' : 'case.label';
  const rec = page.recordings.get(s.id) ?? null;
  const recBox = el('span', 'sup-rec');
  const recChip = el('span', 'chip recs-status', { 'data-status': rec?.status ?? 'none', 'data-testid': 'recording-state' });
  recChip.textContent = rec ? knownKey(`sup.rec.${rec.status}`, rec.status) : t('sup.rec.none');
  recBox.append(recChip);
  // The segment count is written when a recording ends; while it runs, say since when it records.
  if (rec?.status === 'recording' && rec.started_at) recBox.append(textEl('span', 'muted small', 'sup.rec.since', { time: clock(rec.started_at) }));
  else if (rec && rec.status !== 'recording' && Number.isFinite(rec.segments)) recBox.append(textEl('span', 'muted small', 'sup.rec.segments', { n: rec.segments }));
  const elapsed = s.opened_at ? Math.max(0, Math.floor((Date.now() - new Date(s.opened_at).getTime()) / 60000)) : null;
  const siteName = page.siteById.get(s.site_id)?.name ?? (s.site_id ? s.site_id : t('sup.no_site'));
  facts.append(
    fact(caseKey, s.case_id, 'sup-case'),
    fact('sup.site_of', siteName, 'sup-site'),
    fact('sup.opened', beijing(s.opened_at)),
    fact('sup.elapsed', elapsed === null ? '—' : t('sup.minutes', { m: elapsed })),
    fact('sup.recording', recBox),
  );

  const people = el('div', 'sup-people');
  people.append(textEl('h3', 'sup-people-title', 'sup.people', { n: participants.length }));
  if (participants.length === 0) {
    people.append(textEl('p', 'muted small', 'sup.nobody'));
  } else {
    const table = el('table', 'sup-table', { 'data-testid': 'people' });
    const thead = el('thead');
    const hr = el('tr');
    for (const key of ['sup.col_name', 'sup.col_role', 'sup.col_zone', 'sup.col_conn']) hr.append(textEl('th', '', key, undefined, { scope: 'col' }));
    thead.append(hr);
    const tbody = el('tbody');
    const order = (p) => ['judge', 'mediator', 'leader', 'petition_officer', 'clerk', 'party', 'counsel', 'counsellor',
      'interpreter', 'witness', 'observer'].indexOf(p.role);
    for (const p of [...participants].sort((a, b) => order(a) - order(b))) tbody.append(renderPerson(p));
    table.append(thead, tbody);
    people.append(table);
  }

  li.append(head, facts, people);
  const mine = page.observed.get(s.id);
  if (mine) {
    const note = el('p', 'sup-observed small');
    note.append(textEl('span', '', 'sup.observe_opened'), document.createTextNode(' '));
    const link = textEl('a', '', 'sup.observe_link', undefined, {
      href: mine.join_url, target: '_blank', rel: 'noopener noreferrer', 'data-testid': `observe-link-${s.id}`,
    });
    note.append(link);
    li.append(note);
  }
  return li;
}

function renderPerson(p) {
  const tr = el('tr', 'sup-person', { 'data-participant-id': p.id, 'data-role': p.role, 'data-zone': p.zone });
  const name = el('td', 'sup-name');
  name.textContent = p.display_name || p.id;
  const flags = [];
  // An observer never has a microphone: no mute to speak of.
  if (p.role !== 'observer' && p.audio_muted_by_host) flags.push('sup.muted_host');
  else if (p.role !== 'observer' && p.audio_muted) flags.push('sup.muted_self');
  for (const key of flags) name.append(' ', textEl('span', 'chip', key));
  const role = el('td');
  const chip = el('span', 'chip role', { 'data-role': p.role });
  chip.textContent = roleName(p.role);
  role.append(chip);
  const zone = el('td');
  const { key, params } = zoneText(p.zone);
  zone.append(textEl('span', `chip zone sup-zone`, key, params, { 'data-zone-kind': zoneKind(p.zone) }));
  const conn = el('td');
  conn.append(textEl('span', 'sup-conn', p.connection === 'connected' ? 'sup.conn.connected' : `roster.conn.${p.connection}`,
    undefined, { 'data-state': p.connection }));
  if (p.connection === 'connected' && p.network && p.network !== 'good') {
    conn.append(' ', textEl('span', 'chip net', `roster.net.${p.network}`, undefined, { 'data-state': p.network }));
  }
  tr.append(name, role, zone, conn);
  return tr;
}

function fact(labelKey, value, extraClass = '') {
  const wrap = el('div', `recs-fact ${extraClass}`.trim());
  const dt = el('dt');
  setText(dt, labelKey);
  const dd = el('dd');
  if (value instanceof Node) dd.append(value); else dd.textContent = value;
  wrap.append(dt, dd);
  return wrap;
}

// ---- start ----------------------------------------------------------------------------------------

function renderTokenNote() {
  const saved = !!stored(TOKEN_KEY);
  setText($('token-note'), saved ? 'recs.token_saved' : 'recs.token_note');
  $('token-forget').hidden = !saved;
}

function main() {
  initI18n();
  $('lang-btn').addEventListener('click', () => setLang(currentLang() === 'en' ? 'zh-CN' : 'en'));
  onLangChange(() => {
    if (page.sites.length) renderSites();
    if (page.state === 'listed') renderList({ relabel: true });
  });
  $('sup-form').addEventListener('submit', (e) => { e.preventDefault(); show(); });
  $('refresh-btn').addEventListener('click', () => refresh());
  $('site-select').addEventListener('change', () => { if (page.state === 'listed') show(); });
  $('token-forget').addEventListener('click', () => { store(TOKEN_KEY, ''); renderTokenNote(); $('admin-token').focus(); });
  $('observer-name').value = stored(NAME_KEY);
  renderTokenNote();
  page.siteId = new URLSearchParams(location.search).get('site') || '';
  if (page.siteId) {
    // Known before the sites are loaded: an option of its own, so that the select keeps it.
    const o = el('option', '', { value: page.siteId });
    o.textContent = page.siteId;
    $('site-select').append(o);
    $('site-select').value = page.siteId;
  }
  if (stored(TOKEN_KEY)) show();

  // Every few seconds while the tab is visible; at once when it comes back.
  setInterval(() => {
    if (page.state === 'listed' && document.visibilityState === 'visible') refresh();
  }, REFRESH_MS);
  document.addEventListener('visibilitychange', () => {
    if (page.state === 'listed' && document.visibilityState === 'visible') refresh();
  });
}

main();
