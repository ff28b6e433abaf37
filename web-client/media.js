// Local camera and microphone: acquisition with graceful degradation, device switching, and a
// microphone level meter for the pre-join check. Also the screen share (共享屏幕): a third local
// track, published as source `screen`, kept apart from the camera's stream so that the camera
// controls (mute, self view) never touch it.

// Modest capture settings: parties often join over 4G or a township uplink of a few hundred kbps,
// and a 640x360 face is enough for identification and demeanour.
const VIDEO = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 20, max: 30 } };
const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

// A screen share shows documents (evidence, 证据材料): text must stay legible, motion matters
// little. Browsers pick the size of what is shared; cap it so a 4K monitor does not swamp a
// township uplink, and keep the frame rate low.
const SCREEN = { width: { max: 1920 }, height: { max: 1080 }, frameRate: { ideal: 10, max: 15 } };

function videoConstraints(deviceId) { return deviceId ? { ...VIDEO, deviceId: { exact: deviceId } } : VIDEO; }
function audioConstraints(deviceId) { return deviceId ? { ...AUDIO, deviceId: { exact: deviceId } } : AUDIO; }

/** i18n keys explaining why a device is missing, from a getUserMedia error. */
function hintFor(err) {
  switch (err?.name) {
    case 'NotAllowedError': case 'SecurityError': return 'media.denied';
    case 'NotReadableError': case 'AbortError': return 'media.in_use';
    case 'NotFoundError': case 'OverconstrainedError': return 'media.not_found';
    default: return null;
  }
}

export class LocalMedia {
  constructor() {
    /** One stream holds whatever we managed to open; it is what we publish. */
    this.stream = new MediaStream();
    /** i18n keys describing what went wrong (empty when both devices work). */
    this.problems = [];
    /** The screen being shared (getDisplayMedia), or null; in its own stream. */
    this.screenTrack = null;
    this.screenStream = null;
  }

  /** Whether this browser can share a screen at all (phones mostly cannot). */
  static canShareScreen() {
    return typeof navigator.mediaDevices?.getDisplayMedia === 'function';
  }

  get audioTrack() { return this.stream.getAudioTracks()[0] ?? null; }
  get videoTrack() { return this.stream.getVideoTracks()[0] ?? null; }
  track(kind) { return kind === 'audio' ? this.audioTrack : this.videoTrack; }

  /** Live tracks, audio first. */
  tracks() {
    return [this.audioTrack, this.videoTrack].filter((t) => t && t.readyState === 'live');
  }

  /**
   * Everything to publish, with the source each is declared as in `publish_offer`
   * (protocol.md): [{track, source: 'microphone'|'camera'|'screen', stream}].
   */
  publishable() {
    const out = this.tracks().map((track) => ({
      track, source: track.kind === 'audio' ? 'microphone' : 'camera', stream: this.stream,
    }));
    if (this.screenTrack?.readyState === 'live') out.push({ track: this.screenTrack, source: 'screen', stream: this.screenStream });
    return out;
  }

  /**
   * Ask the browser for a screen, window or tab to share (the browser's own picker). Resolves with
   * the video track; rejects with the DOMException of getDisplayMedia (NotAllowedError when the
   * person cancels the picker or the policy forbids it). `onEnded` runs when the browser ends the
   * capture by itself (its own "stop sharing" button, the shared window closed); not after stopScreen().
   */
  async startScreen(onEnded) {
    if (this.screenTrack) return this.screenTrack;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: SCREEN, audio: false });
    const track = stream.getVideoTracks()[0];
    for (const other of stream.getTracks()) if (other !== track) other.stop();
    if (!track) throw new DOMException('no video track', 'NotFoundError');
    // Documents: keep them sharp rather than smooth when the uplink is short.
    if ('contentHint' in track) track.contentHint = 'detail';
    track.addEventListener('ended', () => { if (this.screenTrack === track) onEnded?.(); });
    this.screenTrack = track;
    this.screenStream = new MediaStream([track]);
    return track;
  }

  /** Stop the screen share's capture; returns the track that was shared (or null). */
  stopScreen() {
    const track = this.screenTrack;
    this.screenTrack = null;
    this.screenStream = null;
    track?.stop();
    return track;
  }

  /** True when the kind is not being sent: no track, or the track is disabled. */
  isMuted(kind) {
    const track = this.track(kind);
    return !track || track.readyState !== 'live' || !track.enabled;
  }

  /** Enabled=false sends silence / black frames, so the peer connections need no renegotiation. */
  setEnabled(kind, enabled) {
    const track = this.track(kind);
    if (track) track.enabled = enabled;
  }

  /** Open camera and microphone; on failure try each alone, and accept having neither. */
  async start() {
    this.problems = [];
    if (!navigator.mediaDevices?.getUserMedia) {
      this.problems = ['media.none', 'media.insecure'];
      return;
    }
    const gum = (c) => navigator.mediaDevices.getUserMedia(c);
    try {
      this.#add(await gum({ audio: AUDIO, video: VIDEO }));
      return;
    } catch (err) {
      if (err?.name === 'NotAllowedError' || err?.name === 'SecurityError') {
        this.problems = ['media.none', 'media.denied']; // asking again per device would only be refused again
        return;
      }
    }
    // One missing or broken device must not cost the other.
    let audioErr = null;
    let videoErr = null;
    try { this.#add(await gum({ audio: AUDIO })); } catch (err) { audioErr = err; }
    try { this.#add(await gum({ video: VIDEO })); } catch (err) { videoErr = err; }
    if (audioErr && videoErr) this.problems.push('media.none');
    else if (videoErr) this.problems.push('media.no_video');
    else if (audioErr) this.problems.push('media.no_audio');
    const hint = hintFor(videoErr) ?? hintFor(audioErr);
    if (hint && hint !== 'media.not_found') this.problems.push(hint);
  }

  /** Replace the track of one kind with one from another device. Only used before joining. */
  async switchDevice(kind, deviceId) {
    const old = this.track(kind);
    const enabled = old ? old.enabled : true;
    // Stop first: many phones cannot open two cameras at once.
    if (old) { old.stop(); this.stream.removeTrack(old); }
    const constraints = kind === 'audio' ? { audio: audioConstraints(deviceId) } : { video: videoConstraints(deviceId) };
    try {
      const track = (await navigator.mediaDevices.getUserMedia(constraints)).getTracks()[0];
      track.enabled = enabled;
      this.stream.addTrack(track);
      this.problems = this.problems.filter((p) => p !== (kind === 'audio' ? 'media.no_audio' : 'media.no_video'));
      return track;
    } catch (err) {
      console.warn(`qiao: could not open ${kind} device`, err);
      this.problems = [kind === 'audio' ? 'media.no_audio' : 'media.no_video', hintFor(err)].filter(Boolean);
      return null;
    }
  }

  /** Input devices by kind. Labels are empty until permission was granted once. */
  async devices() {
    const out = { audioinput: [], videoinput: [] };
    if (!navigator.mediaDevices?.enumerateDevices) return out;
    try {
      for (const d of await navigator.mediaDevices.enumerateDevices()) {
        if (d.kind in out && d.deviceId) out[d.kind].push(d);
      }
    } catch (err) {
      console.warn('qiao: enumerateDevices failed', err);
    }
    return out;
  }

  stop() {
    for (const track of this.stream.getTracks()) track.stop();
    this.stopScreen();
  }

  #add(stream) {
    for (const track of stream.getTracks()) {
      if (!this.track(track.kind)) this.stream.addTrack(track);
      else track.stop();
    }
  }
}

/** Microphone level from a WebAudio AnalyserNode, drawn as the horizontal scale of a bar. */
export class LevelMeter {
  constructor(track, bar) {
    this.bar = bar;
    this.raf = 0;
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!track || !Ctx) { bar.style.transform = 'scaleX(0)'; return; }
    this.ctx = new Ctx();
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    // Not connected to the destination: we only measure, we never play our own voice back.
    this.ctx.createMediaStreamSource(new MediaStream([track])).connect(this.analyser);
    this.buf = new Float32Array(this.analyser.fftSize);
    this.tick = this.tick.bind(this);
    this.raf = requestAnimationFrame(this.tick);
  }

  /** Browsers start an AudioContext suspended until a user gesture; call this from one. */
  resume() {
    if (this.ctx?.state === 'suspended') this.ctx.resume().catch(() => {});
  }

  tick() {
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const x of this.buf) sum += x * x;
    const db = 20 * Math.log10(Math.sqrt(sum / this.buf.length) + 1e-9);
    // Map -60 dBFS (silence) … -10 dBFS (loud speech) to 0 … 1.
    const level = Math.min(1, Math.max(0, (db + 60) / 50));
    this.bar.style.transform = `scaleX(${level.toFixed(3)})`;
    this.raf = requestAnimationFrame(this.tick);
  }

  stop() {
    cancelAnimationFrame(this.raf);
    this.ctx?.close().catch(() => {});
    this.ctx = null;
    this.bar.style.transform = 'scaleX(0)';
  }
}
