// The record (笔录) kept during a session by the roles that keep it (judge, clerk, mediator,
// petition officer, leader: roles.js NOTE_ROLES): a panel beside the stage with a text box and
// 记录 (Ctrl+Enter), and the notes written on this page, each with the session's timecode the
// server stamped (docs/protocol.md `note` → `note_saved`: ms since the session opened, the
// recording's timeline), its author and the local time.
//
// The server answers only the author (it does not send notes to the others), so the list holds
// this page's own notes; the full record is GET /api/v1/sessions/{id}/notes. The list is kept in
// this tab's sessionStorage, so a reload or a reconnection does not empty it.
//
// A note whose answer did not come (connection lost, timeout) is marked "not confirmed" and can be
// sent again; one the server refused keeps its text and can be sent again too.

import { roleName, setText, setLiteral, t } from './i18n.js';

const $ = (id) => document.getElementById(id);
const MAX_CHARS = 2000;
const STORAGE_PREFIX = 'qiao.notes.';

/** A session timecode (ms) as mm:ss, or h:mm:ss from an hour on. */
export function formatTimecode(ms) {
  const total = Math.max(0, Math.floor((Number(ms) || 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/** A local time (Beijing) as HH:MM:SS. */
function clock(at) {
  const d = new Date(at);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString('zh-CN', { timeZone: 'Asia/Shanghai', hour12: false });
}

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export class NotesPanel {
  /**
   * @param {object} opts
   * @param {(text: string, onLate: Function) => Promise<{id: string, timecode_ms: number}>} opts.send
   *   sends a `note` (Session.note)
   * @param {(open: boolean) => void} [opts.onToggle]  the panel opened or closed
   */
  constructor({ send, onToggle = () => {} }) {
    Object.assign(this, { send, onToggle });
    /** [{key, id, timecode_ms, text, at, author, role, state: 'saved'|'pending'|'failed'|'unknown', error}] */
    this.notes = [];
    this.open = false;
    this.enabled = false;
    this.storageKey = null;
    this.author = { name: '', role: null };
    this.seq = 0;

    $('notes-form').addEventListener('submit', (e) => { e.preventDefault(); this.#submit(); });
    $('note-text').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !e.isComposing) {
        e.preventDefault();
        this.#submit();
      }
    });
    $('note-text').addEventListener('input', () => { $('note-error').hidden = true; this.#renderCount(); });
    $('notes-close').addEventListener('click', () => this.setOpen(false));
  }

  /**
   * After each `joined`: who writes (for the list), and whether this role keeps the record.
   * @param {{sessionId: string, participantId: string, name: string, role: string, enabled: boolean}} who
   */
  attach({ sessionId, participantId, name, role, enabled }) {
    const first = this.storageKey === null;
    this.enabled = enabled;
    this.author = { name: name || '', role };
    this.storageKey = `${STORAGE_PREFIX}${sessionId}.${participantId}`;
    if (first) this.#load();
    this.render();
  }

  setOpen(open) {
    this.open = !!open && this.enabled;
    $('notes-panel').hidden = !this.open;
    this.onToggle(this.open);
    if (this.open) {
      this.render();
      this.#scrollToEnd();
      $('note-text').focus();
    }
  }

  toggle() { this.setOpen(!this.open); }

  /** The session view is gone: no more notes can be sent; the panel closes. */
  end() {
    this.enabled = false;
    this.setOpen(false);
  }

  /** What the test hook reports: every note on this page, oldest first. */
  list() {
    return this.#ordered().map(({ id, timecode_ms: tc, text, state, at, author, role }) => (
      { id: id ?? null, timecode_ms: tc ?? null, timecode: tc === null || tc === undefined ? null : formatTimecode(tc),
        text, state, at, author, role }));
  }

  /** Everything, e.g. after a language switch. */
  render() {
    const saved = this.notes.filter((n) => n.state === 'saved').length;
    setText($('notes-title'), 'notes.title', { n: saved });
    $('notes-empty').hidden = this.notes.length > 0;
    const list = $('notes-list');
    // Keep the latest in view when it was (redraws after a save or a language switch).
    const atEnd = list.hidden || list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
    list.hidden = this.notes.length === 0;
    list.replaceChildren(...this.#ordered().map((n) => this.#item(n)));
    if (atEnd) this.#scrollToEnd();
    this.#renderCount();
    $('note-add').disabled = !this.enabled;
  }

  // ---- writing -------------------------------------------------------------------------------

  #submit() {
    const box = $('note-text');
    const text = box.value.trim();
    const error = $('note-error');
    if (!text) { error.hidden = false; setText(error, 'notes.empty_text'); box.focus(); return; }
    if (Array.from(text).length > MAX_CHARS) { error.hidden = false; setText(error, 'notes.too_long', { n: MAX_CHARS }); return; }
    error.hidden = true;
    box.value = '';
    this.#renderCount();
    const note = {
      key: `k${++this.seq}`, id: null, timecode_ms: null, text, at: Date.now(),
      author: this.author.name, role: this.author.role, state: 'pending', error: null,
    };
    this.notes.push(note);
    this.#deliver(note);
    box.focus();
  }

  #deliver(note) {
    note.state = 'pending';
    note.error = null;
    this.render();
    this.#scrollToEnd();
    const settle = (saved, err) => {
      if (saved) {
        Object.assign(note, { id: saved.id, timecode_ms: saved.timecode_ms, state: 'saved', error: null });
        this.#save();
        // The list is redrawn as a whole; a screen reader hears this instead.
        setText($('notes-status'), 'notes.saved_at', { time: formatTimecode(saved.timecode_ms) });
      } else {
        // Not sent, or refused: try again. No answer: it may be stored already.
        const unknown = ['timeout', 'disconnected'].includes(err?.code);
        Object.assign(note, { state: unknown ? 'unknown' : 'failed', error: err ?? null });
      }
      this.render();
    };
    this.send(note.text, settle).then((saved) => settle(saved, null), (err) => settle(null, err));
  }

  #resend(note) {
    if (!this.enabled || note.state === 'pending') return;
    note.at = Date.now();
    this.#deliver(note);
  }

  #discard(note) {
    this.notes = this.notes.filter((n) => n !== note);
    this.render();
  }

  // ---- the list ------------------------------------------------------------------------------

  /** Saved notes by timecode; those not (yet) saved after them, in the order they were written. */
  #ordered() {
    const saved = this.notes.filter((n) => n.state === 'saved').sort((a, b) => a.timecode_ms - b.timecode_ms || a.at - b.at);
    return [...saved, ...this.notes.filter((n) => n.state !== 'saved')];
  }

  #item(n) {
    const li = el('li', 'note', { 'data-testid': 'note', 'data-state': n.state });
    if (n.id) li.dataset.noteId = n.id;
    const head = el('div', 'note-head');
    const time = el('span', 'note-time', { 'data-testid': 'note-timecode' });
    if (n.state === 'saved') {
      time.textContent = formatTimecode(n.timecode_ms);
      time.dataset.timecodeMs = String(n.timecode_ms);
      time.title = t('notes.timecode_label'); // re-rendered on a language switch
    } else {
      time.textContent = '--:--';
    }
    const author = el('span', 'note-author');
    author.textContent = n.author || '';
    const role = el('span', 'chip role', { 'data-role': n.role || '' });
    role.textContent = roleName(n.role);
    const at = el('span', 'note-at');
    at.textContent = clock(n.at);
    head.append(time, author, role, at);
    const text = el('p', 'note-text');
    text.textContent = n.text;
    li.append(head, text);

    if (n.state !== 'saved') {
      const status = el('div', 'note-status');
      const msg = el('span', 'note-status-text');
      if (n.state === 'pending') setText(msg, 'notes.saving');
      else if (n.state === 'unknown') setText(msg, 'notes.unconfirmed');
      else if (n.error?.message) setLiteral(msg, `${t('notes.not_saved')}${n.error.message}`, `${t('notes.not_saved')}${n.error.message_en || n.error.message}`);
      else setText(msg, 'notes.failed');
      status.append(msg);
      if (n.state !== 'pending') {
        const again = el('button', 'act', { type: 'button', 'data-testid': 'note-retry' });
        setText(again, n.state === 'unknown' ? 'notes.send_again' : 'notes.retry');
        again.disabled = !this.enabled;
        again.onclick = () => this.#resend(n);
        const drop = el('button', 'act', { type: 'button' });
        setText(drop, 'notes.discard');
        drop.onclick = () => this.#discard(n);
        status.append(again, drop);
      }
      li.append(status);
    }
    return li;
  }

  #renderCount() {
    const n = Array.from($('note-text').value).length;
    setText($('note-count'), 'notes.count', { n, max: MAX_CHARS });
    $('note-count').dataset.over = String(n > MAX_CHARS);
  }

  #scrollToEnd() {
    const list = $('notes-list');
    list.scrollTop = list.scrollHeight;
  }

  // ---- this tab's copy -----------------------------------------------------------------------

  #load() {
    let saved = [];
    try { saved = JSON.parse(sessionStorage.getItem(this.storageKey) || '[]'); } catch { saved = []; }
    if (!Array.isArray(saved)) return;
    for (const n of saved) {
      if (typeof n?.id !== 'string' || typeof n.text !== 'string' || !Number.isFinite(n.timecode_ms)) continue;
      if (this.notes.some((m) => m.id === n.id)) continue;
      this.notes.push({ key: `k${++this.seq}`, id: n.id, timecode_ms: n.timecode_ms, text: n.text, at: n.at ?? null,
        author: n.author ?? this.author.name, role: n.role ?? this.author.role, state: 'saved', error: null });
    }
  }

  #save() {
    if (!this.storageKey) return;
    const saved = this.notes.filter((n) => n.state === 'saved')
      .map(({ id, timecode_ms: tc, text, at, author, role }) => ({ id, timecode_ms: tc, text, at, author, role }));
    try { sessionStorage.setItem(this.storageKey, JSON.stringify(saved)); } catch { /* storage full or disabled: the page keeps them */ }
  }
}
