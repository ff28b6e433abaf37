// Zones and who may do what (docs/protocol.md, "Zones and host controls").
//
// The server enforces every rule here; the page only uses them to decide which controls to show,
// so a mistake in this file can hide or show a button but never grant a power.

/** Roles that join straight into `main` and may admit or deny lobby participants. */
export const HOST_ROLES = new Set(['judge', 'clerk', 'mediator', 'petition_officer', 'leader']);
/** Roles that may also move, mute, remove, lock and spotlight (the hosts except the clerk). */
export const MODERATOR_ROLES = new Set(['judge', 'mediator', 'petition_officer', 'leader']);
const JUDGE = new Set(['judge']);

const ALLOWED = {
  admit: HOST_ROLES,
  deny: HOST_ROLES,
  move: MODERATOR_ROLES,
  mute: MODERATOR_ROLES,
  unmute: MODERATOR_ROLES,
  remove: MODERATOR_ROLES,
  lock: MODERATOR_ROLES,
  unlock: MODERATOR_ROLES,
  spotlight: MODERATOR_ROLES,
  call_witness: JUDGE,
  dismiss_witness: JUDGE,
  // The reception queue (信访接待叫号): admits whoever has waited longest in the lobby.
  call_next: HOST_ROLES,
  // Pausing the recording for a statutory reason, and resuming it: presiding hosts, not the clerk.
  pause_recording: MODERATOR_ROLES,
  resume_recording: MODERATOR_ROLES,
};

/**
 * May a participant with `role` send this `control` action?
 * For raise_hand / lower_hand this is about one's own hand; see mayLowerOthersHand.
 */
export function may(role, action) {
  if (action === 'raise_hand' || action === 'lower_hand') return !!role && role !== 'observer';
  return ALLOWED[action]?.has(role) ?? false;
}

/**
 * Roles that keep the record (笔录): they may send `note` (protocol.md; src/core/roles.rs `notes`):
 * judge, clerk, mediator, petition officer, leader.
 */
export const NOTE_ROLES = new Set(['judge', 'clerk', 'mediator', 'petition_officer', 'leader']);
export function mayKeepNotes(role) { return NOTE_ROLES.has(role); }

/** Observers (纪委 / 检察 监督) publish nothing: the server refuses their tracks. */
export function mayPublish(role) { return !!role && role !== 'observer'; }

/** "only hosts may lower another's hand": hosts as the protocol lists them, clerk included. */
export function mayLowerOthersHand(role) { return HOST_ROLES.has(role); }

// ---- zones ----------------------------------------------------------------------------------

/**
 * A participant's zone. A record without one (a server from before zones) counts as `main`,
 * which is where everybody was then.
 */
export function zoneOf(p) { return (p && p.zone) || 'main'; }

/** Zones where the server forwards no media at all: nobody there gets a tile. */
export const NO_MEDIA_ZONES = new Set(['lobby', 'witness_waiting']);

/** 'lobby' | 'witness_waiting' | 'main' | 'caucus' | 'consultation' | 'other' */
export function zoneKind(zone) {
  if (zone === 'lobby' || zone === 'witness_waiting' || zone === 'main') return zone;
  const m = /^(caucus|consultation):\d+$/.exec(zone || '');
  return m ? m[1] : 'other';
}

/** The i18n key and parameters naming a zone, for setText(). */
export function zoneText(zone) {
  const kind = zoneKind(zone);
  if (kind === 'caucus' || kind === 'consultation') return { key: `zone.${kind}_n`, params: { n: zone.split(':')[1] } };
  if (kind === 'other') return { key: 'zone.other', params: { zone: String(zone) } };
  return { key: `zone.${kind}`, params: undefined };
}

/** Where the move select offers to send someone (a participant's current zone is added if missing). */
export const MOVE_TARGETS = ['main', 'caucus:1', 'caucus:2', 'consultation:1'];

/** Roster order: the waiting room first (hosts act on it), then main, the private rooms, witnesses. */
export function zoneRank(zone) {
  const kind = zoneKind(zone);
  const base = { lobby: 0, main: 1, caucus: 2, consultation: 3, witness_waiting: 5, other: 6 }[kind];
  const n = Number(String(zone).split(':')[1]) || 0;
  return base * 1000 + n;
}
