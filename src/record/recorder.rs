//! The recorder of one session: a subscriber of every published track, fed by the media driver
//! over a bounded channel, running on its own thread (muxing and hashing block). It reorders,
//! depacketizes and muxes each track into short segments in the spool, chains every closed
//! segment into the manifest, hands segments and manifest snapshots to durable storage, and tells
//! the session how recording goes.
//!
//! Invariants:
//! - the driver never waits for the recorder: packets are offered with `try_send`; what does not
//!   fit is a gap with cause `recorder`, marked in the manifest and told to the hosts;
//! - every segment in the manifest was closed (trailer written), hashed and chained before it was
//!   listed; the open segment of a track is the only thing a crash can lose;
//! - timestamps are milliseconds since the session's recording started (`started_at`); a track's
//!   RTP clock is mapped onto it through the sender's RTCP sender reports, so one participant's
//!   audio and video stay in sync;
//! - `live.json` in the spool is the working manifest: present while recording, it is what crash
//!   recovery finalises as `interrupted`, with the segments `segments.jsonl` journaled after it was
//!   last written (`live.rs` says when it is rewritten).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;
use tracing::{error, info, warn};

use super::clock::TrackClock;
use super::depacketize::{
    h264_dimensions, vp8_dimensions, Frame, FrameAssembler, Released, Reorder, TsUnwrap, VideoCodec,
};
use super::live::{replay_journal, ManifestSchedule, SegmentJournal, JOURNAL};
use super::manifest::{chain_next, sha256_hex, Manifest, Segment, SessionInfo, SigningKeys, ZERO_CHAIN};
use super::mux::{Codec, SegmentMuxer};
use crate::core::{MediaKind, UpTrackKey};
use crate::store::{rfc3339, Store};

/// Packets the driver may queue ahead of the recorder before it starts counting drops
/// (about 4 s of a busy 6-track session).
pub const DATA_CAPACITY: usize = 8192;
/// How often the recorder thread wakes to take what the driver queued (and to run its timers).
/// Each wake-up is a context switch whatever it finds: at 20 ms the two recorders of the 2 × 2 × 3
/// benchmark woke 70 times a second each. Recording is not live, so 50 ms costs nothing a user
/// sees: the queue holds a few hundred packets then (it holds [`DATA_CAPACITY`]), a gap is
/// skipped at most a tick after `MAX_WAIT_MS`, and a pause or finish takes effect within a tick.
const TICK: Duration = Duration::from_millis(50);
/// A track silent this long while its participant stays is a network gap in the manifest.
const NETWORK_GAP_MS: i64 = 3000;
/// How long before a video segment is due the recorder asks for a keyframe to cut at.
const KEYFRAME_LEAD_MS: i64 = 400;

/// Where the recorder hands closed files (the spool and its durable upload queue).
pub trait SegmentSink: Send + Sync + 'static {
    /// Takes `file` (in the spool) for upload under `key`; it is removed from the spool once stored.
    fn enqueue(&self, key: &str, file: &Path) -> Result<(), String>;
    /// Whether the spool can take `bytes` more.
    fn has_room(&self, bytes: u64) -> bool;
    /// `Some(since)` while storage is failing.
    fn failing_since(&self) -> Option<SystemTime>;
    /// The spool is nearly full (≥ 80 %): recording will soon be lost unless storage drains it.
    fn spool_alarm(&self) -> bool;
}

/// What the recorder tells the session (the driver relays it to the participants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecorderEvent {
    /// A video track needs a keyframe (to cut a segment, or after loss).
    KeyframeNeeded(UpTrackKey),
    Status(RecordingStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordingStatus {
    /// `recording`, `paused`, `degraded` (recording continues, something is wrong), `failed`
    /// (media is being lost: a gap is open) or `final`.
    pub state: &'static str,
    /// `recorder`, `storage` or `network` when degraded or failed; the pause reason when paused.
    pub cause: Option<String>,
    pub message_zh: String,
    pub message_en: String,
    /// The recording's integrity value (chain head), with `final`.
    pub chain_head: Option<String>,
}

/// Where a recorder reports to (the driver's command channel, wrapped).
pub type EventSink = Box<dyn Fn(RecorderEvent) + Send>;

impl RecordingStatus {
    /// The recorder could not start: the session goes on, and nobody may believe it is recorded.
    pub fn not_started() -> RecordingStatus {
        RecordingStatus {
            state: "failed",
            cause: Some("recorder".into()),
            message_zh: "录像未能启动，本次会话未被录制".into(),
            message_en: "The recorder could not start: this session is not being recorded".into(),
            chain_head: None,
        }
    }
}

/// What the driver knows of a published track when it starts.
#[derive(Debug, Clone)]
pub struct TrackStart {
    pub up: UpTrackKey,
    pub track_id: String,
    pub participant_id: String,
    pub kind: MediaKind,
    pub source: &'static str,
    pub mime: String,
    pub clock_rate: u32,
    pub zone: String,
}

/// Data-path input from the driver.
#[derive(Debug)]
pub enum RecInput {
    Track(Box<TrackStart>),
    TrackEnd(UpTrackKey),
    Rtp {
        up: UpTrackKey,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
        at: Instant,
    },
    SenderReport {
        up: UpTrackKey,
        ntp: u64,
        rtp: u32,
        at: Instant,
    },
    /// The channel was full from `from` to `to`: packets were dropped.
    Overflow {
        from: Instant,
        to: Instant,
    },
    /// A participant moved to another zone: its next segments carry that zone.
    Zone {
        participant_id: String,
        zone: String,
    },
}

/// Control input (unbounded, checked before data).
#[derive(Debug)]
pub enum RecControl {
    Pause {
        by: String,
        reason: String,
    },
    Resume,
    /// End the recording: everyone still present leaves it with `cause`.
    Finish {
        reply: tokio::sync::oneshot::Sender<Finished>,
        cause: FinishCause,
    },
}

/// Why a recording ends, as the manifest says for everyone still present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishCause {
    /// The session was closed.
    SessionClosed,
    /// The server is stopping (a service restart); the session goes on when it is back.
    ServerStopped,
}

impl FinishCause {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishCause::SessionClosed => "session_closed",
            FinishCause::ServerStopped => "server_stopped",
        }
    }
}

/// The result of finishing a recording.
#[derive(Debug, Clone)]
pub struct Finished {
    pub recording_id: String,
    pub prefix: String,
    pub chain_head: String,
    pub segments: usize,
    pub manifest: Manifest,
}

/// Everything the recorders of a server share.
pub struct RecorderContext {
    pub store: Store,
    pub sink: Arc<dyn SegmentSink>,
    pub keys: Arc<SigningKeys>,
    pub spool_dir: PathBuf,
    pub segment: Duration,
    /// Bytes per second that rewriting a recording's working manifest may cost, amortised
    /// (`live.rs`: a long session's manifest is rewritten less often as it grows).
    pub manifest_budget: u64,
    pub rt: tokio::runtime::Handle,
    /// Called after a recording is final (the composite job); runs on the runtime.
    pub on_final: Option<Arc<dyn Fn(Finished) + Send + Sync>>,
}

/// The session facts a recording starts from.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub session_id: String,
    pub case_ref: String,
    pub kind: String,
    pub title: Option<String>,
}

/// The driver's end of one recorder.
pub struct RecorderTap {
    data: SyncSender<RecInput>,
    control: std::sync::mpsc::Sender<RecControl>,
    /// When the data channel first refused a packet in the current overflow.
    overflow_since: Option<Instant>,
    /// Track starts, track ends and zone moves a full channel refused, in order: they are
    /// offered again before anything else. Dropped, one would leave a track unrecorded, never
    /// ended (its last segment open until the session ends, and a crash would count it as cut),
    /// or in the wrong zone. Empty (unallocated) but in an overflow.
    held: VecDeque<RecInput>,
    pub dropped: u64,
    pub recording_id: String,
}

impl RecorderTap {
    /// Offers input without waiting; on a full channel counts a dropped packet (a track's start,
    /// end or zone move is held instead) and reports the overflow once the channel accepts again.
    pub fn offer(&mut self, input: RecInput, now: Instant) {
        if (self.overflow_since.is_some() || !self.held.is_empty()) && !self.catch_up(now) {
            self.refused(input, now);
            return;
        }
        match self.data.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(input)) => self.refused(input, now),
            Err(TrySendError::Disconnected(_)) => self.dropped += 1,
        }
    }

    fn refused(&mut self, input: RecInput, now: Instant) {
        self.overflow_since.get_or_insert(now);
        match input {
            RecInput::Track(_) | RecInput::TrackEnd(_) | RecInput::Zone { .. } => self.held.push_back(input),
            _ => self.dropped += 1,
        }
    }

    /// Sends the overflow's notice, then what was held; false while the channel is still full.
    fn catch_up(&mut self, now: Instant) -> bool {
        if let Some(from) = self.overflow_since {
            if self.data.try_send(RecInput::Overflow { from, to: now }).is_err() {
                return false;
            }
            self.overflow_since = None;
        }
        while let Some(input) = self.held.pop_front() {
            match self.data.try_send(input) {
                Ok(()) => {}
                Err(TrySendError::Full(input)) => {
                    self.held.push_front(input);
                    self.overflow_since = Some(now);
                    return false;
                }
                Err(TrySendError::Disconnected(_)) => self.held.clear(),
            }
        }
        true
    }

    pub fn control(&self, c: RecControl) {
        let _ = self.control.send(c);
    }
}

/// Starts the recorder of a session on its own thread. `events` reaches the driver.
pub fn start(
    ctx: Arc<RecorderContext>,
    facts: SessionFacts,
    events: Box<dyn Fn(RecorderEvent) + Send>,
) -> std::io::Result<RecorderTap> {
    let (data_tx, data_rx) = std::sync::mpsc::sync_channel(DATA_CAPACITY);
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let recording_id = crate::store::new_id("rec");
    let id = recording_id.clone();
    // Everything that blocks (the store, the spool) happens on the recorder's own thread.
    std::thread::Builder::new().name(format!("rec-{recording_id}")).spawn(move || {
        match Recorder::new(ctx, facts, id, events) {
            Ok(mut rec) => rec.run(data_rx, control_rx),
            Err((events, e)) => {
                error!(error = %e, "the recorder could not start");
                events(RecorderEvent::Status(RecordingStatus::not_started()));
            }
        }
    })?;
    Ok(RecorderTap {
        data: data_tx,
        control: control_tx,
        overflow_since: None,
        held: VecDeque::new(),
        dropped: 0,
        recording_id,
    })
}

/// The storage key prefix of a recording (see `storage::recording_prefix`).
pub fn key_prefix(case_number: &str, session_id: &str, recording_id: &str) -> String {
    crate::storage::recording_prefix(case_number, session_id, recording_id)
}

struct OpenSegment {
    muxer: SegmentMuxer,
    rel_path: String,
    file: PathBuf,
    codec: Codec,
    /// A keyframe was asked for to end this segment.
    keyframe_asked: bool,
}

struct Track {
    start: TrackStart,
    codec: TrackCodec,
    ssrc: Option<u32>,
    reorder: Reorder,
    assembler: Option<FrameAssembler>,
    ts: TsUnwrap,
    /// Maps this track's RTP clock onto the timeline (`clock.rs`).
    clock: TrackClock,
    last_pts: Option<i64>,
    last_frame_ms: i64,
    frame_ms: i64,
    need_keyframe: bool,
    last_keyframe_ask: Option<Instant>,
    segment: Option<OpenSegment>,
    segments: u32,
    /// Position in `manifest.tracks`.
    index: usize,
    ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackCodec {
    Vp8,
    H264,
    Opus,
}

struct Recorder {
    ctx: Arc<RecorderContext>,
    facts: SessionFacts,
    recording_id: String,
    prefix: String,
    dir: PathBuf,
    events: Box<dyn Fn(RecorderEvent) + Send>,
    started: Instant,
    started_wall: SystemTime,
    manifest: Manifest,
    tracks: HashMap<UpTrackKey, Track>,
    /// Per participant: offset from the sender's NTP clock to our timeline, from its first SR.
    ntp_offset: HashMap<String, f64>,
    paused: bool,
    released: Vec<Released>,
    /// When `live.json` and the stored snapshot are next rewritten (`live.rs`).
    schedule: ManifestSchedule,
    /// Closed segments not yet in `live.json`, for crash recovery.
    journal: Option<SegmentJournal>,
    manifest_seq: u64,
    /// Open gap per cause (recorder, storage), as an index into `manifest.gaps`.
    open_gap: HashMap<&'static str, usize>,
    state: &'static str,
}

impl Recorder {
    fn new(
        ctx: Arc<RecorderContext>,
        facts: SessionFacts,
        recording_id: String,
        events: EventSink,
    ) -> Result<Recorder, (EventSink, std::io::Error)> {
        let started_wall = SystemTime::now();
        let session = ctx.rt.block_on(ctx.store.session(&facts.session_id)).ok();
        // The external case number names the storage keys; Qiao's case id goes in the manifest.
        let case_number = session.as_ref().map_or_else(|| facts.case_ref.clone(), |s| s.case_id.clone());
        let case_ref = session.as_ref().map_or_else(|| facts.case_ref.clone(), |s| s.case.clone());
        let prefix = key_prefix(&case_number, &facts.session_id, &recording_id);
        let dir = ctx.spool_dir.join(&recording_id);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Err((events, e));
        }
        let title = session.as_ref().and_then(|s| s.title.clone()).or(facts.title.clone());
        let info = SessionInfo { id: facts.session_id.clone(), kind: facts.kind.clone(), title, sites: Vec::new() };
        let manifest = Manifest::started(case_number, case_ref, info, rfc3339(started_wall));
        if let Err(e) = std::fs::write(dir.join("prefix"), &prefix) {
            return Err((events, e));
        }
        let started_at = rfc3339(started_wall);
        if let Err(e) =
            ctx.rt.block_on(ctx.store.insert_recording(&recording_id, &facts.session_id, &prefix, &started_at))
        {
            return Err((events, std::io::Error::other(e.to_string())));
        }
        let schedule = ManifestSchedule::new(ctx.manifest_budget);
        let journal = Some(SegmentJournal::new(&dir));
        Ok(Recorder {
            ctx,
            facts,
            recording_id,
            prefix,
            dir,
            events,
            started: Instant::now(),
            started_wall,
            manifest,
            tracks: HashMap::new(),
            ntp_offset: HashMap::new(),
            paused: false,
            released: Vec::with_capacity(64),
            schedule,
            journal,
            manifest_seq: 0,
            open_gap: HashMap::new(),
            state: "recording",
        })
    }

    fn run(&mut self, data: Receiver<RecInput>, control: Receiver<RecControl>) {
        info!(recording = %self.recording_id, session = %self.facts.session_id, prefix = %self.prefix, "recording started");
        self.status("recording", None);
        self.write_manifest(Instant::now());
        let mut next_tick = Instant::now();
        loop {
            while let Ok(c) = control.try_recv() {
                match c {
                    RecControl::Pause { by, reason } => self.pause(by, reason),
                    RecControl::Resume => self.resume(),
                    RecControl::Finish { reply, cause } => {
                        // Take what is already queued, then finish.
                        while let Ok(input) = data.try_recv() {
                            self.on_input(input);
                        }
                        let f = self.finish(cause);
                        let _ = reply.send(f);
                        return;
                    }
                }
            }
            // Sleep to the next tick, then take everything queued. The driver's sends never have
            // to wake this thread: a recorder blocked in `recv` cost the driver a futex wake and
            // a context switch per packet (perf: the largest kernel cost of the packet path).
            let now = Instant::now();
            if next_tick > now {
                std::thread::sleep(next_tick - now);
            }
            next_tick = Instant::now() + TICK;
            loop {
                match data.try_recv() {
                    Ok(input) => self.on_input(input),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // A finish drops the data sender right after sending its control message.
                        if let Ok(RecControl::Finish { reply, cause }) =
                            control.recv_timeout(Duration::from_millis(100))
                        {
                            let _ = reply.send(self.finish(cause));
                            return;
                        }
                        // The driver dropped the recorder without a finish (the process is
                        // stopping): leave live.json for recovery to finalise as interrupted.
                        self.close_all_segments();
                        self.write_manifest(Instant::now());
                        warn!(recording = %self.recording_id, "recorder input ended without finish; left for recovery");
                        return;
                    }
                }
            }
            self.tick(Instant::now());
        }
    }

    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.started).as_millis() as i64
    }

    fn wall(&self, ms: i64) -> String {
        rfc3339(self.started_wall + Duration::from_millis(ms.max(0) as u64))
    }

    fn on_input(&mut self, input: RecInput) {
        match input {
            RecInput::Track(t) => self.on_track(*t),
            RecInput::TrackEnd(up) => {
                if let Some(t) = self.tracks.get_mut(&up) {
                    t.ended = true;
                    // Crash recovery tells a track that ended from one the crash cut by this.
                    if let Some(entry) = self.manifest.tracks.get_mut(t.index) {
                        entry["ended"] = true.into();
                        self.schedule.header_changed();
                    }
                }
                self.flush_track(up);
                self.close_segment(up);
            }
            RecInput::Rtp { up, ssrc, seq, ts, marker, payload, at } => {
                self.on_rtp(up, ssrc, seq, ts, marker, payload, at)
            }
            RecInput::SenderReport { up, ntp, rtp, at } => self.on_sender_report(up, ntp, rtp, at),
            RecInput::Zone { participant_id, zone } => {
                let ups: Vec<UpTrackKey> = self
                    .tracks
                    .iter()
                    .filter(|(_, t)| t.start.participant_id == participant_id && t.start.zone != zone)
                    .map(|(k, _)| *k)
                    .collect();
                for up in ups {
                    // A segment holds one zone: cut here; video restarts at a keyframe.
                    self.flush_track(up);
                    self.close_segment(up);
                    if let Some(t) = self.tracks.get_mut(&up) {
                        t.start.zone = zone.clone();
                        t.need_keyframe = t.codec != TrackCodec::Opus;
                    }
                    self.ask_keyframe(up);
                }
            }
            RecInput::Overflow { from, to } => {
                let (from, to) = (self.ms(from), self.ms(to));
                warn!(recording = %self.recording_id, from_ms = from, to_ms = to, "recorder fell behind; packets dropped");
                self.manifest.gaps.push(json!({
                    "track_id": null, "from": self.wall(from), "to": self.wall(to), "cause": "recorder"
                }));
                self.schedule.header_changed();
                self.status("degraded", Some("recorder"));
            }
        }
    }

    fn on_track(&mut self, s: TrackStart) {
        let codec = match s.mime.to_ascii_lowercase().as_str() {
            "video/vp8" => TrackCodec::Vp8,
            "video/h264" => TrackCodec::H264,
            "audio/opus" => TrackCodec::Opus,
            other => {
                warn!(mime = other, track = %s.track_id, "codec not recordable; the track is marked as a gap");
                self.manifest.gaps.push(json!({
                    "track_id": s.track_id, "from": self.wall(self.ms(Instant::now())), "to": null, "cause": "recorder"
                }));
                self.schedule.header_changed();
                return;
            }
        };
        let index = self.manifest.tracks.len();
        self.manifest.tracks.push(json!({
            "id": s.track_id, "participant_id": s.participant_id,
            "kind": if s.kind == MediaKind::Audio { "audio" } else { "video" },
            "source": s.source, "codec": s.mime, "clock_rate": s.clock_rate, "zone": s.zone,
            "published_ms": self.ms(Instant::now()),
        }));
        self.schedule.header_changed();
        let assembler = match codec {
            TrackCodec::Vp8 => Some(FrameAssembler::new(VideoCodec::Vp8)),
            TrackCodec::H264 => Some(FrameAssembler::new(VideoCodec::H264)),
            TrackCodec::Opus => None,
        };
        let up = s.up;
        let clock = TrackClock::new(s.clock_rate);
        self.tracks.insert(
            up,
            Track {
                start: s,
                codec,
                ssrc: None,
                reorder: Reorder::default(),
                assembler,
                ts: TsUnwrap::default(),
                clock,
                last_pts: None,
                last_frame_ms: 0,
                frame_ms: if codec == TrackCodec::Opus { 20 } else { 33 },
                need_keyframe: codec != TrackCodec::Opus,
                last_keyframe_ask: None,
                segment: None,
                segments: 0,
                index,
                ended: false,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_rtp(&mut self, up: UpTrackKey, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Bytes, at: Instant) {
        let at_ms = self.ms(at);
        let Some(t) = self.tracks.get_mut(&up) else { return };
        if t.ssrc != Some(ssrc) {
            if t.ssrc.is_some() {
                // A new SSRC restarts numbering and clock: flush the old stream and re-anchor.
                let mut out = std::mem::take(&mut self.released);
                t.reorder.flush(&mut out);
                self.released = out;
                self.deliver(up);
                let t = self.tracks.get_mut(&up).expect("present");
                t.reorder.reset();
                t.ts = TsUnwrap::default();
                t.clock.reset();
                t.need_keyframe = t.codec != TrackCodec::Opus;
            }
            self.tracks.get_mut(&up).expect("present").ssrc = Some(ssrc);
        }
        let t = self.tracks.get_mut(&up).expect("present");
        let mut out = std::mem::take(&mut self.released);
        t.reorder.push(seq, ts, marker, payload, at_ms, &mut out);
        self.released = out;
        self.deliver(up);
    }

    /// Turns what the reorder buffer released into frames and writes them.
    fn deliver(&mut self, up: UpTrackKey) {
        let released = std::mem::take(&mut self.released);
        for r in &released {
            let Some(t) = self.tracks.get_mut(&up) else { break };
            let frame = match (r, t.assembler.as_mut()) {
                (Released::Lost(_), Some(a)) => {
                    a.on_lost();
                    None
                }
                (Released::Lost(_), None) => None,
                (Released::Packet(h), Some(a)) => a.push(h),
                (Released::Packet(h), None) => {
                    Some(Frame { ts: h.ts, keyframe: true, data: h.payload.to_vec(), at_ms: h.at_ms })
                }
            };
            if let Some(f) = frame {
                self.on_frame(up, f);
            }
        }
        let mut released = released;
        released.clear();
        self.released = released;
    }

    fn on_sender_report(&mut self, up: UpTrackKey, ntp: u64, rtp: u32, at: Instant) {
        let at_ms = self.ms(at) as f64;
        let Some(t) = self.tracks.get_mut(&up) else { return };
        // NTP 32.32 fixed point → ms.
        let ntp_ms = (ntp >> 32) as f64 * 1000.0 + ((ntp & 0xffff_ffff) as f64) * 1000.0 / 4_294_967_296.0;
        let offset = *self.ntp_offset.entry(t.start.participant_id.clone()).or_insert(at_ms - ntp_ms);
        let rtp_ext = t.ts.unwrap(rtp);
        t.clock.on_sender_report(rtp_ext, ntp_ms + offset);
    }

    fn on_frame(&mut self, up: UpTrackKey, f: Frame) {
        let segment_ms = self.ctx.segment.as_millis() as i64;
        let paused = self.paused;
        let Some(t) = self.tracks.get_mut(&up) else { return };
        let ts = t.ts.unwrap(f.ts);
        // `last_pts` keeps the output strictly monotonic whatever the map does.
        let mut pts = t.clock.frame_ms(ts, f.at_ms as f64).round() as i64;
        if let Some(last) = t.last_pts {
            if pts - last > NETWORK_GAP_MS && !paused {
                let (from, to, id) = (last, pts, t.start.track_id.clone());
                self.manifest.gaps.push(json!({
                    "track_id": id, "from": self.wall(from), "to": self.wall(to), "cause": "network"
                }));
                self.schedule.header_changed();
            }
            let t = self.tracks.get_mut(&up).expect("present");
            if pts - last > 0 && pts - last < 200 {
                t.frame_ms = pts - last;
            }
            pts = pts.max(last + 1);
        }
        let t = self.tracks.get_mut(&up).expect("present");
        t.last_pts = Some(pts);
        t.last_frame_ms = pts;
        if paused {
            return;
        }
        let video = t.codec != TrackCodec::Opus;
        if video && t.need_keyframe && !f.keyframe {
            self.ask_keyframe(up);
            return;
        }
        let t = self.tracks.get_mut(&up).expect("present");
        if f.keyframe {
            t.need_keyframe = false;
        }
        // Cut: a resolution change, or a due segment (audio: on time; video: at a keyframe).
        let codec_now = frame_codec(t, &f);
        if let Some(seg) = &t.segment {
            let age = pts - seg.muxer.first_ms().unwrap_or(pts);
            let changed = video && f.keyframe && codec_now.as_ref().is_some_and(|c| *c != seg.codec);
            let due = if video { f.keyframe && age >= segment_ms - KEYFRAME_LEAD_MS } else { age >= segment_ms };
            if changed || due {
                self.close_segment(up);
            } else if video && !seg.keyframe_asked && age >= segment_ms - KEYFRAME_LEAD_MS {
                self.tracks.get_mut(&up).expect("present").segment.as_mut().expect("open").keyframe_asked = true;
                self.ask_keyframe(up);
            } else if video && age >= 3 * segment_ms {
                self.ask_keyframe(up);
            }
        }
        let t = self.tracks.get_mut(&up).expect("present");
        if t.segment.is_none() {
            let Some(codec) = codec_now else {
                self.ask_keyframe(up);
                return;
            };
            if !self.open_segment(up, codec) {
                return;
            }
        }
        let t = self.tracks.get_mut(&up).expect("present");
        let dur = t.frame_ms;
        let seg = t.segment.as_mut().expect("opened");
        if let Err(e) = seg.muxer.write(pts, dur, f.keyframe, &f.data) {
            error!(error = %e, "writing a frame failed; the segment is closed and a gap marked");
            self.recorder_failure(up, pts);
        }
    }

    fn ask_keyframe(&mut self, up: UpTrackKey) {
        let now = Instant::now();
        let Some(t) = self.tracks.get_mut(&up) else { return };
        if t.last_keyframe_ask.is_some_and(|l| now < l + Duration::from_millis(500)) {
            return;
        }
        t.last_keyframe_ask = Some(now);
        (self.events)(RecorderEvent::KeyframeNeeded(up));
    }

    fn open_segment(&mut self, up: UpTrackKey, codec: Codec) -> bool {
        let Some(t) = self.tracks.get_mut(&up) else { return false };
        // Short keys: the track's position in the manifest names its directory (the segment entry
        // carries the track id); long object keys break some S3 servers' file-name limits.
        let rel_path = format!("tracks/{}/{:06}.{}", t.index, t.segments, codec.extension());
        let file = self.dir.join(&rel_path);
        if let Some(parent) = file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match SegmentMuxer::create(&file, &codec) {
            Ok(muxer) => {
                t.segments += 1;
                t.segment = Some(OpenSegment { muxer, rel_path, file, codec, keyframe_asked: false });
                self.close_gap("recorder");
                true
            }
            Err(e) => {
                error!(error = %e, "opening a segment failed");
                let pts = t.last_pts.unwrap_or(0);
                self.recorder_failure(up, pts);
                false
            }
        }
    }

    /// A muxing failure: drop the open segment, open a recorder gap, tell the hosts.
    fn recorder_failure(&mut self, up: UpTrackKey, at_ms: i64) {
        if let Some(t) = self.tracks.get_mut(&up) {
            if let Some(seg) = t.segment.take() {
                drop(seg.muxer);
                let _ = std::fs::remove_file(&seg.file);
            }
            t.need_keyframe = t.codec != TrackCodec::Opus;
        }
        self.open_gap("recorder", at_ms);
    }

    fn open_gap(&mut self, cause: &'static str, at_ms: i64) {
        if self.open_gap.contains_key(cause) {
            return;
        }
        self.manifest.gaps.push(json!({ "track_id": null, "from": self.wall(at_ms), "to": null, "cause": cause }));
        self.open_gap.insert(cause, self.manifest.gaps.len() - 1);
        self.schedule.header_changed();
        self.status("failed", Some(cause));
    }

    fn close_gap(&mut self, cause: &'static str) {
        if let Some(i) = self.open_gap.remove(cause) {
            let now = self.wall(self.ms(Instant::now()));
            self.manifest.gaps[i]["to"] = now.into();
            self.schedule.header_changed();
            if self.open_gap.is_empty() {
                self.status(if self.paused { "paused" } else { "recording" }, None);
            }
        }
    }

    fn flush_track(&mut self, up: UpTrackKey) {
        let Some(t) = self.tracks.get_mut(&up) else { return };
        let mut out = std::mem::take(&mut self.released);
        t.reorder.flush(&mut out);
        self.released = out;
        self.deliver(up);
    }

    /// Closes the open segment of a track: trailer, hash, chain, upload.
    fn close_segment(&mut self, up: UpTrackKey) {
        let Some(t) = self.tracks.get_mut(&up) else { return };
        let Some(seg) = t.segment.take() else { return };
        let track_id = t.start.track_id.clone();
        let zone = t.start.zone.clone();
        let span = match seg.muxer.finish() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "closing a segment failed");
                let _ = std::fs::remove_file(&seg.file);
                let at = t.last_pts.unwrap_or(0);
                self.open_gap("recorder", at);
                return;
            }
        };
        let bytes = match std::fs::read(&seg.file) {
            Ok(b) => b,
            Err(e) => {
                error!(error = %e, "reading a closed segment failed");
                self.open_gap("recorder", span.start_ms);
                return;
            }
        };
        if !self.ctx.sink.has_room(bytes.len() as u64) {
            error!(path = %seg.rel_path, "the spool is full: segment discarded, storage gap marked");
            let _ = std::fs::remove_file(&seg.file);
            self.manifest.gaps.push(json!({
                "track_id": track_id, "from": self.wall(span.start_ms),
                "to": self.wall(span.start_ms + span.duration_ms), "cause": "storage"
            }));
            self.schedule.header_changed();
            self.status("failed", Some("storage"));
            return;
        }
        let sha = sha256_hex(&bytes);
        let index = self.manifest.segments.len() as u64;
        let prev = self.manifest.segments.last().map_or(ZERO_CHAIN.to_string(), |s| s.chain.clone());
        let chain = chain_next(&prev, index, &seg.rel_path, &sha);
        self.manifest.segments.push(Segment {
            index,
            track_id,
            path: seg.rel_path.clone(),
            start_ms: span.start_ms.max(0) as u64,
            duration_ms: span.duration_ms.max(0) as u64,
            size: bytes.len() as u64,
            sha256: sha,
            chain: chain.clone(),
            zone: Some(zone),
        });
        self.manifest.chain_head = chain;
        // Queued for storage before it is journaled: whatever recovery lists is queued too.
        if let Err(e) = self.ctx.sink.enqueue(&format!("{}/{}", self.prefix, seg.rel_path), &seg.file) {
            error!(error = %e, "queueing a segment for storage failed");
            self.status("degraded", Some("storage"));
        }
        self.journal_segment();
    }

    fn close_all_segments(&mut self) {
        let ups: Vec<UpTrackKey> = self.tracks.keys().copied().collect();
        for up in ups {
            self.flush_track(up);
            self.close_segment(up);
        }
    }

    fn pause(&mut self, by: String, reason: String) {
        if self.paused {
            return;
        }
        self.close_all_segments();
        self.paused = true;
        let now = self.wall(self.ms(Instant::now()));
        self.manifest.pauses.push(json!({ "from": now, "to": null, "reason": reason, "by": by }));
        self.schedule.header_changed();
        self.state = "paused";
        self.status("paused", Some(reason.as_str()));
        self.write_manifest(Instant::now());
    }

    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        let now = self.wall(self.ms(Instant::now()));
        if let Some(p) = self.manifest.pauses.last_mut() {
            p["to"] = now.into();
        }
        let video: Vec<UpTrackKey> =
            self.tracks.iter().filter(|(_, t)| t.codec != TrackCodec::Opus).map(|(k, _)| *k).collect();
        for up in video {
            if let Some(t) = self.tracks.get_mut(&up) {
                t.need_keyframe = true;
                t.last_keyframe_ask = None;
            }
            self.ask_keyframe(up);
        }
        self.schedule.header_changed();
        self.state = "recording";
        self.status("recording", None);
        self.write_manifest(Instant::now());
    }

    fn tick(&mut self, now: Instant) {
        let now_ms = self.ms(now);
        let ups: Vec<UpTrackKey> = self.tracks.keys().copied().collect();
        for up in ups {
            let Some(t) = self.tracks.get_mut(&up) else { continue };
            let mut out = std::mem::take(&mut self.released);
            t.reorder.drain(now_ms, &mut out);
            self.released = out;
            if !self.released.is_empty() {
                self.deliver(up);
            }
            // An audio segment closes on time even when its track went quiet (muted, left).
            let segment_ms = self.ctx.segment.as_millis() as i64;
            let Some(t) = self.tracks.get(&up) else { continue };
            if let Some(seg) = &t.segment {
                if now_ms - t.last_frame_ms > segment_ms && seg.muxer.first_ms().is_some() {
                    self.close_segment(up);
                }
            }
        }
        // Storage health: a nearly full spool first (media is about to be lost), then an outage.
        let alarm = self.ctx.sink.spool_alarm();
        if alarm && self.state != "spool_alarm" {
            self.state = "spool_alarm";
            warn!(recording = %self.recording_id, "the recording spool is nearly full");
            self.status("degraded", Some("spool"));
            return self.maybe_write_manifest(now);
        }
        if !alarm && self.state == "spool_alarm" {
            self.state = if self.paused { "paused" } else { "recording" };
            self.status(self.state, None);
        }
        if self.state == "spool_alarm" {
            return self.maybe_write_manifest(now);
        }
        match self.ctx.sink.failing_since() {
            Some(since)
                if since.elapsed().unwrap_or_default() > Duration::from_secs(10)
                    && self.state != "storage_degraded" =>
            {
                self.state = "storage_degraded";
                self.status("degraded", Some("storage"));
            }
            None if self.state == "storage_degraded" => {
                self.state = if self.paused { "paused" } else { "recording" };
                self.status(self.state, None);
            }
            _ => {}
        }
        self.maybe_write_manifest(now);
    }

    fn maybe_write_manifest(&mut self, now: Instant) {
        if self.schedule.due(now) {
            self.write_manifest(now);
        }
    }

    /// The segment just listed goes to the journal at once; the whole manifest follows on the
    /// schedule. If the journal cannot take it, the whole manifest is rewritten now instead.
    fn journal_segment(&mut self) {
        let Some(segment) = self.manifest.segments.last() else { return };
        let appended = self.journal.as_mut().map(|j| j.append(segment));
        self.schedule.segment_added();
        if let Some(Err(e)) = appended {
            error!(error = %e, "journaling a segment failed; rewriting the manifest instead");
            self.write_manifest(Instant::now());
        }
    }

    fn status(&self, state: &'static str, cause: Option<&str>) {
        let (zh, en) = match (state, cause) {
            ("recording", _) => ("正在录音录像", "Recording"),
            ("paused", _) => ("录音录像已暂停", "Recording paused"),
            ("degraded", Some("spool")) => {
                ("录像缓存即将写满，请检查录像存储", "The recording spool is nearly full: check the recordings storage")
            }
            ("degraded", Some("storage")) => (
                "录像存储暂时不可用，录像已在本机缓存，恢复后自动上传",
                "Recording storage is unreachable; segments are kept locally and uploaded when it returns",
            ),
            ("degraded", _) => {
                ("录像出现短暂中断，已在录像清单中标注", "Recording had a short gap; it is marked in the manifest")
            }
            ("failed", Some("storage")) => (
                "录像缓存已满，部分录像未能保存，已在录像清单中标注",
                "The recording spool is full; media is being lost and the gap is marked",
            ),
            ("failed", _) => (
                "录像故障，正在丢失录像，已在录像清单中标注",
                "The recorder failed; media is being lost and the gap is marked",
            ),
            _ => ("录音录像已完成", "Recording complete"),
        };
        (self.events)(RecorderEvent::Status(RecordingStatus {
            state,
            cause: cause.map(str::to_string),
            message_zh: zh.into(),
            message_en: en.into(),
            chain_head: None,
        }));
    }

    /// Fills participants and sites from the store, signs, writes live.json and queues a snapshot.
    fn write_manifest(&mut self, now: Instant) {
        self.refresh_people();
        track_timing(&mut self.manifest);
        self.ctx.keys.sign(&mut self.manifest);
        let bytes = serde_json::to_vec_pretty(&self.manifest).expect("a manifest serialises");
        let live = self.dir.join("live.json");
        match write_atomic(&live, &bytes).and_then(|()| sync_dir(&self.dir)) {
            // live.json lists every segment now, durably (the rename too): the journal's lines
            // are redundant.
            Ok(()) => {
                if let Some(Err(e)) = self.journal.as_mut().map(|j| j.clear()) {
                    error!(error = %e, "emptying the segment journal failed");
                }
            }
            Err(e) => error!(error = %e, "writing the live manifest failed"),
        }
        self.manifest_seq += 1;
        let snapshot = self.dir.join(format!("manifest.{:06}.json", self.manifest_seq));
        match write_atomic(&snapshot, &bytes) {
            Ok(()) => {
                if let Err(e) = self.ctx.sink.enqueue(&format!("{}/manifest.json", self.prefix), &snapshot) {
                    error!(error = %e, "queueing the manifest failed");
                }
            }
            Err(e) => error!(error = %e, "writing a manifest snapshot failed"),
        }
        self.schedule.wrote(now, bytes.len());
    }

    fn refresh_people(&mut self) {
        let store = &self.ctx.store;
        let Ok(people) = self.ctx.rt.block_on(store.participants(&self.facts.session_id)) else { return };
        let events = self.ctx.rt.block_on(store.presence_events(&self.facts.session_id)).unwrap_or_default();
        let mut participants = Vec::new();
        let mut site_ids: Vec<String> = Vec::new();
        for p in people {
            let presence: Vec<serde_json::Value> = events
                .iter()
                .filter(|(pid, _, ev, _)| {
                    pid == &p.id && matches!(ev.as_str(), "joined" | "reconnected" | "left" | "network")
                })
                .map(|(_, at, ev, cause)| match cause {
                    Some(c) if ev == "left" => json!({ "at": at, "event": ev, "cause": c }),
                    // `poor: uplink loss 12.3 %, …`: the level, then what it rests on.
                    Some(c) if ev == "network" => match c.split_once(": ") {
                        Some((quality, detail)) => {
                            json!({ "at": at, "event": ev, "quality": quality, "detail": detail })
                        }
                        None => json!({ "at": at, "event": ev, "quality": c }),
                    },
                    _ => json!({ "at": at, "event": ev }),
                })
                .collect();
            if presence.is_empty() {
                continue; // invited but never joined while recording
            }
            if let Some(s) = &p.site_id {
                if !site_ids.contains(s) {
                    site_ids.push(s.clone());
                }
            }
            participants.push(json!({
                "id": p.id, "display_name": p.display_name, "role": p.role, "site_id": p.site_id, "presence": presence,
            }));
        }
        let mut sites = Vec::new();
        for id in site_ids {
            if let Ok(s) = self.ctx.rt.block_on(store.site(&id)) {
                sites.push(json!({ "id": s.id, "name": s.name, "kind": s.kind }));
            }
        }
        self.manifest.participants = participants;
        self.manifest.session.sites = sites;
    }

    fn finish(&mut self, cause: FinishCause) -> Finished {
        self.close_all_segments();
        let end_ms = self.ms(Instant::now());
        let ended = self.wall(end_ms);
        if self.paused {
            if let Some(p) = self.manifest.pauses.last_mut() {
                p["to"] = ended.clone().into();
            }
        }
        for (_, i) in self.open_gap.drain() {
            self.manifest.gaps[i]["to"] = ended.clone().into();
        }
        self.refresh_people();
        // Everyone still present leaves the recording with it.
        for p in &mut self.manifest.participants {
            let last_left = p["presence"].as_array().and_then(|a| a.last()).is_some_and(|e| e["event"] == "left");
            if !last_left {
                if let Some(a) = p["presence"].as_array_mut() {
                    a.push(json!({ "at": ended, "event": "left", "cause": cause.as_str() }));
                }
            }
        }
        track_timing(&mut self.manifest);
        self.manifest.status = "final".into();
        self.manifest.ended_at = Some(ended);
        self.ctx.keys.sign(&mut self.manifest);
        let bytes = serde_json::to_vec_pretty(&self.manifest).expect("a manifest serialises");
        self.manifest_seq += 1;
        let snapshot = self.dir.join(format!("manifest.{:06}.json", self.manifest_seq));
        if let Err(e) = write_atomic(&snapshot, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|_| self.ctx.sink.enqueue(&format!("{}/manifest.json", self.prefix), &snapshot))
        {
            error!(error = %e, "storing the final manifest failed");
        }
        let _ = std::fs::remove_file(self.dir.join("live.json"));
        if let Some(j) = self.journal.take() {
            j.remove();
        }
        let row = self.ctx.store.end_recording(
            &self.recording_id,
            "final",
            self.manifest.ended_at.as_deref().unwrap_or_default(),
            &self.manifest.chain_head,
            self.manifest.segments.len() as i64,
        );
        if let Err(e) = self.ctx.rt.block_on(row) {
            error!(error = %e, "recording the end of a recording failed");
        }
        info!(
            recording = %self.recording_id, segments = self.manifest.segments.len(),
            chain_head = %self.manifest.chain_head, "recording final"
        );
        let finished = Finished {
            recording_id: self.recording_id.clone(),
            prefix: self.prefix.clone(),
            chain_head: self.manifest.chain_head.clone(),
            segments: self.manifest.segments.len(),
            manifest: self.manifest.clone(),
        };
        (self.events)(RecorderEvent::Status(RecordingStatus {
            state: "final",
            cause: None,
            message_zh: "录音录像已完成，完整性校验值如下".into(),
            message_en: "Recording complete; its integrity value follows".into(),
            chain_head: Some(finished.chain_head.clone()),
        }));
        if let Some(f) = &self.ctx.on_final {
            f(finished.clone());
        }
        finished
    }
}

/// The container parameters a frame implies, when it can start a segment.
fn frame_codec(t: &Track, f: &Frame) -> Option<Codec> {
    if !f.keyframe {
        return None;
    }
    match t.codec {
        TrackCodec::Opus => Some(Codec::Opus { channels: 2 }),
        TrackCodec::Vp8 => vp8_dimensions(&f.data).map(|(width, height)| Codec::Vp8 { width, height }),
        TrackCodec::H264 => {
            let a = t.assembler.as_ref()?;
            let (sps, pps) = (a.sps.as_ref()?, a.pps.as_ref()?);
            let (width, height) = h264_dimensions(sps)?;
            let mut extradata = Vec::with_capacity(sps.len() + pps.len() + 8);
            for nal in [sps, pps] {
                extradata.extend_from_slice(&[0, 0, 0, 1]);
                extradata.extend_from_slice(nal);
            }
            Some(Codec::H264 { width, height, extradata })
        }
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Each track's span on the timeline, from its segments.
fn track_timing(m: &mut Manifest) {
    for t in &mut m.tracks {
        let id = t["id"].as_str().unwrap_or_default();
        let segs = m.segments.iter().filter(|s| s.track_id == id);
        let (mut start, mut end) = (u64::MAX, 0u64);
        for s in segs {
            start = start.min(s.start_ms);
            end = end.max(s.start_ms + s.duration_ms);
        }
        if start != u64::MAX {
            t["start_ms"] = start.into();
            t["end_ms"] = end.into();
        }
    }
}

/// Crash recovery: a track still live at the crash lost its open segment, from the end of its
/// last listed segment (from when it was published if it has none) to the crash. Marks that
/// span, less any pause (nothing is recorded then, so nothing was lost), as `interrupted` gaps of
/// the track up to `last_update`, where the session-wide gap takes over. A track that ended first
/// (`"ended"`) lost nothing.
fn mark_cut_tracks(m: &mut Manifest, last_update: SystemTime) {
    let parse = |s: &str| crate::store::parse_rfc3339(s).map(SystemTime::from);
    let Some(started) = parse(&m.started_at) else { return };
    let mut pauses: Vec<(SystemTime, SystemTime)> = m
        .pauses
        .iter()
        .filter_map(|p| Some((parse(p["from"].as_str()?)?, p["to"].as_str().and_then(parse).unwrap_or(last_update))))
        .collect();
    pauses.sort();
    let mut gaps = Vec::new();
    for t in &m.tracks {
        if t["ended"] == true {
            continue;
        }
        let cut_ms = t["end_ms"].as_u64().or_else(|| t["published_ms"].as_u64()).unwrap_or(0);
        let mut from = started + Duration::from_millis(cut_ms);
        for &(paused, resumed) in &pauses {
            if resumed <= from {
                continue;
            }
            if paused >= last_update {
                break;
            }
            if paused > from {
                gaps.push((t["id"].clone(), from, paused));
            }
            from = resumed;
        }
        if from < last_update {
            gaps.push((t["id"].clone(), from, last_update));
        }
    }
    for (id, from, to) in gaps {
        m.gaps.push(json!({ "track_id": id, "from": rfc3339(from), "to": rfc3339(to), "cause": "interrupted" }));
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Crash recovery: every `live.json` left in the spool belongs to a recording whose process died.
/// Each is finalised as `interrupted` — the interruption marked as a gap from its last update to
/// now — signed, and queued for storage with the segments it lists and those its journal adds
/// (all already queued durably, or stored). Returns the recordings it finalised.
pub fn recover(spool_dir: &Path, keys: &SigningKeys, sink: &dyn SegmentSink) -> Vec<(String, Manifest)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(spool_dir) else { return out };
    for e in entries.flatten() {
        let dir = e.path();
        let live = dir.join("live.json");
        let Ok(text) = std::fs::read_to_string(&live) else { continue };
        let Ok(prefix) = std::fs::read_to_string(dir.join("prefix")) else { continue };
        let Ok(mut m) = serde_json::from_str::<Manifest>(&text) else {
            warn!(path = %live.display(), "an unreadable live manifest was left alone");
            continue;
        };
        // Segments closed after live.json was last written are in the journal.
        let journal = dir.join(JOURNAL);
        let journaled = std::fs::read_to_string(&journal).map_or(0, |text| replay_journal(&mut m, &text));
        // A journaled segment was queued before it was journaled; queue again any still in the
        // spool, in case the queue's own write was what the crash cut (the same file again is a
        // no-op for the queue).
        for s in &m.segments[m.segments.len() - journaled..] {
            let file = dir.join(&s.path);
            if file.exists() {
                if let Err(e) = sink.enqueue(&format!("{prefix}/{}", s.path), &file) {
                    warn!(path = %s.path, error = %e, "queueing a recovered segment failed");
                }
            }
        }
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let last_update = [modified(&live), if journaled > 0 { modified(&journal) } else { None }]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_else(SystemTime::now);
        track_timing(&mut m);
        mark_cut_tracks(&mut m, last_update);
        let now = rfc3339(SystemTime::now());
        m.gaps.push(json!({ "track_id": null, "from": rfc3339(last_update), "to": now, "cause": "interrupted" }));
        for p in &mut m.pauses {
            if p["to"].is_null() {
                p["to"] = rfc3339(last_update).into();
            }
        }
        for g in &mut m.gaps {
            if g["to"].is_null() {
                g["to"] = rfc3339(last_update).into();
            }
        }
        m.status = "interrupted".into();
        m.ended_at = Some(rfc3339(last_update));
        keys.sign(&mut m);
        let bytes = serde_json::to_vec_pretty(&m).expect("a manifest serialises");
        let snapshot = dir.join("manifest.recovered.json");
        if write_atomic(&snapshot, &bytes).is_ok()
            && sink.enqueue(&format!("{prefix}/manifest.json"), &snapshot).is_ok()
        {
            let _ = std::fs::remove_file(&live);
            let _ = std::fs::remove_file(&journal);
            info!(prefix = %prefix, segments = m.segments.len(), journaled, "an interrupted recording was finalised");
            // Open segments (never closed, never listed) are what the crash lost; remove them.
            remove_unlisted(&dir, &m);
            out.push((e.file_name().to_string_lossy().into_owned(), m));
        }
    }
    out
}

fn remove_unlisted(dir: &Path, m: &Manifest) {
    let tracks = dir.join("tracks");
    let Ok(track_dirs) = std::fs::read_dir(&tracks) else { return };
    for t in track_dirs.flatten() {
        let Ok(files) = std::fs::read_dir(t.path()) else { continue };
        for f in files.flatten() {
            let rel = f.path().strip_prefix(dir).map(|p| p.to_string_lossy().replace('\\', "/")).unwrap_or_default();
            if !m.segments.iter().any(|s| s.path == rel) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn recovery_marks_the_open_segment_of_each_track_the_crash_cut_and_nothing_of_an_ended_one() {
        let mut m = manifest();
        m.tracks.push(json!({ "id": "t_live", "published_ms": 0, "start_ms": 0, "end_ms": 8000 }));
        m.tracks.push(json!({ "id": "t_left", "published_ms": 0, "start_ms": 0, "end_ms": 4000, "ended": true }));
        // Published at 9 s, no segment closed yet.
        m.tracks.push(json!({ "id": "t_new", "published_ms": 9000 }));
        m.tracks.push(json!({ "id": "t_current", "published_ms": 0, "start_ms": 0, "end_ms": 11_000 }));
        mark_cut_tracks(&mut m, started_plus(10));
        assert_eq!(
            gaps(&m),
            [
                ("t_live", "2026-11-22T08:00:08Z", "2026-11-22T08:00:10Z"),
                ("t_new", "2026-11-22T08:00:09Z", "2026-11-22T08:00:10Z"),
            ]
        );
        assert!(m.gaps.iter().all(|g| g["cause"] == "interrupted"));
    }

    #[test]
    fn recovery_does_not_count_a_pause_as_lost() {
        let mut m = manifest();
        m.tracks.push(json!({ "id": "t_a", "published_ms": 0, "start_ms": 0, "end_ms": 2000 }));
        m.tracks.push(json!({ "id": "t_b", "published_ms": 0, "start_ms": 0, "end_ms": 7000 }));
        // A recess from 3 s to 5 s, and one still open at the crash from 8 s.
        let pause = |from: &str, to: Value| json!({ "from": from, "to": to, "reason": "recess", "by": "p_1" });
        m.pauses.push(pause("2026-11-22T08:00:03Z", json!("2026-11-22T08:00:05Z")));
        m.pauses.push(pause("2026-11-22T08:00:08Z", Value::Null));
        mark_cut_tracks(&mut m, started_plus(10));
        assert_eq!(
            gaps(&m),
            [
                ("t_a", "2026-11-22T08:00:02Z", "2026-11-22T08:00:03Z"),
                ("t_a", "2026-11-22T08:00:05Z", "2026-11-22T08:00:08Z"),
                ("t_b", "2026-11-22T08:00:07Z", "2026-11-22T08:00:08Z"),
            ]
        );
    }

    #[test]
    fn a_full_channel_drops_packets_but_holds_a_track_end_until_it_accepts_again() {
        let (data, rx) = std::sync::mpsc::sync_channel(2);
        let (control, _control_rx) = std::sync::mpsc::channel();
        let mut tap = RecorderTap {
            data,
            control,
            overflow_since: None,
            held: VecDeque::new(),
            dropped: 0,
            recording_id: "rec_1".into(),
        };
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let rtp = |seq: u16, ms| RecInput::Rtp {
            up: UpTrackKey(1),
            ssrc: 7,
            seq,
            ts: 0,
            marker: false,
            payload: Bytes::new(),
            at: at(ms),
        };
        tap.offer(rtp(1, 0), at(0));
        tap.offer(rtp(2, 10), at(10));
        tap.offer(rtp(3, 20), at(20)); // full: dropped, the overflow starts
        tap.offer(RecInput::TrackEnd(UpTrackKey(1)), at(30)); // held
        tap.offer(rtp(4, 40), at(40)); // dropped
        assert_eq!(tap.dropped, 2);
        let kind = |i: RecInput| match i {
            RecInput::Rtp { seq, .. } => format!("rtp {seq}"),
            RecInput::Overflow { from, to } => format!("overflow {:?}..{:?}", from - t0, to - t0),
            RecInput::TrackEnd(_) => "end".into(),
            _ => "other".into(),
        };
        assert_eq!([kind(rx.recv().unwrap()), kind(rx.recv().unwrap())], ["rtp 1", "rtp 2"]);
        // The channel has room for two: the overflow's notice and the held end take it, the
        // packet offered meanwhile is dropped and starts another overflow.
        tap.offer(rtp(5, 50), at(50));
        assert_eq!(tap.dropped, 3);
        assert_eq!(
            [kind(rx.recv().unwrap()), kind(rx.recv().unwrap())],
            [format!("overflow {:?}..{:?}", Duration::from_millis(20), Duration::from_millis(50)), "end".into()]
        );
        tap.offer(rtp(6, 60), at(60));
        assert_eq!(
            [kind(rx.recv().unwrap()), kind(rx.recv().unwrap())],
            [format!("overflow {:?}..{:?}", Duration::from_millis(50), Duration::from_millis(60)), "rtp 6".into()]
        );
    }

    /// 2026-11-22T08:00:00Z, when `manifest()`'s recording started, plus `secs`.
    fn started_plus(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_334_400 + secs)
    }

    fn manifest() -> Manifest {
        let session = SessionInfo { id: "s_1".into(), kind: "mediation".into(), title: None, sites: vec![] };
        Manifest::started("c_1".into(), "（2026）调字第1号".into(), session, "2026-11-22T08:00:00Z".into())
    }

    fn gaps(m: &Manifest) -> Vec<(&str, &str, &str)> {
        m.gaps
            .iter()
            .map(|g| (g["track_id"].as_str().unwrap(), g["from"].as_str().unwrap(), g["to"].as_str().unwrap()))
            .collect()
    }
}
