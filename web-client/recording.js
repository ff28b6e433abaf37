// The session's recording as the participants see it (docs/protocol.md "Recording status"): the
// server records every session and tells everyone how it goes in `recording_status` messages.
//
// - The top bar's indicator, for everyone in any zone: ● 录音录像中 (recording), 录音录像已暂停（休庭）
//   (paused, with the statutory reason), a problem (degraded / failed, with the server's own words
//   in a banner above the stage), 录音录像已完成 (final).
// - With `final`: the integrity value (完整性校验值, chain_head) in a block the participants can
//   select, copy and sign (庭审录音录像的若干规定). It stays on the "ended" screen after the close
//   (4005).
// - For the presiding hosts (roles.js: pause_recording): 暂停录像, which asks for the statutory
//   reason in a dialog (休庭, 不公开证据, 不宜录音录像的调解) before sending
//   `control` pause_recording; while paused, 恢复录像 (resume_recording). The server checks the
//   role and the reason; its refusal (not_allowed, bad_reason) is shown like every other.

import { pair, setText, setLiteral, t } from './i18n.js';
import { ICONS } from './ui.js';
import { may } from './roles.js';

const $ = (id) => document.getElementById(id);

/** The i18n key naming a pause reason in the indicator (short where the full name is long). */
function reasonKey(cause) {
  for (const key of [`reason.short.${cause}`, `reason.${cause}`]) if (t(key) !== key) return key;
  return null;
}

/** A pause reason in the current language (an unknown one as the server spelled it). */
export function reasonText(cause) {
  const key = reasonKey(cause);
  return key ? t(key) : String(cause ?? '');
}

export class RecordingView {
  /**
   * @param {object} opts
   * @param {(action: string, fields: object) => Promise<object>} opts.act  sends a control; settles when answered
   * @param {(zh: string, en: string) => void} opts.toast  a toast, in both languages
   */
  constructor({ act, toast }) {
    Object.assign(this, { act, toast });
    /** the last recording_status ({state, cause, message_zh, message_en, chain_head}), or null */
    this.status = null;
    /** whether the recording is paused, as the last `paused` / `recording` status said */
    this.paused = false;
    /** true while our own pause or resume request is on its way */
    this.pending = false;
    /** the session view is gone (left, closed, transferred): only the integrity value remains */
    this.ended = false;
    /** what renderControl was last given: our role and whether we are connected */
    this.view = { role: null, connected: false };

    $('rec-btn').addEventListener('click', () => this.#onButton());
    $('pause-reason').addEventListener('change', () => this.#renderDialog());
    $('pause-cancel').addEventListener('click', () => $('pause-dialog').close());
    $('pause-form').addEventListener('submit', (e) => { e.preventDefault(); this.#sendPause(); });
    $('rec-final-copy').addEventListener('click', () => this.#copy());
  }

  /** A `recording_status` from the server. */
  update(status) {
    const prev = this.status;
    this.status = status;
    if (status.state === 'paused') this.paused = true;
    else if (status.state === 'recording' || status.state === 'final') this.paused = false;
    // Tell people when the recording stops and starts again (not on the first status, nor when a
    // reconnection repeats the one we had).
    if (prev && prev.state !== status.state) {
      if (status.state === 'paused') {
        const key = reasonKey(status.cause);
        const reason = key ? pair(key) : { zh: String(status.cause ?? ''), en: String(status.cause ?? '') };
        const text = pair('notice.rec_paused');
        this.toast(text.zh.replace('{reason}', reason.zh), text.en.replace('{reason}', reason.en));
      } else if (status.state === 'recording' && prev.state === 'paused') {
        const text = pair('notice.rec_resumed');
        this.toast(text.zh, text.en);
      }
    }
    // Paused meanwhile (by another host) or over: nothing left to choose a reason for.
    if (['paused', 'final'].includes(status.state) && $('pause-dialog').open) $('pause-dialog').close();
    this.render();
  }

  /** The session view ended: drop the live indicator; a final integrity value stays. */
  end() {
    this.ended = true;
    if ($('pause-dialog').open) $('pause-dialog').close();
    this.render();
  }

  /** Everything, e.g. after a language switch. */
  render() {
    this.#renderBadge();
    this.#renderBanner();
    this.#renderFinal();
    this.renderControl(this.view);
    if ($('pause-dialog').open) this.#renderDialog();
  }

  /**
   * The host's pause / resume button.
   * @param {{role: string|null, connected: boolean}} view
   */
  renderControl(view) {
    this.view = view;
    const btn = $('rec-btn');
    const state = this.status?.state ?? null;
    const show = !this.ended && !!view.role && may(view.role, this.paused ? 'resume_recording' : 'pause_recording')
      && state !== null && state !== 'final';
    btn.hidden = !show;
    if (!show) return;
    btn.disabled = this.pending || !view.connected;
    btn.dataset.active = String(this.paused);
    btn.dataset.action = this.paused ? 'resume_recording' : 'pause_recording';
    btn.setAttribute('aria-haspopup', this.paused ? 'false' : 'dialog');
    btn.innerHTML = this.paused ? ICONS.recResume : ICONS.recPause;
    const span = document.createElement('span');
    setText(span, this.paused ? 'ctrl.rec_resume' : 'ctrl.rec_pause');
    btn.append(span);
    const label = t(this.paused ? 'ctrl.rec_resume_label' : 'ctrl.rec_pause_label');
    btn.setAttribute('aria-label', label);
    btn.title = label;
  }

  // ---- the indicator, the warning, the integrity value ----------------------------------------

  #renderBadge() {
    const badge = $('rec-badge');
    const s = this.status;
    badge.hidden = !s || this.ended;
    if (badge.hidden) return;
    badge.dataset.state = s.state;
    badge.dataset.cause = s.cause ?? '';
    const text = $('rec-badge-text');
    let label;
    switch (s.state) {
      case 'recording':
        setText(text, 'rec.recording');
        label = t('rec.label_recording');
        break;
      case 'paused':
        if (s.cause) setText(text, 'rec.paused', { reason: reasonText(s.cause) }); else setText(text, 'rec.paused_plain');
        label = t('rec.label_paused', { reason: s.cause ? reasonText(s.cause) : '—' });
        break;
      case 'degraded':
      case 'failed':
        setText(text, `rec.${s.state}`);
        label = t('rec.label_problem');
        break;
      case 'final':
        setText(text, 'rec.final');
        label = t('rec.label_final');
        break;
      default:
        setLiteral(text, s.message_zh || s.state, s.message_en || s.state);
        label = text.textContent;
    }
    badge.setAttribute('aria-label', label);
    badge.title = label;
  }

  #renderBanner() {
    const banner = $('rec-banner');
    const s = this.status;
    const problem = !!s && !this.ended && (s.state === 'degraded' || s.state === 'failed');
    banner.hidden = !problem;
    if (!problem) return;
    banner.dataset.state = s.state;
    setText($('rec-banner-title'), s.state === 'failed' ? 'rec.banner_failed' : 'rec.banner_degraded');
    setLiteral($('rec-banner-text'), s.message_zh || '', s.message_en || s.message_zh || '');
  }

  #renderFinal() {
    const box = $('rec-final');
    const s = this.status;
    const show = s?.state === 'final' && typeof s.chain_head === 'string' && s.chain_head.length > 0;
    box.hidden = !show;
    if (!show) return;
    // In the session view while it lasts (an overlay), on the "ended" card afterwards.
    if (this.ended) {
      if (box.previousElementSibling !== $('end-body')) $('end-body').after(box);
    } else if (box.parentElement !== $('screen-session')) {
      $('screen-session').append(box);
    }
    box.dataset.place = this.ended ? 'ended' : 'session';
    const value = $('rec-final-value');
    if (value.dataset.value !== s.chain_head) {
      // Groups of eight, easier to read out and compare; the text itself has no spaces, so a
      // selection copies the value as it is.
      value.dataset.value = s.chain_head;
      value.replaceChildren(...(s.chain_head.match(/.{1,8}/g) || []).map((part) => {
        const span = document.createElement('span');
        span.textContent = part;
        return span;
      }));
    }
  }

  async #copy() {
    const value = this.status?.chain_head;
    if (!value) return;
    const btn = $('rec-final-copy');
    try {
      await navigator.clipboard.writeText(value);
      setText(btn, 'recfinal.copied');
      setTimeout(() => setText(btn, 'recfinal.copy'), 2000);
    } catch {
      // No clipboard (plain http, or refused): select it, so that Ctrl+C / a long press copies it.
      const range = document.createRange();
      range.selectNodeContents($('rec-final-value'));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  }

  // ---- the host's pause / resume ---------------------------------------------------------------

  #onButton() {
    if (this.pending) return;
    if (this.paused) {
      this.#request('resume_recording', {}).catch(() => {}); // a refusal is shown as a toast
      return;
    }
    // A pause needs a reason chosen each time: nothing is preselected.
    $('pause-reason').value = '';
    $('pause-error').hidden = true;
    this.#renderDialog();
    $('pause-dialog').showModal();
  }

  #renderDialog() {
    $('pause-confirm').disabled = this.pending || !$('pause-reason').value;
  }

  #sendPause() {
    const reason = $('pause-reason').value;
    if (!reason || this.pending) return;
    $('pause-error').hidden = true;
    this.#request('pause_recording', { reason }).then(
      () => { if ($('pause-dialog').open) $('pause-dialog').close(); },
      (err) => {
        // Shown as a toast like every refusal, and in the dialog, which stays open to try again.
        const box = $('pause-error');
        box.hidden = false;
        box.dataset.code = err?.code ?? '';
        setLiteral(box, err?.message || err?.code || '', err?.message_en || err?.message || err?.code || '');
      },
    );
  }

  /** Sends a control; the indicator changes when the server's recording_status comes. */
  #request(action, fields) {
    this.pending = true;
    this.renderControl(this.view);
    this.#renderDialog();
    return this.act(action, fields).finally(() => {
      this.pending = false;
      this.renderControl(this.view);
      if ($('pause-dialog').open) this.#renderDialog();
    });
  }
}
