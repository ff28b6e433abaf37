// The roster panel: everyone in the session, grouped by zone, with role, raised hand, host-mute and
// connection state, and, for hosts, the controls of protocol.md "Zones and host controls".
//
// Rows are rebuilt only when what they show changes, so that a participant_updated about one
// person does not close the move menu another row has open.

import { roleName, setText, setLabel } from './i18n.js';
import { ICONS } from './ui.js';
import {
  MOVE_TARGETS, NO_MEDIA_ZONES, may, mayLowerOthersHand, zoneOf, zoneRank, zoneText,
} from './roles.js';

const ROLE_ORDER = ['judge', 'mediator', 'leader', 'petition_officer', 'clerk', 'party', 'counsel',
  'counsellor', 'interpreter', 'witness', 'observer'];
// How long the "remove" button waits for its confirming second press.
const CONFIRM_MS = 4000;

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function textEl(tag, className, key, params) {
  const node = el(tag, className);
  setText(node, key, params);
  return node;
}

function zoneEl(tag, className, zone) {
  const { key, params } = zoneText(zone);
  return textEl(tag, className, key, params);
}

function icon(svg, key, className) {
  const span = el('span', `flag ${className}`);
  span.innerHTML = svg;
  setLabel(span, key);
  span.setAttribute('role', 'img');
  return span;
}

export class Roster {
  /**
   * @param {object} opts
   * @param {HTMLElement} opts.list   container of the zone groups
   * @param {HTMLElement} opts.title  heading, "参会人（N）"
   * @param {(action: string, fields: object) => Promise<unknown>} opts.act  sends a control; settles when answered
   */
  constructor({ list, title, act }) {
    Object.assign(this, { list, title, act });
    /** participant id → <li> */
    this.rows = new Map();
    /** "action:target" of controls waiting for their answer (their buttons are disabled) */
    this.pending = new Set();
    /** participant id whose "remove" waits for its confirming second press */
    this.confirmRemove = null;
    this.confirmTimer = 0;
    this.view = null;
    this.structure = '';
  }

  /**
   * @param {{selfId: string, selfRole: string, people: object[], spotlight: string|null}} view
   */
  render(view) {
    this.view = view;
    const people = [...view.people].sort((a, b) => zoneRank(zoneOf(a)) - zoneRank(zoneOf(b))
      || (a.id === view.selfId ? -1 : b.id === view.selfId ? 1 : 0)
      || rank(a.role) - rank(b.role)
      || String(a.display_name).localeCompare(String(b.display_name), 'zh-CN'));
    setText(this.title, 'roster.title', { n: people.length });

    const live = new Set(people.map((p) => p.id));
    for (const id of this.rows.keys()) if (!live.has(id)) this.rows.delete(id);
    for (const p of people) this.#updateRow(p);

    // Regroup only when membership or order changed: moving a row out of the DOM and back drops focus.
    const structure = people.map((p) => `${zoneOf(p)}/${p.id}`).join(',');
    if (structure === this.structure) return;
    this.structure = structure;
    const groups = [];
    for (const p of people) {
      const zone = zoneOf(p);
      // (No Array.prototype.at: older phone browsers lack it.)
      if (groups[groups.length - 1]?.zone !== zone) groups.push({ zone, rows: [] });
      groups[groups.length - 1].rows.push(this.rows.get(p.id));
    }
    this.list.replaceChildren(...groups.map(({ zone, rows }) => {
      const section = el('section', 'zone-group', { 'data-zone': zone });
      const head = el('h3', 'zone-head');
      head.append(zoneEl('span', '', zone), el('span', 'zone-count'));
      head.lastChild.textContent = String(rows.length);
      const ul = el('ul', 'people');
      ul.append(...rows);
      section.append(head, ul);
      return section;
    }));
  }

  /** After a language switch: every row's text is rebuilt. */
  relabel() {
    for (const row of this.rows.values()) row.dataset.sig = '';
    this.structure = '';
    if (this.view) this.render(this.view);
  }

  #updateRow(p) {
    const v = this.view;
    const sig = JSON.stringify([p, v.selfRole, v.selfId === p.id, v.spotlight === p.id,
      [...this.pending].filter((k) => k.endsWith(`:${p.id}`)), this.confirmRemove === p.id]);
    let row = this.rows.get(p.id);
    if (row && row.dataset.sig === sig) return;
    if (!row) {
      row = el('li', 'person', { 'data-participant-id': p.id });
      this.rows.set(p.id, row);
    }
    row.dataset.sig = sig;
    row.dataset.zone = zoneOf(p);
    row.classList.toggle('is-self', p.id === v.selfId);
    row.replaceChildren(this.#who(p), ...this.#actions(p));
  }

  #who(p) {
    const v = this.view;
    const who = el('div', 'person-main');
    const avatar = el('span', 'person-avatar', { 'aria-hidden': 'true' });
    avatar.textContent = Array.from((p.display_name || '?').trim())[0]?.toUpperCase() ?? '?';
    const text = el('div', 'person-text');
    const name = el('span', 'person-name');
    name.textContent = p.display_name || p.id;
    if (p.id === v.selfId) name.append(textEl('span', 'you', 'roster.you'));
    const meta = el('span', 'person-meta');
    const role = el('span', 'chip role', { 'data-role': p.role || '' });
    role.textContent = roleName(p.role);
    meta.append(role, zoneEl('span', 'chip zone', zoneOf(p)));
    if (p.connection && p.connection !== 'connected') {
      const conn = textEl('span', 'chip conn', `roster.conn.${p.connection}`);
      conn.dataset.state = p.connection;
      meta.append(conn);
    } else if (p.network && p.network !== 'good') {
      // The server's measure of this participant's links (protocol.md, "Network quality").
      const net = textEl('span', 'chip net', `roster.net.${p.network}`);
      net.dataset.state = p.network;
      net.setAttribute('data-testid', `network-${p.id}`);
      meta.append(net);
    }
    text.append(name, meta);
    const flags = el('span', 'flags');
    if (p.hand_raised) flags.append(icon(ICONS.hand, 'roster.hand', 'hand'));
    if (p.audio_muted_by_host) flags.append(icon(ICONS.micOff, 'roster.muted_by_host', 'host-muted'));
    if (p.video_muted_by_host) flags.append(icon(ICONS.camOff, 'roster.video_off_by_host', 'host-muted'));
    if (v.spotlight === p.id) flags.append(icon(ICONS.star, 'roster.spotlight', 'spot'));
    who.append(avatar, text, flags);
    return who;
  }

  /** The host controls this viewer may use on this participant (none for most viewers). */
  #actions(p) {
    const v = this.view;
    const me = v.selfRole;
    const self = p.id === v.selfId;
    const zone = zoneOf(p);
    const out = [];
    const target = p.id;

    if (zone === 'lobby' && !self && may(me, 'admit')) {
      out.push(this.#button('act.admit', 'admit', { target }, { testid: `admit-${p.id}`, style: 'primary' }));
      out.push(this.#button('act.deny', 'deny', { target }, { testid: `deny-${p.id}`, style: 'danger' }));
    }
    if (zone === 'witness_waiting' && !self && may(me, 'call_witness')) {
      out.push(this.#button('act.call_witness', 'call_witness', { target }, { testid: `call-${p.id}`, style: 'primary' }));
    }
    if (p.role === 'witness' && zone === 'main' && may(me, 'dismiss_witness')) {
      out.push(this.#button('act.dismiss_witness', 'dismiss_witness', { target }, { testid: `dismiss-${p.id}` }));
    }
    if (p.hand_raised && !self && mayLowerOthersHand(me)) {
      out.push(this.#button('act.lower_hand', 'lower_hand', { target }, { testid: `lower-${p.id}` }));
    }
    if (!self && zone !== 'lobby' && may(me, 'mute')) {
      const a = !!p.audio_muted_by_host;
      const vm = !!p.video_muted_by_host;
      out.push(this.#button(a ? 'act.unmute_audio' : 'act.mute_audio', a ? 'unmute' : 'mute',
        { target, kind: 'audio' }, { testid: `mute-audio-${p.id}`, pressed: a }));
      out.push(this.#button(vm ? 'act.unmute_video' : 'act.mute_video', vm ? 'unmute' : 'mute',
        { target, kind: 'video' }, { testid: `mute-video-${p.id}`, pressed: vm }));
    }
    if (!NO_MEDIA_ZONES.has(zone) && may(me, 'spotlight')) {
      const on = v.spotlight === p.id;
      out.push(this.#button(on ? 'act.unspotlight' : 'act.spotlight', 'spotlight',
        { target: on ? null : target }, { testid: `spotlight-${p.id}`, pressed: on, pendingKey: `spotlight:${p.id}` }));
    }
    if (zone !== 'lobby' && may(me, 'move')) out.push(this.#moveSelect(p));
    if (!self && zone !== 'lobby' && may(me, 'remove')) {
      const confirming = this.confirmRemove === p.id;
      const btn = this.#button(confirming ? 'act.remove_confirm' : 'act.remove', 'remove', { target },
        { testid: `remove-${p.id}`, style: 'danger' });
      if (!confirming) {
        // First press only arms the button: removing someone from a hearing is not undone by a click.
        btn.onclick = () => {
          clearTimeout(this.confirmTimer);
          this.confirmRemove = p.id;
          this.confirmTimer = setTimeout(() => { this.confirmRemove = null; this.#rerender(); }, CONFIRM_MS);
          this.#rerender();
        };
      }
      out.push(btn);
    }
    if (out.length === 0) return [];
    const box = el('div', 'person-actions');
    box.append(...out);
    return [box];
  }

  #button(key, action, fields, { testid, style = '', pressed, pendingKey } = {}) {
    const btn = textEl('button', `act ${style}`.trim(), key);
    btn.type = 'button';
    if (testid) btn.dataset.testid = testid;
    if (pressed !== undefined) btn.setAttribute('aria-pressed', String(pressed));
    const pkey = pendingKey ?? `${action}${fields.kind ? `/${fields.kind}` : ''}:${fields.target}`;
    btn.disabled = this.pending.has(pkey);
    btn.onclick = () => this.#run(pkey, action, fields);
    return btn;
  }

  #moveSelect(p) {
    const zone = zoneOf(p);
    const label = el('label', 'move');
    label.append(textEl('span', 'move-label', 'roster.move_label'));
    const select = el('select', '', { 'data-testid': `move-${p.id}` });
    const zones = MOVE_TARGETS.includes(zone) ? MOVE_TARGETS : [zone, ...MOVE_TARGETS];
    for (const z of zones) {
      const o = zoneEl('option', '', z);
      o.value = z;
      o.selected = z === zone;
      select.append(o);
    }
    const pkey = `move:${p.id}`;
    select.disabled = this.pending.has(pkey);
    select.onchange = () => {
      if (select.value !== zone) this.#run(pkey, 'move', { target: p.id, zone: select.value });
    };
    label.append(select);
    return label;
  }

  async #run(pkey, action, fields) {
    if (this.pending.has(pkey)) return;
    if (action === 'remove') { clearTimeout(this.confirmTimer); this.confirmRemove = null; }
    this.pending.add(pkey);
    this.#rerender();
    try {
      await this.act(action, fields);
    } catch {
      // The page already showed the server's error (or our own timeout) as a toast.
    } finally {
      this.pending.delete(pkey);
      this.#rerender();
    }
  }

  #rerender() { if (this.view) this.render(this.view); }
}

function rank(role) {
  const i = ROLE_ORDER.indexOf(role);
  return i < 0 ? ROLE_ORDER.length : i;
}
