// The in-session view of the other participants: one tile per participant, with the participant's
// camera video, audio, name, localised role, mute and raised-hand icons. The spotlighted
// participant (session_updated.spotlight) gets the large tile. A screen someone shares (evidence,
// 证据材料) gets a presentation tile of its own, larger still: the whole first row, labelled
// "<name> 正在共享屏幕"; it takes the place of the spotlight while it lasts.

import { roleName, setText } from './i18n.js';

const SVG_HEAD = '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">';
const SLASH = '<line x1="3" y1="3" x2="21" y2="21"/>';
const MIC = '<rect x="9" y="2" width="6" height="12" rx="3"/><path d="M5 11a7 7 0 0 0 14 0"/><line x1="12" y1="18" x2="12" y2="22"/>';
const CAM = '<rect x="2" y="6" width="13" height="12" rx="2"/><path d="M15 10l6-3.5v11L15 14"/>';
const HAND = '<path d="M7 11V5a1.5 1.5 0 0 1 3 0v5"/><path d="M10 10V3.5a1.5 1.5 0 0 1 3 0V10"/>'
  + '<path d="M13 10V4.5a1.5 1.5 0 0 1 3 0V11"/>'
  + '<path d="M16 11V7.5a1.5 1.5 0 0 1 3 0V14a8 8 0 0 1-8 8h-.5a7 7 0 0 1-5.6-2.8L3.2 15.6a1.6 1.6 0 0 1 2.5-2L7 15"/>';
const LOCK_BODY = '<rect x="4" y="11" width="16" height="10" rx="2"/>';

export const ICONS = {
  mic: SVG_HEAD + MIC + '</svg>',
  micOff: SVG_HEAD + MIC + SLASH + '</svg>',
  cam: SVG_HEAD + CAM + '</svg>',
  camOff: SVG_HEAD + CAM + SLASH + '</svg>',
  leave: SVG_HEAD + '<path d="M10 4H5a1 1 0 0 0-1 1v14a1 1 0 0 0 1 1h5"/><path d="M15 8l4 4-4 4"/><line x1="19" y1="12" x2="9" y2="12"/></svg>',
  sound: SVG_HEAD + '<path d="M11 5L6 9H3v6h3l5 4z"/><path d="M15.5 8.5a5 5 0 0 1 0 7"/><path d="M18.5 5.5a9 9 0 0 1 0 13"/></svg>',
  hand: SVG_HEAD + HAND + '</svg>',
  people: SVG_HEAD + '<circle cx="9" cy="8" r="3.5"/><path d="M2.5 20a6.5 6.5 0 0 1 13 0"/><path d="M16 4.5a3.5 3.5 0 0 1 0 7"/><path d="M18 14a6 6 0 0 1 3.5 6"/></svg>',
  lock: SVG_HEAD + LOCK_BODY + '<path d="M8 11V7a4 4 0 0 1 8 0v4"/></svg>',
  unlock: SVG_HEAD + LOCK_BODY + '<path d="M8 11V7a4 4 0 0 1 7.5-2"/></svg>',
  star: SVG_HEAD + '<path d="M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1-4.4-4.3 6.1-.9z"/></svg>',
  close: SVG_HEAD + '<line x1="6" y1="6" x2="18" y2="18"/><line x1="18" y1="6" x2="6" y2="18"/></svg>',
  // the recording: pause (two bars in a ring) and resume (a filled dot in a ring)
  recPause: SVG_HEAD + '<circle cx="12" cy="12" r="9"/><line x1="10" y1="9" x2="10" y2="15"/><line x1="14" y1="9" x2="14" y2="15"/></svg>',
  recResume: SVG_HEAD + '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="4" fill="currentColor"/></svg>',
  // the record (笔录): a page with lines and a pen
  notes: SVG_HEAD + '<path d="M14 3H6a1 1 0 0 0-1 1v16a1 1 0 0 0 1 1h12a1 1 0 0 0 1-1V8z"/><path d="M14 3v5h5"/>'
    + '<line x1="8" y1="12" x2="16" y2="12"/><line x1="8" y1="16" x2="13" y2="16"/></svg>',
  // the screen share: a monitor (with an arrow up: "present")
  screen: SVG_HEAD + '<rect x="2" y="4" width="20" height="13" rx="2"/><line x1="8" y1="21" x2="16" y2="21"/>'
    + '<line x1="12" y1="17" x2="12" y2="21"/><path d="M9 11l3-3 3 3"/><line x1="12" y1="8" x2="12" y2="14"/></svg>',
  screenOff: SVG_HEAD + '<rect x="2" y="4" width="20" height="13" rx="2"/><line x1="8" y1="21" x2="16" y2="21"/>'
    + '<line x1="12" y1="17" x2="12" y2="21"/><line x1="9" y1="8" x2="15" y2="13"/><line x1="15" y1="8" x2="9" y2="13"/></svg>',
  // an observer (监督旁听): an eye
  eye: SVG_HEAD + '<path d="M2 12s3.5-7 10-7 10 7 10 7-3.5 7-10 7S2 12 2 12z"/><circle cx="12" cy="12" r="3"/></svg>',
};

// Presiding roles first, then the others, observers last.
const ROLE_ORDER = ['judge', 'mediator', 'leader', 'petition_officer', 'clerk', 'party', 'counsel',
  'counsellor', 'interpreter', 'witness', 'observer'];

function el(tag, className, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

/** First character of the display name (works for 王法官 and for Wang alike). */
function initial(name) {
  return Array.from((name || '?').trim())[0]?.toUpperCase() ?? '?';
}

export class Stage {
  /**
   * @param {HTMLElement} grid   container of the tiles
   * @param {HTMLElement} empty  "waiting for others" note, shown when there are no tiles
   * @param {{onFirstFrame?: () => void, onAudioBlocked?: () => void}} hooks
   */
  constructor(grid, empty, hooks = {}) {
    this.grid = grid;
    this.empty = empty;
    this.hooks = hooks;
    /** participant id → tile record */
    this.tiles = new Map();
    /** the spotlighted participant id (session_updated.spotlight), whether or not it has a tile here */
    this.spotlight = null;
    /** screen track id → presentation tile {root, video, label, participantId, track} */
    this.presentations = new Map();
    this.layout();
  }

  ids() { return [...this.tiles.keys()]; }

  /**
   * The screens shown: [{participant_id, track_id, label (as shown), frames (decoded and shown so
   * far), width, height}], for the test hook.
   */
  presentationList() {
    return [...this.presentations.entries()].map(([trackId, p]) => ({
      participant_id: p.participantId,
      track_id: trackId,
      label: p.label.textContent,
      frames: p.video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0,
      width: p.video.videoWidth,
      height: p.video.videoHeight,
    }));
  }

  /** Replace the participant list (after every join): keep tiles that remain, drop the rest. */
  reset(participants) {
    const keep = new Set(participants.map((p) => p.id));
    for (const id of this.ids()) if (!keep.has(id)) this.remove(id);
    for (const p of participants) this.upsert(p);
  }

  /** Create or update the tile of a participant ({id, placeholder: true} makes a nameless placeholder). */
  upsert(p) {
    let tile = this.tiles.get(p.id);
    if (!tile) {
      tile = this.#createTile(p.id);
      this.tiles.set(p.id, tile);
      this.grid.append(tile.root);
      this.layout();
    }
    // A placeholder (a track seen before its participant record) stays one until a real record comes.
    tile.info = { ...tile.info, ...p, placeholder: !!p.placeholder && tile.info.placeholder !== false };
    const info = tile.info;
    tile.name.textContent = info.display_name || '';
    // An observer (监督员) publishes nothing: its tile shows an eye, not a face waiting for video.
    const observer = info.role === 'observer';
    tile.root.classList.toggle('observer', observer);
    if (observer) tile.avatar.innerHTML = ICONS.eye; else tile.avatar.textContent = initial(info.display_name);
    tile.role.textContent = roleName(info.role);
    tile.role.dataset.role = info.role || '';
    tile.root.style.order = String(Math.max(0, ROLE_ORDER.indexOf(info.role)));
    // Muted by the host weighs more than muted by oneself: the participant cannot undo it.
    const hostMuted = !!info.audio_muted_by_host;
    tile.micOff.hidden = observer || (!info.audio_muted && !hostMuted);
    tile.micOff.classList.toggle('by-host', hostMuted);
    setText(tile.micOff.querySelector('.sr-only'), hostMuted ? 'tile.muted_by_host' : 'tile.mic_muted');
    tile.camOff.hidden = observer || (!info.video_muted && !info.video_muted_by_host);
    tile.camOff.classList.toggle('by-host', !!info.video_muted_by_host);
    tile.hand.hidden = !info.hand_raised;
    tile.root.classList.toggle('hand-raised', !!info.hand_raised);
    tile.state.hidden = info.connection !== 'reconnecting';
    this.#refreshVideoVisibility(tile);
    for (const pr of this.presentations.values()) if (pr.participantId === p.id) this.#labelPresentation(pr);
  }

  /** Feature one participant (or nobody: null) in a larger tile. */
  setSpotlight(id) {
    this.spotlight = id ?? null;
    for (const [tid, tile] of this.tiles) tile.root.classList.toggle('spotlight', tid === this.spotlight);
    this.layout();
  }

  remove(id) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    for (const m of tile.media.values()) this.#detach(m);
    for (const [trackId, pr] of this.presentations) if (pr.participantId === id) this.#removePresentation(trackId);
    tile.root.remove();
    this.tiles.delete(id);
    this.layout();
  }

  /** Hide or show the whole stage (e.g. in the lobby), without touching its tiles. */
  setHidden(hidden) {
    this.hiddenAll = hidden;
    this.grid.hidden = hidden;
    this.layout();
  }

  clear() { for (const id of this.ids()) this.remove(id); }

  /**
   * Set the media of one participant to exactly `entries`
   * ([{trackId, kind, source, track}]); elements of tracks not listed are removed.
   */
  setMedia(id, entries) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const isScreen = (e) => e.kind === 'video' && e.source === 'screen';
    const screens = new Map(entries.filter(isScreen).map((e) => [e.trackId, e]));
    const wanted = new Map(entries.filter((e) => !isScreen(e)).map((e) => [e.trackId, e]));
    for (const [trackId, m] of tile.media) {
      const w = wanted.get(trackId);
      if (!w || w.track !== m.track) { this.#detach(m); tile.media.delete(trackId); }
    }
    for (const [trackId, e] of wanted) {
      if (!tile.media.has(trackId)) tile.media.set(trackId, this.#attach(tile, e));
    }
    for (const [trackId, pr] of this.presentations) {
      if (pr.participantId !== id) continue;
      const w = screens.get(trackId);
      if (!w || w.track !== pr.track) this.#removePresentation(trackId);
    }
    for (const [trackId, e] of screens) if (!this.presentations.has(trackId)) this.#addPresentation(id, e);
    tile.root.classList.toggle('presenting', screens.size > 0);
    this.#refreshVideoVisibility(tile);
  }

  /** Remove one track's element (track_unpublished). */
  removeTrack(participantId, trackId) {
    if (this.presentations.get(trackId)?.participantId === participantId) {
      this.#removePresentation(trackId);
      const tile = this.tiles.get(participantId);
      tile?.root.classList.toggle('presenting', [...this.presentations.values()].some((p) => p.participantId === participantId));
      return;
    }
    const tile = this.tiles.get(participantId);
    const m = tile?.media.get(trackId);
    if (!m) return;
    this.#detach(m);
    tile.media.delete(trackId);
    this.#refreshVideoVisibility(tile);
  }

  /** Drop all media elements (the peer connections are gone), keeping the tiles. */
  clearMedia() {
    for (const tile of this.tiles.values()) this.setMedia(tile.info.id, []);
  }

  /** Retry playing every audio element; call from a user gesture after autoplay was refused. */
  async unlockAudio() {
    const results = [];
    for (const tile of this.tiles.values()) {
      for (const m of tile.media.values()) if (m.kind === 'audio') results.push(m.el.play());
    }
    await Promise.all(results); // rejects if still blocked
  }

  /** Re-render role names after a language switch (display names are not translated). */
  relabel() {
    for (const tile of this.tiles.values()) tile.role.textContent = roleName(tile.info.role);
    for (const pr of this.presentations.values()) this.#labelPresentation(pr);
  }

  layout() {
    const n = this.tiles.size;
    // A shared screen takes the whole first row (several: one row each), and the participants
    // share a strip of rows below it (see style.css .stage.has-presentation). Otherwise, with a
    // spotlight (and someone else to show), the featured tile takes the first row the same way.
    const presenting = this.presentations.size > 0;
    const featured = !presenting && n > 1 && this.tiles.has(this.spotlight);
    this.grid.classList.toggle('has-presentation', presenting);
    this.grid.classList.toggle('has-spotlight', featured);
    if (presenting) {
      this.grid.style.setProperty('--cols', String(Math.max(1, Math.min(n, 4))));
    } else if (featured) {
      this.grid.style.setProperty('--cols', String(Math.min(n - 1, 4)));
    } else {
      this.grid.style.setProperty('--cols', String(n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4));
    }
    this.grid.style.setProperty('--cols-phone', String(n <= 2 ? 1 : 2));
    this.grid.dataset.count = String(n);
    this.grid.dataset.presentations = String(this.presentations.size);
    this.grid.style.setProperty('--presentations', String(Math.max(1, this.presentations.size)));
    this.empty.hidden = n > 0 || presenting || !!this.hiddenAll;
  }

  #createTile(id) {
    const root = el('div', 'tile', { 'data-participant-id': id });
    const media = el('div', 'tile-media');
    const avatar = el('div', 'avatar', { 'aria-hidden': 'true' });
    media.append(avatar);
    const label = el('div', 'tile-label');
    const name = el('span', 'name');
    const role = el('span', 'role');
    const micOff = el('span', 'icon mic-off');
    micOff.innerHTML = ICONS.micOff;
    setText(micOff.appendChild(el('span', 'sr-only')), 'tile.mic_muted');
    const camOff = el('span', 'icon cam-off');
    camOff.innerHTML = ICONS.camOff;
    setText(camOff.appendChild(el('span', 'sr-only')), 'tile.cam_off');
    const hand = el('span', 'icon hand');
    hand.innerHTML = ICONS.hand;
    setText(hand.appendChild(el('span', 'sr-only')), 'tile.hand');
    label.append(name, role, hand, micOff, camOff);
    const state = el('div', 'tile-state');
    setText(state, 'tile.reconnecting');
    // Shown while this participant shares a screen (the screen itself is in the presentation tile).
    const screenTag = el('span', 'screen-tag');
    setText(screenTag, 'tile.screen');
    root.append(media, label, state, screenTag);
    root.classList.toggle('spotlight', id === this.spotlight);
    return { root, mediaBox: media, avatar, name, role, micOff, camOff, hand, state, info: { id }, media: new Map() };
  }

  /** A presentation tile for a screen `participantId` shares: first row, whole width. */
  #addPresentation(participantId, entry) {
    // Not a `.tile`: tiles are participants (tests and the layout count them).
    const root = el('div', 'presentation', {
      'data-presenter-id': participantId, 'data-track-id': entry.trackId, 'data-testid': 'presentation',
    });
    const box = el('div', 'tile-media');
    // Muted: video elements carry no audio, so they may always autoplay.
    const video = el('video', 'screen', { playsinline: '', autoplay: '' });
    video.muted = true;
    video.srcObject = new MediaStream([entry.track]);
    box.append(video);
    const bar = el('div', 'tile-label presentation-label');
    const icon = el('span', 'icon screen-icon', { 'aria-hidden': 'true' });
    icon.innerHTML = ICONS.screen;
    const label = el('span', 'name');
    bar.append(icon, label);
    root.append(box, bar);
    const pr = { root, video, label, participantId, track: entry.track };
    this.presentations.set(entry.trackId, pr);
    this.#labelPresentation(pr);
    this.grid.prepend(root);
    this.#watchFirstFrame(video);
    video.play().catch(() => {});
    this.layout();
  }

  #labelPresentation(pr) {
    const name = this.tiles.get(pr.participantId)?.info.display_name || '';
    setText(pr.label, name ? 'tile.presenting' : 'tile.presenting_unknown', { name });
  }

  #removePresentation(trackId) {
    const pr = this.presentations.get(trackId);
    if (!pr) return;
    pr.video.pause();
    pr.video.srcObject = null;
    pr.root.remove();
    this.presentations.delete(trackId);
    this.layout();
  }

  #attach(tile, entry) {
    const stream = new MediaStream([entry.track]);
    let node;
    if (entry.kind === 'video') {
      // Video elements carry no audio, so they may always autoplay (muted autoplay is allowed).
      node = el('video', 'camera', { playsinline: '', autoplay: '' });
      node.muted = true;
      node.srcObject = stream;
      tile.mediaBox.append(node);
      this.#watchFirstFrame(node);
      node.play().catch(() => {});
    } else {
      node = el('audio', '', { autoplay: '' });
      node.srcObject = stream;
      tile.root.append(node);
      node.play().catch((err) => {
        if (err?.name === 'NotAllowedError') this.hooks.onAudioBlocked?.();
      });
    }
    return { kind: entry.kind, source: entry.source, track: entry.track, el: node };
  }

  #detach(m) {
    m.el.pause?.();
    m.el.srcObject = null;
    m.el.remove();
  }

  #watchFirstFrame(video) {
    const fire = () => this.hooks.onFirstFrame?.();
    if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(fire);
    else video.addEventListener('loadeddata', fire, { once: true });
  }

  /** Show video when there is a camera track and the publisher has not turned it off. */
  #refreshVideoVisibility(tile) {
    const videos = [...tile.media.values()].filter((m) => m.kind === 'video');
    // Muted by the host: the server stops forwarding, so the last frame would freeze there.
    const showCamera = videos.length > 0 && !tile.info.video_muted && !tile.info.video_muted_by_host;
    tile.root.classList.toggle('show-camera', showCamera);
  }
}

/** A short message at the bottom of the screen, e.g. a server error. */
export function showToast(box, setter, ms = 6000) {
  setter(box);
  box.hidden = false;
  clearTimeout(box.timer);
  box.timer = setTimeout(() => { box.hidden = true; }, ms);
}
