// The participant's own steps before and after a session (docs/api.md "The participant's steps"),
// authenticated by the join token: the identity check (《人民法院在线诉讼规则》第七条), consent to
// taking part online and to the recording (第四条; the session is recorded in full), and the
// rating afterwards. The server refuses the WebSocket join (close codes 4014 / 4015) until the
// steps are done, so the page runs them first, whether or not the link says autojoin=1.

import { setText, setLiteral, t } from './i18n.js';
import { ICONS } from './ui.js';
import { HOST_ROLES } from './roles.js';

const $ = (id) => document.getElementById(id);
const COMMENT_MAX = 500;

/** The REST call of a step; never throws. `code` is the server's error code, or 'network'. */
async function call(token, method, path, body) {
  const url = new URL(`api/v1/join/${path}`, document.baseURI).href;
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
  try { json = await resp.json(); } catch { /* no body */ }
  return {
    ok: resp.ok, status: resp.status, body: json,
    code: resp.ok ? null : (json?.error?.code ?? `http_${resp.status}`),
    message: json?.error?.message ?? null,
  };
}

/** The server's error messages are "中文 / English" in one string. */
function showServerError(el, res, fallbackKey) {
  el.hidden = false;
  if (res.code === 'network') return setText(el, 'steps.network');
  const msg = res.message;
  if (!msg) return setText(el, fallbackKey);
  const at = msg.indexOf(' / ');
  if (at < 0) return setLiteral(el, msg, msg);
  setLiteral(el, msg.slice(0, at), msg.slice(at + 3));
}

/** GET /join/status: {ok, body: status} or the failure. */
export function fetchStatus(token) {
  return call(token, 'GET', 'status');
}

/**
 * Whether the rating card is offered to this role: the people served, not those who preside, nor
 * the supervisors who observed (监督员).
 */
export function ratesSession(role) {
  return !HOST_ROLES.has(role) && role !== 'observer';
}

/**
 * Run whatever steps the server asks for, in order, on the `screen-steps` card.
 * Resolves with the last status once the participant may join, or with null when the page has to
 * stop there (the link is invalid or the session is over; the card says so).
 * @param {object} opts
 * @param {string} opts.token
 * @param {(step: string) => void} opts.onStep  'status' | 'identity' | 'consent' | 'error'
 * @param {() => void} opts.show                shows the steps card
 */
export async function runSteps({ token, onStep, show }) {
  show(); // "checking your invitation" until the server answers, rather than a blank page
  for (;;) {
    onStep('status');
    panel('step-loading');
    const res = await fetchStatus(token);
    if (res.ok) {
      const status = res.body;
      renderWho(status);
      if (status.session?.status === 'closed') {
        onStep('error');
        panel('step-error');
        setText($('step-error-title'), 'end.closed_title');
        setText($('step-error-body'), 'close.4005');
        $('step-retry').hidden = true;
        return null;
      }
      const plan = [];
      if (status.identity_required && !status.identity_verified) plan.push('identity');
      if (status.consent_required && !status.consent_given) plan.push('consent');
      if (plan.length === 0) return status;
      // Every step that applies to this link, those done earlier included, then the device check.
      const all = [];
      if (status.identity_required) all.push('identity');
      if (status.consent_required) all.push('consent');
      for (const step of plan) {
        renderProgress(all, step);
        onStep(step);
        const outcome = step === 'identity' ? await identityStep(token) : await consentStep(token);
        if (outcome === 'unauthorized') return badLink(onStep);
      }
      status.identity_verified ||= plan.includes('identity');
      status.consent_given ||= plan.includes('consent');
      return status;
    }
    if (res.status === 401) return badLink(onStep);
    // The server or the network failed: offer to try again.
    onStep('error');
    panel('step-error');
    setText($('step-error-title'), 'steps.failed_title');
    showServerError($('step-error-body'), res, 'steps.failed');
    $('step-retry').hidden = false;
    await new Promise((resolve) => { $('step-retry').onclick = resolve; });
  }
}

function badLink(onStep) {
  onStep('error');
  panel('step-error');
  setText($('step-error-title'), 'steps.bad_link_title');
  setText($('step-error-body'), 'steps.bad_link');
  $('step-retry').hidden = true;
  return null;
}

const PANELS = ['step-loading', 'step-error', 'step-identity', 'step-consent'];
function panel(id) {
  for (const p of PANELS) $(p).hidden = p !== id;
  $('steps-progress').hidden = !['step-identity', 'step-consent'].includes(id);
}

/** "张三 · 当事人", and the case: who this link is for, so nobody verifies on someone else's link. */
function renderWho(status) {
  const who = $('steps-who');
  const p = status.participant ?? {};
  const s = status.session ?? {};
  who.replaceChildren();
  const name = document.createElement('strong');
  name.textContent = p.display_name || '';
  const role = document.createElement('span');
  role.className = 'chip role';
  role.dataset.role = p.role || '';
  setText(role, `role.${p.role}`);
  const session = document.createElement('span');
  session.className = 'steps-session';
  session.dataset.kind = s.kind || '';
  session.dataset.caseId = s.case_id || '';
  session.dataset.title = s.title || '';
  renderSessionLine(session);
  who.append(name, role, session);
  who.hidden = false;
}

/** Re-rendered on a language switch (relabel). */
function renderSessionLine(el) {
  const parts = [];
  if (el.dataset.title) parts.push(el.dataset.title);
  if (el.dataset.kind) parts.push(t(`kind.${el.dataset.kind}`));
  if (el.dataset.caseId) {
    parts.push(`${t(el.dataset.kind === 'reception' ? 'case.label_reception' : 'case.label')} ${el.dataset.caseId}`);
  }
  el.textContent = parts.join(' · ');
}

/** Text built from several keys that a plain data-i18n cannot follow. */
export function relabelSteps() {
  const line = document.querySelector('#steps-who .steps-session');
  if (line) renderSessionLine(line);
}

function renderProgress(all, current) {
  const list = $('steps-progress');
  const items = [...all, 'prejoin'].map((s, i) => {
    const li = document.createElement('li');
    li.dataset.step = s;
    const at = [...all, 'prejoin'].indexOf(current);
    li.dataset.state = i < at ? 'done' : i === at ? 'current' : 'todo';
    if (i === at) li.setAttribute('aria-current', 'step');
    setText(li, `steps.progress_${s}`);
    return li;
  });
  list.replaceChildren(...items);
}

// ---- identity ----------------------------------------------------------------------------------

/** Resolves 'done' once verified, 'unauthorized' when the token stopped working. */
function identityStep(token) {
  panel('step-identity');
  const form = $('step-identity');
  const name = $('identity-name');
  const id = $('identity-id');
  const error = $('identity-error');
  const submit = $('identity-submit');
  error.hidden = true;
  // On a phone the keyboard would cover the explanation: let the person tap the field.
  if (!matchMedia('(pointer: coarse)').matches) name.focus({ preventScroll: true });
  return new Promise((resolve) => {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const body = { name: name.value.trim(), id_number: id.value.replace(/\s+/g, '') };
      if (!body.name || !body.id_number) {
        error.hidden = false;
        setText(error, 'identity.fill_both');
        (body.name ? id : name).focus();
        return;
      }
      submit.disabled = true;
      setText(submit, 'identity.checking');
      const res = await call(token, 'POST', 'identity', body);
      setText(submit, 'identity.submit');
      if (res.ok) {
        form.onsubmit = null;
        submit.disabled = false;
        id.value = ''; // the number is not kept in the page any longer than needed
        return resolve('done');
      }
      if (res.status === 401) return resolve('unauthorized');
      if (res.code === 'too_many_attempts') {
        // Locked for this invitation: nothing the participant can do here any more.
        error.hidden = false;
        setText(error, 'identity.locked');
        error.dataset.code = res.code;
        name.disabled = id.disabled = true;
        id.value = '';
        return; // the button stays disabled
      }
      submit.disabled = false;
      error.dataset.code = res.code ?? '';
      showServerError(error, res, 'steps.failed');
      if (res.code === 'identity_mismatch') id.select();
    };
  });
}

// ---- consent -----------------------------------------------------------------------------------

/** Resolves 'done' once both consents are recorded, 'unauthorized' when the token stopped working. */
function consentStep(token) {
  panel('step-consent');
  const form = $('step-consent');
  const boxes = [$('consent-proceeding'), $('consent-recording')];
  const submit = $('consent-submit');
  const error = $('consent-error');
  error.hidden = true;
  const update = () => { submit.disabled = !boxes.every((b) => b.checked); };
  for (const b of boxes) b.onchange = update;
  update();
  return new Promise((resolve) => {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      if (!boxes.every((b) => b.checked)) return;
      submit.disabled = true;
      const res = await call(token, 'POST', 'consent', { proceeding: boxes[0].checked, recording: boxes[1].checked });
      if (res.ok && res.body?.consent_given) {
        form.onsubmit = null;
        return resolve('done');
      }
      if (res.status === 401) return resolve('unauthorized');
      update();
      showServerError(error, res, 'steps.failed');
    };
  });
}

// ---- rating ------------------------------------------------------------------------------------

/**
 * The rating card on the "ended" screen: 1–5 stars, an optional comment, one submission.
 * @param {object} opts
 * @param {string} opts.token
 * @param {(step: string) => void} opts.onStep  'rating', then 'rated'
 */
export function showRating({ token, onStep }) {
  const card = $('rating');
  const stars = $('rating-stars');
  const comment = $('rating-comment');
  const count = $('rating-count');
  const submit = $('rating-submit');
  const error = $('rating-error');
  let score = 0;

  const paint = () => {
    for (const btn of stars.children) {
      const n = Number(btn.dataset.score);
      btn.dataset.on = String(n <= score);
      btn.setAttribute('aria-checked', String(n === score));
      btn.tabIndex = n === (score || 1) ? 0 : -1;
    }
    $('rating-score-text').hidden = score === 0;
    if (score) setText($('rating-score-text'), `rating.score_${score}`);
    submit.disabled = score === 0;
  };
  stars.replaceChildren(...[1, 2, 3, 4, 5].map((n) => {
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'star';
    btn.dataset.score = String(n);
    btn.dataset.testid = `rating-star-${n}`;
    btn.setAttribute('role', 'radio');
    btn.innerHTML = ICONS.star;
    const label = document.createElement('span');
    label.className = 'sr-only';
    setText(label, 'rating.star_n', { n });
    btn.append(label);
    btn.onclick = () => { score = n; paint(); };
    return btn;
  }));
  // Arrow keys move along the stars, as in any radio group.
  stars.onkeydown = (ev) => {
    const step = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[ev.key];
    if (!step) return;
    ev.preventDefault();
    score = Math.min(5, Math.max(1, (score || 0) + step));
    paint();
    stars.children[score - 1].focus();
  };
  comment.maxLength = COMMENT_MAX;
  comment.value = '';
  const counter = () => { count.textContent = `${comment.value.length}/${COMMENT_MAX}`; };
  comment.oninput = counter;
  counter();
  error.hidden = true;
  paint();

  $('rating-form').hidden = false;
  $('rating-thanks').hidden = true;
  card.hidden = false;
  onStep('rating');

  $('rating-form').onsubmit = async (ev) => {
    ev.preventDefault();
    if (!score) return;
    submit.disabled = true;
    const text = comment.value.trim();
    const res = await call(token, 'POST', 'rating', text ? { score, comment: text } : { score });
    // 409: rated already (e.g. in another window); either way there is nothing more to do.
    if (res.ok || res.status === 409) {
      $('rating-form').hidden = true;
      $('rating-thanks').hidden = false;
      onStep('rated');
      return;
    }
    submit.disabled = false;
    showServerError(error, res, 'steps.failed');
  };
}
