// One participant's connection to a Qiao session: the signalling WebSocket (docs/protocol.md, v1),
// the `publish` and `subscribe` peer connections, keepalive and automatic reconnection.
//
// Reconnection model: any transport failure (socket drop, "reconnect" close code, silent server,
// failed peer connection, failed negotiation) tears down BOTH peer connections and the socket and
// starts over with a fresh `join` using the same token and the same local tracks. The server treats
// a join within its grace period as a resumption of the same participant, so this is simpler and
// more robust than trying to repair one half.
//
// Zones (protocol.md "Zones and host controls"): the session keeps every participant's record,
// ourselves included, in `people`; the stage only gets tiles of those in our own zone (none at all
// in the lobby or the witness waiting room). The server decides what media we receive; the zone
// filter keeps the page from showing a tile for someone it has just been told is elsewhere.

import { parseSections } from './sdp.js';
import { pair } from './i18n.js';
import { NO_MEDIA_ZONES, zoneOf } from './roles.js';

const CLIENT_VERSION = '0.1.0';
const PING_INTERVAL_MS = 5000;
// If the server is silent this long (it answers every ping), the socket is dead even if the
// browser has not noticed yet (a TCP connection through a NAT can hang for minutes).
const SILENCE_LIMIT_MS = 20000;
// The server answers `join` at once; a socket that opened but gets no answer is stuck.
const JOIN_ANSWER_LIMIT_MS = 15000;
const BACKOFF_MS = [500, 1000, 2000, 4000, 5000];
// Cap on the camera bitrate: township and village uplinks are often 300 kbps – 4 Mbps.
const VIDEO_MAX_BITRATE = 600_000;
// A screen share (documents, low frame rate) gets the same cap: it comes on top of the camera.
const SCREEN_MAX_BITRATE = 600_000;
// The camera goes out as simulcast: a quarter-size copy (RID q, half the width and height) for
// subscribers whose link is weak, and the full one (RID f). The server gives each subscriber the
// layer its downlink carries and, within a layer, drops temporal layers (L1T3: a base layer at a
// quarter of the frame rate, two more doubling it). Chromium allows two layers at 640×360; the
// quarter layer costs the uplink a quarter more. Names are the ones the server maps to layers.
const CAMERA_ENCODINGS = [
  { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 150_000, scalabilityMode: 'L1T3' },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: VIDEO_MAX_BITRATE, scalabilityMode: 'L1T3' },
];
// The server answers a publish_offer at once; no answer this long means the connection is broken.
const PUBLISH_ANSWER_LIMIT_MS = 10_000;
// The server is ICE-lite with host candidates in its SDP; no STUN/TURN is configured here.
const PC_CONFIG = { iceServers: [] };
// How long a `control` request waits for its control_ack or error.
const CONTROL_TIMEOUT_MS = 5000;
// `error` codes that answer a `control` request. Errors carry no action or target, so they are
// matched to the oldest request still waiting: the server answers one socket's messages in order.
const CONTROL_ERROR_CODES = new Set(['not_allowed', 'bad_target', 'bad_zone', 'queue_empty', 'group_limit', 'bad_reason']);
// How long a `note` waits for its note_saved or error.
const NOTE_TIMEOUT_MS = 10000;
// `error` codes that only a `note` gets (a note the server refused to store). `not_allowed` answers
// a note too (a role that does not keep the record), when no control request is waiting.
const NOTE_ERROR_CODES = new Set(['bad_request', 'internal']);

/** Close codes after which we must not reconnect (protocol.md "Close codes"). */
export const STOP_CODES = new Set([1000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4012, 4013, 4014, 4015, 4016]);
// Everything else (1006, 1009, 4009, 4010, 4011, and codes v1 does not name such as 1001 or
// 1011) is treated as transient: reconnect.

function signalUrl() {
  // Relative to the page (served at / and /join), so a deployment under a path prefix works too.
  const url = new URL('api/v1/signal', document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

export class Session {
  /**
   * @param {object} opts
   * @param {string} opts.token            the join token from the link
   * @param {import('./media.js').LocalMedia} opts.local
   * @param {import('./ui.js').Stage} opts.stage
   * @param {(state: string) => void} opts.onState    'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'left'
   * @param {(session: object, self: object) => void} opts.onJoined
   * @param {(end: {kind: 'left'|'closed', code?: number}) => void} opts.onEnded
   * @param {(msg: {zh: string, en: string}) => void} opts.onNotice
   * @param {() => void} [opts.onRoom]   participants, our own record or session state changed
   * @param {(prev: object|null, next: object) => void} [opts.onSelf]  our own record changed (zone, host mute, hand)
   * @param {(to: {session_id: string, join_url: string}) => void} [opts.onTransferred]  we are handed to
   *   another session (`transferred`; the server closes with 4016 right after)
   * @param {(status: object) => void} [opts.onRecording]  a `recording_status` arrived (protocol.md
   *   "Recording status"): {state, cause, message_zh, message_en, chain_head}
   */
  constructor({ token, local, stage, onState, onJoined, onEnded, onNotice, onRoom = () => {}, onSelf = () => {},
    onTransferred = () => {}, onRecording = () => {} }) {
    Object.assign(this, { token, local, stage, onState, onJoined, onEnded, onNotice, onRoom, onSelf, onTransferred,
      onRecording });
    this.state = 'connecting';
    this.participantId = null;
    /** `joined.session`, kept up to date by session_updated ({locked, spotlight}) */
    this.session = null;
    /** our own participant record (joined.self, then participant_updated) */
    this.self = null;
    /** participant id → participant record, everyone the server told us about, ourselves included */
    this.people = new Map();
    /** `control` requests waiting for control_ack / error, oldest first */
    this.pendingControls = [];
    /** `note` messages waiting for note_saved / error, oldest first (the server answers them in order) */
    this.pendingNotes = [];
    /** the tracks of the last subscribe_offer, to place media again when tiles appear */
    this.lastOfferTracks = [];
    this.ws = null;
    this.everJoined = false;
    this.attempt = 0;
    this.leaving = false;
    this.finished = false;
    this.closeCode = null;
    /** {session_id, join_url} once the server handed us to another session (`transferred`) */
    this.transfer = null;
    /** the last `recording_status` (kept across reconnections; the server sends it again after `joined`) */
    this.recording = null;
    /** true while the server sends this device audio only (`video_suspended`: its downlink is too weak) */
    this.videoSuspended = false;
    this.lastHeard = 0;
    this.timers = { retry: 0, ping: 0, joinAnswer: 0, leave: 0 };
    /** ids of participants who left (participant_left) since our last `joined` */
    this.departed = new Set();
    this.#resetMediaState();
  }

  start() { this.#connect(); }

  /**
   * Bring the publish connection in line with what we have to publish (LocalMedia.publishable()):
   * a screen share started (LocalMedia.startScreen) is added and declared `screen`, one stopped
   * (LocalMedia.stopScreen) is removed, and the publish connection is renegotiated with a new
   * `publish_offer` carrying the updated `sources` (protocol.md: the client may offer again at any
   * time, one offer at a time). Resolves true once the server answered (or when there was nothing
   * to do), false when there is no connection now: the next `joined` publishes the current set
   * anyway. A failed renegotiation reconnects, like any other failed negotiation.
   */
  updatePublished() {
    if (this.state !== 'connected') return Promise.resolve(false);
    return this.#queuePublish(() => (this.pubPc ? this.#syncPublish() : this.#publish()));
  }

  /** Mute or unmute our own audio/video. The track keeps flowing (silence/black), so no renegotiation. */
  setMuted(kind, muted) {
    this.local.setEnabled(kind, !muted);
    if (this.state === 'connected') this.#send('mute', { kind, muted });
  }

  /**
   * Send a `control` request (protocol.md "Zones and host controls").
   * Resolves with the server's control_ack; rejects with its `error` message ({code, message,
   * message_en}), or with one of the same shape whose code is 'timeout' (no answer within 5 s) or
   * 'not_connected' / 'disconnected' (no signalling connection).
   * @param {string} action
   * @param {{target?: string|null, zone?: string, kind?: 'audio'|'video', reason?: string}} [fields]
   *   (`reason`: pause_recording's statutory reason)
   */
  control(action, { target, zone, kind, reason } = {}) {
    return new Promise((resolve, reject) => {
      const fields = { action };
      // Only the fields given are sent; spotlight's "target: null" (clear) is sent as null.
      if (target !== undefined) fields.target = target;
      if (zone !== undefined) fields.zone = zone;
      if (kind !== undefined) fields.kind = kind;
      if (reason !== undefined) fields.reason = reason;
      if (this.state !== 'connected' || !this.#send('control', fields)) {
        reject(localError('not_connected', 'act.not_connected'));
        return;
      }
      const entry = { action, target: target ?? null, resolve, reject, timer: 0 };
      entry.timer = setTimeout(() => {
        this.pendingControls = this.pendingControls.filter((e) => e !== entry);
        reject(localError('timeout', 'act.timeout'));
      }, CONTROL_TIMEOUT_MS);
      this.pendingControls.push(entry);
    });
  }

  /**
   * Send a note for the record (笔录; protocol.md `note`): the server stamps it with the session's
   * timecode and answers `note_saved`. Resolves with {id, timecode_ms}; rejects like control()
   * (the server's `error`, or code 'timeout' / 'not_connected' / 'disconnected'). After
   * 'disconnected' the note may or may not have been stored. After 'timeout' the note keeps its
   * place in the queue (answers come in order), and a late answer goes to `onLate`.
   * @param {string} text  1–2000 characters
   * @param {(saved: {id: string, timecode_ms: number}|null, error: object|null) => void} [onLate]
   */
  note(text, onLate = () => {}) {
    return new Promise((resolve, reject) => {
      if (this.state !== 'connected' || !this.#send('note', { text })) {
        reject(localError('not_connected', 'act.not_connected'));
        return;
      }
      const entry = { resolve, reject, timer: 0, timedOut: false, onLate };
      entry.timer = setTimeout(() => {
        entry.timedOut = true;
        reject(localError('timeout', 'act.timeout'));
      }, NOTE_TIMEOUT_MS);
      this.pendingNotes.push(entry);
    });
  }

  /** Our current zone, or null before the first `joined`. */
  get zone() { return this.self ? zoneOf(this.self) : null; }

  /** Leave deliberately: the server records the cause `left` and closes with 1000. */
  leave() {
    if (this.finished) return;
    this.leaving = true;
    clearTimeout(this.timers.retry);
    this.#teardownMedia();
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.#send('leave', {});
      // Normally the server's close (1000) ends it; do not wait for ever on a bad network.
      this.timers.leave = setTimeout(() => this.#finish('left'), 2000);
    } else {
      this.#finish('left');
    }
  }

  /**
   * Receive statistics of the subscribe connection, attributed to publishers.
   * @returns {Promise<{videos: Array<{participant_id: string, track_id: string, source: string, framesDecoded: number, bytesReceived: number}>,
   *                    audios: Array<{participant_id: string, track_id: string, packetsReceived: number, bytesReceived: number}>}>}
   */
  async stats() {
    const out = { videos: [], audios: [] };
    const pc = this.subPc;
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      // trackIdentifier is the id of the receiver's track; mid is the fallback.
      const owner = this.ownerByReceiverTrack.get(s.trackIdentifier) ?? this.ownerByMid.get(s.mid);
      if (!owner) return;
      if (s.kind === 'video') {
        out.videos.push({ participant_id: owner.participantId, track_id: owner.trackId, source: owner.source,
          framesDecoded: s.framesDecoded ?? 0, bytesReceived: s.bytesReceived ?? 0 });
      } else if (s.kind === 'audio') {
        out.audios.push({ participant_id: owner.participantId, track_id: owner.trackId,
          packetsReceived: s.packetsReceived ?? 0, bytesReceived: s.bytesReceived ?? 0 });
      }
    });
    return out;
  }

  // ---- connection life -------------------------------------------------------------------

  #connect() {
    if (this.finished) return;
    this.#setState(this.everJoined ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(signalUrl());
    } catch (err) {
      console.warn('qiao: cannot open signalling socket', err);
      this.#scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      this.#send('join', { token: this.token, client: { user_agent: navigator.userAgent, version: CLIENT_VERSION } });
      this.timers.joinAnswer = setTimeout(() => this.#restart('no answer to join'), JOIN_ANSWER_LIMIT_MS);
    };
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onerror = () => {}; // a close event always follows; that is where we decide
    ws.onclose = (ev) => { if (this.ws === ws) this.#onSocketClosed(ev.code, ev.reason); };
  }

  #onSocketClosed(code, reason) {
    this.ws = null;
    this.#teardownMedia();
    this.#stopTimers();
    this.#abortControls();
    if (this.leaving) return this.#finish('left');
    if (STOP_CODES.has(code)) {
      console.info(`qiao: signalling closed ${code} ${reason}; not reconnecting`);
      return this.#finish('closed', code);
    }
    console.info(`qiao: signalling closed ${code} ${reason}; reconnecting`);
    this.#scheduleReconnect();
  }

  /** Drop everything and join again (transport failure that the socket itself did not report). */
  #restart(why) {
    if (this.finished || this.leaving) return;
    console.warn(`qiao: ${why}; reconnecting`);
    this.#abandonSocket();
    this.#teardownMedia();
    this.#stopTimers();
    this.#abortControls();
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.finished) return;
    this.#setState(this.everJoined ? 'reconnecting' : 'connecting');
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.#connect(), delay);
  }

  #finish(kind, code) {
    if (this.finished) return;
    this.finished = true;
    this.closeCode = code ?? null;
    this.#abandonSocket();
    this.#teardownMedia();
    this.#stopTimers();
    this.#abortControls();
    clearTimeout(this.timers.retry);
    clearTimeout(this.timers.leave);
    this.local.stop(); // release camera and microphone (the camera light goes off)
    this.#setState(kind === 'left' ? 'left' : 'disconnected');
    this.onEnded({ kind, code });
  }

  /** Forget the current socket without waiting for its close handshake. */
  #abandonSocket() {
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(4000, 'client closed'); } catch { /* already closing */ }
  }

  #stopTimers() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.joinAnswer);
  }

  /** The connection is gone: no answer will come to the requests still waiting. */
  #abortControls() {
    const pending = this.pendingControls;
    this.pendingControls = [];
    for (const e of pending) {
      clearTimeout(e.timer);
      e.reject(localError('disconnected', 'act.not_connected'));
    }
    const notes = this.pendingNotes;
    this.pendingNotes = [];
    for (const e of notes) {
      clearTimeout(e.timer);
      if (!e.timedOut) e.reject(localError('disconnected', 'act.not_connected'));
    }
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  #send(type, fields) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ v: 1, type, ...fields }));
    return true;
  }

  // ---- messages ----------------------------------------------------------------------------

  #onMessage(data) {
    this.lastHeard = Date.now();
    let msg;
    try { msg = JSON.parse(data); } catch { console.warn('qiao: non-JSON signalling frame'); return; }
    if (!msg || typeof msg !== 'object' || msg.v !== 1) { console.warn('qiao: unexpected frame', msg); return; }

    switch (msg.type) {
      case 'joined': this.#onJoined(msg); break;
      case 'publish_answer': this.#onPublishAnswer(msg); break;
      case 'subscribe_offer':
        // Handle offers strictly one after another (the server also waits for each answer).
        this.subChain = this.subChain.then(() => this.#onSubscribeOffer(msg));
        break;
      case 'participant_joined':
      case 'participant_updated':
        this.#onParticipant(msg.participant);
        break;
      case 'participant_left':
        // Remembered so that a subscribe offer already in flight does not bring the tile back.
        this.departed.add(msg.participant_id);
        this.people.delete(msg.participant_id);
        this.stage.remove(msg.participant_id);
        this.onRoom();
        break;
      case 'session_updated':
        this.session = { ...this.session, locked: !!msg.locked, spotlight: msg.spotlight ?? null };
        this.stage.setSpotlight(this.session.spotlight);
        this.onRoom();
        break;
      case 'control_ack':
        this.#onControlAck(msg);
        break;
      case 'track_published':
        if (msg.track?.track_id) this.trackInfo.set(msg.track.track_id, msg.track);
        break;
      case 'track_unpublished':
        this.trackInfo.delete(msg.track_id);
        this.stage.removeTrack(msg.participant_id, msg.track_id);
        break;
      case 'transferred':
        // Another office's reception takes over; the 4016 close that follows ends this session.
        if (typeof msg.join_url === 'string' && msg.join_url) {
          this.transfer = { session_id: msg.session_id ?? null, join_url: msg.join_url };
          this.onTransferred(this.transfer);
        }
        break;
      case 'recording_status':
        // How the session's recording goes; with `final`, its integrity value (chain_head).
        if (typeof msg.state === 'string') {
          this.recording = {
            state: msg.state,
            cause: msg.cause ?? null,
            message_zh: msg.message_zh ?? null,
            message_en: msg.message_en ?? null,
            chain_head: msg.chain_head ?? null,
          };
          this.onRecording(this.recording);
        }
        break;
      case 'video_suspended':
        // The server measured that this device's downlink cannot carry the video: audio only for
        // now; it tries video again by itself.
        this.videoSuspended = msg.suspended === true;
        this.onNotice(this.videoSuspended
          ? { zh: '网络较差：已暂停接收视频，声音继续', en: 'Weak connection: video paused, audio continues' }
          : { zh: '正在尝试恢复视频…', en: 'Trying video again…' });
        break;
      case 'note_saved':
        // The oldest note waiting: the server stores notes one after another, in order.
        this.#settleNote(this.pendingNotes[0], { id: msg.id, timecode_ms: msg.timecode_ms }, null);
        break;
      case 'pong':
        break; // lastHeard is all we need
      case 'error':
        console.warn(`qiao: server error ${msg.code}: ${msg.message_en || msg.message}`);
        // Shown to the user in any case, e.g. a host control the role may not use (not_allowed).
        this.onNotice({ zh: msg.message || msg.code, en: msg.message_en || msg.message || msg.code });
        if (NOTE_ERROR_CODES.has(msg.code)
          || (msg.code === 'not_allowed' && this.pendingNotes.length > 0 && this.pendingControls.length === 0)) {
          this.#settleNote(this.pendingNotes[0], null, msg);
        } else if (CONTROL_ERROR_CODES.has(msg.code)) {
          this.#settleControl(this.pendingControls[0], null, msg);
        }
        break;
      default:
        break; // unknown types are ignored, so a newer server does not break an older page
    }
  }

  #onJoined(msg) {
    clearTimeout(this.timers.joinAnswer);
    this.attempt = 0;
    this.everJoined = true;
    this.participantId = msg.participant_id;
    this.session = { ...msg.session, locked: !!msg.session?.locked, spotlight: msg.session?.spotlight ?? null };
    const prevSelf = this.self;
    this.self = { ...msg.self, id: msg.participant_id };
    // The list in `joined` is authoritative, also after a reconnection.
    this.departed.clear();
    this.people = new Map([[this.participantId, this.self]]);
    for (const p of msg.participants || []) if (p.id && p.id !== this.participantId) this.people.set(p.id, p);
    this.#syncStage({ fresh: true });
    this.stage.setSpotlight(this.session.spotlight);
    this.trackInfo = new Map((msg.tracks || []).map((t) => [t.track_id, t]));
    this.lastOfferTracks = [];
    this.#setState('connected');
    this.onJoined(this.session, this.self);
    this.onSelf(prevSelf, this.self);
    this.onRoom();

    this.timers.ping = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) return this.#restart('server silent');
      this.#send('ping', { ts: Date.now() });
    }, PING_INTERVAL_MS);

    // Tell the others our mute state (it survives reconnections on our side).
    for (const kind of ['audio', 'video']) this.#send('mute', { kind, muted: this.local.isMuted(kind) });

    this.subPc = this.#createPc('subscribe');
    this.#queuePublish(() => this.#publish());
  }

  // ---- participants and zones --------------------------------------------------------------

  /** participant_joined / participant_updated, for anyone including ourselves. */
  #onParticipant(p) {
    if (!p?.id) return;
    if (p.id === this.participantId) {
      const prev = this.self;
      this.self = { ...prev, ...p };
      this.people.set(p.id, this.self);
      // Our zone decides every tile: entering a caucus hides main, the lobby hides everyone.
      if (zoneOf(prev) !== zoneOf(this.self)) this.#syncStage();
      this.onSelf(prev, this.self);
    } else {
      this.departed.delete(p.id);
      this.people.set(p.id, { ...this.people.get(p.id), ...p });
      this.#syncStage();
    }
    this.onRoom();
  }

  /** Whether a participant's tile belongs on our stage: same zone, and a zone that has media. */
  #sharesZone(p) {
    const mine = zoneOf(this.self);
    return !NO_MEDIA_ZONES.has(mine) && zoneOf(p) === mine;
  }

  /** Whether to give a publisher of a track we receive a tile (unknown publishers get a placeholder). */
  #mayShow(participantId) {
    const p = this.people.get(participantId);
    return p ? this.#sharesZone(p) : !NO_MEDIA_ZONES.has(zoneOf(this.self));
  }

  /**
   * Make the stage's tiles those of the participants in our zone. `fresh` (after `joined`) also
   * drops placeholder tiles of publishers we have no record of.
   */
  #syncStage({ fresh = false } = {}) {
    const visible = [...this.people.values()].filter((p) => p.id !== this.participantId && this.#sharesZone(p));
    const keep = new Set(visible.map((p) => p.id));
    for (const id of this.stage.ids()) {
      if (!keep.has(id) && (fresh || this.people.has(id))) this.stage.remove(id);
    }
    let appeared = false;
    for (const p of visible) {
      if (!this.stage.tiles.has(p.id)) appeared = true;
      this.stage.upsert(p);
    }
    // The media of someone who just came into view may already be in the subscribe connection
    // (the server's offer can come before the participant_updated that moves them here).
    if (appeared && !fresh) this.#placeAgain();
  }

  /** Attach the subscribe connection's tracks to the tiles again, in turn with subscribe offers. */
  #placeAgain() {
    this.subChain = this.subChain.then(() => {
      if (this.subPc?.remoteDescription) this.#placeRemoteTracks(this.lastOfferTracks);
    }).catch((err) => console.warn('qiao: placing tracks failed', err));
  }

  // ---- host controls -----------------------------------------------------------------------

  #onControlAck(msg) {
    const target = msg.target ?? null;
    // The request with the same action and target; failing that, the oldest with the same action
    // (in case the server acknowledges one's own hand without echoing the target).
    const entry = this.pendingControls.find((e) => e.action === msg.action && e.target === target)
      ?? this.pendingControls.find((e) => e.action === msg.action);
    this.#settleControl(entry, msg, null);
  }

  #settleNote(entry, saved, error) {
    if (!entry) return;
    this.pendingNotes = this.pendingNotes.filter((e) => e !== entry);
    clearTimeout(entry.timer);
    if (entry.timedOut) entry.onLate(saved, error);
    else if (saved) entry.resolve(saved);
    else entry.reject(error);
  }

  #settleControl(entry, ack, error) {
    if (!entry) return;
    this.pendingControls = this.pendingControls.filter((e) => e !== entry);
    clearTimeout(entry.timer);
    if (ack) entry.resolve(ack); else entry.reject(error);
  }

  // ---- publish -----------------------------------------------------------------------------

  /**
   * Run one publish negotiation step after the previous one has finished (one offer at a time).
   * Resolves true when it completed, false when it failed (the session then reconnects) or the
   * connection it was for is gone.
   */
  #queuePublish(step) {
    const run = this.pubChain.then(async () => {
      if (this.state !== 'connected' || this.finished) return false;
      const generation = this.mediaGeneration;
      try {
        await step();
        return generation === this.mediaGeneration;
      } catch (err) {
        // A step of connections torn down meanwhile has nothing left to fail.
        if (generation === this.mediaGeneration) this.#negotiationFailed('publish', this.pubPc, err);
        return false;
      }
    });
    this.pubChain = run;
    return run;
  }

  /** The first publish after `joined`: a publish connection with everything we have to publish. */
  async #publish() {
    const items = this.local.publishable();
    if (items.length === 0) return; // receive-only: nothing to publish
    const pc = this.#createPc('publish');
    this.pubPc = pc;
    for (const item of items) this.#addSender(pc, item);
    await this.#offerPublish(pc);
  }

  /** A renegotiation: add what is new (a screen share), remove what has ended, and offer again. */
  async #syncPublish() {
    const pc = this.pubPc;
    const items = this.local.publishable();
    const wanted = new Set(items.map((i) => i.track));
    let changed = false;
    for (const [track, sender] of this.pubSenders) {
      if (wanted.has(track)) continue;
      // The transceiver stays (its m-section becomes inactive); a later share gets a new one.
      pc.removeTrack(sender);
      this.pubSenders.delete(track);
      changed = true;
    }
    for (const item of items) {
      if (this.pubSenders.has(item.track)) continue;
      this.#addSender(pc, item);
      changed = true;
    }
    if (changed) await this.#offerPublish(pc);
  }

  #addSender(pc, { track, source, stream }) {
    const init = { direction: 'sendonly', streams: [stream] };
    let tr;
    if (track.kind === 'video' && source === 'camera') {
      try {
        tr = pc.addTransceiver(track, { ...init, sendEncodings: CAMERA_ENCODINGS });
      } catch (e) {
        // A browser without simulcast or scalabilityMode: one encoding, as before.
        console.warn('simulcast refused, sending one encoding', e);
      }
    }
    if (!tr) {
      const maxBitrate = source === 'screen' ? SCREEN_MAX_BITRATE : VIDEO_MAX_BITRATE;
      tr = pc.addTransceiver(track, {
        ...init,
        ...(track.kind === 'video' ? { sendEncodings: [{ maxBitrate }] } : {}),
      });
    }
    this.pubSenders.set(track, tr.sender);
    this.pubSources.set(track.id, source);
  }

  /**
   * Offer the publish connection's current state and wait for the server's answer. `sources` maps
   * the msid track id of every track we send (the MediaStreamTrack id: each sender was created
   * with its track) to camera / microphone / screen.
   */
  async #offerPublish(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    if (pc !== this.pubPc) return;
    const sources = {};
    for (const track of this.pubSenders.keys()) sources[track.id] = this.pubSources.get(track.id);
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no publish_answer')), PUBLISH_ANSWER_LIMIT_MS);
      this.pubAnswer = { pc, resolve, reject, timer };
    });
    this.#send('publish_offer', { sdp: pc.localDescription.sdp, sources });
    this.#flushCandidates('publish');
    await answered;
  }

  async #onPublishAnswer(msg) {
    const pc = this.pubPc;
    const waiter = this.pubAnswer;
    if (!pc || !waiter || waiter.pc !== pc) return;
    this.pubAnswer = null;
    clearTimeout(waiter.timer);
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      waiter.resolve();
    } catch (err) {
      waiter.reject(err);
    }
  }

  // ---- subscribe ---------------------------------------------------------------------------

  async #onSubscribeOffer(msg) {
    const pc = this.subPc;
    if (!pc) return;
    try {
      for (const t of msg.tracks || []) this.trackInfo.set(t.track_id, t);
      this.lastOfferTracks = msg.tracks || [];
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      if (pc !== this.subPc) return;
      this.#send('subscribe_answer', { sdp: pc.localDescription.sdp });
      this.#flushCandidates('subscribe');
      this.#placeRemoteTracks(msg.tracks || []);
    } catch (err) {
      this.#negotiationFailed('subscribe', pc, err);
    }
  }

  /**
   * Attach every receiving transceiver's track to its publisher's tile.
   *
   * For each m-section of the current remote offer that the server sends on, the publisher is
   * the `participant_id` of the track listed in `subscribe_offer.tracks` under the section's msid
   * track id, or else the msid stream id (which protocol.md defines as the participant_id).
   * Transceivers are found by `mid`, so this works whatever ids the browser gives remote tracks
   * and when the server reuses a transceiver for another publisher.
   */
  #placeRemoteTracks(offerTracks) {
    const pc = this.subPc;
    const offered = new Map(offerTracks.map((t) => [t.track_id, t]));
    const sections = new Map(parseSections(pc.remoteDescription.sdp).map((s) => [s.mid, s]));
    const byParticipant = new Map();
    this.ownerByReceiverTrack.clear();
    this.ownerByMid.clear();

    for (const tr of pc.getTransceivers()) {
      const s = tr.mid !== null ? sections.get(tr.mid) : undefined;
      if (!s || s.port === 0 || (s.direction !== 'sendonly' && s.direction !== 'sendrecv')) continue;
      if (s.kind !== 'audio' && s.kind !== 'video') continue;
      const info = offered.get(s.trackId) ?? this.trackInfo.get(s.trackId);
      const participantId = info?.participant_id ?? (s.streamId !== '-' ? s.streamId : null);
      if (!participantId || participantId === this.participantId || this.departed.has(participantId)) continue;
      const trackId = s.trackId ?? `mid:${s.mid}`;
      const source = info?.source ?? (s.kind === 'audio' ? 'microphone' : 'camera');
      const owner = { participantId, trackId, source };
      // stats() reports whatever we receive, so that media leaking from another zone would show.
      this.ownerByReceiverTrack.set(tr.receiver.track.id, owner);
      this.ownerByMid.set(tr.mid, owner);
      if (!this.#mayShow(participantId)) continue; // not in our zone: no tile
      if (!byParticipant.has(participantId)) byParticipant.set(participantId, []);
      byParticipant.get(participantId).push({ trackId, kind: s.kind, source, track: tr.receiver.track });
    }

    // A track can arrive before its publisher's participant_joined: show a placeholder tile
    // that the participant record fills in when it comes (or that goes with its last track).
    for (const id of byParticipant.keys()) if (!this.stage.tiles.has(id)) this.stage.upsert({ id, placeholder: true });
    for (const id of this.stage.ids()) {
      const entries = byParticipant.get(id) ?? [];
      if (entries.length === 0 && this.stage.tiles.get(id).info.placeholder) this.stage.remove(id);
      else this.stage.setMedia(id, entries);
    }
  }

  // ---- peer connection plumbing ------------------------------------------------------------

  #createPc(name) {
    const pc = new RTCPeerConnection(PC_CONFIG);
    this.pendingCandidates[name] = []; // held until our offer/answer has been sent
    pc.onicecandidate = (ev) => {
      if (pc !== this.#pc(name)) return;
      const c = ev.candidate;
      if (c && !c.candidate) return; // empty candidate = end of one generation; the null event follows
      const wire = c
        ? { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_m_line_index: c.sdpMLineIndex, username_fragment: c.usernameFragment }
        : null; // end of trickling
      const queue = this.pendingCandidates[name];
      if (queue) queue.push(wire);
      else this.#send('candidate', { pc: name, candidate: wire });
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.#pc(name) && pc.connectionState === 'failed') this.#restart(`${name} peer connection failed`);
    };
    return pc;
  }

  #pc(name) { return name === 'publish' ? this.pubPc : this.subPc; }

  #flushCandidates(name) {
    const queue = this.pendingCandidates[name] || [];
    this.pendingCandidates[name] = null;
    for (const wire of queue) this.#send('candidate', { pc: name, candidate: wire });
  }

  #negotiationFailed(name, pc, err) {
    if (!pc || pc !== this.#pc(name)) return; // a torn-down connection; nothing to do
    console.error(`qiao: ${name} negotiation failed`, err);
    this.#restart(`${name} negotiation failed`);
  }

  #teardownMedia() {
    if (this.pubAnswer) {
      clearTimeout(this.pubAnswer.timer);
      this.pubAnswer.reject(new Error('publish connection closed'));
      this.pubAnswer = null;
    }
    for (const pc of [this.pubPc, this.subPc]) {
      if (!pc) continue;
      pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
    }
    this.#resetMediaState();
    this.stage.clearMedia();
  }

  #resetMediaState() {
    /** counts teardowns, so that a negotiation step of old connections knows it is stale */
    this.mediaGeneration = (this.mediaGeneration ?? 0) + 1;
    this.pubPc = null;
    this.subPc = null;
    this.pendingCandidates = { publish: null, subscribe: null };
    this.subChain = Promise.resolve();
    /** publish negotiations, one after another (one offer at a time) */
    this.pubChain = Promise.resolve();
    /** the publish_answer we wait for: {pc, resolve, reject, timer}, or null */
    this.pubAnswer = null;
    /** local track → its RTCRtpSender on the publish connection, for the tracks we send */
    this.pubSenders = new Map();
    /** local track id (the msid track id) → 'camera' | 'microphone' | 'screen' */
    this.pubSources = new Map();
    this.trackInfo = new Map();
    this.lastOfferTracks = [];
    /** receiver track id → {participantId, trackId}, and the same by mid, for stats() */
    this.ownerByReceiverTrack = new Map();
    this.ownerByMid = new Map();
  }
}

/** An error of the same shape as the server's `error` message, for control() failures of our own. */
function localError(code, key) {
  const { zh, en } = pair(key);
  return { v: 1, type: 'error', code, message: zh, message_en: en };
}
