//! A real WebRTC test participant: signalling v1 over WebSocket (docs/protocol.md) plus two
//! `webrtc` peer connections — `publish` (client offers, sends Opus + VP8/H.264 from fixture
//! files at real rate) and `subscribe` (server offers, client answers every renegotiation and
//! records every RTP packet it receives).
//!
//! Everything that waits takes a timeout and fails with a message naming the client and what it
//! was waiting for. Nothing sleeps for a fixed time except the media pacer and the ping timer.
//!
//! The media halves ([`PublishSide`], [`SubscribeSide`]) do not depend on the WebSocket, so
//! `tests/harness_selfcheck.rs` wires them back to back to check the harness without a server.

pub use super::fixtures::VideoCodec;
use super::fixtures::{self, Fixture, MediaFrame};
use super::latency::{LatencyProbe, LatencyTap};
use super::rtp_check::{self, AssembledFrame, FrameStats, PacketRef, SdpMedia, SeqReport};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use qiao::media::tap::{Tap, TapHooks};
use rtc::interceptor::{Attribute, PacerBuilder, Packet, Registry, Slot, TaggedPacket};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

/// Default bound for signalling waits in tests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Payload types the publish side registers (its offer carries only these).
pub const PUBLISH_PT_OPUS: u8 = 111;
pub const PUBLISH_PT_VP8: u8 = 96;
pub const PUBLISH_PT_H264: u8 = 102;
/// RTX for VP8 (`apt=96`), offered only with `ClientOptions::simulcast_rtx`.
pub const PUBLISH_PT_VP8_RTX: u8 = 97;
/// fmtp of the published H.264 (constrained baseline 3.1, packetization-mode 1).
pub const PUBLISH_H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

// ════════════════════════════════ options ════════════════════════════════

/// What a client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    pub audio: bool,
    pub video: Option<VideoCodec>,
}

impl Media {
    pub fn audio_video(codec: VideoCodec) -> Media {
        Media { audio: true, video: Some(codec) }
    }
    pub fn audio_only() -> Media {
        Media { audio: true, video: None }
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Label used in failure messages (defaults to the display name given to `connect`).
    pub name: String,
    /// `ping` period (the protocol requires ≤ 10 s).
    pub ping_interval: Duration,
    /// Bound for connecting + `joined`.
    pub join_timeout: Duration,
    /// Bound for `publish_answer` + ICE/DTLS connected on the publish connection.
    pub publish_timeout: Duration,
    /// Clip to publish as video instead of the codec's default fixture (e.g.
    /// `fixtures::vp8_cbr` for load benchmarks). Must be in the codec `publish` is given.
    pub video_fixture: Option<Arc<Fixture>>,
    /// Clip to publish as audio instead of the default Opus fixture (e.g. the flash/beep clip).
    pub audio_fixture: Option<Arc<Fixture>>,
    /// What the video track is declared as in `publish_offer` (`camera` unless set, e.g. `screen`
    /// for a participant presenting evidence by screen share).
    pub video_source: Option<&'static str>,
    /// Local address both peer connections bind their UDP socket to (`127.0.0.1:0` unless set).
    /// The load benchmark sets another: Janus gathers no loopback candidates.
    pub udp_addr: Option<String>,
    /// Stamps every published RTP payload and looks up every received one
    /// (`RecvPacket::sent_at`): the load benchmark's latency through the server. Off in tests.
    pub latency_probe: Option<Arc<LatencyProbe>>,
    /// Publish the video as simulcast: these clips (lowest first, e.g.
    /// `fixtures::vp8_simulcast()`) as encodings `q`, `h`, `f` of one track, VP8 only.
    pub simulcast: Option<Vec<Arc<Fixture>>>,
    /// Simulcast layers are resent as Chromium resends them: over RTX (RFC 4588) on an SSRC no
    /// SDP line names, each packet tagged with the `mid` and `repaired-rtp-stream-id` header
    /// extensions (see [`RepairTags`]). Off: resends repeat the layer's own SSRC.
    pub simulcast_rtx: bool,
    /// How long the video clip waits before its first frame once streaming starts (audio starts
    /// at once). The load benchmark staggers its publishers over one key-frame interval, as
    /// independent cameras are: started together, every clip would send its key frames in the
    /// same instant.
    pub video_start_delay: Duration,
    /// The publish connection paces what it sends, as libwebrtc does: at this many bits per
    /// second, in bursts of at most [`PUBLISH_BURST`] of it. Off (`None`), every frame's packets
    /// leave together.
    pub publish_pacing_bps: Option<f64>,
}

/// The longest burst a paced publish connection sends at once, in time at its pacing rate:
/// libwebrtc's pacer sends up to 40 ms of its rate at once (its burst interval).
pub const PUBLISH_BURST: Duration = Duration::from_millis(40);

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            name: "client".into(),
            ping_interval: Duration::from_secs(5),
            join_timeout: DEFAULT_TIMEOUT,
            publish_timeout: DEFAULT_TIMEOUT,
            video_fixture: None,
            audio_fixture: None,
            video_source: None,
            udp_addr: None,
            latency_probe: None,
            simulcast: None,
            simulcast_rtx: false,
            video_start_delay: Duration::ZERO,
            publish_pacing_bps: None,
        }
    }
}

impl ClientOptions {
    fn udp_addr(&self) -> &str {
        self.udp_addr.as_deref().unwrap_or("127.0.0.1:0")
    }
}

// ════════════════════════════════ recorded media ════════════════════════════════

/// One RTP packet as received on a subscribe-side remote track.
#[derive(Debug, Clone)]
pub struct RecvPacket {
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub arrival: Instant,
    /// When a publish side in this process sent this payload (only with
    /// `ClientOptions::latency_probe`).
    pub sent_at: Option<Instant>,
}

/// Everything received on one remote track of the subscribe connection.
#[derive(Debug, Clone)]
pub struct RecvTrack {
    /// msid track id (= `track_id` in `subscribe_offer.tracks`).
    pub track_id: String,
    /// msid stream id (the protocol says: the publisher's participant id).
    pub stream_id: String,
    /// Publisher per `subscribe_offer.tracks[].participant_id` (falls back to `stream_id`).
    pub publisher: String,
    /// "audio" / "video".
    pub kind: String,
    /// Codec MIME type the remote track reported at open (e.g. "video/VP8").
    pub mime: String,
    /// SSRCs the track reported at open.
    pub announced_ssrcs: Vec<u32>,
    /// Packets in arrival order.
    pub packets: Vec<RecvPacket>,
    pub opened_at: Instant,
    /// The remote track's event stream ended (OnEnded or the connection closed).
    pub ended: bool,
}

impl RecvTrack {
    pub fn payload_types(&self) -> BTreeSet<u8> {
        self.packets.iter().map(|p| p.payload_type).collect()
    }
    pub fn ssrcs(&self) -> BTreeSet<u32> {
        self.packets.iter().map(|p| p.ssrc).collect()
    }
    pub fn seqs(&self) -> Vec<u16> {
        self.packets.iter().map(|p| p.seq).collect()
    }
    pub fn timestamps(&self) -> Vec<u32> {
        self.packets.iter().map(|p| p.timestamp).collect()
    }
    pub fn seq_report(&self) -> SeqReport {
        rtp_check::check_sequence(&self.seqs())
    }
    pub fn packet_refs(&self) -> Vec<PacketRef<'_>> {
        self.packets
            .iter()
            .map(|p| PacketRef { seq: p.seq, timestamp: p.timestamp, marker: p.marker, payload: &p.payload })
            .collect()
    }
    /// Frames assembled according to the track's MIME type (empty for audio).
    pub fn frames(&self) -> Vec<AssembledFrame> {
        let refs = self.packet_refs();
        if self.mime.eq_ignore_ascii_case(MIME_TYPE_VP8) {
            rtp_check::assemble_vp8(&refs)
        } else if self.mime.eq_ignore_ascii_case(MIME_TYPE_H264) {
            rtp_check::assemble_h264(&refs)
        } else {
            vec![]
        }
    }
    pub fn frame_stats(&self) -> FrameStats {
        rtp_check::frame_stats(&self.frames())
    }
    /// One line for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "track {} ({} {} from {}): {} packets, PTs {:?}, SSRCs {:?}, seq: {}{}",
            self.track_id,
            self.kind,
            self.mime,
            self.publisher,
            self.packets.len(),
            self.payload_types(),
            self.ssrcs(),
            self.seq_report(),
            if self.kind == "video" { format!(", frames: {}", self.frame_stats()) } else { String::new() }
        )
    }
}

/// A track described by `subscribe_offer.tracks` / `track_published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    pub track_id: String,
    pub participant_id: String,
    pub kind: String,
    pub source: String,
    pub codec: String,
}

impl TrackInfo {
    pub fn from_json(v: &Value) -> Option<TrackInfo> {
        Some(TrackInfo {
            track_id: v.get("track_id")?.as_str()?.to_string(),
            participant_id: v.get("participant_id")?.as_str()?.to_string(),
            kind: v.get("kind").and_then(Value::as_str).unwrap_or("").to_string(),
            source: v.get("source").and_then(Value::as_str).unwrap_or("").to_string(),
            codec: v.get("codec").and_then(Value::as_str).unwrap_or("").to_string(),
        })
    }
}

/// One negotiated subscribe m-line: what the server offered and what we answered.
#[derive(Debug, Clone)]
pub struct NegotiatedMedia {
    pub mid: Option<String>,
    pub kind: String,
    /// (stream id, track id) from the offer's msid.
    pub msid: Option<(String, String)>,
    pub offered: SdpMedia,
    pub answered: SdpMedia,
}

impl NegotiatedMedia {
    /// Payload types in our answer (i.e. accepted), with their encoding names.
    pub fn accepted(&self) -> Vec<(u8, String)> {
        self.answered
            .payload_types
            .iter()
            .map(|pt| {
                (*pt, self.answered.codec_name(*pt).or_else(|| self.offered.codec_name(*pt)).unwrap_or("?").to_string())
            })
            .collect()
    }
}

/// Pairs the m-lines of an offer and an answer (same index).
pub fn negotiated_media(offer_sdp: &str, answer_sdp: &str) -> Vec<NegotiatedMedia> {
    let offered = rtp_check::parse_sdp_media(offer_sdp);
    let answered = rtp_check::parse_sdp_media(answer_sdp);
    offered
        .into_iter()
        .zip(answered)
        .map(|(o, a)| NegotiatedMedia {
            mid: o.mid.clone().or_else(|| a.mid.clone()),
            kind: o.kind.clone(),
            msid: o.msid.clone(),
            offered: o,
            answered: a,
        })
        .collect()
}

/// Records remote tracks of a subscribe connection.
#[derive(Default)]
pub struct Recorder {
    label: String,
    tracks: Mutex<HashMap<String, RecvTrack>>,
    /// Live remote-track handles, for writing RTCP (PLI) back.
    handles: Mutex<HashMap<String, Arc<dyn TrackRemote>>>,
    /// track_id → publisher info, from every `subscribe_offer.tracks` seen.
    offered: Mutex<HashMap<String, TrackInfo>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Fills `RecvPacket::sent_at` (see `ClientOptions::latency_probe`).
    latency_probe: Option<Arc<LatencyProbe>>,
}

impl Recorder {
    pub fn new(
        label: impl Into<String>,
        errors: Arc<Mutex<Vec<String>>>,
        latency_probe: Option<Arc<LatencyProbe>>,
    ) -> Recorder {
        Recorder { label: label.into(), errors, latency_probe, ..Default::default() }
    }

    pub fn note_offered(&self, info: TrackInfo) {
        self.offered.lock().unwrap().insert(info.track_id.clone(), info);
    }

    fn spawn_track(self: &Arc<Self>, track: Arc<dyn TrackRemote>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let track_id = track.track_id().await;
            let stream_id = track.stream_id().await;
            let kind = track.kind().await.to_string();
            let ssrcs = track.ssrcs().await;
            let mut mime = String::new();
            for ssrc in &ssrcs {
                if let Some(c) = track.codec(*ssrc).await {
                    mime = c.mime_type;
                    break;
                }
            }
            let mut codec_known = !mime.is_empty();
            let publisher = this
                .offered
                .lock()
                .unwrap()
                .get(&track_id)
                .map(|i| i.participant_id.clone())
                .unwrap_or_else(|| stream_id.clone());
            {
                let mut tracks = this.tracks.lock().unwrap();
                if tracks.contains_key(&track_id) {
                    this.errors
                        .lock()
                        .unwrap()
                        .push(format!("{}: on_track fired twice for track id {track_id}", this.label));
                }
                tracks.insert(
                    track_id.clone(),
                    RecvTrack {
                        track_id: track_id.clone(),
                        stream_id,
                        publisher,
                        kind,
                        mime,
                        announced_ssrcs: ssrcs,
                        packets: Vec::new(),
                        opened_at: Instant::now(),
                        ended: false,
                    },
                );
            }
            this.handles.lock().unwrap().insert(track_id.clone(), Arc::clone(&track));
            while let Some(evt) = track.poll().await {
                match evt {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        let arrival = Instant::now();
                        // The stack may open a track before it has mapped the codec (media that
                        // arrives the moment the connection is up): learn it from the packets.
                        // Now and then the stack never maps it; the codec the server announced for
                        // the track names it then (`forwarding::check_track` still checks the
                        // payload types against the negotiated SDP).
                        if !codec_known {
                            let announced = || {
                                let offered = this.offered.lock().unwrap();
                                offered.get(&track_id).map(|i| i.codec.clone()).filter(|c| c.contains('/'))
                            };
                            if let Some(mime) = track.codec(p.header.ssrc).await.map(|c| c.mime_type).or_else(announced)
                            {
                                codec_known = true;
                                if let Some(t) = this.tracks.lock().unwrap().get_mut(&track_id) {
                                    t.mime = mime;
                                }
                            }
                        }
                        let rp = RecvPacket {
                            seq: p.header.sequence_number,
                            timestamp: p.header.timestamp,
                            payload_type: p.header.payload_type,
                            ssrc: p.header.ssrc,
                            marker: p.header.marker,
                            sent_at: this.latency_probe.as_ref().and_then(|l| l.sent_at(&p.payload, arrival)),
                            payload: p.payload.clone(),
                            arrival,
                        };
                        if let Some(t) = this.tracks.lock().unwrap().get_mut(&track_id) {
                            t.packets.push(rp);
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            if let Some(t) = this.tracks.lock().unwrap().get_mut(&track_id) {
                t.ended = true;
            }
            this.handles.lock().unwrap().remove(&track_id);
        });
    }

    /// All tracks ever received, oldest first.
    pub fn tracks(&self) -> Vec<RecvTrack> {
        let mut v: Vec<RecvTrack> = self.tracks.lock().unwrap().values().cloned().collect();
        v.sort_by_key(|t| t.opened_at);
        v
    }

    /// Runs `f` on the most recently opened track from `publisher` of `kind`, under the lock.
    pub fn with_track<R>(&self, publisher: &str, kind: &str, f: impl FnOnce(&RecvTrack) -> R) -> Option<R> {
        let tracks = self.tracks.lock().unwrap();
        tracks.values().filter(|t| t.publisher == publisher && t.kind == kind).max_by_key(|t| t.opened_at).map(f)
    }

    pub fn track(&self, publisher: &str, kind: &str) -> Option<RecvTrack> {
        self.with_track(publisher, kind, |t| t.clone())
    }

    pub fn track_by_id(&self, track_id: &str) -> Option<RecvTrack> {
        self.tracks.lock().unwrap().get(track_id).cloned()
    }

    /// One line per track, for failure messages.
    pub fn describe(&self) -> String {
        let t = self.tracks();
        if t.is_empty() {
            return "no remote tracks".into();
        }
        t.iter().map(|t| format!("  {}", t.summary())).collect::<Vec<_>>().join("\n")
    }

    /// Sends a PLI for the newest video track of `publisher`.
    pub async fn send_pli(&self, publisher: &str) -> Result<()> {
        let (track_id, media_ssrc) = self
            .with_track(publisher, "video", |t| {
                let ssrc = t.packets.last().map(|p| p.ssrc).or_else(|| t.announced_ssrcs.first().copied());
                (t.track_id.clone(), ssrc)
            })
            .ok_or_else(|| {
                anyhow!("{}: no video track from {publisher} to send a PLI on; have:\n{}", self.label, self.describe())
            })?;
        let media_ssrc = media_ssrc.ok_or_else(|| anyhow!("{}: video track {track_id} has no SSRC yet", self.label))?;
        let handle = self
            .handles
            .lock()
            .unwrap()
            .get(&track_id)
            .cloned()
            .ok_or_else(|| anyhow!("{}: video track {track_id} has ended", self.label))?;
        handle
            .write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })])
            .await
            .map_err(|e| anyhow!("{}: write_rtcp(PLI) failed: {e}", self.label))
    }
}

// ════════════════════════════════ RTCP tap (publish side) ════════════════════════════════

/// Marks inbound RTCP compounds that contain a PLI or FIR with
/// `Attribute::DeliverToApplication`, so they reach `TrackLocal::poll` as
/// `TrackLocalEvent::OnRtcpPacket`. Without it inbound RTCP never reaches the application
/// (see webrtc's `TrackLocalEvent::OnRtcpPacket` doc and rtc's examples/rtcp-processing).
/// Registered last (slot 14 000, application-most) so every default interceptor sees everything.
pub struct KeyframeRequestTap;

fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl TapHooks for KeyframeRequestTap {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| is_keyframe_request(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
    }
}

/// Keyframe requests received by the publish side.
#[derive(Debug, Default)]
pub struct KeyframeRequests {
    pub pli: AtomicU64,
    pub fir: AtomicU64,
}

// ════════════════════════════════ ICE candidate gate ════════════════════════════════

/// A locally gathered candidate ready to be signalled; `None` candidate = end of candidates.
#[derive(Debug, Clone)]
pub struct OutCandidate {
    /// "publish" or "subscribe".
    pub pc: &'static str,
    pub candidate: Option<RTCIceCandidateInit>,
}

impl OutCandidate {
    /// The protocol's `candidate` message.
    pub fn to_message(&self) -> Value {
        let c = self.candidate.as_ref().map(|c| {
            json!({
                "candidate": c.candidate,
                "sdp_mid": c.sdp_mid,
                "sdp_m_line_index": c.sdp_mline_index,
                "username_fragment": c.username_fragment,
            })
        });
        json!({"v": 1, "type": "candidate", "pc": self.pc, "candidate": c})
    }
}

pub type CandidateSink = Arc<dyn Fn(OutCandidate) + Send + Sync>;

/// Holds gathered candidates until the description they belong to has been signalled (so the
/// server never sees a candidate before the offer/answer), then forwards them to the sink.
pub struct CandidateGate {
    pc: &'static str,
    sink: CandidateSink,
    inner: Mutex<GateInner>,
}

#[derive(Default)]
struct GateInner {
    /// (sdp_mid, ufrag) once open.
    open: Option<(String, String)>,
    pending: Vec<Option<String>>,
}

impl CandidateGate {
    pub fn new(pc: &'static str, sink: CandidateSink) -> Arc<CandidateGate> {
        Arc::new(CandidateGate { pc, sink, inner: Mutex::new(GateInner::default()) })
    }

    fn make(&self, open: &(String, String), cand: Option<String>) -> OutCandidate {
        OutCandidate {
            pc: self.pc,
            candidate: cand.map(|candidate| RTCIceCandidateInit {
                candidate,
                sdp_mid: Some(open.0.clone()),
                sdp_mline_index: Some(0),
                username_fragment: Some(open.1.clone()),
                url: None,
            }),
        }
    }

    fn push(&self, cand: Option<String>) {
        let out = {
            let mut g = self.inner.lock().unwrap();
            match &g.open {
                Some(open) => Some(self.make(open, cand)),
                None => {
                    g.pending.push(cand);
                    None
                }
            }
        };
        if let Some(out) = out {
            (self.sink)(out);
        }
    }

    /// Opens the gate using the first m-line's mid and the ICE ufrag of `local_sdp`.
    pub fn open_with(&self, local_sdp: &str) {
        let mid =
            rtp_check::parse_sdp_media(local_sdp).first().and_then(|m| m.mid.clone()).unwrap_or_else(|| "0".into());
        let ufrag = rtp_check::sdp_attribute(local_sdp, "ice-ufrag").unwrap_or_default();
        let flush: Vec<OutCandidate> = {
            let mut g = self.inner.lock().unwrap();
            if g.open.is_some() {
                return;
            }
            let open = (mid, ufrag);
            let pending = std::mem::take(&mut g.pending);
            let out = pending.into_iter().map(|c| self.make(&open, c)).collect();
            g.open = Some(open);
            out
        };
        for c in flush {
            (self.sink)(c);
        }
    }
}

// ════════════════════════════════ peer connection plumbing ════════════════════════════════

struct PcHandler {
    gate: Arc<CandidateGate>,
    state: watch::Sender<RTCPeerConnectionState>,
    recorder: Option<Arc<Recorder>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PcHandler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.gate.push(Some(init.candidate)),
            Err(e) => eprintln!("[{}] cannot serialise local candidate: {e}", self.gate.pc),
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gate.push(None);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Must not block the driver: the recorder spawns its own task.
        if let Some(r) = &self.recorder {
            r.spawn_track(track);
        }
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(t, p)| RTCPFeedback { typ: t.into(), parameter: p.into() })
        .collect()
}

pub fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: PUBLISH_PT_OPUS,
    }
}

pub fn video_codec(codec: VideoCodec) -> RTCRtpCodecParameters {
    match codec {
        VideoCodec::Vp8 => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: PUBLISH_PT_VP8,
        },
        VideoCodec::H264 => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: PUBLISH_H264_FMTP.to_owned(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: PUBLISH_PT_H264,
        },
    }
}

enum PcRole {
    /// Only the published codecs; RTCP tap registered.
    Publish(Media),
    /// `register_default_codecs` (like a browser: VP8, VP9, H.264 variants, AV1, Opus, RTX…).
    Subscribe,
}

async fn build_pc(
    role: PcRole,
    opts: &ClientOptions,
    gate: Arc<CandidateGate>,
    recorder: Option<Arc<Recorder>>,
    repair_tags: Option<RepairTags>,
) -> Result<(Arc<dyn PeerConnection>, watch::Receiver<RTCPeerConnectionState>)> {
    let mut me = MediaEngine::default();
    let publish = match role {
        PcRole::Publish(media) => {
            if media.audio {
                me.register_codec(opus_codec(), RtpCodecKind::Audio).context("register Opus")?;
            }
            if let Some(v) = media.video {
                me.register_codec(video_codec(v), RtpCodecKind::Video).context("register video codec")?;
            }
            if opts.simulcast.is_some() {
                rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers(
                    &mut me,
                )
                .context("simulcast header extensions")?;
                if opts.simulcast_rtx {
                    let rtx = RTCRtpCodecParameters {
                        rtp_codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_RTX.to_owned(),
                            clock_rate: 90_000,
                            channels: 0,
                            sdp_fmtp_line: format!("apt={PUBLISH_PT_VP8}"),
                            rtcp_feedback: vec![],
                        },
                        payload_type: PUBLISH_PT_VP8_RTX,
                    };
                    me.register_codec(rtx, RtpCodecKind::Video).context("register RTX")?;
                }
            }
            true
        }
        PcRole::Subscribe => {
            me.register_default_codecs().context("register default codecs")?;
            false
        }
    };
    let mut registry =
        register_default_interceptors(Registry::new(), &mut me).context("register default interceptors")?;
    if publish {
        registry = registry.with(Slot::from(14_000), Tap::new(KeyframeRequestTap));
        if let Some(probe) = &opts.latency_probe {
            registry = registry
                .with(Slot::from(super::latency::LATENCY_TAP_SLOT), Tap::new(LatencyTap::new(Arc::clone(probe))));
        }
        if let Some(bps) = opts.publish_pacing_bps {
            let burst = bps * PUBLISH_BURST.as_secs_f64();
            registry =
                registry.with(Slot::Pacer, PacerBuilder::new().with_target_bitrate(bps).with_burst_bits(burst).build());
        }
        if let Some(tags) = repair_tags {
            // Between the NACK responder (4 000), which writes the RTX packets, and the wire.
            registry = registry.with(Slot::from(3_000), Tap::new(tags));
        }
    }
    // mDNS off: host candidates carry plain IPs, and nothing binds port 5353.
    let setting_engine =
        SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
    let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
    let handler = Arc::new(PcHandler { gate, state: state_tx, recorder });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![opts.udp_addr().to_string()])
        .build()
        .await
        .context("PeerConnectionBuilder::build")?;
    Ok((Arc::new(pc) as Arc<dyn PeerConnection>, state_rx))
}

async fn wait_pc_connected(
    label: &str,
    state: &mut watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
) -> Result<()> {
    let res = tokio::time::timeout(timeout, async {
        loop {
            let s = *state.borrow_and_update();
            match s {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(anyhow!("{label}: peer connection went {s} before connecting"))
                }
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(anyhow!("{label}: peer connection handler dropped"));
            }
        }
    })
    .await;
    match res {
        Ok(r) => r,
        Err(_) => bail!("{label}: peer connection not connected within {timeout:?} (state {})", *state.borrow()),
    }
}

// ════════════════════════════════ publish side ════════════════════════════════

/// One published track.
pub struct LocalTrack {
    pub kind: &'static str,
    pub track_id: String,
    pub ssrc: u32,
    pub codec: RTCRtpCodecParameters,
    pub track: Arc<TrackLocalStaticSample>,
    pub sender: Arc<dyn RtpSender>,
    fixture: Arc<Fixture>,
    /// Samples written so far.
    pub samples_sent: Arc<AtomicU64>,
    /// Key-frame samples written so far.
    pub keyframes_sent: Arc<AtomicU64>,
    stream_task: Mutex<Option<JoinHandle<()>>>,
    /// Simulcast: (RID, SSRC, clip) per encoding, lowest first; empty otherwise. `samples_sent`
    /// then counts frames of the lowest encoding.
    pub layers: Vec<(&'static str, u32, Arc<Fixture>)>,
    /// Simulcast: a keyframe request arrived for that encoding (it skips to its next keyframe,
    /// as an encoder would make one).
    layer_keyframe: Arc<Vec<AtomicBool>>,
}

impl LocalTrack {
    /// Stops the pacer task of this track (if running).
    pub fn stop_streaming(&self) {
        if let Some(t) = self.stream_task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl Drop for LocalTrack {
    fn drop(&mut self) {
        self.stop_streaming();
    }
}

/// The `publish` peer connection: sends fixture media.
pub struct PublishSide {
    pub label: String,
    pub pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    pub gate: Arc<CandidateGate>,
    pub audio: Option<LocalTrack>,
    pub video: Option<LocalTrack>,
    pub keyframe_requests: Arc<KeyframeRequests>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Declared source of the video track (`camera` or `screen`).
    pub video_source: &'static str,
    /// `ClientOptions::simulcast_rtx`, and what its tap adds to each RTX packet.
    simulcast_rtx: bool,
    repair_tags: RepairTags,
    /// `ClientOptions::video_start_delay`.
    video_start_delay: Duration,
}

impl PublishSide {
    /// Builds the connection and adds a send-only transceiver per track. `stream_id` becomes the
    /// msid stream id (use the participant id).
    pub async fn new(
        label: &str,
        stream_id: &str,
        media: Media,
        sink: CandidateSink,
        errors: Arc<Mutex<Vec<String>>>,
    ) -> Result<PublishSide> {
        Self::new_with_options(label, stream_id, media, &ClientOptions::default(), sink, errors).await
    }

    /// Like `new`, with the fixtures, video source, UDP address and latency probe of `opts`.
    pub async fn new_with_options(
        label: &str,
        stream_id: &str,
        media: Media,
        opts: &ClientOptions,
        sink: CandidateSink,
        errors: Arc<Mutex<Vec<String>>>,
    ) -> Result<PublishSide> {
        if !media.audio && media.video.is_none() {
            bail!("{label}: nothing to publish");
        }
        let gate = CandidateGate::new("publish", sink);
        let repair_tags = RepairTags::default();
        let (pc, state) = build_pc(
            PcRole::Publish(media),
            opts,
            Arc::clone(&gate),
            None,
            opts.simulcast_rtx.then(|| repair_tags.clone()),
        )
        .await?;
        let keyframe_requests = Arc::new(KeyframeRequests::default());
        let mut side = PublishSide {
            label: label.to_string(),
            pc,
            state,
            gate,
            audio: None,
            video: None,
            keyframe_requests,
            errors,
            tasks: Mutex::new(Vec::new()),
            video_source: opts.video_source.unwrap_or("camera"),
            simulcast_rtx: opts.simulcast_rtx,
            repair_tags,
            video_start_delay: opts.video_start_delay,
        };
        if media.audio {
            let clip = opts.audio_fixture.clone().unwrap_or_else(fixtures::opus);
            side.audio = Some(side.add_track(stream_id, "audio", opus_codec(), clip).await?);
        }
        if let Some(v) = media.video {
            let clip = opts.video_fixture.clone().unwrap_or_else(|| fixtures::video(v));
            let layers = opts.simulcast.clone().unwrap_or_default();
            side.video = Some(side.add_track_with_layers(stream_id, "video", video_codec(v), clip, layers).await?);
        }
        Ok(side)
    }

    /// Adds a send-only track (the codec must be one this side registered, i.e. part of the
    /// `Media` it was built with). Needs a new offer/answer to take effect.
    pub async fn add_track(
        &self,
        stream_id: &str,
        kind: &'static str,
        codec: RTCRtpCodecParameters,
        fixture: Arc<Fixture>,
    ) -> Result<LocalTrack> {
        self.add_track_with_layers(stream_id, kind, codec, fixture, Vec::new()).await
    }

    /// Like `add_track`; with `layers` (lowest first) the track is sent as simulcast, one
    /// encoding per clip with RIDs `q`, `h`, `f`.
    pub async fn add_track_with_layers(
        &self,
        stream_id: &str,
        kind: &'static str,
        codec: RTCRtpCodecParameters,
        fixture: Arc<Fixture>,
        layers: Vec<Arc<Fixture>>,
    ) -> Result<LocalTrack> {
        let ssrc = rand::random::<u32>() | 1;
        let track_id = format!("{kind}-{}", uuid::Uuid::new_v4().simple());
        let rtp_kind = if kind == "audio" { RtpCodecKind::Audio } else { RtpCodecKind::Video };
        let layers: Vec<(&'static str, u32, Arc<Fixture>)> = super::simulcast::RIDS
            .iter()
            .zip(layers)
            .map(|(rid, clip)| (*rid, rand::random::<u32>() | 1, clip))
            .collect();
        let encodings = if layers.is_empty() {
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }]
        } else {
            layers
                .iter()
                .map(|(rid, ssrc, _)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.to_string(),
                        ssrc: Some(*ssrc),
                        rtx: self.simulcast_rtx.then(|| {
                            let rtx = rand::random::<u32>() | 1;
                            self.repair_tags.add_layer(rtx, rid);
                            RTCRtpRtxParameters { ssrc: rtx }
                        }),
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                })
                .collect()
        };
        let mst = MediaStreamTrack::new(
            stream_id.to_string(),
            track_id.clone(),
            format!("{}-{kind}", self.label),
            rtp_kind,
            encodings,
        );
        let track = Arc::new(
            TrackLocalStaticSample::new(Instant::now(), mst)
                .map_err(|e| anyhow!("{}: TrackLocalStaticSample::new({kind}): {e}", self.label))?,
        );
        let transceiver = self
            .pc
            .add_transceiver_from_track(
                Arc::clone(&track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(|e| anyhow!("{}: add_transceiver_from_track({kind}): {e}", self.label))?;
        let sender = transceiver
            .sender()
            .await
            .map_err(|e| anyhow!("{}: transceiver.sender(): {e}", self.label))?
            .ok_or_else(|| anyhow!("{}: {kind} transceiver has no sender", self.label))?;

        // Drain RTCP feedback for this track (only PLI/FIR reach it, see KeyframeRequestTap).
        // The track is bound by add_transceiver_from_track, so poll() has a receiver now.
        let counters = Arc::clone(&self.keyframe_requests);
        let t = Arc::clone(&track);
        // Simulcast: a PLI names one encoding's SSRC; that encoding jumps to its next keyframe.
        let layer_keyframe: Arc<Vec<AtomicBool>> = Arc::new(layers.iter().map(|_| AtomicBool::new(false)).collect());
        let layer_ssrcs: Vec<u32> = layers.iter().map(|(_, ssrc, _)| *ssrc).collect();
        let wanted = Arc::clone(&layer_keyframe);
        let task = tokio::spawn(async move {
            while let Some(evt) = t.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = evt {
                    for p in &packets {
                        let any = p.as_any();
                        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                            counters.pli.fetch_add(1, Ordering::SeqCst);
                            if let Some(i) = layer_ssrcs.iter().position(|s| *s == pli.media_ssrc) {
                                wanted[i].store(true, Ordering::Relaxed);
                            }
                        } else if any.is::<FullIntraRequest>() {
                            counters.fir.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        });
        self.tasks.lock().unwrap().push(task);

        Ok(LocalTrack {
            kind,
            track_id,
            ssrc,
            codec,
            track,
            sender,
            fixture,
            samples_sent: Arc::new(AtomicU64::new(0)),
            keyframes_sent: Arc::new(AtomicU64::new(0)),
            stream_task: Mutex::new(None),
            layers,
            layer_keyframe,
        })
    }

    /// `sources` map for `publish_offer`.
    pub fn sources(&self) -> Value {
        let mut m = serde_json::Map::new();
        if let Some(a) = &self.audio {
            m.insert(a.track_id.clone(), json!("microphone"));
        }
        if let Some(v) = &self.video {
            m.insert(v.track_id.clone(), json!(self.video_source));
        }
        Value::Object(m)
    }

    /// create_offer + set_local_description; returns the offer SDP (no candidates: trickle).
    pub async fn create_offer(&self) -> Result<String> {
        let offer =
            self.pc.create_offer(None).await.map_err(|e| anyhow!("{}: publish create_offer: {e}", self.label))?;
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| anyhow!("{}: publish set_local_description(offer): {e}", self.label))?;
        Ok(sdp)
    }

    pub async fn apply_answer(&self, sdp: &str) -> Result<()> {
        let desc = RTCSessionDescription::answer(sdp.to_string())
            .map_err(|e| anyhow!("{}: publish_answer SDP rejected by parser: {e}", self.label))?;
        self.pc.set_remote_description(desc).await.map_err(|e| {
            anyhow!("{}: publish set_remote_description(answer) failed: {e}\nanswer SDP:\n{sdp}", self.label)
        })
    }

    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let label = format!("{} publish", self.label);
        wait_pc_connected(&label, &mut self.state, timeout).await
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Starts writing the fixtures at real rate (looping). Call once connected.
    pub async fn start_streaming(&self) -> Result<()> {
        for lt in [&self.audio, &self.video].into_iter().flatten() {
            self.start_track(lt).await?;
        }
        Ok(())
    }

    /// Starts the pacer for one track (negotiated payload type from its sender).
    pub async fn start_track(&self, lt: &LocalTrack) -> Result<()> {
        let params = lt
            .sender
            .get_parameters()
            .await
            .map_err(|e| anyhow!("{}: {} sender get_parameters: {e}", self.label, lt.kind))?;
        let pt = params.rtp_parameters.codecs.first().map(|c| c.payload_type).ok_or_else(|| {
            anyhow!("{}: {} sender has no negotiated codec (publish answer rejected it?)", self.label, lt.kind)
        })?;
        if !lt.layers.is_empty() {
            let ext =
                |uri: &str| params.rtp_parameters.header_extensions.iter().find(|e| e.uri == uri).map(|e| e.id as u8);
            let (Some(mid_ext), Some(rid_ext)) =
                (ext(rtc::sdp::extmap::SDES_MID_URI), ext(rtc::sdp::extmap::SDES_RTP_STREAM_ID_URI))
            else {
                bail!("{}: simulcast needs the mid and rid header extensions negotiated", self.label);
            };
            let mut found = None;
            for t in self.pc.get_transceivers().await {
                let Ok(Some(s)) = t.sender().await else { continue };
                if s.track().track_id().await == lt.track_id {
                    found = t.mid().await.ok().flatten();
                }
            }
            let mid = found.ok_or_else(|| anyhow!("{}: simulcast transceiver has no mid", self.label))?;
            if self.simulcast_rtx {
                let rrid_ext = ext(rtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI)
                    .ok_or_else(|| anyhow!("{}: repaired-rtp-stream-id was not negotiated", self.label))?;
                self.repair_tags.set_extensions(mid_ext, rrid_ext, &mid);
            }
            let send = SimulcastSend {
                pt,
                mid,
                mid_ext,
                rid_ext,
                layers: lt.layers.clone(),
                keyframe_wanted: Arc::clone(&lt.layer_keyframe),
            };
            let task = tokio::spawn(stream_simulcast(
                format!("{} simulcast", self.label),
                Arc::clone(&lt.track),
                send,
                Arc::clone(&lt.samples_sent),
                Arc::clone(&lt.keyframes_sent),
                Arc::clone(&self.errors),
            ));
            if let Some(old) = lt.stream_task.lock().unwrap().replace(task) {
                old.abort();
            }
            return Ok(());
        }
        let start_delay = if lt.kind == "video" { self.video_start_delay } else { Duration::ZERO };
        let task = tokio::spawn(stream_fixture(
            format!("{} {}", self.label, lt.kind),
            start_delay,
            Arc::clone(&lt.track),
            lt.ssrc,
            pt,
            Arc::clone(&lt.fixture),
            Arc::clone(&lt.samples_sent),
            Arc::clone(&lt.keyframes_sent),
            Arc::clone(&self.errors),
        ));
        if let Some(old) = lt.stream_task.lock().unwrap().replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// Stops the track's pacer and removes its sender (needs a new offer/answer).
    pub async fn remove_track(&self, lt: &LocalTrack) -> Result<()> {
        lt.stop_streaming();
        self.pc.remove_track(&lt.sender).await.map_err(|e| anyhow!("{}: remove_track({}): {e}", self.label, lt.kind))
    }

    pub fn plis_received(&self) -> u64 {
        self.keyframe_requests.pli.load(Ordering::SeqCst)
    }
    pub fn firs_received(&self) -> u64 {
        self.keyframe_requests.fir.load(Ordering::SeqCst)
    }

    /// Stops streaming and closes the connection.
    pub async fn close(&self) {
        for lt in [&self.audio, &self.video].into_iter().flatten() {
            lt.stop_streaming();
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = self.pc.close().await;
    }
}

impl Drop for PublishSide {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_fixture(
    label: String,
    start_delay: Duration,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    fixture: Arc<Fixture>,
    sent: Arc<AtomicU64>,
    keyframes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let mut next = tokio::time::Instant::now() + start_delay;
    tokio::time::sleep_until(next).await;
    for frame in fixture.frames.iter().cycle() {
        let MediaFrame { data, duration, keyframe } = frame;
        let sample = Sample { data: data.clone(), duration: *duration, ..Sample::new(Instant::now()) };
        if let Err(e) = track.sample_writer(ssrc, payload_type).write_sample(&sample).await {
            errors.lock().unwrap().push(format!("{label}: write_sample failed, streaming stopped: {e}"));
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        if *keyframe {
            keyframes.fetch_add(1, Ordering::Relaxed);
        }
        if !duration.is_zero() {
            next += *duration;
            tokio::time::sleep_until(next).await;
        }
    }
}

/// Chromium's simulcast retransmissions, for a test client: the NACK responder writes each
/// layer's RTX packets without header extensions, and this tap (between it and the wire) adds
/// the `mid` and `repaired-rtp-stream-id` (RFC 8852) extensions that name the layer repaired.
/// Chromium sends them until the SSRC is acknowledged; on every packet is allowed too.
#[derive(Clone, Default)]
pub struct RepairTags(Arc<Mutex<RepairTagsInner>>);

#[derive(Default)]
struct RepairTagsInner {
    /// (RTX SSRC, RID of the layer it repairs).
    layers: Vec<(u32, Bytes)>,
    /// Negotiated extension ids and the transceiver's mid; `None` until negotiated.
    extensions: Option<(u8, u8, Bytes)>,
}

impl RepairTags {
    fn add_layer(&self, rtx_ssrc: u32, rid: &str) {
        self.0.lock().unwrap().layers.push((rtx_ssrc, Bytes::copy_from_slice(rid.as_bytes())));
    }
    fn set_extensions(&self, mid_ext: u8, rrid_ext: u8, mid: &str) {
        self.0.lock().unwrap().extensions = Some((mid_ext, rrid_ext, Bytes::copy_from_slice(mid.as_bytes())));
    }
}

impl TapHooks for RepairTags {
    fn on_write(&mut self, msg: &mut TaggedPacket) {
        let Packet::Rtp(p) = &mut msg.message.packet else { return };
        let inner = self.0.lock().unwrap();
        let Some((mid_ext, rrid_ext, mid)) = &inner.extensions else { return };
        let Some((_, rid)) = inner.layers.iter().find(|(ssrc, _)| *ssrc == p.header.ssrc) else { return };
        let _ = p.header.set_extension(*mid_ext, mid.clone());
        let _ = p.header.set_extension(*rrid_ext, rid.clone());
    }
}

/// What the simulcast pacer needs from the negotiation.
struct SimulcastSend {
    pt: u8,
    mid: String,
    mid_ext: u8,
    rid_ext: u8,
    layers: Vec<(&'static str, u32, Arc<Fixture>)>,
    keyframe_wanted: Arc<Vec<AtomicBool>>,
}

/// Writes every encoding's frame `i` together at the clip's rate (looping), packetized with
/// temporal-layer descriptors and the mid and rid extensions, as a browser's simulcast does.
async fn stream_simulcast(
    label: String,
    track: Arc<TrackLocalStaticSample>,
    s: SimulcastSend,
    sent: Arc<AtomicU64>,
    keyframes: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    use super::simulcast::{packetize, tid_of};
    let n = s.layers.len();
    let mut seq: Vec<u16> = (0..n).map(|_| rand::random()).collect();
    let mut pid: Vec<u16> = (0..n).map(|_| rand::random::<u16>() & 0x7fff).collect();
    let mut tl0: Vec<u8> = (0..n).map(|_| rand::random()).collect();
    let mut ts: u32 = rand::random();
    let mut payloads = Vec::new();
    // Each encoding's place in its clip: they advance together, except that one asked for a
    // keyframe skips ahead to its clip's next one.
    let mut pos: Vec<usize> = vec![0; n];
    let mut next = tokio::time::Instant::now();
    let (mid, rids): (Bytes, Vec<Bytes>) =
        (Bytes::from(s.mid.clone()), s.layers.iter().map(|(r, _, _)| Bytes::from_static(r.as_bytes())).collect());
    loop {
        let duration = s.layers[0].2.frames[pos[0] % s.layers[0].2.frames.len()].duration;
        for (l, (_, ssrc, clip)) in s.layers.iter().enumerate() {
            let len = clip.frames.len();
            if s.keyframe_wanted[l].swap(false, Ordering::Relaxed) {
                if let Some(k) = (pos[l]..pos[l] + len).find(|i| clip.frames[i % len].keyframe) {
                    pos[l] = k;
                }
            }
            let at = pos[l] % len;
            pos[l] += 1;
            let frame = &clip.frames[at];
            let tid = tid_of(at);
            if tid == 0 {
                tl0[l] = tl0[l].wrapping_add(1);
            }
            packetize(&frame.data, pid[l], tl0[l], tid, &mut payloads);
            let last = payloads.len() - 1;
            for (k, payload) in payloads.drain(..).enumerate() {
                let mut header = rtc::rtp::Header {
                    version: 2,
                    marker: k == last,
                    payload_type: s.pt,
                    sequence_number: seq[l],
                    timestamp: ts,
                    ssrc: *ssrc,
                    ..Default::default()
                };
                let _ = header.set_extension(s.mid_ext, mid.clone());
                let _ = header.set_extension(s.rid_ext, rids[l].clone());
                seq[l] = seq[l].wrapping_add(1);
                if let Err(e) = track.write_rtp(rtc::rtp::Packet { header, payload }).await {
                    errors.lock().unwrap().push(format!("{label}: write_rtp failed, streaming stopped: {e}"));
                    return;
                }
            }
            pid[l] = (pid[l] + 1) & 0x7fff;
            if l == 0 {
                sent.fetch_add(1, Ordering::Relaxed);
                if frame.keyframe {
                    keyframes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        ts = ts.wrapping_add((duration.as_secs_f64() * 90_000.0).round() as u32);
        next += duration;
        tokio::time::sleep_until(next).await;
    }
}

// ════════════════════════════════ subscribe side ════════════════════════════════

/// The `subscribe` peer connection: answers offers, records what arrives.
pub struct SubscribeSide {
    pub label: String,
    pub pc: Arc<dyn PeerConnection>,
    state: Mutex<watch::Receiver<RTCPeerConnectionState>>,
    pub gate: Arc<CandidateGate>,
    pub recorder: Arc<Recorder>,
    /// (offer, answer) SDP of every negotiation, oldest first.
    pub negotiations: Mutex<Vec<(String, String)>>,
}

impl SubscribeSide {
    pub async fn new(label: &str, sink: CandidateSink, errors: Arc<Mutex<Vec<String>>>) -> Result<SubscribeSide> {
        Self::new_with_options(label, &ClientOptions::default(), sink, errors).await
    }

    /// Like `new`, with the UDP address and latency probe of `opts`.
    pub async fn new_with_options(
        label: &str,
        opts: &ClientOptions,
        sink: CandidateSink,
        errors: Arc<Mutex<Vec<String>>>,
    ) -> Result<SubscribeSide> {
        let gate = CandidateGate::new("subscribe", sink);
        let recorder =
            Arc::new(Recorder::new(format!("{label} subscribe"), errors, opts.latency_probe.as_ref().map(Arc::clone)));
        let (pc, state) =
            build_pc(PcRole::Subscribe, opts, Arc::clone(&gate), Some(Arc::clone(&recorder)), None).await?;
        Ok(SubscribeSide {
            label: label.to_string(),
            pc,
            state: Mutex::new(state),
            gate,
            recorder,
            negotiations: Mutex::new(Vec::new()),
        })
    }

    /// set_remote_description(offer) → create_answer → set_local_description; returns the answer
    /// SDP (no candidates: trickle). Opens the candidate gate the first time.
    pub async fn answer(&self, offer_sdp: &str) -> Result<String> {
        let offer = RTCSessionDescription::offer(offer_sdp.to_string())
            .map_err(|e| anyhow!("{}: subscribe offer rejected by parser: {e}", self.label))?;
        self.pc.set_remote_description(offer).await.map_err(|e| {
            anyhow!("{}: subscribe set_remote_description(offer) failed: {e}\noffer SDP:\n{offer_sdp}", self.label)
        })?;
        let answer =
            self.pc.create_answer(None).await.map_err(|e| anyhow!("{}: subscribe create_answer: {e}", self.label))?;
        let sdp = answer.sdp.clone();
        self.pc
            .set_local_description(answer)
            .await
            .map_err(|e| anyhow!("{}: subscribe set_local_description(answer): {e}", self.label))?;
        self.negotiations.lock().unwrap().push((offer_sdp.to_string(), sdp.clone()));
        Ok(sdp)
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.state.lock().unwrap().clone();
        wait_pc_connected(&format!("{} subscribe", self.label), &mut rx, timeout).await
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.lock().unwrap().borrow()
    }

    /// m-lines of the latest negotiation.
    pub fn negotiated_media(&self) -> Vec<NegotiatedMedia> {
        self.negotiations.lock().unwrap().last().map(|(o, a)| negotiated_media(o, a)).unwrap_or_default()
    }

    /// Payload types our latest answer accepted on the m-line carrying `track_id` (by the offer's
    /// msid), with encoding names. `None` if no m-line carries that track.
    pub fn accepted_payload_types(&self, track_id: &str) -> Option<Vec<(u8, String)>> {
        self.negotiated_media()
            .into_iter()
            .find(|m| m.msid.as_ref().map(|(_, t)| t == track_id).unwrap_or(false))
            .map(|m| m.accepted())
    }
}

// ════════════════════════════════ signalling client ════════════════════════════════

/// How the WebSocket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// Close code from the server's close frame; `None` if the stream ended without one.
    pub code: Option<u16>,
    pub reason: String,
}

impl fmt::Display for CloseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "closed with {c} {:?}", self.reason),
            None => write!(f, "ended without close frame ({})", self.reason),
        }
    }
}

enum Outbound {
    Text(String),
    Close(u16, String),
}

struct Shared {
    name: String,
    /// Every JSON message from the server, in order.
    messages: Mutex<Vec<Value>>,
    closed: Mutex<Option<CloseInfo>>,
    notify: Notify,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Shared {
    fn push(&self, v: Value) {
        self.messages.lock().unwrap().push(v);
        self.notify.notify_waiters();
    }
    fn set_closed(&self, c: CloseInfo) {
        let mut g = self.closed.lock().unwrap();
        if g.is_none() {
            *g = Some(c);
        }
        drop(g);
        self.notify.notify_waiters();
    }
    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }
    fn recent_types(&self) -> String {
        let m = self.messages.lock().unwrap();
        let start = m.len().saturating_sub(20);
        m[start..].iter().map(|v| v["type"].as_str().unwrap_or("?").to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// A participant: WebSocket signalling + publish and subscribe peer connections.
pub struct TestClient {
    pub name: String,
    pub participant_id: String,
    /// The `joined` message.
    pub joined: Value,
    opts: ClientOptions,
    shared: Arc<Shared>,
    out_tx: mpsc::UnboundedSender<Outbound>,
    subscribe: Arc<SubscribeSide>,
    publish: Mutex<Option<Arc<tokio::sync::Mutex<PublishSide>>>>,
    /// Cheap clone of the publish side's counters (no async lock needed).
    keyframe_requests: Mutex<Option<Arc<KeyframeRequests>>>,
    ws_tasks: Mutex<Vec<JoinHandle<()>>>,
    other_tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TestClient {
    /// Connects, sends `join` and waits for `joined`. The subscribe connection exists from here
    /// on and answers every `subscribe_offer`.
    pub async fn connect(ws_url: &str, token: &str, name: &str) -> Result<TestClient> {
        Self::connect_with(ws_url, token, ClientOptions { name: name.to_string(), ..Default::default() }).await
    }

    /// `connect` + `publish(media)`.
    pub async fn join_and_publish(ws_url: &str, token: &str, name: &str, media: Media) -> Result<TestClient> {
        let c = Self::connect(ws_url, token, name).await?;
        c.publish(media).await?;
        Ok(c)
    }

    pub async fn connect_with(ws_url: &str, token: &str, opts: ClientOptions) -> Result<TestClient> {
        let name = opts.name.clone();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            name: name.clone(),
            messages: Mutex::new(Vec::new()),
            closed: Mutex::new(None),
            notify: Notify::new(),
            errors: Arc::clone(&errors),
        });
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outbound>();

        let (ws, _resp) = tokio::time::timeout(opts.join_timeout, tokio_tungstenite::connect_async(ws_url))
            .await
            .map_err(|_| anyhow!("{name}: WebSocket connect to {ws_url} timed out"))?
            .map_err(|e| anyhow!("{name}: WebSocket connect to {ws_url} failed: {e}"))?;
        let (mut ws_write, mut ws_read) = ws.split();

        // Writer: the only place that writes to the socket, so messages keep their order.
        let writer_shared = Arc::clone(&shared);
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let res = match m {
                    Outbound::Text(t) => ws_write.send(Message::text(t)).await,
                    Outbound::Close(code, reason) => {
                        let r = ws_write
                            .send(Message::Close(Some(CloseFrame {
                                code: CloseCode::from(code),
                                reason: reason.into(),
                            })))
                            .await;
                        if r.is_ok() {
                            // Keep the write half alive so tungstenite can finish the close
                            // handshake; stop writing.
                            std::future::pending::<()>().await;
                        }
                        r
                    }
                };
                if let Err(e) = res {
                    writer_shared.error(format!("{}: WebSocket write failed: {e}", writer_shared.name));
                    return;
                }
            }
        });

        // Subscribe side first, so it exists before the server can send an offer.
        let sub_out = out_tx.clone();
        let sub_sink: CandidateSink = Arc::new(move |c: OutCandidate| {
            let _ = sub_out.send(Outbound::Text(c.to_message().to_string()));
        });
        let subscribe = Arc::new(SubscribeSide::new_with_options(&name, &opts, sub_sink, Arc::clone(&errors)).await?);

        // Subscribe offers are handled strictly one after another.
        let (offer_tx, mut offer_rx) = mpsc::unbounded_channel::<Value>();
        let proto_sub = Arc::clone(&subscribe);
        let proto_shared = Arc::clone(&shared);
        let proto_out = out_tx.clone();
        let protocol = tokio::spawn(async move {
            while let Some(msg) = offer_rx.recv().await {
                let sdp = msg["sdp"].as_str().unwrap_or_default().to_string();
                if let Some(tracks) = msg["tracks"].as_array() {
                    for t in tracks {
                        match TrackInfo::from_json(t) {
                            Some(info) => proto_sub.recorder.note_offered(info),
                            None => proto_shared
                                .error(format!("{}: malformed track in subscribe_offer: {t}", proto_shared.name)),
                        }
                    }
                }
                match proto_sub.answer(&sdp).await {
                    Ok(answer) => {
                        let m = json!({"v": 1, "type": "subscribe_answer", "sdp": answer});
                        let _ = proto_out.send(Outbound::Text(m.to_string()));
                        proto_sub.gate.open_with(&answer);
                    }
                    Err(e) => proto_shared.error(format!("{e:#}")),
                }
            }
        });

        // Reader: records every message, hands subscribe offers to the protocol task.
        let reader_shared = Arc::clone(&shared);
        let reader = tokio::spawn(async move {
            let s = reader_shared;
            loop {
                match ws_read.next().await {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<Value>(t.as_str()) {
                        Ok(v) => {
                            if v["v"] != json!(1) {
                                s.error(format!("{}: server message without \"v\":1: {v}", s.name));
                            }
                            if v["type"] == "subscribe_offer" {
                                let _ = offer_tx.send(v.clone());
                            }
                            s.push(v);
                        }
                        Err(e) => s.error(format!("{}: non-JSON text frame ({e}): {t}", s.name)),
                    },
                    Some(Ok(Message::Binary(b))) => {
                        s.error(format!("{}: unexpected binary frame ({} bytes)", s.name, b.len()))
                    }
                    Some(Ok(Message::Close(frame))) => {
                        s.set_closed(match frame {
                            Some(f) => CloseInfo { code: Some(u16::from(f.code)), reason: f.reason.to_string() },
                            None => CloseInfo { code: None, reason: "close frame without code".into() },
                        });
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        s.set_closed(CloseInfo { code: None, reason: format!("read error: {e}") });
                        break;
                    }
                    None => {
                        s.set_closed(CloseInfo { code: None, reason: "stream ended".into() });
                        break;
                    }
                }
            }
        });

        let mut client = TestClient {
            name: name.clone(),
            participant_id: String::new(),
            joined: Value::Null,
            opts: opts.clone(),
            shared,
            out_tx,
            subscribe,
            publish: Mutex::new(None),
            keyframe_requests: Mutex::new(None),
            ws_tasks: Mutex::new(vec![reader, writer]),
            other_tasks: Mutex::new(vec![protocol]),
        };

        client.send(json!({
            "v": 1,
            "type": "join",
            "token": token,
            "client": {"user_agent": "qiao-test-client (webrtc-rs 0.21)", "version": env!("CARGO_PKG_VERSION")},
        }))?;
        let joined = client.wait_for("joined", opts.join_timeout, |m| m["type"] == "joined").await?;
        client.participant_id = joined["participant_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{name}: joined without participant_id: {joined}"))?
            .to_string();
        client.joined = joined;

        // Keepalive.
        let ping_out = client.out_tx.clone();
        let period = opts.ping_interval;
        let ping = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let m = json!({"v": 1, "type": "ping", "ts": ts});
                if ping_out.send(Outbound::Text(m.to_string())).is_err() {
                    return;
                }
            }
        });
        client.ws_tasks.lock().unwrap().push(ping);
        Ok(client)
    }

    /// Sends a JSON message as-is (add `"v": 1` yourself).
    pub fn send(&self, msg: Value) -> Result<()> {
        self.out_tx
            .send(Outbound::Text(msg.to_string()))
            .map_err(|_| anyhow!("{}: WebSocket writer has stopped", self.name))
    }

    /// Creates the publish connection, sends `publish_offer` (with `sources`), applies
    /// `publish_answer`, waits until ICE+DTLS are connected, then starts streaming the fixtures
    /// at real rate (looping).
    pub async fn publish(&self, media: Media) -> Result<()> {
        if self.publish.lock().unwrap().is_some() {
            bail!("{}: already publishing (renegotiation not implemented)", self.name);
        }
        let out = self.out_tx.clone();
        let sink: CandidateSink = Arc::new(move |c: OutCandidate| {
            let _ = out.send(Outbound::Text(c.to_message().to_string()));
        });
        let mut side = PublishSide::new_with_options(
            &self.name,
            &self.participant_id,
            media,
            &self.opts,
            sink,
            Arc::clone(&self.shared.errors),
        )
        .await?;
        let offer = side.create_offer().await?;
        let mark = self.mark();
        self.send(json!({
            "v": 1,
            "type": "publish_offer",
            "sdp": offer,
            "sources": side.sources(),
        }))?;
        // Candidates go out only after the offer (same ordered writer).
        side.gate.open_with(&offer);
        let reply = self
            .wait_for_since(mark, "publish_answer", self.opts.publish_timeout, |m| {
                m["type"] == "publish_answer" || m["type"] == "error"
            })
            .await?;
        if reply["type"] == "error" {
            bail!("{}: server answered publish_offer with error: {reply}", self.name);
        }
        let answer =
            reply["sdp"].as_str().ok_or_else(|| anyhow!("{}: publish_answer without sdp: {reply}", self.name))?;
        side.apply_answer(answer).await?;
        side.wait_connected(self.opts.publish_timeout).await.map_err(|e| anyhow!("{e:#}\n{}", self.diagnostics()))?;
        side.start_streaming().await?;
        *self.keyframe_requests.lock().unwrap() = Some(Arc::clone(&side.keyframe_requests));
        *self.publish.lock().unwrap() = Some(Arc::new(tokio::sync::Mutex::new(side)));
        Ok(())
    }

    /// Track ids of what this client publishes: (audio, video).
    pub async fn published_track_ids(&self) -> (Option<String>, Option<String>) {
        let p = self.publish.lock().unwrap().clone();
        match p {
            None => (None, None),
            Some(p) => {
                let p = p.lock().await;
                (p.audio.as_ref().map(|t| t.track_id.clone()), p.video.as_ref().map(|t| t.track_id.clone()))
            }
        }
    }

    /// (samples written, key-frame samples written) for the published video.
    pub async fn video_samples_sent(&self) -> (u64, u64) {
        let p = self.publish.lock().unwrap().clone();
        match p {
            None => (0, 0),
            Some(p) => {
                let p = p.lock().await;
                p.video
                    .as_ref()
                    .map(|v| (v.samples_sent.load(Ordering::Relaxed), v.keyframes_sent.load(Ordering::Relaxed)))
                    .unwrap_or((0, 0))
            }
        }
    }

    /// The published video's sample counter (`LocalTrack::samples_sent`), to read without the
    /// publish side's lock; `None` before `publish` or without video.
    pub async fn video_samples_counter(&self) -> Option<Arc<AtomicU64>> {
        let p = self.publish.lock().unwrap().clone()?;
        let p = p.lock().await;
        p.video.as_ref().map(|v| Arc::clone(&v.samples_sent))
    }

    // ───────────── server messages ─────────────

    /// Number of server messages received so far; pass to `wait_for_since` to ignore older ones.
    pub fn mark(&self) -> usize {
        self.shared.messages.lock().unwrap().len()
    }

    /// All server messages so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.shared.messages.lock().unwrap().clone()
    }

    pub fn messages_of_type(&self, ty: &str) -> Vec<Value> {
        self.shared.messages.lock().unwrap().iter().filter(|m| m["type"] == ty).cloned().collect()
    }

    /// `error` messages the server sent.
    pub fn server_errors(&self) -> Vec<Value> {
        self.messages_of_type("error")
    }

    /// Waits for a server message matching `pred`, including ones already received.
    pub async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        self.wait_for_since(0, what, timeout, pred).await
    }

    /// Waits for a server message matching `pred` among those received after `mark`.
    pub async fn wait_for_since(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        self.wait_for_index(mark, what, timeout, pred).await.map(|(_, v)| v)
    }

    /// Like `wait_for_since`, also returning the message's index (usable as a mark: pass
    /// `index + 1` to look only at later messages).
    pub async fn wait_for_index(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(usize, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some((i, v)) =
                self.shared.messages.lock().unwrap().iter().enumerate().skip(mark).find(|(_, m)| pred(m))
            {
                return Ok((i, v.clone()));
            }
            if let Some(c) = self.shared.closed.lock().unwrap().clone() {
                bail!(
                    "{}: WebSocket {c} while waiting for {what}; recent messages: [{}]{}",
                    self.name,
                    self.shared.recent_types(),
                    self.error_suffix()
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "{}: timed out after {timeout:?} waiting for {what}; recent messages: [{}]{}",
                    self.name,
                    self.shared.recent_types(),
                    self.error_suffix()
                );
            }
        }
    }

    /// Waits for a message of type `ty`, including ones already received.
    pub async fn wait_for_type(&self, ty: &str, timeout: Duration) -> Result<Value> {
        self.wait_for(ty, timeout, |m| m["type"] == ty).await
    }

    /// The `subscribe_offer` messages received so far.
    pub fn subscribe_offers(&self) -> Vec<Value> {
        self.messages_of_type("subscribe_offer")
    }

    /// Number of subscribe offers we have answered.
    pub fn negotiations_answered(&self) -> usize {
        self.subscribe.negotiations.lock().unwrap().len()
    }

    /// Waits until the subscribe side has *answered* a negotiation whose offer satisfies `pred`
    /// (checked on the offer message), after `mark` messages.
    pub async fn wait_subscribe_offer_answered(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let offer = self.wait_for_since(mark, what, timeout, |m| m["type"] == "subscribe_offer" && pred(m)).await?;
        let sdp = offer["sdp"].as_str().unwrap_or_default().to_string();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.subscribe.negotiations.lock().unwrap().iter().any(|(o, _)| *o == sdp) {
                return Ok(offer);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: subscribe_offer for {what} arrived but was not answered within {timeout:?}{}",
                    self.name,
                    self.error_suffix()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.closed.lock().unwrap().clone()
    }

    /// Waits for the WebSocket to close (server close frame or stream end).
    pub async fn wait_closed(&self, timeout: Duration) -> Result<CloseInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.close_info() {
                return Ok(c);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "{}: WebSocket still open after {timeout:?}; recent messages: [{}]",
                    self.name,
                    self.shared.recent_types()
                );
            }
        }
    }

    // ───────────── media ─────────────

    /// The subscribe side (recorder, negotiated SDPs).
    pub fn subscriber(&self) -> &Arc<SubscribeSide> {
        &self.subscribe
    }

    /// Snapshot of the newest remote track from `publisher` of `kind` ("audio"/"video").
    pub fn received(&self, publisher: &str, kind: &str) -> Option<RecvTrack> {
        self.subscribe.recorder.track(publisher, kind)
    }

    /// Runs `f` under the recorder lock (no copy of the packets).
    pub fn with_received<R>(&self, publisher: &str, kind: &str, f: impl FnOnce(&RecvTrack) -> R) -> Option<R> {
        self.subscribe.recorder.with_track(publisher, kind, f)
    }

    /// Every remote track ever received.
    pub fn received_tracks(&self) -> Vec<RecvTrack> {
        self.subscribe.recorder.tracks()
    }

    /// Polls (every 50 ms) until the newest track from `publisher` of `kind` satisfies `pred`.
    pub async fn wait_media(
        &self,
        what: &str,
        publisher: &str,
        kind: &str,
        timeout: Duration,
        pred: impl Fn(&RecvTrack) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.with_received(publisher, kind, &pred).unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: timed out after {timeout:?} waiting for {what} ({kind} from {publisher}); \
                     subscribe pc {}, negotiations answered {}; received:\n{}{}",
                    self.name,
                    self.subscribe.state(),
                    self.negotiations_answered(),
                    self.subscribe.recorder.describe(),
                    self.error_suffix()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a PLI on the subscribe-side video track received from `publisher`.
    pub async fn send_pli(&self, publisher: &str) -> Result<()> {
        self.subscribe.recorder.send_pli(publisher).await
    }

    /// PLIs received by this client's publish connection.
    pub fn plis_received(&self) -> u64 {
        self.keyframe_requests.lock().unwrap().as_ref().map(|k| k.pli.load(Ordering::SeqCst)).unwrap_or(0)
    }

    /// FIRs received by this client's publish connection.
    pub fn firs_received(&self) -> u64 {
        self.keyframe_requests.lock().unwrap().as_ref().map(|k| k.fir.load(Ordering::SeqCst)).unwrap_or(0)
    }

    /// Polls until `plis_received() + firs_received() > baseline`.
    pub async fn wait_keyframe_request(&self, baseline: u64, timeout: Duration) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.plis_received() + self.firs_received();
            if n > baseline {
                return Ok(n);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: no keyframe request (PLI/FIR) reached the publish connection within {timeout:?} (count stayed {n})",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ───────────── SDP ─────────────

    /// (offer, answer) of the latest subscribe negotiation.
    pub fn last_subscribe_sdp(&self) -> Option<(String, String)> {
        self.subscribe.negotiations.lock().unwrap().last().cloned()
    }

    /// m-lines of the latest subscribe negotiation.
    pub fn subscribe_media(&self) -> Vec<NegotiatedMedia> {
        self.subscribe.negotiated_media()
    }

    /// Payload types accepted in our latest subscribe answer for the m-line carrying `track_id`.
    pub fn subscribe_payload_types(&self, track_id: &str) -> Option<Vec<(u8, String)>> {
        self.subscribe.accepted_payload_types(track_id)
    }

    /// (offer, answer) of the publish negotiation.
    pub async fn publish_sdp(&self) -> Option<(String, String)> {
        let p = self.publish.lock().unwrap().clone()?;
        let p = p.lock().await;
        let local = p.pc.local_description().await?.sdp;
        let remote = p.pc.remote_description().await?.sdp;
        Some((local, remote))
    }

    // ───────────── health ─────────────

    /// Background failures (offer handling, write errors, protocol anomalies).
    pub fn background_errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Fails if anything went wrong in the background or the server sent `error`.
    pub fn assert_healthy(&self) -> Result<()> {
        let errs = self.background_errors();
        let server = self.server_errors();
        if errs.is_empty() && server.is_empty() {
            return Ok(());
        }
        bail!("{}: background errors: {errs:#?}; server error messages: {server:#?}", self.name)
    }

    fn error_suffix(&self) -> String {
        let errs = self.background_errors();
        if errs.is_empty() {
            String::new()
        } else {
            format!("; background errors: {errs:?}")
        }
    }

    /// Multi-line state dump for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "{} ({}): ws {:?}; subscribe pc {}; negotiations answered {}; recent messages [{}]; background errors {:?}\n{}",
            self.name,
            self.participant_id,
            self.close_info(),
            self.subscribe.state(),
            self.negotiations_answered(),
            self.shared.recent_types(),
            self.background_errors(),
            self.subscribe.recorder.describe()
        )
    }

    // ───────────── leaving ─────────────

    /// Sends `leave`, waits for the server to close the WebSocket (expects 1000), then closes
    /// both peer connections. Returns how the socket closed.
    pub async fn leave(&self, reason: Option<&str>) -> Result<CloseInfo> {
        let mut m = json!({"v": 1, "type": "leave"});
        if let Some(r) = reason {
            m["reason"] = json!(r);
        }
        self.send(m)?;
        let close = self.wait_closed(DEFAULT_TIMEOUT).await;
        self.shutdown_media().await;
        self.abort_tasks();
        close
    }

    /// Drops the WebSocket without a close frame or `leave` (TCP FIN), stops media and closes
    /// both peer connections: a client that vanished.
    pub async fn drop_without_leave(&self) {
        self.kill_signalling();
        self.shutdown_media().await;
        self.abort_tasks();
    }

    /// Closes both peer connections and keeps the WebSocket: to the server, media and ICE traffic
    /// stop while signalling stays up (a failure on the media path).
    pub async fn stop_media(&self) {
        self.shutdown_media().await;
    }

    /// Drops only the WebSocket (no close frame, no `leave`); the peer connections keep running.
    /// For reconnect-within-grace tests.
    pub fn kill_signalling(&self) {
        for t in self.ws_tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Sends a WebSocket close frame with `code` (client-initiated close) without `leave`.
    pub fn close_websocket(&self, code: u16, reason: &str) -> Result<()> {
        self.out_tx
            .send(Outbound::Close(code, reason.to_string()))
            .map_err(|_| anyhow!("{}: WebSocket writer has stopped", self.name))
    }

    async fn shutdown_media(&self) {
        let p = self.publish.lock().unwrap().clone();
        if let Some(p) = p {
            p.lock().await.close().await;
        }
        let _ = self.subscribe.pc.close().await;
    }

    fn abort_tasks(&self) {
        for t in self.ws_tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        for t in self.other_tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

/// Polls `f` every 20 ms until it returns true; fails after `timeout` with `what` and the text
/// returned by `describe`.
pub async fn poll_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    describe: impl Fn() -> String,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}\n{}", describe());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
