// The reception queue panel (信访接待叫号): for the hosts who may `call_next` (petition officer,
// leader, clerk, judge, mediator), whenever someone waits in the lobby. It lists the waiting people
// in queue order (the server's `queue_position`, 1 = next), with their group if any, a big
// "call next" button (control `call_next`: the server admits whoever waited longest) and a per-row
// admit button (control `admit`).
//
// Rows are rebuilt only when what they show changes, so a click is not lost to a re-render.

import { roleName, setText } from './i18n.js';
import { may, zoneOf } from './roles.js';

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** The lobby participants in queue order: the server's queue_position, then arrival in our list. */
export function waitingInOrder(people) {
  const waiting = people.filter((p) => zoneOf(p) === 'lobby');
  const pos = (p) => (Number.isInteger(p.queue_position) ? p.queue_position : Number.MAX_SAFE_INTEGER);
  return waiting.map((p, i) => ({ p, i })).sort((a, b) => pos(a.p) - pos(b.p) || a.i - b.i).map(({ p }) => p);
}

export class QueuePanel {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.panel     the <aside>, hidden while nobody waits
   * @param {HTMLElement} opts.title     heading, "等候接访（N）"
   * @param {HTMLElement} opts.list      the <ol> of waiting people
   * @param {HTMLButtonElement} opts.callNext  the 叫号 button
   * @param {HTMLElement} opts.next      under the button: who comes next
   * @param {(action: string, fields: object) => Promise<object>} opts.act  sends a control; settles when answered
   * @param {(ack: object, who: object|undefined) => void} [opts.onCalled]  call_next acknowledged
   */
  constructor({ panel, title, list, callNext, next, act, onCalled = () => {} }) {
    Object.assign(this, { panel, title, list, callNext, next, act, onCalled });
    /** "call_next" or "admit:<id>" while waiting for the server's answer */
    this.pending = new Set();
    this.view = null;
    this.sig = '';
    this.callNext.onclick = () => this.#callNext();
  }

  /** @param {{selfId: string, selfRole: string, people: object[]}} view */
  render(view) {
    this.view = view;
    const waiting = waitingInOrder(view.people).filter((p) => p.id !== view.selfId);
    const show = may(view.selfRole, 'call_next') && waiting.length > 0;
    this.panel.hidden = !show;
    if (!show) { this.sig = ''; return; }
    const sig = JSON.stringify([waiting.map((p) => [p.id, p.display_name, p.role, p.group, p.queue_position]),
      [...this.pending], document.documentElement.lang]);
    if (sig === this.sig) return;
    this.sig = sig;

    setText(this.title, 'queue.title', { n: waiting.length });
    this.callNext.disabled = this.pending.has('call_next');
    setText(this.callNext, this.pending.has('call_next') ? 'queue.calling' : 'queue.call_next');
    const first = waiting[0];
    setText(this.next, 'queue.next_is', { name: first.display_name || first.id });

    this.list.replaceChildren(...waiting.map((p, i) => this.#row(p, i)));
  }

  /** After a language switch. */
  relabel() {
    this.sig = '';
    if (this.view) this.render(this.view);
  }

  #row(p, i) {
    const position = Number.isInteger(p.queue_position) ? p.queue_position : i + 1;
    const li = el('li', 'queue-row', { 'data-participant-id': p.id, 'data-testid': `queue-row-${p.id}` });
    li.dataset.queuePosition = String(position);
    const num = el('span', 'queue-pos', { 'aria-hidden': 'true' });
    num.textContent = String(position);
    const text = el('div', 'queue-text');
    const name = el('span', 'queue-name');
    name.textContent = p.display_name || p.id;
    const meta = el('span', 'queue-meta');
    const place = el('span', 'queue-place');
    setText(place, 'queue.position', { n: position });
    meta.append(place);
    if (p.group) {
      const group = el('span', 'chip group', { 'data-testid': `queue-group-${p.id}` });
      setText(group, 'queue.group', { group: p.group });
      meta.append(group);
    }
    if (p.role && p.role !== 'party') {
      const role = el('span', 'chip role', { 'data-role': p.role });
      role.textContent = roleName(p.role);
      meta.append(role);
    }
    text.append(name, meta);
    const admit = el('button', 'act primary', { type: 'button', 'data-testid': `queue-admit-${p.id}` });
    setText(admit, 'queue.admit');
    admit.disabled = this.pending.has(`admit:${p.id}`);
    admit.onclick = () => this.#run(`admit:${p.id}`, () => this.act('admit', { target: p.id }));
    li.append(num, text, admit);
    return li;
  }

  #callNext() {
    const people = this.view?.people ?? [];
    this.#run('call_next', () => this.act('call_next', {}).then((ack) => {
      this.onCalled(ack, people.find((p) => p.id === ack?.target));
    }));
  }

  async #run(key, fn) {
    if (this.pending.has(key)) return;
    this.pending.add(key);
    this.relabel();
    try {
      await fn();
    } catch {
      // The page already showed the server's refusal (queue_empty, group_limit, …) as a toast.
    } finally {
      this.pending.delete(key);
      this.relabel();
    }
  }
}
