// Qiao web client entry point: reads the join link, runs the participant's steps the server asks
// for (identity check, consent: steps.js), the pre-join device check, then the session view, and
// the rating afterwards. See docs/protocol.md for the signalling protocol.
//
// Join link: /join#token=<JWT>[&autojoin=1]. The token is in the fragment so that it never
// reaches server or proxy logs. autojoin=1 skips the device-check click (used by automated tests);
// the identity and consent steps run all the same. transferred=1 marks a page that followed a
// `transferred` message to another office's reception: it skips the device-check click too (the
// camera and microphone were working a moment ago) and says where the person now is.

import { initI18n, setLang, currentLang, onLangChange, setText, setLiteral, setLabel, pair, t } from './i18n.js';
import { LocalMedia, LevelMeter } from './media.js';
import { Stage, ICONS, showToast } from './ui.js';
import { Session } from './session.js';
import { Roster } from './roster.js';
import { QueuePanel } from './queue.js';
import { RecordingView } from './recording.js';
import { NotesPanel } from './notes.js';
import { NO_MEDIA_ZONES, may, mayKeepNotes, mayPublish, zoneKind, zoneOf, zoneText } from './roles.js';
import { fetchStatus, ratesSession, relabelSteps, runSteps, showRating } from './steps.js';

const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get('token');
const arrivedByTransfer = fragment.get('transferred') === '1';
const autojoin = fragment.get('autojoin') === '1' || arrivedByTransfer;
// How long the "you are being transferred" card stays before the page opens the new link.
const TRANSFER_DELAY_MS = 1500;

const app = {
  state: token ? 'prejoin' : 'landing', // before a Session exists
  /** where the page is in the participant's path (window.qiao.step) */
  step: token ? 'status' : 'landing',
  /** the last GET /api/v1/join/status answer */
  status: null,
  local: null,
  meter: null,
  session: null,
  stage: null,
  roster: null,
  /** the reception queue panel (hosts who may call_next) */
  queue: null,
  /** the recording's indicator, warning, integrity value and the hosts' pause / resume (recording.js) */
  recording: null,
  /** the notes panel (笔录) of the roles that keep the record (notes.js) */
  notes: null,
  /** ids of the observers (监督员) seen present, so that everyone is told once about each arrival */
  observersSeen: null,
  /** the link of the session we were handed to (`transferred`), with transferred=1 added */
  transferTarget: null,
  rosterOpen: false,
  /** ids seen waiting in the lobby, so that hosts are told once about each new arrival */
  lobbySeen: null,
  /** true while our own raise/lower hand request is on its way */
  handPending: false,
  /** true from the click on 共享屏幕 until the screen is picked and published (or not) */
  sharePending: false,
  wakeLock: null,
  // performance.now() timestamps, for the test hook
  timing: { joinStarted: null, joined: null, firstRemoteFrame: null },
};

// ---- test hook (used by tests/browser/three_party.mjs; keep it stable) ----------------------
window.qiao = Object.freeze({
  /** 'landing' | 'prejoin' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'left' */
  get state() { return app.session ? app.session.state : app.state; },
  /**
   * Where the page is in the participant's path: 'landing' (no token) | 'status' (asking the
   * server which steps apply) | 'identity' | 'consent' | 'error' (bad link, closed session, server
   * unreachable: the card says which) | 'prejoin' | 'session' | 'ended' | 'rating' | 'rated'.
   */
  get step() { return app.step; },
  /** Our participant id once joined, else null. */
  get participantId() { return app.session?.participantId ?? null; },
  /** Ids of the remote participants that have a tile. */
  remoteParticipants() { return app.stage.ids(); },
  /** Inbound RTP statistics of the subscribe connection, per publisher. */
  async stats() { return app.session ? app.session.stats() : { videos: [], audios: [] }; },
  /** The WebSocket close code that stopped the session for good (e.g. 4001), else null. */
  get closeCode() { return app.session?.closeCode ?? null; },
  /** {joinStarted, joined, firstRemoteFrame} as performance.now() values (ms) or null. */
  get timing() { return { ...app.timing }; },
  /** Our current zone ('lobby', 'main', 'caucus:1', …), or null before joining. */
  get zone() { return app.session?.zone ?? null; },
  /**
   * Everyone the server told us about, ourselves first:
   * [{id, display_name, role, group, zone, queue_position, hand_raised, audio_muted_by_host,
   * video_muted_by_host, network}] (queue_position: 1 = next, while in the lobby; else null;
   * network: the server's measure of that participant's links, protocol.md "Network quality").
   */
  roster() {
    return [...(app.session?.people.values() ?? [])].map((p) => ({
      id: p.id,
      display_name: p.display_name ?? null,
      role: p.role ?? null,
      group: p.group ?? null,
      zone: zoneOf(p),
      queue_position: Number.isInteger(p.queue_position) ? p.queue_position : null,
      hand_raised: !!p.hand_raised,
      audio_muted_by_host: !!p.audio_muted_by_host,
      video_muted_by_host: !!p.video_muted_by_host,
      network: p.network ?? null,
    }));
  },
  /**
   * Send a `control` ({action, target, ...extra}, e.g. extra = {zone: 'caucus:1'} or {kind: 'audio'}).
   * Resolves with the control_ack; rejects with the server's `error` message ({code, message,
   * message_en}), or code 'timeout' after 5 s, or 'not_connected'.
   */
  async control(action, target, extra = {}) {
    if (!app.session) {
      const { zh, en } = pair('act.not_connected');
      throw { v: 1, type: 'error', code: 'not_connected', message: zh, message_en: en };
    }
    return app.session.control(action, { ...extra, target });
  },
  /** Session-wide state: {id, kind, locked, spotlight (participant id or null)}; id and kind null before joining. */
  session() {
    const s = app.session?.session;
    return { id: s?.id ?? null, kind: s?.kind ?? null, locked: !!s?.locked, spotlight: s?.spotlight ?? null };
  },
  /** Where the server handed us ({session_id, join_url} of the `transferred` message), else null. */
  get transfer() { return app.session?.transfer ? { ...app.session.transfer } : null; },
  /**
   * The last `recording_status` the server sent ({state: 'recording'|'paused'|'degraded'|'failed'|
   * 'final', cause, message_zh, message_en, chain_head}), kept after the session ends; else null.
   */
  get recording() { return app.recording?.status ? { ...app.recording.status } : null; },
  /** Our role: from `joined` once in the session, else from the invitation (GET /join/status), else null. */
  get role() { return app.session?.self?.role ?? app.status?.participant?.role ?? null; },
  /** How many local tracks (camera, microphone) this page has to publish: 0 for an observer. */
  get localTracks() { return app.local ? app.local.tracks().length : 0; },
  /**
   * The notes (笔录) written on this page, oldest first: [{id, timecode_ms, timecode ("mm:ss" as
   * shown), text, state ('saved' | 'pending' | 'failed' | 'unknown'), at, author, role}].
   */
  notes() { return app.notes ? app.notes.list() : []; },
  /** Whether the notes panel is open. */
  get notesOpen() { return !!app.notes?.open; },
  /**
   * Our screen share: {sharing (a screen is captured and published or being published), pending
   * (between the click and the server's answer), track_id (the MediaStreamTrack id, the key
   * declared `screen` in publish_offer.sources) or null}.
   */
  get screenShare() {
    const track = app.local?.screenTrack ?? null;
    return { sharing: !!track, pending: app.sharePending, track_id: track?.id ?? null };
  },
  /**
   * Other participants' screens shown in the presentation area, oldest first:
   * [{participant_id, track_id, label (as shown, e.g. "张三 正在共享屏幕"), frames (video frames
   * shown so far), width, height}].
   */
  presentations() { return app.stage ? app.stage.presentationList() : []; },
});

// ---- screens --------------------------------------------------------------------------------

const SCREENS = ['screen-landing', 'screen-steps', 'screen-prejoin', 'screen-session', 'screen-ended'];
function show(id) {
  for (const s of SCREENS) $(s).hidden = s !== id;
  document.body.dataset.screen = id;
}

function main() {
  initI18n();
  $('lang-btn').addEventListener('click', () => setLang(currentLang() === 'en' ? 'zh-CN' : 'en'));
  onLangChange(() => {
    app.stage.relabel();
    app.roster?.relabel();
    app.queue?.relabel();
    renderSessionInfo();
    relabelSteps();
    app.recording?.render();
    app.notes?.render();
    if (app.session) renderRoom();
  });
  // Opening another join link in the same tab only changes the fragment: start afresh.
  window.addEventListener('hashchange', () => location.reload());

  app.stage = new Stage($('stage'), $('stage-empty'), {
    onFirstFrame: () => { app.timing.firstRemoteFrame ??= performance.now(); },
    onAudioBlocked: () => { $('sound-btn').hidden = false; },
  });

  if (!token) {
    show('screen-landing');
    return;
  }
  steps();
}

function setStep(step) {
  app.step = step;
  document.body.dataset.step = step;
}

// ---- the participant's steps (steps.js) ------------------------------------------------------

/** Identity check and consent, whichever the server asks for; hosts usually go straight on. */
async function steps() {
  const status = await runSteps({ token, onStep: setStep, show: () => show('screen-steps') });
  if (!status) return; // the card says why (bad link, session over)
  app.status = status;
  prejoin();
}

// ---- pre-join -------------------------------------------------------------------------------

async function prejoin() {
  setStep('prejoin');
  show('screen-prejoin');
  app.local = new LocalMedia();
  $('join-btn').addEventListener('click', join);
  // A supervisor observes: nothing to publish (the server refuses an observer's tracks), so no
  // camera or microphone is opened and there is no device check; the card says what observing
  // means, and the click (or autojoin) enters. The click also lets remote audio play.
  if (!mayPublish(app.status?.participant?.role ?? 'party')) {
    document.body.dataset.observer = 'true';
    setText($('prejoin-heading'), 'prejoin.observer_heading');
    $('prejoin-observer').hidden = false;
    $('prejoin-devices').hidden = true;
    setText($('join-btn'), 'prejoin.observer_join');
    $('prejoin-status').hidden = true;
    $('join-btn').disabled = false;
    if (autojoin) join();
    return;
  }
  // Audio contexts start suspended until a user gesture.
  document.addEventListener('pointerdown', () => app.meter?.resume());

  await app.local.start();
  renderPreview();
  await fillDeviceSelects();
  navigator.mediaDevices?.addEventListener?.('devicechange', fillDeviceSelects);
  $('camera-select').addEventListener('change', (e) => switchDevice('video', e.target.value));
  $('mic-select').addEventListener('change', (e) => switchDevice('audio', e.target.value));

  $('prejoin-status').hidden = true;
  $('join-btn').disabled = false;
  if (autojoin) join();
}

function renderPreview() {
  const local = app.local;
  const hasVideo = !!local.videoTrack;
  $('preview-video').srcObject = hasVideo ? local.stream : null;
  $('preview-none').hidden = hasVideo;
  app.meter?.stop();
  app.meter = new LevelMeter(local.audioTrack, $('meter-bar'));

  const box = $('media-problems');
  box.replaceChildren(...local.problems.map((key) => {
    const p = document.createElement('p');
    setText(p, key);
    return p;
  }));
  box.hidden = local.problems.length === 0;
}

async function fillDeviceSelects() {
  if (app.session) return;
  const devices = await app.local.devices();
  const fill = (select, list, track, fallbackKey) => {
    const current = track?.getSettings?.().deviceId;
    const options = list.map((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      if (d.label) o.textContent = d.label; else setText(o, fallbackKey, { n: i + 1 });
      o.selected = d.deviceId === current;
      return o;
    });
    if (options.length === 0) {
      const o = document.createElement('option');
      setText(o, 'device.none');
      options.push(o);
    }
    select.replaceChildren(...options);
    select.disabled = list.length === 0;
  };
  fill($('camera-select'), devices.videoinput, app.local.videoTrack, 'device.camera_n');
  fill($('mic-select'), devices.audioinput, app.local.audioTrack, 'device.mic_n');
}

async function switchDevice(kind, deviceId) {
  $('join-btn').disabled = true;
  await app.local.switchDevice(kind, deviceId);
  renderPreview();
  await fillDeviceSelects();
  $('join-btn').disabled = false;
}

// ---- session --------------------------------------------------------------------------------

function join() {
  if (app.session || !app.local) return;
  app.timing.joinStarted = performance.now();
  app.meter?.stop();
  app.meter = null;
  $('preview-video').srcObject = null;
  setStep('session');
  show('screen-session');
  $('self-video').srcObject = app.local.videoTrack ? app.local.stream : null;
  renderControls();

  app.session = new Session({
    token,
    local: app.local,
    stage: app.stage,
    onState: renderState,
    onJoined: (session, self) => {
      const first = app.timing.joined === null;
      app.timing.joined ??= performance.now();
      renderSessionInfo();
      if (first && arrivedByTransfer) notice('notice.transferred_in');
      const keepsRecord = mayKeepNotes(self?.role);
      app.notes.attach({
        sessionId: session?.id ?? '', participantId: app.session.participantId,
        name: self?.display_name ?? '', role: self?.role ?? null, enabled: keepsRecord,
      });
      // The clerk keeps the record (书记员记录笔录): the panel opens by itself where there is room.
      if (first && self?.role === 'clerk' && window.innerWidth > 700) app.notes.setOpen(true);
      renderControls();
    },
    onEnded: renderEnded,
    onNotice: (msg) => showToast($('toast'), (box) => setLiteral(box, msg.zh, msg.en)),
    onRoom: renderRoom,
    onSelf: noticeSelfChange,
    onTransferred: followTransfer,
    // Every session is recorded: the top bar says how, for as long as the session lasts.
    onRecording: (status) => app.recording.update(status),
  });
  app.recording = new RecordingView({
    act: (action, fields) => control(action, fields),
    toast: (zh, en) => showToast($('toast'), (box) => setLiteral(box, zh, en)),
  });
  app.notes = new NotesPanel({
    send: (text, onLate) => app.session.note(text, onLate),
    onToggle: (open) => {
      $('notes-btn').setAttribute('aria-expanded', String(open));
      $('notes-btn').dataset.active = String(open);
    },
  });
  app.roster = new Roster({
    list: $('roster-list'),
    title: $('roster-title'),
    act: (action, fields) => control(action, fields),
  });
  app.queue = new QueuePanel({
    panel: $('queue-panel'),
    title: $('queue-title'),
    list: $('queue-list'),
    callNext: $('call-next-btn'),
    next: $('queue-next'),
    act: (action, fields) => control(action, fields),
    onCalled: (ack, who) => notice('notice.called_next', { name: who?.display_name || ack?.target || '' }),
  });
  renderState(app.session.state);
  renderRoom();
  app.session.start();

  $('mic-btn').addEventListener('click', () => toggle('audio'));
  $('cam-btn').addEventListener('click', () => toggle('video'));
  $('hand-btn').addEventListener('click', toggleHand);
  $('share-btn').addEventListener('click', () => (app.local.screenTrack ? stopSharing() : startSharing()));
  $('share-banner-stop').addEventListener('click', () => stopSharing());
  $('roster-btn').addEventListener('click', () => setRosterOpen(!app.rosterOpen));
  $('notes-btn').addEventListener('click', () => app.notes.toggle());
  $('notes-close').innerHTML = ICONS.close;
  $('roster-close').innerHTML = ICONS.close;
  $('roster-close').addEventListener('click', () => setRosterOpen(false));
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && app.rosterOpen) setRosterOpen(false); });
  $('lock-btn').addEventListener('click', () => {
    const btn = $('lock-btn');
    btn.disabled = true;
    control(app.session.session?.locked ? 'unlock' : 'lock', {})
      .catch(() => {})
      .finally(() => { btn.disabled = false; });
  });
  $('leave-btn').addEventListener('click', () => app.session.leave());
  $('sound-btn').addEventListener('click', () => {
    app.stage.unlockAudio().then(() => { $('sound-btn').hidden = true; }, () => {});
  });
  requestWakeLock();
}

function toggle(kind) {
  if (hostMuted(kind)) return; // only the host can undo it
  app.session.setMuted(kind, !app.local.isMuted(kind));
  renderControls();
}

/** Whether the host has muted our audio or video (the server no longer forwards it). */
function hostMuted(kind) {
  const self = app.session?.self;
  return !!(kind === 'audio' ? self?.audio_muted_by_host : self?.video_muted_by_host);
}

/** Our own control requests: a refusal from the server is already shown; show our own failures too. */
function control(action, fields) {
  return app.session.control(action, fields).catch((err) => {
    if (['timeout', 'not_connected', 'disconnected'].includes(err?.code)) {
      showToast($('toast'), (box) => setLiteral(box, err.message, err.message_en));
    }
    throw err;
  });
}

function toggleHand() {
  if (app.handPending || !app.session?.self) return;
  app.handPending = true;
  renderControls();
  // The button follows our record from the server (participant_updated), not the click.
  control(app.session.self.hand_raised ? 'lower_hand' : 'raise_hand', { target: app.session.participantId })
    .catch(() => {})
    .finally(() => { app.handPending = false; renderControls(); });
}

/**
 * 共享屏幕: the browser's picker chooses a screen, window or tab (getDisplayMedia); the track is
 * added to the publish connection, declared `screen`, and the server records it as such and shows
 * it to the others as a presentation.
 */
async function startSharing() {
  if (app.sharePending || app.local.screenTrack || app.session?.state !== 'connected') return;
  app.sharePending = true;
  renderControls();
  try {
    // The browser's own "stop sharing" (or closing the shared window) ends the track: stop here too.
    await app.local.startScreen(() => stopSharing({ byBrowser: true }));
  } catch (err) {
    console.info('qiao: no screen shared', err);
    app.sharePending = false;
    renderControls();
    // Cancelling the picker is a NotAllowedError too: say it plainly, without alarm.
    notice(['NotAllowedError', 'AbortError'].includes(err?.name) ? 'share.cancelled' : 'share.failed');
    return;
  }
  renderControls();
  await app.session.updatePublished();
  app.sharePending = false;
  renderControls();
}

/** 停止共享 (the button, the banner, or the browser's own stop): stop capturing and unpublish. */
async function stopSharing({ byBrowser = false } = {}) {
  if (!app.local?.screenTrack) return;
  app.local.stopScreen();
  renderControls();
  if (byBrowser) notice('share.stopped');
  await app.session?.updatePublished();
  renderControls();
}

function setRosterOpen(open) {
  app.rosterOpen = open;
  $('roster').hidden = !open;
  $('roster-btn').setAttribute('aria-expanded', String(open));
  $('roster-btn').dataset.active = String(open);
  if (open) renderRoom();
}

function renderControls() {
  const local = app.local;
  const controls = [
    ['mic-btn', 'audio', ICONS.mic, ICONS.micOff, 'ctrl.mic_mute', 'ctrl.mic_unmute', 'ctrl.mic_host_muted'],
    ['cam-btn', 'video', ICONS.cam, ICONS.camOff, 'ctrl.cam_off', 'ctrl.cam_on', 'ctrl.cam_host_off'],
  ];
  for (const [id, kind, onIcon, offIcon, muteKey, unmuteKey, hostKey] of controls) {
    const btn = $(id);
    const byHost = hostMuted(kind);
    const muted = local.isMuted(kind) || byHost;
    btn.disabled = !local.track(kind) || byHost; // nothing to toggle without a device, or when the host muted us
    btn.dataset.muted = String(muted);
    btn.setAttribute('aria-pressed', String(muted));
    btn.innerHTML = muted ? offIcon : onIcon; // the label says what a press will do
    btn.append(labelSpan(byHost ? hostKey : muted ? unmuteKey : muteKey));
    // An observer has no camera or microphone to turn on or off.
    btn.hidden = document.body.dataset.observer === 'true';
  }

  const self = app.session?.self;
  const hand = $('hand-btn');
  // Everyone but observers may raise a hand; we know our role once joined.
  hand.hidden = !self || !may(self.role, 'raise_hand');
  hand.disabled = app.handPending || app.session?.state !== 'connected';
  hand.dataset.active = String(!!self?.hand_raised);
  hand.setAttribute('aria-pressed', String(!!self?.hand_raised));
  hand.innerHTML = ICONS.hand;
  hand.append(labelSpan(self?.hand_raised ? 'ctrl.hand_lower' : 'ctrl.hand_raise'));

  // Presenting evidence by screen share: everyone who may publish (not observers), on browsers that
  // can (most phones cannot), from a zone with media.
  const share = $('share-btn');
  const sharing = !!local?.screenTrack;
  share.hidden = !self || !mayPublish(self.role) || !LocalMedia.canShareScreen();
  if (!share.hidden) {
    const connected = app.session?.state === 'connected';
    share.disabled = app.sharePending || (!sharing && (!connected || NO_MEDIA_ZONES.has(zoneOf(self))));
    share.dataset.active = String(sharing);
    share.setAttribute('aria-pressed', String(sharing));
    share.innerHTML = sharing ? ICONS.screenOff : ICONS.screen;
    share.append(labelSpan(sharing ? 'ctrl.share_stop' : 'ctrl.share'));
    setLabel(share, sharing ? 'ctrl.share_stop_label' : 'ctrl.share_label');
  }
  $('share-banner').hidden = !sharing || ['left', 'disconnected'].includes(app.session?.state);

  // The roles that keep the record: the notes panel (笔录).
  const notesBtn = $('notes-btn');
  notesBtn.hidden = !self || !mayKeepNotes(self.role) || !app.notes?.enabled;
  if (!notesBtn.hidden) {
    notesBtn.innerHTML = ICONS.notes;
    notesBtn.append(labelSpan('ctrl.notes'));
    setLabel(notesBtn, 'ctrl.notes_label');
  }

  const roster = $('roster-btn');
  roster.innerHTML = ICONS.people;
  roster.append(labelSpan('ctrl.roster'));
  setLabel(roster, 'ctrl.roster_label');
  // Hosts see how many wait in the lobby, on the button that leads to the admit controls.
  const waiting = self && may(self.role, 'admit')
    ? [...app.session.people.values()].filter((p) => zoneOf(p) === 'lobby').length : 0;
  if (waiting > 0) {
    const badge = document.createElement('span');
    badge.className = 'badge';
    setText(badge, 'roster.waiting', { n: waiting });
    roster.append(badge);
  }

  // Presiding hosts: pause the recording (with a reason) or resume it.
  app.recording?.renderControl({ role: self?.role ?? null, connected: app.session?.state === 'connected' });

  $('leave-btn').innerHTML = ICONS.leave;
  $('leave-btn').append(labelSpan('ctrl.leave'));
  $('sound-btn').innerHTML = ICONS.sound;
  $('sound-btn').append(labelSpan('ctrl.sound'));
  $('self-view').classList.toggle('cam-off', local.isMuted('video') || hostMuted('video'));
  $('self-view').hidden = !local.videoTrack; // receive-only: nothing to show
  const note = $('self-host-muted');
  note.hidden = !hostMuted('audio') && !hostMuted('video');
  if (!note.hidden) setText(note, hostMuted('audio') ? 'self.muted_by_host' : 'self.video_off_by_host');
}

/** Everything that depends on the participants, our zone or the session state. */
function renderRoom() {
  const session = app.session;
  const self = session?.self;
  renderZone(session?.zone ?? null);
  renderStageNote();
  renderControls();
  renderLock();
  if (!self) return;
  const people = [...session.people.values()];
  app.roster.render({
    selfId: session.participantId,
    selfRole: self.role,
    people,
    spotlight: session.session?.spotlight ?? null,
  });
  app.queue.render({ selfId: session.participantId, selfRole: self.role, people });
  renderQueuePlace();
  noticeLobbyArrivals();
  renderObservers();
}

/**
 * Supervisors (role observer) present: a badge in the top bar for everyone, as long as one is
 * there, and a toast when one arrives; the observer itself gets a banner that says what it means.
 */
function renderObservers() {
  const session = app.session;
  const over = !session || ['left', 'disconnected'].includes(session.state);
  const observers = over ? [] : [...session.people.values()].filter((p) => p.role === 'observer');
  const badge = $('observer-badge');
  badge.hidden = observers.length === 0;
  if (!badge.hidden) {
    $('observer-badge-icon').innerHTML = ICONS.eye;
    setText($('observer-badge-text'), observers.length > 1 ? 'observer.badge_n' : 'observer.badge', { n: observers.length });
    setLabel(badge, 'observer.badge_label');
    badge.dataset.count = String(observers.length);
  }
  $('observer-banner').hidden = over || session.self?.role !== 'observer';
  if (over) return;
  const ids = new Set(observers.map((p) => p.id));
  if (app.observersSeen && session.self?.role !== 'observer') {
    const fresh = observers.filter((p) => !app.observersSeen.has(p.id));
    if (fresh.length) notice('notice.observer_joined', { name: fresh.map((p) => p.display_name || p.id).join('、') });
  }
  app.observersSeen = ids;
}

function renderZone(zone) {
  const kind = zone ? zoneKind(zone) : 'main';
  const screen = $('screen-session');
  screen.dataset.zone = zone ?? '';
  screen.dataset.zoneKind = kind;

  // Lobby and witness waiting room: a waiting card instead of the stage (the server sends no media).
  const waiting = kind === 'lobby' || kind === 'witness_waiting';
  $('waiting-card').hidden = !waiting;
  if (waiting) {
    const reception = app.session?.session?.kind === 'reception';
    setText($('waiting-title'), kind === 'lobby' ? (reception ? 'wait.reception_title' : 'wait.lobby_title') : 'wait.witness_title');
    setText($('waiting-body'), kind === 'lobby' ? 'wait.lobby_body' : 'wait.witness_body');
  }
  app.stage.setHidden(waiting);

  // Caucus and consultation: a banner that says who can hear you.
  const private_ = kind === 'caucus' || kind === 'consultation';
  $('zone-banner').hidden = !private_;
  if (private_) {
    $('zone-banner').dataset.kind = kind;
    setText($('zone-banner-title'), `banner.${kind}`);
    const { key, params } = zoneText(zone);
    setText($('zone-banner-zone'), key, params);
  }
}

/** In the lobby: how many wait ahead of us (our queue_position - 1), as the server last said. */
function renderQueuePlace() {
  const self = app.session?.self;
  const box = $('waiting-queue');
  const position = zoneOf(self) === 'lobby' && Number.isInteger(self?.queue_position) ? self.queue_position : null;
  box.hidden = position === null;
  if (position === null) { delete box.dataset.queuePosition; return; }
  box.dataset.queuePosition = String(position);
  const ahead = position - 1;
  setText(box, ahead === 0 ? 'wait.queue_next' : ahead === 1 ? 'wait.queue_ahead_one' : 'wait.queue_ahead', { n: ahead });
}

/**
 * `transferred`: another office's reception takes over. Say so, then open the new link (the
 * server closes this connection with 4016 meanwhile; that is no error). Only a link of this same
 * site is opened by itself; anything else is offered as a button.
 */
function followTransfer({ join_url: joinUrl }) {
  showTransferred();
  let url;
  try { url = new URL(joinUrl, location.href); } catch { return; }
  if (!['http:', 'https:'].includes(url.protocol) || !url.hash.includes('token=')) return;
  // Keep the new token in the fragment; mark the arrival so the next page joins by itself.
  url.hash = `${url.hash.slice(1)}&transferred=1`;
  app.transferTarget = url.href;
  showTransferred();
  if (url.origin !== location.origin) return; // another site: the button opens it, on a click
  setTimeout(() => {
    // A path that only differs in the fragment fires hashchange, which reloads (see main()).
    location.assign(url.href);
  }, TRANSFER_DELAY_MS);
}

/** The "you are being transferred" card, in place of the session (also when only 4016 came). */
function showTransferred() {
  setStep('ended');
  show('screen-ended');
  app.recording?.end();
  app.notes?.end();
  renderObservers();
  $('rating').hidden = true;
  $('sound-btn').hidden = true;
  document.body.dataset.transferred = 'true';
  $('conn-state').hidden = true; // "disconnected" would alarm: the page is on its way on
  setText($('end-title'), 'transfer.title');
  const known = !!app.transferTarget;
  setText($('end-body'), known ? 'transfer.body' : 'transfer.body_manual');
  const btn = $('rejoin-btn');
  btn.hidden = !known;
  setText(btn, 'transfer.open');
  btn.onclick = () => { if (app.transferTarget) location.assign(app.transferTarget); };
}

/**
 * The note on an empty stage. Left alone while the others talk in a caucus or a consultation
 * (背对背), a party must not be told it is waiting for people to join: they are here, elsewhere.
 */
function renderStageNote() {
  const session = app.session;
  const mine = session?.zone ?? null;
  const elsewhere = !!session && [...session.people.values()].some((p) => p.id !== session.participantId
    && zoneOf(p) !== mine && ['caucus', 'consultation'].includes(zoneKind(zoneOf(p))));
  setText($('stage-empty'), elsewhere ? 'stage.others_private' : 'stage.waiting');
}

function renderLock() {
  const self = app.session?.self;
  const locked = !!app.session?.session?.locked;
  const btn = $('lock-btn');
  // Nothing to lock once the session view has ended (left, closed).
  const over = ['left', 'disconnected'].includes(app.session?.state);
  const canLock = !!self && !over && may(self.role, locked ? 'unlock' : 'lock');
  btn.hidden = !canLock;
  if (canLock) {
    btn.dataset.locked = String(locked);
    btn.setAttribute('aria-pressed', String(locked));
    btn.innerHTML = locked ? ICONS.lock : ICONS.unlock;
    btn.append(labelSpan(locked ? 'lock.unlock' : 'lock.lock'));
    setLabel(btn, locked ? 'lock.unlock_label' : 'lock.lock_label');
  }
  const badge = $('lock-badge');
  badge.hidden = canLock || !locked || over;
  if (!badge.hidden) {
    badge.innerHTML = ICONS.lock;
    badge.append(labelSpan('lock.locked'));
    setLabel(badge, 'lock.locked_label');
  }
}

function notice(key, params) {
  showToast($('toast'), (box) => setText(box, key, params));
}

/** Tell the participant what a host just did to them (zone moves, host mute). */
function noticeSelfChange(prev, next) {
  if (!prev) return; // our first `joined`: the screen itself says where we are
  const from = zoneOf(prev);
  const to = zoneOf(next);
  if (from !== to) {
    const kind = zoneKind(to);
    if (from === 'lobby' && to === 'main') notice('notice.admitted');
    else if (from === 'witness_waiting' && to === 'main') notice('notice.called');
    else if (kind === 'witness_waiting') notice('notice.dismissed');
    else if (kind === 'caucus' || kind === 'consultation' || kind === 'lobby') notice(`notice.moved_${kind}`);
    else if (kind === 'main') notice('notice.back_main');
  } else if (!!prev.audio_muted_by_host !== !!next.audio_muted_by_host) {
    notice(next.audio_muted_by_host ? 'notice.muted_by_host' : 'notice.unmuted_by_host');
  } else if (!!prev.video_muted_by_host !== !!next.video_muted_by_host) {
    notice(next.video_muted_by_host ? 'notice.video_off_by_host' : 'notice.video_on_by_host');
  }
}

/** Hosts who may admit get a toast when someone new starts waiting in the lobby. */
function noticeLobbyArrivals() {
  const session = app.session;
  const waiting = [...session.people.values()].filter((p) => zoneOf(p) === 'lobby' && p.id !== session.participantId);
  const ids = new Set(waiting.map((p) => p.id));
  if (app.lobbySeen && may(session.self.role, 'admit')) {
    const fresh = waiting.filter((p) => !app.lobbySeen.has(p.id));
    if (fresh.length) notice('notice.lobby_arrival', { name: fresh.map((p) => p.display_name || p.id).join('、') });
  }
  app.lobbySeen = ids;
}

function labelSpan(key) {
  const span = document.createElement('span');
  setText(span, key);
  return span;
}

function renderState(state) {
  const box = $('conn-state');
  box.hidden = false;
  box.dataset.state = state;
  setText(box, `state.${state}`);
  $('reconnect-banner').hidden = state !== 'reconnecting';
  if (app.session) renderControls(); // the hand button needs a connection
}

function renderSessionInfo() {
  const s = app.session?.session;
  if (!s) return;
  $('session-info').hidden = false;
  $('session-title').textContent = s.title || '';
  const parts = [];
  if (s.kind) parts.push(t(`kind.${s.kind}`));
  if (s.case_id) parts.push(`${t(s.kind === 'reception' ? 'case.label_reception' : 'case.label')} ${s.case_id}`);
  $('session-case').textContent = parts.join(' · ');
}

function renderEnded({ kind, code }) {
  if (code === 4016 || app.session?.transfer) {
    // Handed to another reception: not an error, and the page is on its way there.
    app.wakeLock?.release().catch(() => {});
    app.wakeLock = null;
    $('self-video').srcObject = null;
    showTransferred();
    return;
  }
  setStep('ended');
  show('screen-ended');
  // The live indicator goes; a final integrity value (sent just before 4005) stays on this card.
  app.recording?.end();
  app.notes?.end();
  renderObservers();
  renderLock();
  $('rating').hidden = true;
  $('self-video').srcObject = null;
  $('sound-btn').hidden = true;
  app.wakeLock?.release().catch(() => {});
  app.wakeLock = null;
  if (kind === 'left') {
    setText($('end-title'), 'end.left_title');
    setText($('end-body'), 'end.left_body');
  } else {
    setText($('end-title'), [4014, 4015].includes(code) ? 'end.steps_title' : 'end.closed_title');
    if (t(`close.${code}`) !== `close.${code}`) setText($('end-body'), `close.${code}`);
    else setText($('end-body'), 'close.other', { code });
  }
  // Joining again makes sense after our own leave or a glitch, not when the link or session is dead.
  // A locked session (4012) may be unlocked later, so trying again is offered there too.
  // Refused for a missing identity check or consent (4014/4015; normally the steps ran first):
  // reloading runs the steps again.
  const redo = kind !== 'left' && [4014, 4015].includes(code);
  $('rejoin-btn').hidden = !(redo || kind === 'left' || [1000, 4006, 4007, 4012].includes(code));
  setText($('rejoin-btn'), redo ? 'end.redo_steps' : 'end.rejoin');
  $('rejoin-btn').onclick = () => location.reload();
  offerRating(kind, code);
}

/** After taking part, until the session is over or we left: one rating, unless given already. */
async function offerRating(kind, code) {
  if (!(kind === 'left' || code === 4005) || app.timing.joined === null) return;
  if (!ratesSession(app.session?.self?.role ?? app.status?.participant?.role)) return;
  // Ask again: the rating may have been given from another window meanwhile.
  const res = await fetchStatus(token);
  if (res.ok ? res.body.rated : app.status?.rated) return;
  showRating({ token, onStep: setStep });
}

// Keep a phone's screen on during a hearing; the lock is dropped whenever the page is hidden.
async function requestWakeLock() {
  if (!('wakeLock' in navigator) || document.visibilityState !== 'visible') return;
  try { app.wakeLock = await navigator.wakeLock.request('screen'); } catch { /* not granted: fine */ }
}
document.addEventListener('visibilitychange', () => {
  const live = app.session && !['left', 'disconnected'].includes(app.session.state);
  if (live && document.visibilityState === 'visible') requestWakeLock();
});

main();
