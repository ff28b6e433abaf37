//! A room: one session's participants, their published tracks and the subscriptions between them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use bytes::Bytes;

use super::bwe::{GateChange, VideoGate};
use super::codec::{starts_keyframe, Codec};
use super::gop::GopCache;
use super::ids::{DownTrackKey, KeyAlloc, KeyMap, ParticipantKey, UpTrackKey};
use super::layers::{
    allocate, one_step_up, Choice, Climb, Ladder, RateMeter, BUDGET_SHARE, MAX_SPATIAL, PACKET_OVERHEAD, PROBE_CLUSTER,
    PROBE_MARGIN, PROBE_MAX_FACTOR, PROBE_MAX_LOSS, PROBE_TIMEOUT, PROOF_FRESH, PROOF_MARGIN,
};
use super::munger::Munger;
use super::policy::{ForwardPolicy, Subject};
use super::quality::{NetworkQuality, QualityMeter, Sample, EVALUATE_EVERY};
use super::roles::{policy, Action};
use super::speaker::{Loudness, SpeakerPicker, SPEAKER_INTERVAL};
use super::stats::{ReceiveStats, StatsView};
use super::vp8::{PictureMunger, Vp8Desc};
use super::zone::Zone;

/// Tunables of the core, validated once in `config`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Minimum gap between two keyframe requests sent to one published track.
    pub pli_interval: Duration,
    /// A participant from whom no media or ICE traffic arrives for this long is removed.
    pub peer_timeout: Duration,
    /// How long a participant whose signalling dropped keeps its place before it is removed.
    pub reconnect_grace: Duration,
    /// Limits of each video track's GOP cache (see [`super::gop`]): a GOP larger or older than
    /// this is not replayed, and a new subscriber waits for a requested keyframe instead.
    pub gop_cache_bytes: usize,
    pub gop_cache_age: Duration,
    /// A subscriber's layer switch starts from the new layer's cached GOP when that GOP takes at
    /// most `switch_replay_link_time` of the subscriber's estimated downlink and holds at most
    /// `switch_replay_layer_time` of the layer's own rate; otherwise the publisher is asked for a
    /// keyframe. A larger replay would only move the congestion a step down was meant to relieve,
    /// and an estimate on a link that was never full can be far above what it carries (GCC gave
    /// 14–50 Mbit/s on a 400 kbit/s link in the netem tests): the layer's rate bounds the burst
    /// whatever the estimate says.
    pub switch_replay_link_time: Duration,
    pub switch_replay_layer_time: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            pli_interval: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::from_secs(15),
            // 1 MiB holds a second of 1080p; `--gop-cache-kb 0` turns it off.
            gop_cache_bytes: 1 << 20,
            gop_cache_age: Duration::from_secs(4),
            switch_replay_link_time: Duration::from_millis(250),
            switch_replay_layer_time: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("participant already in the room")]
    AlreadyJoined,
    #[error("no such participant")]
    NoSuchParticipant,
    #[error("no such track")]
    NoSuchTrack,
    #[error("role {0:?} may not publish")]
    MayNotPublish(Role),
}

/// Roles, as in the domain notes. Their permissions grow with the zones issue; today only
/// publishing is restricted (an observer publishes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Judge,
    Clerk,
    Mediator,
    PetitionOfficer,
    Leader,
    Party,
    Counsel,
    Counsellor,
    Interpreter,
    Witness,
    Observer,
}

impl Role {
    pub const ALL: [Role; 11] = [
        Role::Judge,
        Role::Clerk,
        Role::Mediator,
        Role::PetitionOfficer,
        Role::Leader,
        Role::Party,
        Role::Counsel,
        Role::Counsellor,
        Role::Interpreter,
        Role::Witness,
        Role::Observer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Judge => "judge",
            Role::Clerk => "clerk",
            Role::Mediator => "mediator",
            Role::PetitionOfficer => "petition_officer",
            Role::Leader => "leader",
            Role::Party => "party",
            Role::Counsel => "counsel",
            Role::Counsellor => "counsellor",
            Role::Interpreter => "interpreter",
            Role::Witness => "witness",
            Role::Observer => "observer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn may_publish(self) -> bool {
        policy(self).publish
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
}

impl TrackSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::Screen => "screen",
        }
    }
}

/// Why a participant left. The court rules treat a network failure and walking out differently
/// (在线诉讼规则 Art. 25), so every departure carries one of these and it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveCause {
    /// The participant chose to leave.
    Left,
    /// Signalling dropped and was not resumed within the reconnect grace period.
    NetworkLost,
    /// Media and ICE traffic stopped (or ICE failed).
    MediaTimeout,
    /// Removed by a host or an administrator.
    Removed,
    /// The session was closed.
    SessionClosed,
    /// The client broke the protocol.
    ProtocolError,
    /// A host did not admit the participant from the lobby.
    Denied,
    /// Handed to another session (another office's reception, a mediation).
    Transferred,
}

impl LeaveCause {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveCause::Left => "left",
            LeaveCause::NetworkLost => "network_lost",
            LeaveCause::MediaTimeout => "media_timeout",
            LeaveCause::Removed => "removed",
            LeaveCause::SessionClosed => "session_closed",
            LeaveCause::ProtocolError => "protocol_error",
            LeaveCause::Denied => "denied",
            LeaveCause::Transferred => "transferred",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    Connecting,
    Connected,
    Reconnecting,
}

/// Who a participant is; fixed for the life of the participant in the room.
#[derive(Debug, Clone)]
pub struct ParticipantInfo {
    pub key: ParticipantKey,
    /// The external id (`p_…`), as clients know it.
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub site_id: Option<String>,
    /// The petitioners' group this participant represents, if any: at most
    /// [`MAX_REPRESENTATIVES`] of one group are in the session at once (信访工作条例 Art. 20).
    pub group: Option<String>,
}

/// Representatives of one group allowed in a session's media zones at once.
pub const MAX_REPRESENTATIVES: usize = 5;

/// A published camera or microphone that sends nothing for this long has stopped (network
/// quality `Poor`, or `Lost` when all of a participant's have): an unmuted microphone sends a
/// packet every 20 ms, and a camera a frame at least every second even when disabled.
pub const STALL: Duration = Duration::from_secs(3);

/// How long after a subscriber's first downlink estimate a layer below the best one counts
/// against its network quality: the estimate starts low and climbs for the first seconds.
pub const ESTIMATE_WARMUP: Duration = Duration::from_secs(10);

/// A published track as the core needs it.
#[derive(Debug, Clone)]
pub struct UpTrackInfo {
    /// The external id (`t_…`), also the msid track id subscribers see.
    pub track_id: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// MIME type as negotiated, e.g. `video/VP8`.
    pub mime: String,
    pub clock_rate: u32,
}

/// What clients are told about a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantView {
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub site_id: Option<String>,
    pub group: Option<String>,
    pub zone: Zone,
    /// Place in the lobby queue (1 = next), while in the lobby.
    pub queue_position: Option<usize>,
    /// The participant's own mute (its client says so).
    pub audio_muted: bool,
    pub video_muted: bool,
    /// Muted by a host: the server forwards nothing of that kind.
    pub audio_muted_by_host: bool,
    pub video_muted_by_host: bool,
    pub hand_raised: bool,
    pub connection: ConnectionState,
    /// How well its links carry the session (see [`super::quality`]).
    pub network: NetworkQuality,
}

/// What clients are told about a track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackView {
    pub track_id: String,
    pub participant_id: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub codec: String,
}

/// A published track's state for operators and, later, bandwidth decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackReport {
    pub track: TrackView,
    pub receive: StatsView,
    pub subscribers: usize,
    /// The simulcast layers being received (one for a track that is not simulcast).
    pub layers: Vec<LayerReport>,
}

/// One layer of a published video track, as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerReport {
    /// Spatial index: 0 is the smallest.
    pub layer: u8,
    pub bitrate_bps: u64,
    /// Temporal layers the publisher sends in it (1 when it sends no temporal layering).
    pub temporal_layers: u8,
}

/// Events for participants; the driver turns them into signalling messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    ParticipantJoined(ParticipantView),
    ParticipantUpdated(ParticipantView),
    ParticipantLeft {
        participant_id: String,
        cause: LeaveCause,
    },
    TrackPublished(TrackView),
    TrackUnpublished {
        track_id: String,
        participant_id: String,
    },
    SessionUpdated {
        locked: bool,
        spotlight: Option<String>,
    },
    /// The loudest participant of the recipient's zone changed.
    ActiveSpeaker {
        participant_id: String,
    },
    /// The recipient's downlink cannot carry its video (suspended: audio only) or video is being
    /// tried again; `estimate_kbps` is what its connection's congestion control measured.
    VideoSuspended {
        suspended: bool,
        estimate_kbps: u64,
    },
}

/// A control action, with its target resolved to a key by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Admit(ParticipantKey),
    Deny(ParticipantKey),
    Move(ParticipantKey, Zone),
    Mute(ParticipantKey, MediaKind),
    Unmute(ParticipantKey, MediaKind),
    Remove(ParticipantKey),
    Lock,
    Unlock,
    Spotlight(Option<ParticipantKey>),
    RaiseHand(ParticipantKey),
    LowerHand(ParticipantKey),
    CallWitness(ParticipantKey),
    DismissWitness(ParticipantKey),
    CallNext,
    /// The recording pauses or resumes: the room only checks who may; the recorder does it.
    PauseRecording,
    ResumeRecording,
}

impl Control {
    pub fn action(self) -> Action {
        match self {
            Control::PauseRecording => Action::PauseRecording,
            Control::ResumeRecording => Action::ResumeRecording,
            Control::Admit(_) => Action::Admit,
            Control::Deny(_) => Action::Deny,
            Control::Move(..) => Action::Move,
            Control::Mute(..) => Action::Mute,
            Control::Unmute(..) => Action::Unmute,
            Control::Remove(_) => Action::Remove,
            Control::Lock => Action::Lock,
            Control::Unlock => Action::Unlock,
            Control::Spotlight(_) => Action::Spotlight,
            Control::RaiseHand(_) => Action::RaiseHand,
            Control::LowerHand(_) => Action::LowerHand,
            Control::CallWitness(_) => Action::CallWitness,
            Control::DismissWitness(_) => Action::DismissWitness,
            Control::CallNext => Action::CallNext,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the actor's role may not do this")]
    NotAllowed,
    #[error("the action does not apply to that participant")]
    BadTarget,
    #[error("the lobby is empty")]
    QueueEmpty,
    #[error("the group already has the most representatives allowed")]
    GroupLimit,
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send an event to one participant.
    Event { to: ParticipantKey, event: RoomEvent },
    /// Create a sender for `up` on `subscriber`'s subscribe connection and renegotiate; report
    /// back with [`Room::down_track_ready`] once the subscriber has answered.
    AddDownTrack { subscriber: ParticipantKey, down: DownTrackKey, up: UpTrackKey },
    /// Remove that sender and renegotiate.
    RemoveDownTrack { subscriber: ParticipantKey, down: DownTrackKey },
    /// Send a PLI for spatial layer `layer` of `up` (0 when not simulcast) to its publisher.
    RequestKeyframe { publisher: ParticipantKey, up: UpTrackKey, layer: u8 },
    /// The participant has been removed from the room: close its connections.
    Disconnect { participant: ParticipantKey, cause: LeaveCause },
    /// A subscriber's bandwidth moved one of its video down tracks to another layer (for the log
    /// and statistics; the switch itself happens from the layer's cached GOP, or at its next
    /// keyframe).
    LayerTarget { subscriber: ParticipantKey, up: UpTrackKey, spatial: u8, temporal: u8, estimate_kbps: u64 },
    /// A down track switched layers from the new layer's cached GOP: send these packets to it at
    /// once (paced), before what it forwards from now on.
    Replay { subscriber: ParticipantKey, down: DownTrackKey, layer: u8, packets: Vec<Replayed> },
    /// Probe the subscriber's downlink: for `duration`, send it `rate_bps` in all, padding
    /// filling what its media leaves, and report what the link delivered meanwhile
    /// (`Room::on_probe_result`).
    Probe { subscriber: ParticipantKey, rate_bps: u64, duration: Duration },
    /// A probe showed the subscriber's downlink cannot carry higher layers (for the log).
    ProbeFailed { subscriber: ParticipantKey, delivered_kbps: u64 },
    /// The participant moved to another zone (the recorder tags its segments by zone: a caucus
    /// recording is readable only by the mediator and that party).
    ZoneChanged { participant: ParticipantKey, zone: Zone },
    /// A participant's network quality changed (the room has been told, as
    /// `ParticipantUpdated`): for its presence history and the log, with what the window measured
    /// and its latest downlink estimate.
    NetworkChanged { participant: ParticipantKey, quality: NetworkQuality, sample: Sample, estimate_kbps: Option<u64> },
}

/// The fields of an incoming RTP packet that forwarding decisions need.
#[derive(Debug, Clone, Copy)]
pub struct RtpIn<'a> {
    pub ssrc: u32,
    /// The simulcast layer (spatial index from the RID, 0 lowest); 0 when not simulcast.
    pub layer: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// Shared, not copied: the GOP cache keeps a reference to video payloads.
    pub payload: &'a Bytes,
    /// The RFC 6464 audio level carried by the packet, if negotiated (0 loudest, 127 silence).
    pub audio_level: Option<u8>,
}

/// A cached packet replayed to one new down track (see [`Room::down_track_ready`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// One packet's copy for one down track, with its rewritten header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub down: DownTrackKey,
    pub subscriber: ParticipantKey,
    pub seq: u16,
    pub ts: u32,
    /// VP8: the picture id and TL0PICIDX to write into this copy of the payload, when they differ
    /// from the publisher's (temporal-layer dropping or a layer switch happened on this down
    /// track). `None`: send the payload as it is, shared.
    pub vp8_ids: Option<(u16, u8)>,
}

struct Participant {
    info: ParticipantInfo,
    zone: Zone,
    /// When it entered its current zone, in arrival order: the lobby is a queue ordered by it.
    zone_order: u64,
    audio_muted: bool,
    video_muted: bool,
    /// Set by a host; the participant's tracks of that kind forward nothing.
    audio_muted_by_host: bool,
    video_muted_by_host: bool,
    hand_raised: bool,
    connection: ConnectionState,
    /// Last time media or ICE traffic arrived from any of its connections (reported by the
    /// driver); `None` until the first, so a participant still setting up is not timed out.
    last_media: Option<Instant>,
    /// Set while signalling is lost: removed with `NetworkLost` at this instant.
    reconnect_deadline: Option<Instant>,
    up_tracks: Vec<UpTrackKey>,
    down_tracks: Vec<DownTrackKey>,
    /// Whether its downlink carries video (audio-only fallback).
    video_gate: VideoGate,
    /// Its subscribe connection's latest downlink estimate (bits per second); `None` before the
    /// first. Bounds what a layer switch may replay to it.
    estimate_bps: Option<u64>,
    /// When its video layers may change (see [`Climb`]).
    climb: Climb,
    /// Whether its downlink is being probed for a higher layer, and what the probe showed.
    probe: ProbeState,
    /// Its network quality as shown to the room.
    network: QualityMeter,
    /// The downlink loss its estimates carried since the last evaluation: their sum and count
    /// (the evaluation takes the mean).
    down_loss_sum: f64,
    down_loss_n: u32,
    /// Whether its latest estimate fell short of every video it receives at its best layer.
    down_limited: bool,
    /// When its first downlink estimate came (see [`ESTIMATE_WARMUP`]).
    first_estimate_at: Option<Instant>,
}

/// A subscriber's bandwidth probe (see [`Room::on_bandwidth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeState {
    Idle,
    /// Padding went out at this instant; the result is awaited.
    Sent(Instant),
    /// The link delivered this many bits per second during the probe, measured at this instant.
    Measured(u64, Instant),
}

/// One simulcast encoding of a video track (the only one when not simulcast).
#[derive(Default)]
struct Layer {
    stats: ReceiveStats,
    /// Media bytes per temporal layer: what forwarding this layer costs.
    meter: RateMeter,
    /// The packets since this layer's latest keyframe, replayed to a new subscriber.
    gop: Option<GopCache>,
    last_keyframe_request: Option<Instant>,
    /// A request arrived inside the throttle window; send it when the window ends.
    keyframe_pending: bool,
    /// The SSRC last seen and its newest sequence number: tells a packet that arrives repaired,
    /// after packets sent later, from one in order. A down track cannot switch to this layer at
    /// a keyframe whose first packet comes late: the rest of that keyframe already went by.
    newest: Option<(u32, u16)>,
    /// Packets that arrived in order: those the uplink did not lose (a NACK-repaired packet
    /// arrives after newer ones), for the publisher's network quality.
    in_order_packets: u64,
    /// Expected and in-order packets at the last network evaluation.
    evaluated: (u64, u64),
}

impl Layer {
    /// Whether `seq` of `ssrc` is newer than every packet of that SSRC before it (a new SSRC
    /// starts afresh).
    fn in_order(&mut self, ssrc: u32, seq: u16) -> bool {
        match &mut self.newest {
            Some((s, newest)) if *s == ssrc => {
                let delta = seq.wrapping_sub(*newest);
                if delta == 0 || delta >= 0x8000 {
                    return false;
                }
                *newest = seq;
                true
            }
            other => {
                *other = Some((ssrc, seq));
                true
            }
        }
    }
}

struct UpTrack {
    info: UpTrackInfo,
    publisher: ParticipantKey,
    codec: Codec,
    /// Per spatial layer; only `layers[0]` is used unless the publisher sends simulcast.
    layers: [Layer; MAX_SPATIAL],
    /// The layer the recording takes: the best one sent (layer 0 until a higher one's keyframe).
    recorded: u8,
    /// The down tracks fed by this track: the per-packet fan-out list.
    route: Vec<DownTrackKey>,
    /// A host muted this kind for the publisher: drop every packet (checked per packet, so it is
    /// a flag here rather than a lookup of the publisher).
    muted_by_host: bool,
    /// Smoothed loudness from the packets' audio level (audio tracks).
    loudness: Loudness,
    /// A level arrived since the last speaker evaluation.
    level_seen: bool,
    /// When it was published: a track that never sent has stopped only [`STALL`] after this.
    published_at: Instant,
}

impl UpTrack {
    /// The highest layer that is being sent, for reports (0 if none is).
    fn best_layer(&self, now: Instant) -> usize {
        (0..MAX_SPATIAL).rev().find(|&i| self.layers[i].meter.active(now)).unwrap_or(0)
    }

    /// The layer closest to `want` from below that is being sent, else the lowest sent one;
    /// layer 0 when nothing is sent yet (a track that is not simulcast has only that one).
    fn available(&self, now: Instant, want: u8) -> u8 {
        let w = usize::from(want).min(MAX_SPATIAL - 1);
        let active = |i: &usize| self.layers[*i].meter.active(now);
        (0..=w).rev().find(active).or_else(|| (w + 1..MAX_SPATIAL).find(active)).unwrap_or(0) as u8
    }
}

struct DownTrack {
    up: UpTrackKey,
    subscriber: ParticipantKey,
    /// Rewrites sequence numbers and timestamps; `None` until negotiated (the down track is
    /// paused until then, like a mediasoup consumer).
    munger: Option<Munger>,
    /// The spatial layer being forwarded; `None` while waiting for a keyframe (before the first
    /// packet, after a resume, after the publisher's source changed).
    current: Option<u8>,
    /// What the subscriber's bandwidth allows (see [`super::layers`]).
    target: Choice,
    /// The spatial layer to forward: `target`'s, or the nearest one the publisher is sending.
    /// Refreshed every tick; a switch to it starts from its cached GOP when that is small enough
    /// for the subscriber's link (see [`Room::switch_from_cache`]), else at its next keyframe.
    want: u8,
    /// Temporal layers forwarded (VP8 TID ≤ this); follows `target` at base-layer pictures.
    temporal: u8,
    /// Keeps VP8 picture ids continuous across dropped pictures and layer switches.
    pictures: PictureMunger,
    /// The newest packet forwarded left a frame unfinished (no marker): a probe's padding goes
    /// only between frames.
    frame_open: bool,
    /// The subscriber's downlink cannot carry video: forward nothing (audio-only fallback). A copy
    /// of the subscriber's gate state, so the per-packet path needs no participant lookup.
    suspended: bool,
}

impl DownTrack {
    /// Starts forwarding `layer` of `t` from that layer's cached GOP: fills `replay` with the
    /// cached packets rewritten for this down track, numbered right after what it sent last (or
    /// from its start), and makes the live packets that follow continue after them. Cached frames
    /// get timestamps one millisecond apart, the newest where live packets continue (see
    /// [`super::gop`]); VP8 picture ids continue after the last picture sent.
    ///
    /// Returns false, changing nothing, when there is no usable GOP, it holds more than
    /// `max_bytes`, the track is muted by a host, or the down track is not negotiated.
    fn replay_gop(
        &mut self,
        t: &UpTrack,
        layer: u8,
        now: Instant,
        max_bytes: usize,
        replay: &mut Vec<Replayed>,
    ) -> bool {
        let Some(m) = self.munger.as_mut() else { return false };
        let Some(g) = t.layers[usize::from(layer)].gop.as_ref().filter(|_| !t.muted_by_host) else { return false };
        let Some((ssrc, packets)) = g.replayable(now).filter(|_| g.bytes() <= max_bytes) else { return false };
        let clock_rate = t.info.clock_rate;
        let spacing = (clock_rate / 1000).max(1);
        let (newest_ts, frames) = g.newest();
        let (first_seq, first_ts) = m.next_out(now, clock_rate);
        let newest_out = first_ts.wrapping_add(spacing.wrapping_mul(frames.saturating_sub(1)));
        m.start_segment(ssrc, packets[0].seq, first_seq, newest_ts, newest_out, now);
        self.pictures.switch();
        for p in packets {
            let Some((seq, _)) = m.rewrite(ssrc, p.seq, p.ts, clock_rate, now) else { continue };
            let ts = first_ts.wrapping_add(spacing.wrapping_mul(p.frame));
            // The cache holds every temporal layer: the replay forwards them all, each picture
            // renumbered after what this down track sent before (a copy only when that differs).
            let desc = if t.codec == Codec::Vp8 { Vp8Desc::parse(&p.payload) } else { None };
            let payload = match desc.and_then(|desc| self.pictures.rewrite(&desc).map(|ids| (desc, ids))) {
                Some((desc, (pid, tl0))) => {
                    let mut copy = p.payload.to_vec();
                    desc.write(&mut copy, pid, tl0);
                    Bytes::from(copy)
                }
                None => p.payload.clone(),
            };
            replay.push(Replayed { seq, ts, marker: p.marker, payload });
        }
        self.frame_open = replay.last().is_some_and(|p| !p.marker);
        self.current = Some(layer);
        self.temporal = Choice::TOP.temporal;
        true
    }
}

pub struct Room {
    config: CoreConfig,
    policy: Box<dyn ForwardPolicy>,
    /// New non-host participants are refused while locked.
    locked: bool,
    /// Hands out `zone_order` values.
    arrivals: u64,
    /// Active speaker per zone: each zone has its own conversation.
    speakers: HashMap<Zone, SpeakerPicker<ParticipantKey>>,
    /// When speakers are next compared; `None` while nobody publishes audio.
    next_speaker_eval: Option<Instant>,
    spotlight: Option<ParticipantKey>,
    participants: BTreeMap<ParticipantKey, Participant>,
    up_tracks: KeyMap<UpTrackKey, UpTrack>,
    down_tracks: KeyMap<DownTrackKey, DownTrack>,
    outputs: VecDeque<Output>,
    /// Packets left out of down tracks on purpose (temporal layers, padding), for statistics.
    thinned: u64,
    /// Layer switches (and resumes) served from a GOP cache instead of a keyframe request.
    switch_replays: u64,
    /// When every participant's network quality is next evaluated (see [`super::quality`]).
    next_network_eval: Option<Instant>,
}

impl Room {
    pub fn new(config: CoreConfig, policy: Box<dyn ForwardPolicy>) -> Room {
        Room {
            config,
            policy,
            locked: false,
            arrivals: 0,
            speakers: HashMap::new(),
            next_speaker_eval: None,
            spotlight: None,
            participants: BTreeMap::new(),
            up_tracks: KeyMap::default(),
            down_tracks: KeyMap::default(),
            outputs: VecDeque::new(),
            thinned: 0,
            switch_replays: 0,
            next_network_eval: None,
        }
    }

    /// Packets left out of down tracks on purpose so far (temporal layers above what a
    /// subscriber's link carries, and padding).
    pub fn packets_thinned(&self) -> u64 {
        self.thinned
    }

    /// Layer switches and video resumes served from a GOP cache so far, for statistics.
    pub fn switch_replays(&self) -> u64 {
        self.switch_replays
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn contains(&self, key: ParticipantKey) -> bool {
        self.participants.contains_key(&key)
    }

    pub fn participant_keys(&self) -> impl Iterator<Item = ParticipantKey> + '_ {
        self.participants.keys().copied()
    }

    // ---- participants ----------------------------------------------------------------------

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// The external id of the spotlighted participant.
    pub fn spotlight_id(&self) -> Option<String> {
        self.spotlight.and_then(|k| self.participants.get(&k)).map(|p| p.info.id.clone())
    }

    /// Adds a participant into `zone` (the driver decides it from the role and the session's
    /// lobby setting).
    pub fn join(
        &mut self,
        _now: Instant,
        info: ParticipantInfo,
        zone: Zone,
        keys: &mut KeyAlloc,
    ) -> Result<(), CoreError> {
        if self.participants.contains_key(&info.key) {
            return Err(CoreError::AlreadyJoined);
        }
        let key = info.key;
        // A group's sixth representative waits in the lobby instead (信访工作条例 Art. 20).
        let zone = match &info.group {
            Some(g) if zone.carries_media() => {
                let present = self
                    .participants
                    .values()
                    .filter(|o| o.zone.carries_media() && o.info.group.as_ref() == Some(g))
                    .count();
                if present >= MAX_REPRESENTATIVES {
                    Zone::Lobby
                } else {
                    zone
                }
            }
            _ => zone,
        };
        self.arrivals += 1;
        self.participants.insert(
            key,
            Participant {
                info,
                zone,
                zone_order: self.arrivals,
                audio_muted_by_host: false,
                video_muted_by_host: false,
                hand_raised: false,
                audio_muted: false,
                video_muted: false,
                connection: ConnectionState::Connecting,
                last_media: None,
                reconnect_deadline: None,
                up_tracks: Vec::new(),
                down_tracks: Vec::new(),
                video_gate: VideoGate::default(),
                estimate_bps: None,
                climb: Climb::default(),
                probe: ProbeState::Idle,
                network: QualityMeter::default(),
                down_loss_sum: 0.0,
                down_loss_n: 0,
                down_limited: false,
                first_estimate_at: None,
            },
        );
        let view = self.view_of(key).expect("just inserted");
        self.broadcast_except(key, RoomEvent::ParticipantJoined(view));
        self.subscribe_to_existing(key, keys);
        Ok(())
    }

    /// The participant came back on a new connection (new peer connections): its old tracks and
    /// subscriptions are gone, new ones are made, and it keeps its place in the room.
    pub fn reconnect(&mut self, now: Instant, key: ParticipantKey, keys: &mut KeyAlloc) -> Result<(), CoreError> {
        let p = self.participants.get_mut(&key).ok_or(CoreError::NoSuchParticipant)?;
        let ups = std::mem::take(&mut p.up_tracks);
        let downs = std::mem::take(&mut p.down_tracks);
        p.connection = ConnectionState::Connecting;
        p.reconnect_deadline = None;
        p.last_media = None;
        for up in ups {
            self.unpublish(now, up);
        }
        for down in downs {
            self.drop_down_track(down, false);
        }
        self.subscribe_to_existing(key, keys);
        self.broadcast_updated(key);
        Ok(())
    }

    /// Signalling dropped without a `leave`: keep the place for the grace period.
    pub fn signal_lost(&mut self, now: Instant, key: ParticipantKey) {
        if let Some(p) = self.participants.get_mut(&key) {
            p.connection = ConnectionState::Reconnecting;
            p.reconnect_deadline = Some(now + self.config.reconnect_grace);
            self.broadcast_updated(key);
        }
    }

    /// Media is flowing (or ICE consent) for this participant as of `at`.
    pub fn media_alive(&mut self, key: ParticipantKey, at: Instant) {
        let mut changed = false;
        if let Some(p) = self.participants.get_mut(&key) {
            if p.last_media.is_none_or(|t| t < at) {
                p.last_media = Some(at);
            }
            if p.connection == ConnectionState::Connecting {
                p.connection = ConnectionState::Connected;
                changed = true;
            }
        }
        if changed {
            self.broadcast_updated(key);
        }
    }

    /// Remove a participant, telling everyone why.
    pub fn leave(&mut self, now: Instant, key: ParticipantKey, cause: LeaveCause) {
        let Some(p) = self.participants.get_mut(&key) else { return };
        let ups = std::mem::take(&mut p.up_tracks);
        let downs = std::mem::take(&mut p.down_tracks);
        // Unpublish while the participant is still known, so events name the publisher.
        for up in ups {
            self.unpublish_inner(now, up, Some(key));
        }
        for down in downs {
            self.drop_down_track(down, false);
        }
        let Some(p) = self.participants.remove(&key) else { return };
        if p.zone == Zone::Lobby {
            // Everyone who waited behind moved up one place.
            let waiting: Vec<_> =
                self.participants.iter().filter(|(_, o)| o.zone == Zone::Lobby).map(|(k, _)| *k).collect();
            for k in waiting {
                self.broadcast_updated(k);
            }
        }
        for picker in self.speakers.values_mut() {
            picker.forget(key);
        }
        if self.spotlight == Some(key) {
            self.spotlight = None;
            self.broadcast_session();
        }
        let event = RoomEvent::ParticipantLeft { participant_id: p.info.id, cause };
        self.broadcast_except(key, event);
        self.outputs.push_back(Output::Disconnect { participant: key, cause });
    }

    /// Close the room: everyone leaves with `SessionClosed`.
    pub fn close(&mut self, now: Instant) {
        let keys: Vec<_> = self.participants.keys().copied().collect();
        for key in keys {
            self.leave(now, key, LeaveCause::SessionClosed);
        }
    }

    pub fn set_muted(&mut self, key: ParticipantKey, kind: MediaKind, muted: bool) {
        if let Some(p) = self.participants.get_mut(&key) {
            match kind {
                MediaKind::Audio => p.audio_muted = muted,
                MediaKind::Video => p.video_muted = muted,
            }
            self.broadcast_updated(key);
        }
    }

    /// Everyone in the room, and every published track, as a newcomer should see them.
    pub fn snapshot(&self) -> (Vec<ParticipantView>, Vec<TrackView>) {
        let people = self.participants.keys().filter_map(|k| self.view_of(*k)).collect();
        let tracks = self.up_tracks.values().filter_map(|t| self.track_view(t)).collect();
        (people, tracks)
    }

    pub fn participant_view(&self, key: ParticipantKey) -> Option<ParticipantView> {
        self.view_of(key)
    }

    // ---- tracks --------------------------------------------------------------------------

    pub fn publish(
        &mut self,
        now: Instant,
        publisher: ParticipantKey,
        info: UpTrackInfo,
        keys: &mut KeyAlloc,
    ) -> Result<UpTrackKey, CoreError> {
        let p = self.participants.get_mut(&publisher).ok_or(CoreError::NoSuchParticipant)?;
        if !p.info.role.may_publish() {
            return Err(CoreError::MayNotPublish(p.info.role));
        }
        let up = keys.up_track();
        p.up_tracks.push(up);
        let muted_by_host = match info.kind {
            MediaKind::Audio => p.audio_muted_by_host,
            MediaKind::Video => p.video_muted_by_host,
        };
        let codec = Codec::from_mime(&info.mime);
        let layer = || Layer {
            gop: codec.is_video().then(|| GopCache::new(self.config.gop_cache_bytes, self.config.gop_cache_age)),
            ..Layer::default()
        };
        let track = UpTrack {
            loudness: Loudness::default(),
            level_seen: false,
            published_at: now,
            muted_by_host,
            codec,
            layers: [layer(), layer(), layer()],
            recorded: 0,
            info,
            publisher,
            route: Vec::new(),
        };
        let view = self.track_view(&track).expect("publisher exists");
        self.up_tracks.insert(up, track);
        self.broadcast_except(publisher, RoomEvent::TrackPublished(view));
        let subscribers: Vec<_> = self.participants.keys().copied().collect();
        for s in subscribers {
            self.maybe_subscribe(s, up, keys);
        }
        Ok(up)
    }

    pub fn unpublish(&mut self, now: Instant, up: UpTrackKey) {
        let publisher = self.up_tracks.get(&up).map(|t| t.publisher);
        if let Some(publisher) = publisher {
            if let Some(p) = self.participants.get_mut(&publisher) {
                p.up_tracks.retain(|u| *u != up);
            }
        }
        self.unpublish_inner(now, up, None);
    }

    fn unpublish_inner(&mut self, _now: Instant, up: UpTrackKey, leaving: Option<ParticipantKey>) {
        let Some(track) = self.up_tracks.remove(&up) else { return };
        for down in &track.route {
            self.drop_down_track(*down, true);
        }
        let publisher_id = self.participants.get(&track.publisher).map(|p| p.info.id.clone()).unwrap_or_default();
        let event = RoomEvent::TrackUnpublished { track_id: track.info.track_id, participant_id: publisher_id };
        self.broadcast_except(leaving.unwrap_or(track.publisher), event);
    }

    pub fn up_track_info(&self, up: UpTrackKey) -> Option<(&UpTrackInfo, ParticipantKey)> {
        self.up_tracks.get(&up).map(|t| (&t.info, t.publisher))
    }

    /// Receive statistics of the track's best layer being sent.
    pub fn up_track_stats(&self, now: Instant, up: UpTrackKey) -> Option<StatsView> {
        self.up_tracks.get(&up).map(|t| t.layers[t.best_layer(now)].stats.view(t.info.clock_rate))
    }

    /// Every published track with its receive statistics (of its best layer being sent) and how
    /// many subscribers it feeds.
    pub fn track_report(&self, now: Instant) -> Vec<TrackReport> {
        let mut v: Vec<_> = self
            .up_tracks
            .values()
            .filter_map(|t| {
                let layers = (0..MAX_SPATIAL)
                    .filter(|&i| t.layers[i].meter.active(now))
                    .map(|i| {
                        let m = &t.layers[i].meter;
                        let top = m.top_temporal();
                        LayerReport { layer: i as u8, bitrate_bps: m.bps(now, top), temporal_layers: top + 1 }
                    })
                    .collect();
                Some(TrackReport {
                    track: self.track_view(t)?,
                    receive: t.layers[t.best_layer(now)].stats.view(t.info.clock_rate),
                    subscribers: t.route.len(),
                    layers,
                })
            })
            .collect();
        v.sort_by(|a, b| a.track.track_id.cmp(&b.track.track_id));
        v
    }

    /// The subscriber has negotiated `down` and its connection is up: start forwarding.
    /// `start_seq` and `start_ts` seed the rewritten numbering.
    ///
    /// For video, `replay` is filled with the track's cached GOP, rewritten for this down track,
    /// to be sent at once: the subscriber decodes a picture without waiting for the publisher.
    /// Without a usable GOP the publisher is asked for a keyframe (throttled) and video starts at
    /// the next one. `replay` is cleared first.
    pub fn down_track_ready(
        &mut self,
        now: Instant,
        down: DownTrackKey,
        start_seq: u16,
        start_ts: u32,
        replay: &mut Vec<Replayed>,
    ) {
        replay.clear();
        let Some(d) = self.down_tracks.get_mut(&down) else { return };
        if d.munger.is_some() {
            return;
        }
        d.munger = Some(Munger::new(start_seq, start_ts));
        let up = d.up;
        let Some(t) = self.up_tracks.get(&up) else { return };
        if !t.codec.is_video() {
            return;
        }
        let layer = t.available(now, d.target.spatial);
        d.want = layer;
        if !d.replay_gop(t, layer, now, usize::MAX, replay) {
            self.request_keyframe(now, up, layer);
        }
    }

    /// A subscriber asked for a keyframe (PLI/FIR) on `down`.
    pub fn on_keyframe_request(&mut self, now: Instant, down: DownTrackKey) {
        if let Some((up, layer)) = self.down_tracks.get(&down).map(|d| (d.up, d.current.unwrap_or(d.want))) {
            self.request_keyframe(now, up, layer);
        }
    }

    /// Asks the publisher for a keyframe of one layer, at most once per `pli_interval` per layer.
    fn request_keyframe(&mut self, now: Instant, up: UpTrackKey, layer: u8) {
        let Some(t) = self.up_tracks.get_mut(&up) else { return };
        let publisher = t.publisher;
        let Some(l) = t.layers.get_mut(usize::from(layer)) else { return };
        match l.last_keyframe_request {
            Some(last) if now < last + self.config.pli_interval => l.keyframe_pending = true,
            _ => {
                l.last_keyframe_request = Some(now);
                l.keyframe_pending = false;
                self.outputs.push_back(Output::RequestKeyframe { publisher, up, layer });
            }
        }
    }

    /// The per-packet path: account the packet and fill `out` with one entry per down track that
    /// must receive it. `out` is cleared first and reused by the caller, so this allocates nothing
    /// once warm.
    ///
    /// A packet with no payload (padding a publisher sends to probe its uplink) is accounted and
    /// left out of every down track without leaving a gap in its numbering.
    ///
    /// Returns whether the packet belongs in the session's recording: the recorder is a
    /// subscriber of every track in every zone, except what a host muted (silenced for everyone);
    /// of a simulcast track it takes one layer, the best one sent.
    pub fn on_rtp(&mut self, now: Instant, up: UpTrackKey, pkt: RtpIn<'_>, out: &mut Vec<Forward>) -> bool {
        let RtpIn { ssrc, seq, ts, payload, audio_level, layer, marker } = pkt;
        out.clear();
        let Some(track) = self.up_tracks.get_mut(&up) else { return false };
        let li = usize::from(layer).min(MAX_SPATIAL - 1);
        let layer = li as u8;
        let codec = track.codec;
        let clock_rate = track.info.clock_rate;
        let vp8 = if codec == Codec::Vp8 { Vp8Desc::parse(payload) } else { None };
        let tid = vp8.and_then(|d| d.tid).unwrap_or(0);
        let in_order;
        {
            let l = &mut track.layers[li];
            in_order = l.in_order(ssrc, seq);
            l.in_order_packets += u64::from(in_order);
            l.stats.on_packet(seq, ts, payload.len(), clock_rate, now);
            if !payload.is_empty() {
                l.meter.on_packet(now, tid, payload.len() + PACKET_OVERHEAD);
            }
        }
        if payload.is_empty() {
            for down_key in &track.route {
                let Some(d) = self.down_tracks.get_mut(down_key) else { continue };
                if let (Some(m), true) = (d.munger.as_mut(), d.current == Some(layer)) {
                    m.drop_packet(ssrc, seq);
                    self.thinned += 1;
                }
            }
            return false;
        }
        if track.muted_by_host {
            return false;
        }
        // Known at once for video (the GOP cache needs it); for audio nothing waits on it. VP8's
        // comes with the descriptor already read.
        let mut keyframe: Option<bool> = vp8.map(|d| d.keyframe);
        if let Some(gop) = track.layers[li].gop.as_mut() {
            let k = *keyframe.get_or_insert_with(|| starts_keyframe(codec, payload));
            keyframe = Some(k);
            gop.on_packet(now, &pkt, k);
            if k {
                // The publisher sent a keyframe: a request held back by the throttle is answered
                // (a down track this one cannot start asks again below).
                track.layers[li].keyframe_pending = false;
            }
        }
        if let Some(level) = audio_level {
            track.loudness.on_level(level);
            track.level_seen = true;
            if self.next_speaker_eval.is_none() {
                self.next_speaker_eval = Some(now + SPEAKER_INTERVAL);
            }
        }
        let record = if !codec.is_video() || layer == track.recorded {
            true
        } else {
            // A better layer, or any layer when the recorded one stopped, is taken at a keyframe.
            let stopped = !track.layers[usize::from(track.recorded)].meter.active(now);
            let better = layer > track.recorded || stopped;
            if better && *keyframe.get_or_insert_with(|| starts_keyframe(codec, payload)) {
                track.recorded = layer;
                true
            } else {
                false
            }
        };
        let mut want_keyframe = false;
        // Down tracks to switch from the cache at this keyframe (its first packet came resent).
        let mut late_start = Vec::new();
        for down_key in &track.route {
            let Some(d) = self.down_tracks.get_mut(down_key) else { continue };
            if d.suspended {
                continue;
            }
            let Some(m) = d.munger.as_mut() else { continue }; // not negotiated yet
            if codec.is_video() {
                if d.current == Some(layer) && m.current_ssrc().is_some_and(|s| s != ssrc) {
                    d.current = None; // the publisher's encoder restarted: a new source
                }
                if d.current != Some(layer) {
                    if layer != d.want {
                        continue;
                    }
                    if !*keyframe.get_or_insert_with(|| starts_keyframe(codec, payload)) {
                        want_keyframe = true;
                        continue;
                    }
                    // A keyframe's first packet that arrives repaired, after the rest of the
                    // keyframe went by, cannot start it live; the GOP cache has just opened
                    // with the rest of it, so the switch starts from there.
                    if !in_order {
                        late_start.push(*down_key);
                        continue;
                    }
                    // Switch (or start) at this keyframe.
                    m.rebase();
                    d.pictures.switch();
                    d.current = Some(layer);
                    d.temporal = d.target.temporal;
                }
                if let Some(desc) = &vp8 {
                    if desc.picture_start && tid == 0 {
                        d.temporal = d.target.temporal;
                    }
                    if tid > d.temporal {
                        self.thinned += 1;
                        m.drop_packet(ssrc, seq);
                        d.pictures.drop_picture(desc);
                        continue;
                    }
                }
            }
            if let Some((seq, ts)) = m.rewrite(ssrc, seq, ts, clock_rate, now) {
                if m.is_newest(seq) {
                    d.frame_open = !marker;
                }
                let vp8_ids = vp8.as_ref().and_then(|desc| d.pictures.rewrite(desc));
                out.push(Forward { down: *down_key, subscriber: d.subscriber, seq, ts, vp8_ids });
            }
        }
        for down in late_start {
            want_keyframe |= !self.switch_from_cache(now, down);
        }
        if want_keyframe {
            self.request_keyframe(now, up, layer);
        }
        record
    }

    /// The recording's layer of `up` (a sender report of another layer must not re-anchor it).
    pub fn recorded_layer(&self, up: UpTrackKey) -> u8 {
        self.up_tracks.get(&up).map_or(0, |t| t.recorded)
    }

    /// The subscriber's downlink estimate, in bits per second, from its subscribe connection's
    /// congestion control, and the share of the last second's packets it lost (called every room
    /// tick). When even the lowest layers do not fit, video is suspended and tried again later
    /// (see [`super::bwe`]); the subscriber is told about a suspension either way.
    ///
    /// Otherwise each of its video down tracks gets the layer its share of the estimate allows
    /// (see [`super::layers`]), but only downward on the estimate's word: GCC's estimate on a link
    /// that was never full says nothing about what it would carry. Upward, the room first asks
    /// the driver for a probe ([`Output::Probe`]: 100 ms of media topped up with padding to the
    /// rate the higher layers would need plus a margin), and climbs only as far as what the link
    /// delivered meanwhile covers ([`Room::on_probe_result`]). A probe that shows too little, or
    /// during which the estimate falls, makes the next one wait (see [`Climb`]); a lossy link is
    /// not probed.
    pub fn on_bandwidth(&mut self, now: Instant, subscriber: ParticipantKey, estimate_bps: u64, loss: f64) {
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        p.estimate_bps = Some(estimate_bps);
        p.down_loss_sum += loss;
        p.down_loss_n += 1;
        p.first_estimate_at.get_or_insert(now);
        let p = &*p;
        let mut downs = Vec::new();
        let mut ladders = Vec::new();
        // The estimate covers everything sent to the subscriber: its audio comes first.
        let mut audio_bps = 0;
        for key in &p.down_tracks {
            let Some(d) = self.down_tracks.get(key) else { continue };
            let Some(t) = self.up_tracks.get(&d.up) else { continue };
            if !t.codec.is_video() && !t.muted_by_host {
                audio_bps += t.layers[0].meter.bps(now, 0);
            }
            if !t.codec.is_video() || t.muted_by_host {
                continue;
            }
            downs.push(*key);
            ladders.push(Ladder::from_meters(t.layers.iter().map(|l| &l.meter), now));
        }
        // What video costs at the least: every track on its cheapest step.
        let need: u64 = ladders.iter().filter_map(|l| l.steps.first()).map(|s| s.1).sum();
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        if let Some(change) = p.video_gate.on_estimate(now, estimate_bps, need) {
            self.gate_changed(now, subscriber, change, estimate_bps);
            return;
        }
        if p.video_gate.suspended() {
            return;
        }
        let mut picks = Vec::new();
        let budget = ((estimate_bps as f64 * BUDGET_SHARE) as u64).saturating_sub(audio_bps);
        allocate(&ladders, budget, &mut picks);
        // Where each track's target sits on its ladder: its highest step not above it.
        let ats: Vec<usize> = downs
            .iter()
            .zip(&ladders)
            .map(|(key, ladder)| {
                let target = self.down_tracks.get(key).map_or(Choice::TOP, |d| d.target);
                ladder.steps.iter().rposition(|(c, _)| *c <= target).unwrap_or(0)
            })
            .collect();
        let cost = |picks: &[usize]| -> u64 {
            audio_bps + ladders.iter().zip(picks).filter_map(|(l, &i)| l.steps.get(i)).map(|s| s.1).sum::<u64>()
        };
        let up = picks.iter().zip(&ats).any(|(p, a)| p > a);
        let down = picks.iter().zip(&ats).any(|(p, a)| p < a);
        let Some(p) = self.participants.get_mut(&subscriber) else { return };
        p.down_limited = picks.iter().zip(&ladders).any(|(&i, l)| i + 1 < l.steps.len());
        if down {
            // A step down needs no proof; tracks the estimate would raise meanwhile stay.
            if !p.climb.wants_down(now) {
                return;
            }
            p.probe = ProbeState::Idle;
            for (pick, at) in picks.iter_mut().zip(&ats) {
                *pick = (*pick).min(*at);
            }
            self.apply_picks(now, subscriber, &downs, &ladders, &picks, estimate_bps);
            return;
        }
        p.climb.settled();
        if !up {
            if matches!(p.probe, ProbeState::Sent(_)) {
                // The estimate fell while the probe was out: the link did not take it well.
                p.climb.failed(now);
            }
            p.probe = ProbeState::Idle;
            return;
        }
        // The estimate would allow more. A climb needs a probe showing the link delivers it.
        match p.probe {
            ProbeState::Measured(delivered, at) if now.saturating_duration_since(at) <= PROOF_FRESH => {
                let proven = ((delivered as f64 / PROOF_MARGIN) as u64).saturating_sub(audio_bps);
                let mut proof = Vec::new();
                allocate(&ladders, budget.min(proven), &mut proof);
                for ((q, pick), at) in proof.iter_mut().zip(&picks).zip(&ats) {
                    *q = (*q).clamp(*at, *pick);
                }
                p.probe = ProbeState::Idle;
                if proof.iter().zip(&ats).any(|(q, a)| q > a) {
                    p.climb.climbed(now);
                    self.apply_picks(now, subscriber, &downs, &ladders, &proof, estimate_bps);
                } else {
                    p.climb.failed(now);
                    self.outputs.push_back(Output::ProbeFailed { subscriber, delivered_kbps: delivered / 1000 });
                }
            }
            ProbeState::Measured(..) => p.probe = ProbeState::Idle,
            ProbeState::Sent(at) if now.saturating_duration_since(at) > PROBE_TIMEOUT => {
                p.probe = ProbeState::Idle;
                p.climb.failed(now);
                self.outputs.push_back(Output::ProbeFailed { subscriber, delivered_kbps: 0 });
            }
            ProbeState::Sent(_) => {}
            ProbeState::Idle if loss < PROBE_MAX_LOSS && p.climb.may_try(now) => {
                // Probe for what the estimate allows, but at most twice what is sent now, or the
                // next step whole when that is more.
                let current = cost(&ats);
                let one: Vec<usize> =
                    ladders.iter().zip(&ats).zip(&picks).map(|((l, &a), &pk)| pk.min(one_step_up(l, a))).collect();
                let target = cost(&picks).min((current * PROBE_MAX_FACTOR).max(cost(&one)));
                let target = (target as f64 * PROBE_MARGIN) as u64;
                p.probe = ProbeState::Sent(now);
                self.outputs.push_back(Output::Probe { subscriber, rate_bps: target, duration: PROBE_CLUSTER });
            }
            ProbeState::Idle => {}
        }
    }

    /// What the driver measured for the subscriber's latest probe: bits per second its downlink
    /// delivered while the padding went out (0 when too little arrived to tell).
    pub fn on_probe_result(&mut self, now: Instant, subscriber: ParticipantKey, delivered_bps: u64) {
        if let Some(p) = self.participants.get_mut(&subscriber) {
            if matches!(p.probe, ProbeState::Sent(_)) {
                p.probe = ProbeState::Measured(delivered_bps, now);
            }
        }
    }

    /// A sequence number and timestamp for one padding packet of a probe to `subscriber`, on a
    /// video down track that is forwarding and between two frames; `None` when there is none.
    pub fn padding_slot(&mut self, subscriber: ParticipantKey) -> Option<(DownTrackKey, u16, u32)> {
        let p = self.participants.get(&subscriber)?;
        for key in &p.down_tracks {
            let Some(d) = self.down_tracks.get_mut(key) else { continue };
            let video = self.up_tracks.get(&d.up).is_some_and(|t| t.codec.is_video());
            if !video || d.suspended || d.current.is_none() || d.frame_open {
                continue;
            }
            if let Some((seq, ts)) = d.munger.as_mut().and_then(|m| m.insert_padding()) {
                return Some((*key, seq, ts));
            }
        }
        None
    }

    /// Moves the subscriber's video down tracks to the chosen ladder steps.
    fn apply_picks(
        &mut self,
        now: Instant,
        subscriber: ParticipantKey,
        downs: &[DownTrackKey],
        ladders: &[Ladder],
        picks: &[usize],
        estimate_bps: u64,
    ) {
        for ((key, ladder), &pick) in downs.iter().zip(ladders).zip(picks) {
            let Some(d) = self.down_tracks.get_mut(key) else { continue };
            let Some(&(choice, _)) = ladder.steps.get(pick) else { continue };
            // The top step means "the best there is": a layer that starts later is taken too.
            let target = if pick + 1 == ladder.steps.len() { Choice::TOP } else { choice };
            if target != d.target {
                d.target = target;
                self.outputs.push_back(Output::LayerTarget {
                    subscriber,
                    up: d.up,
                    spatial: choice.spatial,
                    temporal: choice.temporal,
                    estimate_kbps: estimate_bps / 1000,
                });
            }
        }
        self.refresh_wants(now, downs);
    }

    fn gate_changed(&mut self, now: Instant, subscriber: ParticipantKey, change: GateChange, estimate_bps: u64) {
        let Some(p) = self.participants.get(&subscriber) else { return };
        let suspended = change == GateChange::Suspend;
        let downs = p.down_tracks.clone();
        let mut resumed = Vec::new();
        for key in downs {
            let Some(d) = self.down_tracks.get_mut(&key) else { continue };
            let Some(t) = self.up_tracks.get(&d.up) else { continue };
            if !t.codec.is_video() {
                continue;
            }
            d.suspended = suspended;
            if !suspended {
                // Back on the cheapest step; the allocation raises it as the estimate allows.
                d.current = None;
                d.target = Choice { spatial: 0, temporal: 0 };
                d.want = t.available(now, 0);
                if let Some(m) = d.munger.as_mut() {
                    m.rebase();
                }
                resumed.push((key, d.up, d.want));
            }
        }
        for (down, up, layer) in resumed {
            if !self.switch_from_cache(now, down) {
                self.request_keyframe(now, up, layer);
            }
        }
        let event = RoomEvent::VideoSuspended { suspended, estimate_kbps: estimate_bps / 1000 };
        self.outputs.push_back(Output::Event { to: subscriber, event });
    }

    /// Every room tick: each video down track aims at the layer nearest its target that the
    /// publisher is sending (a browser stops its top encodings when its uplink or CPU is short),
    /// and asks for a keyframe of a layer it must switch to.
    pub fn on_tick(&mut self, now: Instant) {
        let downs: Vec<DownTrackKey> = self.down_tracks.keys().copied().collect();
        self.refresh_wants(now, &downs);
        if self.next_network_eval.is_none_or(|t| now >= t) {
            self.next_network_eval = Some(now + EVALUATE_EVERY);
            self.evaluate_networks(now);
        }
    }

    /// Measures every participant's links over the window since the last evaluation (see
    /// [`super::quality`]); a participant whose shown level changes is announced to the room
    /// and reported as [`Output::NetworkChanged`].
    fn evaluate_networks(&mut self, now: Instant) {
        let mut changed = Vec::new();
        for (&key, p) in &mut self.participants {
            let mut s = Sample { reconnecting: p.connection == ConnectionState::Reconnecting, ..Sample::default() };
            for up in &p.up_tracks {
                let Some(t) = self.up_tracks.get_mut(up) else { continue };
                let mut last_packet = t.published_at;
                for l in &mut t.layers {
                    let (expected, in_order) = (l.stats.expected(), l.in_order_packets);
                    let window = expected.saturating_sub(l.evaluated.0);
                    // Capped at what was expected: packets of another SSRC (the stats follow the
                    // first one's numbers) may arrive in order without moving `expected`.
                    s.up_expected += window;
                    s.up_in_order += in_order.saturating_sub(l.evaluated.1).min(window);
                    l.evaluated = (expected, in_order);
                    last_packet = last_packet.max(l.stats.last_packet_at.unwrap_or(last_packet));
                }
                let muted = match t.info.kind {
                    MediaKind::Audio => p.audio_muted,
                    MediaKind::Video => p.video_muted,
                };
                // A shared screen that does not change may send nothing for long.
                if muted || t.info.source == TrackSource::Screen {
                    continue;
                }
                s.up_live_tracks += 1;
                if now.saturating_duration_since(last_packet) >= STALL {
                    s.up_stalled_tracks += 1;
                }
            }
            s.down_loss_permille =
                (p.down_loss_n > 0).then(|| (p.down_loss_sum / f64::from(p.down_loss_n) * 1000.0).round() as u32);
            (p.down_loss_sum, p.down_loss_n) = (0.0, 0);
            s.down_video_suspended = p.video_gate.suspended();
            s.down_limited = p.down_limited
                && !s.down_video_suspended
                && p.first_estimate_at.is_some_and(|t| now.saturating_duration_since(t) >= ESTIMATE_WARMUP);
            if let Some(quality) = p.network.update(s.classify()) {
                let estimate_kbps = p.estimate_bps.map(|b| b / 1000);
                self.outputs.push_back(Output::NetworkChanged { participant: key, quality, sample: s, estimate_kbps });
                changed.push(key);
            }
        }
        for key in changed {
            self.broadcast_updated(key);
        }
    }

    fn refresh_wants(&mut self, now: Instant, downs: &[DownTrackKey]) {
        let mut requests = Vec::new();
        for key in downs {
            let Some(d) = self.down_tracks.get_mut(key) else { continue };
            let Some(t) = self.up_tracks.get(&d.up) else { continue };
            if !t.codec.is_video() || d.munger.is_none() {
                continue;
            }
            d.want = t.available(now, d.target.spatial);
            if !d.suspended && d.current != Some(d.want) && t.layers[usize::from(d.want)].meter.active(now) {
                requests.push((*key, d.up, d.want));
            }
        }
        for (down, up, layer) in requests {
            if !self.switch_from_cache(now, down) {
                self.request_keyframe(now, up, layer);
            }
        }
    }

    /// Switches `down` to its wanted layer at once from that layer's cached GOP, when the GOP
    /// fits in [`CoreConfig::switch_replay_link_time`] of the subscriber's downlink estimate (no
    /// limit before there is an estimate) and in `switch_replay_layer_time` of the layer's own
    /// rate; the replay goes out as [`Output::Replay`]. False when it cannot: the switch then
    /// waits for a keyframe.
    fn switch_from_cache(&mut self, now: Instant, down: DownTrackKey) -> bool {
        let Some(d) = self.down_tracks.get_mut(&down) else { return false };
        let Some(t) = self.up_tracks.get(&d.up) else { return false };
        let link =
            self.participants.get(&d.subscriber).and_then(|p| p.estimate_bps).map_or(usize::MAX, |bps| {
                (bps as f64 / 8.0 * self.config.switch_replay_link_time.as_secs_f64()) as usize
            });
        let m = &t.layers[usize::from(d.want)].meter;
        let layer_bps = m.bps(now, m.top_temporal());
        let own = (layer_bps as f64 / 8.0 * self.config.switch_replay_layer_time.as_secs_f64()) as usize;
        let max_bytes = link.min(own);
        let mut packets = Vec::new();
        let layer = d.want;
        if !d.replay_gop(t, layer, now, max_bytes, &mut packets) {
            return false;
        }
        self.switch_replays += 1;
        self.outputs.push_back(Output::Replay { subscriber: d.subscriber, down, layer, packets });
        true
    }

    /// The recorder needs a keyframe of `up` (to start or cut a segment); throttled like any
    /// subscriber's request.
    pub fn recorder_wants_keyframe(&mut self, now: Instant, up: UpTrackKey) {
        let layer = self.recorded_layer(up);
        self.request_keyframe(now, up, layer);
    }

    /// The zone a participant is in, as text (for the recording manifest).
    pub fn zone_name(&self, key: ParticipantKey) -> Option<String> {
        self.participants.get(&key).map(|p| p.zone.to_string())
    }

    // ---- time -------------------------------------------------------------------------------

    /// The next instant [`Room::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keyframes = self
            .up_tracks
            .values()
            .flat_map(|t| &t.layers)
            .filter(|l| l.keyframe_pending)
            .filter_map(|l| l.last_keyframe_request.map(|l| l + self.config.pli_interval));
        let people = self
            .participants
            .values()
            .flat_map(|p| [p.reconnect_deadline, p.last_media.map(|t| t + self.config.peer_timeout)]);
        keyframes.chain(people.flatten()).chain(self.next_speaker_eval).min()
    }

    /// Compares loudness per zone and announces a new speaker to that zone.
    fn evaluate_speakers(&mut self, now: Instant) {
        let Some(due) = self.next_speaker_eval else { return };
        if now < due {
            return;
        }
        // Loudest voice per zone this round.
        let mut loudest: HashMap<Zone, (ParticipantKey, u32)> = HashMap::new();
        for t in self.up_tracks.values_mut() {
            if t.info.kind != MediaKind::Audio {
                continue;
            }
            if !t.level_seen {
                t.loudness.decay();
            }
            t.level_seen = false;
            let Some(p) = self.participants.get(&t.publisher) else { continue };
            if t.muted_by_host || !t.loudness.is_voice() || !p.zone.carries_media() {
                continue;
            }
            let v = t.loudness.value();
            let e = loudest.entry(p.zone).or_insert((t.publisher, v));
            if v > e.1 {
                *e = (t.publisher, v);
            }
        }
        let zones: std::collections::BTreeSet<Zone> =
            self.participants.values().map(|p| p.zone).filter(|z| z.carries_media()).collect();
        for zone in zones {
            let pick = loudest.get(&zone).map(|(k, _)| *k);
            let changed = self.speakers.entry(zone).or_default().evaluate(pick);
            if let Some(k) = changed {
                let Some(id) = self.participants.get(&k).map(|p| p.info.id.clone()) else { continue };
                let event = RoomEvent::ActiveSpeaker { participant_id: id };
                for (to, p) in &self.participants {
                    if p.zone == zone {
                        self.outputs.push_back(Output::Event { to: *to, event: event.clone() });
                    }
                }
            }
        }
        let any_audio = self.up_tracks.values().any(|t| t.info.kind == MediaKind::Audio);
        self.next_speaker_eval = any_audio.then_some(now + SPEAKER_INTERVAL);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate_speakers(now);
        let interval = self.config.pli_interval;
        let due: Vec<(UpTrackKey, u8)> = self
            .up_tracks
            .iter()
            .flat_map(|(k, t)| t.layers.iter().enumerate().map(move |(i, l)| (*k, i as u8, l)))
            .filter(|(_, _, l)| l.keyframe_pending && l.last_keyframe_request.is_none_or(|at| now >= at + interval))
            .map(|(k, i, _)| (k, i))
            .collect();
        for (up, layer) in due {
            self.request_keyframe(now, up, layer);
        }
        let mut gone = Vec::new();
        for (key, p) in &self.participants {
            if p.reconnect_deadline.is_some_and(|d| now >= d) {
                gone.push((*key, LeaveCause::NetworkLost));
            } else if p.last_media.is_some_and(|t| now >= t + self.config.peer_timeout) {
                gone.push((*key, LeaveCause::MediaTimeout));
            }
        }
        for (key, cause) in gone {
            self.leave(now, key, cause);
        }
    }

    // ---- internals --------------------------------------------------------------------------

    fn subscribe_to_existing(&mut self, subscriber: ParticipantKey, keys: &mut KeyAlloc) {
        let ups: Vec<UpTrackKey> = self.up_tracks.keys().copied().collect();
        for up in ups {
            self.maybe_subscribe(subscriber, up, keys);
        }
    }

    fn maybe_subscribe(&mut self, subscriber: ParticipantKey, up: UpTrackKey, keys: &mut KeyAlloc) {
        let (Some(track), Some(sub)) = (self.up_tracks.get(&up), self.participants.get(&subscriber)) else { return };
        let Some(publ) = self.participants.get(&track.publisher) else { return };
        let (s, p) = (Subject { info: &sub.info, zone: sub.zone }, Subject { info: &publ.info, zone: publ.zone });
        if !self.policy.may_receive(s, p, &track.info) {
            return;
        }
        if sub.down_tracks.iter().any(|d| self.down_tracks.get(d).is_some_and(|d| d.up == up)) {
            return; // already subscribed
        }
        let down = keys.down_track();
        let suspended = track.codec.is_video() && sub.video_gate.suspended();
        self.down_tracks.insert(
            down,
            DownTrack {
                up,
                subscriber,
                munger: None,
                current: None,
                // The lowest layer first: small keyframes reach a weak link at once, and the
                // estimate raises it (see `Climb`).
                target: Choice { spatial: 0, temporal: Choice::TOP.temporal },
                want: 0,
                temporal: Choice::TOP.temporal,
                pictures: PictureMunger::default(),
                frame_open: false,
                suspended,
            },
        );
        if let Some(t) = self.up_tracks.get_mut(&up) {
            t.route.push(down);
        }
        if let Some(s) = self.participants.get_mut(&subscriber) {
            s.down_tracks.push(down);
        }
        self.outputs.push_back(Output::AddDownTrack { subscriber, down, up });
    }

    /// Forget a down track; with `tell`, ask the driver to remove its sender.
    fn drop_down_track(&mut self, down: DownTrackKey, tell: bool) {
        let Some(d) = self.down_tracks.remove(&down) else { return };
        if let Some(t) = self.up_tracks.get_mut(&d.up) {
            t.route.retain(|k| *k != down);
        }
        if let Some(s) = self.participants.get_mut(&d.subscriber) {
            s.down_tracks.retain(|k| *k != down);
            if tell {
                self.outputs.push_back(Output::RemoveDownTrack { subscriber: d.subscriber, down });
            }
        }
    }

    fn view_of(&self, key: ParticipantKey) -> Option<ParticipantView> {
        self.participants.get(&key).map(|p| ParticipantView {
            id: p.info.id.clone(),
            display_name: p.info.display_name.clone(),
            role: p.info.role,
            site_id: p.info.site_id.clone(),
            group: p.info.group.clone(),
            zone: p.zone,
            queue_position: (p.zone == Zone::Lobby).then(|| {
                1 + self.participants.values().filter(|o| o.zone == Zone::Lobby && o.zone_order < p.zone_order).count()
            }),
            audio_muted: p.audio_muted,
            video_muted: p.video_muted,
            audio_muted_by_host: p.audio_muted_by_host,
            video_muted_by_host: p.video_muted_by_host,
            hand_raised: p.hand_raised,
            connection: p.connection,
            network: p.network.shown(),
        })
    }

    fn track_view(&self, t: &UpTrack) -> Option<TrackView> {
        let p = self.participants.get(&t.publisher)?;
        Some(TrackView {
            track_id: t.info.track_id.clone(),
            participant_id: p.info.id.clone(),
            kind: t.info.kind,
            source: t.info.source,
            codec: t.info.mime.clone(),
        })
    }

    /// Tells everyone who may know, the participant itself included, its new state.
    fn broadcast_updated(&mut self, key: ParticipantKey) {
        if let Some(view) = self.view_of(key) {
            let event = RoomEvent::ParticipantUpdated(view);
            for (to, p) in &self.participants {
                if *to == key || p.zone.carries_media() {
                    self.outputs.push_back(Output::Event { to: *to, event: event.clone() });
                }
            }
        }
    }

    /// Everyone in the room and every published track, as `key` may see them: a participant in a
    /// waiting zone learns nothing of the others (a witness must not follow the hearing before
    /// testifying, not even who speaks or joins).
    pub fn snapshot_for(&self, key: ParticipantKey) -> (Vec<ParticipantView>, Vec<TrackView>) {
        let waiting = self.participants.get(&key).is_some_and(|p| !p.zone.carries_media());
        if waiting {
            return (self.view_of(key).into_iter().collect(), Vec::new());
        }
        self.snapshot()
    }

    /// Session-wide state; waiting zones learn whether the session is locked, not who is featured.
    fn broadcast_session(&mut self) {
        let full = RoomEvent::SessionUpdated { locked: self.locked, spotlight: self.spotlight_id() };
        let waiting = RoomEvent::SessionUpdated { locked: self.locked, spotlight: None };
        for (to, p) in &self.participants {
            let event = if p.zone.carries_media() { full.clone() } else { waiting.clone() };
            self.outputs.push_back(Output::Event { to: *to, event });
        }
    }

    /// Brings `key`'s subscriptions, and everyone's subscriptions to `key`'s tracks, in line with
    /// the policy after its zone changed: missing down tracks are added, forbidden ones removed.
    fn reconcile(&mut self, key: ParticipantKey, keys: &mut KeyAlloc) {
        // Remove what the policy no longer allows.
        let affected: Vec<DownTrackKey> = self
            .down_tracks
            .iter()
            .filter(|(_, d)| d.subscriber == key || self.up_tracks.get(&d.up).is_some_and(|t| t.publisher == key))
            .map(|(k, _)| *k)
            .collect();
        for down in affected {
            let Some(d) = self.down_tracks.get(&down) else { continue };
            let allowed = (|| {
                let t = self.up_tracks.get(&d.up)?;
                let s = self.participants.get(&d.subscriber)?;
                let p = self.participants.get(&t.publisher)?;
                Some(self.policy.may_receive(
                    Subject { info: &s.info, zone: s.zone },
                    Subject { info: &p.info, zone: p.zone },
                    &t.info,
                ))
            })()
            .unwrap_or(false);
            if !allowed {
                self.drop_down_track(down, true);
            }
        }
        // Add what it now allows.
        let ups: Vec<(UpTrackKey, ParticipantKey)> = self.up_tracks.iter().map(|(k, t)| (*k, t.publisher)).collect();
        let people: Vec<ParticipantKey> = self.participants.keys().copied().collect();
        for (up, publisher) in ups {
            if publisher == key {
                for s in &people {
                    self.maybe_subscribe(*s, up, keys);
                }
            } else {
                self.maybe_subscribe(key, up, keys);
            }
        }
    }

    fn set_zone(&mut self, key: ParticipantKey, zone: Zone, keys: &mut KeyAlloc) -> Result<(), ControlError> {
        let Some(p) = self.participants.get(&key) else { return Err(ControlError::BadTarget) };
        if p.zone == zone {
            return Ok(());
        }
        // A group's representatives in the session's media zones are limited.
        if let (Some(group), true) = (&p.info.group, zone.carries_media()) {
            let present = self
                .participants
                .values()
                .filter(|o| o.info.key != key && o.zone.carries_media() && o.info.group.as_ref() == Some(group))
                .count();
            if present >= MAX_REPRESENTATIVES {
                return Err(ControlError::GroupLimit);
            }
        }
        let was_lobby = p.zone == Zone::Lobby;
        let was_waiting = !p.zone.carries_media();
        self.arrivals += 1;
        let p = self.participants.get_mut(&key).expect("checked");
        p.zone = zone;
        p.zone_order = self.arrivals;
        self.outputs.push_back(Output::ZoneChanged { participant: key, zone });
        self.reconcile(key, keys);
        self.broadcast_updated(key);
        if was_waiting && zone.carries_media() {
            // Out of waiting: now it may know who is here and what they publish.
            let others: Vec<ParticipantKey> = self.participants.keys().copied().filter(|k| *k != key).collect();
            for k in others {
                if let Some(view) = self.view_of(k) {
                    self.outputs.push_back(Output::Event { to: key, event: RoomEvent::ParticipantJoined(view) });
                }
            }
            let tracks: Vec<TrackView> =
                self.up_tracks.values().filter(|t| t.publisher != key).filter_map(|t| self.track_view(t)).collect();
            for t in tracks {
                self.outputs.push_back(Output::Event { to: key, event: RoomEvent::TrackPublished(t) });
            }
        }
        if was_lobby {
            // Everyone behind moved up one place.
            let waiting: Vec<_> =
                self.participants.iter().filter(|(_, o)| o.zone == Zone::Lobby).map(|(k, _)| *k).collect();
            for k in waiting {
                self.broadcast_updated(k);
            }
        }
        Ok(())
    }

    /// Who has waited longest in the lobby.
    pub fn next_in_queue(&self) -> Option<ParticipantKey> {
        self.participants.values().filter(|p| p.zone == Zone::Lobby).min_by_key(|p| p.zone_order).map(|p| p.info.key)
    }

    fn target(&self, t: ParticipantKey) -> Result<&Participant, ControlError> {
        self.participants.get(&t).ok_or(ControlError::BadTarget)
    }

    pub fn zone_of(&self, key: ParticipantKey) -> Option<Zone> {
        self.participants.get(&key).map(|p| p.zone)
    }

    /// Carries out a control action by `actor`, if its role allows and the target fits.
    pub fn control(
        &mut self,
        now: Instant,
        actor: ParticipantKey,
        control: Control,
        keys: &mut KeyAlloc,
    ) -> Result<Option<ParticipantKey>, ControlError> {
        let a = self.participants.get(&actor).ok_or(ControlError::NotAllowed)?;
        let (actor_role, actor_host) = (a.info.role, policy(a.info.role).host);
        if !policy(actor_role).may(control.action()) {
            return Err(ControlError::NotAllowed);
        }
        match control {
            Control::PauseRecording | Control::ResumeRecording => {}
            Control::Admit(t) => {
                if self.target(t)?.zone != Zone::Lobby {
                    return Err(ControlError::BadTarget);
                }
                self.set_zone(t, Zone::Main, keys)?;
            }
            Control::Deny(t) => {
                if self.target(t)?.zone != Zone::Lobby {
                    return Err(ControlError::BadTarget);
                }
                self.leave(now, t, LeaveCause::Denied);
            }
            Control::Move(t, zone) => {
                self.target(t)?;
                self.set_zone(t, zone, keys)?;
            }
            Control::Mute(t, kind) | Control::Unmute(t, kind) => {
                self.target(t)?;
                let muted = matches!(control, Control::Mute(..));
                let p = self.participants.get_mut(&t).expect("checked");
                match kind {
                    MediaKind::Audio => p.audio_muted_by_host = muted,
                    MediaKind::Video => p.video_muted_by_host = muted,
                }
                let ups = p.up_tracks.clone();
                for up in ups {
                    if let Some(track) = self.up_tracks.get_mut(&up) {
                        if track.info.kind == kind {
                            track.muted_by_host = muted;
                        }
                    }
                }
                self.broadcast_updated(t);
            }
            Control::Remove(t) => {
                self.target(t)?;
                self.leave(now, t, LeaveCause::Removed);
            }
            Control::Lock | Control::Unlock => {
                self.locked = matches!(control, Control::Lock);
                self.broadcast_session();
            }
            Control::Spotlight(t) => {
                if let Some(t) = t {
                    self.target(t)?;
                }
                self.spotlight = t;
                self.broadcast_session();
            }
            Control::RaiseHand(t) | Control::LowerHand(t) => {
                // Anyone raises or lowers their own hand; only hosts touch another's.
                if t != actor && !actor_host {
                    return Err(ControlError::NotAllowed);
                }
                self.target(t)?;
                let p = self.participants.get_mut(&t).expect("checked");
                p.hand_raised = matches!(control, Control::RaiseHand(_));
                self.broadcast_updated(t);
            }
            Control::CallWitness(t) => {
                let p = self.target(t)?;
                if p.info.role != Role::Witness || p.zone != Zone::WitnessWaiting {
                    return Err(ControlError::BadTarget);
                }
                self.set_zone(t, Zone::Main, keys)?;
            }
            Control::CallNext => {
                let next = self.next_in_queue().ok_or(ControlError::QueueEmpty)?;
                self.set_zone(next, Zone::Main, keys)?;
                return Ok(Some(next));
            }
            Control::DismissWitness(t) => {
                let p = self.target(t)?;
                if p.info.role != Role::Witness || p.zone == Zone::WitnessWaiting {
                    return Err(ControlError::BadTarget);
                }
                self.set_zone(t, Zone::WitnessWaiting, keys)?;
            }
        }
        Ok(None)
    }

    /// Sends an event about `subject` to everyone else who may know of it: nobody in a waiting
    /// zone hears about others.
    fn broadcast_except(&mut self, subject: ParticipantKey, event: RoomEvent) {
        for (key, p) in &self.participants {
            if *key != subject && p.zone.carries_media() {
                self.outputs.push_back(Output::Event { to: *key, event: event.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests;
