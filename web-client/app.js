// Qiao web client entry point: reads the join link, runs the pre-join device check, then the
// session view. See docs/protocol.md for the signalling protocol.
//
// Join link: /join#token=<JWT>[&autojoin=1]. The token is in the fragment so that it never
// reaches server or proxy logs. autojoin=1 skips the pre-join click (used by automated tests).

import { initI18n, setLang, currentLang, onLangChange, setText, setLiteral, t } from './i18n.js';
import { LocalMedia, LevelMeter } from './media.js';
import { Stage, ICONS, showToast } from './ui.js';
import { Session } from './session.js';

const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get('token');
const autojoin = fragment.get('autojoin') === '1';

const app = {
  state: token ? 'prejoin' : 'landing', // before a Session exists
  local: null,
  meter: null,
  session: null,
  stage: null,
  wakeLock: null,
  // performance.now() timestamps, for the test hook
  timing: { joinStarted: null, joined: null, firstRemoteFrame: null },
};

// ---- test hook (used by tests/browser/three_party.mjs; keep it stable) ----------------------
window.qiao = Object.freeze({
  /** 'landing' | 'prejoin' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'left' */
  get state() { return app.session ? app.session.state : app.state; },
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
});

// ---- screens --------------------------------------------------------------------------------

const SCREENS = ['screen-landing', 'screen-prejoin', 'screen-session', 'screen-ended'];
function show(id) {
  for (const s of SCREENS) $(s).hidden = s !== id;
  document.body.dataset.screen = id;
}

function main() {
  initI18n();
  $('lang-btn').addEventListener('click', () => setLang(currentLang() === 'en' ? 'zh-CN' : 'en'));
  onLangChange(() => {
    app.stage.relabel();
    renderSessionInfo();
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
  prejoin();
}

// ---- pre-join -------------------------------------------------------------------------------

async function prejoin() {
  show('screen-prejoin');
  app.local = new LocalMedia();
  $('join-btn').addEventListener('click', join);
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
  show('screen-session');
  $('self-video').srcObject = app.local.videoTrack ? app.local.stream : null;
  renderControls();

  app.session = new Session({
    token,
    local: app.local,
    stage: app.stage,
    onState: renderState,
    onJoined: () => {
      app.timing.joined ??= performance.now();
      renderSessionInfo();
    },
    onEnded: renderEnded,
    onNotice: (msg) => showToast($('toast'), (box) => setLiteral(box, msg.zh, msg.en)),
  });
  renderState(app.session.state);
  app.session.start();

  $('mic-btn').addEventListener('click', () => toggle('audio'));
  $('cam-btn').addEventListener('click', () => toggle('video'));
  $('leave-btn').addEventListener('click', () => app.session.leave());
  $('sound-btn').addEventListener('click', () => {
    app.stage.unlockAudio().then(() => { $('sound-btn').hidden = true; }, () => {});
  });
  requestWakeLock();
}

function toggle(kind) {
  app.session.setMuted(kind, !app.local.isMuted(kind));
  renderControls();
}

function renderControls() {
  const local = app.local;
  const controls = [
    ['mic-btn', 'audio', ICONS.mic, ICONS.micOff, 'ctrl.mic_mute', 'ctrl.mic_unmute'],
    ['cam-btn', 'video', ICONS.cam, ICONS.camOff, 'ctrl.cam_off', 'ctrl.cam_on'],
  ];
  for (const [id, kind, onIcon, offIcon, muteKey, unmuteKey] of controls) {
    const btn = $(id);
    const muted = local.isMuted(kind);
    btn.disabled = !local.track(kind); // nothing to toggle without a device
    btn.dataset.muted = String(muted);
    btn.innerHTML = muted ? offIcon : onIcon; // the label says what a press will do
    btn.append(labelSpan(muted ? unmuteKey : muteKey));
  }
  $('leave-btn').innerHTML = ICONS.leave;
  $('leave-btn').append(labelSpan('ctrl.leave'));
  $('sound-btn').innerHTML = ICONS.sound;
  $('sound-btn').append(labelSpan('ctrl.sound'));
  $('self-view').classList.toggle('cam-off', local.isMuted('video'));
  $('self-view').hidden = !local.videoTrack; // receive-only: nothing to show
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
  show('screen-ended');
  $('self-video').srcObject = null;
  $('sound-btn').hidden = true;
  app.wakeLock?.release().catch(() => {});
  app.wakeLock = null;
  if (kind === 'left') {
    setText($('end-title'), 'end.left_title');
    setText($('end-body'), 'end.left_body');
  } else {
    setText($('end-title'), 'end.closed_title');
    if (t(`close.${code}`) !== `close.${code}`) setText($('end-body'), `close.${code}`);
    else setText($('end-body'), 'close.other', { code });
  }
  // Joining again makes sense after our own leave or a glitch, not when the link or session is dead.
  $('rejoin-btn').hidden = !(kind === 'left' || code === 1000 || code === 4006 || code === 4007);
  $('rejoin-btn').onclick = () => location.reload();
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
