//! The driver task. One `Driver` owns the UDP socket, every peer connection and every room; it
//! reacts to datagrams, commands and timers, and nothing else touches that state.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, trace, warn};

use super::demux::{classify, stun_local_ufrag, DatagramKind};
use super::feedback::EstimateCell;
use super::timer::WakeTimer;
use super::udp;
use super::{
    peer, Command, ConnRef, ControlRequest, DriverStats, JoinRefused, Joiner, MediaHandle, Outbound, Presence,
    PresenceRecord,
};
use crate::core::ids::KeyMap;
use crate::core::layers::{rid_index, MAX_SPATIAL};
use crate::core::vp8::Vp8Desc;
use crate::core::{
    policy, Action, Control, ControlError, CoreConfig, DownTrackKey, Forward, KeyAlloc, LeaveCause, MediaKind, Output,
    ParticipantInfo, ParticipantKey, Replayed, Room, RoomEvent, RtpIn, SameZone, TrackSource, TrackView, UpTrackInfo,
    UpTrackKey, Zone,
};
use crate::record::recorder::{self as rec, RecInput, RecorderContext, RecorderEvent, RecorderTap, TrackStart};
use crate::signal::protocol::{CloseCode, PcKind, ServerMessage, SessionView};
use crate::store::new_id;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("binding the media UDP socket {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("starting the media thread: {0}")]
    Start(std::io::Error),
}

/// How often rooms are given the time (liveness, throttled keyframe requests, grace periods).
const ROOM_TICK: Duration = Duration::from_millis(100);
/// Minimum gap between two log lines about unroutable datagrams.
const UNROUTABLE_LOG_EVERY: Duration = Duration::from_secs(10);
/// Datagrams taken from the socket per wake before their output is sent: what one turn gathers
/// is sent with as few system calls as possible, and no peer waits long behind a busy one. Every
/// copy of the first datagram waits for the whole turn: 32 (the earlier value) made the server's
/// own delay per forwarded packet 1.5–3 ms at the median and 10 ms at p99 with ten publishers;
/// 4 made it 1 and 5 ms for 2 % more CPU (one datagram per turn measured the same as 4).
const RX_BATCH: usize = 4;

/// Connectivity checks kept per subscribe connection while its first answer is on its way (see
/// `Peer::early_checks`). A client sends one per candidate pair and retransmits; a few cover the
/// pairs that can succeed, and the bound keeps a flood from holding memory.
const EARLY_CHECKS: usize = 8;

/// How soon after ICE connects a connection's timers run, so that its DTLS ClientHello leaves.
/// Where the server is the DTLS client (a webrtc-rs subscriber answers as the DTLS server), rtc
/// starts the handshake when ICE selects the pair but sends the first flight only on the
/// connection's next timeout: up to the ICE agent's next tick, 200 ms. Sent in the same instant as
/// the check's response, it reached a webrtc-rs client before the client's own DTLS was ready and
/// waited a second for the retransmission; a few milliseconds later it does not.
const DTLS_KICK: Duration = Duration::from_millis(5);

/// Capacity of a participant's outbound signalling queue; a client that lets it fill is stuck.
pub const OUTBOUND_CAPACITY: usize = 1024;

/// Binds the media socket and starts the driver on a thread of its own. Returns the handle and
/// the thread, which ends when every [`MediaHandle`] is gone.
///
/// The driver is one task that every datagram wakes. On the server's multi-threaded runtime each
/// wake-up also woke a second worker to look for work to steal, and the driver moved between
/// workers: at light load (2 × 2 × 3) a fifth of the server's time went to switching threads.
/// On a single-threaded runtime of its own, a datagram wakes one thread, which owns the socket,
/// its timers and the task. Signalling reaches it over channels, which work across runtimes.
pub async fn spawn(
    media: &crate::config::MediaConfig,
    core: CoreConfig,
    presence: mpsc::UnboundedSender<Presence>,
    recording: Option<std::sync::Arc<RecorderContext>>,
) -> Result<(MediaHandle, std::thread::JoinHandle<()>), DriverError> {
    let bind = media.udp;
    let socket = bind_udp(bind).map_err(|e| DriverError::Bind(bind, e))?;
    let local = socket.local_addr().map_err(|e| DriverError::Bind(bind, e))?;
    let announced = SocketAddr::new(media.public_ip.unwrap_or(local.ip()), local.port());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DriverError::Start)?;
    let (tx, rx) = mpsc::channel(1024);
    let self_tx = tx.downgrade();
    let pace_below_bps = media.pace_below_bps;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("qiao-media".into())
        .spawn(move || {
            runtime.block_on(async move {
                // The socket registers with the reactor of the runtime it is made in: this one.
                // So does the timer.
                let (socket, timer) = match UdpSocket::from_std(socket).and_then(|s| Ok((s, WakeTimer::new()?))) {
                    Ok(both) => both,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut driver = Driver::new(socket, announced, core, rx, presence);
                driver.recording = recording;
                driver.pace_below_bps = pace_below_bps;
                driver.self_tx = Some(self_tx);
                driver.run(timer).await;
            })
        })
        .map_err(DriverError::Start)?;
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DriverError::Bind(bind, e)),
        Err(_) => return Err(DriverError::Start(std::io::Error::other("the media thread ended at start"))),
    }
    info!(%local, %announced, "media socket bound");
    Ok((MediaHandle { tx, announced }, thread))
}

/// Socket buffer size asked of the kernel: a burst of keyframes from several publishers must not
/// overflow the default (~200 KiB) receive buffer while the driver is busy.
const SOCKET_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel may cap these (net.core.rmem_max); a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    // For the forwarding delay in the stats; without stamps that histogram stays empty.
    if let Err(e) = udp::enable_rx_timestamps(&socket) {
        warn!(error = %e, "no kernel receive timestamps: the forwarding delay is not measured");
    }
    Ok(socket)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerKey(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RoomKey(u32);

struct RoomState {
    room: Room,
    session: SessionView,
    /// External participant id → key, to recognise a participant coming back.
    by_participant_id: HashMap<String, ParticipantKey>,
    /// The session's recorder, held here so the packet path reaches it without a lookup.
    recorder: Option<RecorderTap>,
}

/// A participant as the driver knows it: where to reach it and which peer connections are its.
struct Member {
    room: RoomKey,
    session_id: String,
    participant_id: String,
    conn: u64,
    outbound: mpsc::Sender<Outbound>,
    publish: Option<PeerKey>,
    subscribe: Option<PeerKey>,
    /// What the client said each of its tracks is (camera, microphone, screen).
    sources: HashMap<String, TrackSource>,
}

struct Peer {
    pc: RTCPeerConnection,
    owner: ParticipantKey,
    room: RoomKey,
    kind: PcKind,
    ufrag: String,
    /// Source addresses this peer's STUN came from; DTLS/SRTP from them is routed here.
    addrs: Vec<SocketAddr>,
    /// The deadline currently in `Driver::timers` for this peer.
    deadline: Option<Instant>,
    last_rx: Option<Instant>,
    connected: bool,
    /// In `Driver::touched` already (the per-packet path marks each peer once per turn without
    /// searching the list).
    touched: bool,
    /// A read error was logged for this peer already (log once, not per packet).
    read_error_logged: bool,
    // publish side
    ssrc_to_up: HashMap<u32, UpRoute>,
    track_to_up: HashMap<String, UpTrackKey>,
    // subscribe side
    track_to_down: HashMap<String, DownTrackKey>,
    /// An offer is out and unanswered.
    negotiating: bool,
    /// Something changed while negotiating: offer again after the answer.
    renegotiate: bool,
    /// Subscribe side: the subscriber's ICE credentials are known (its first answer was applied).
    /// Until then the ICE agent cannot check a binding request, and answers none.
    remote_known: bool,
    /// Subscribe side: connectivity checks that arrived before the first answer, answered once it
    /// is applied (see [`EARLY_CHECKS`]).
    early_checks: Vec<(SocketAddr, BytesMut)>,
    /// When the connection's timers run early, once, to send the DTLS ClientHello (see
    /// [`DTLS_KICK`]).
    kick_at: Option<Instant>,
    /// Negotiated down tracks waiting for this connection to come up: a GOP replayed, or a
    /// keyframe forwarded, before DTLS completes would be lost.
    pending_ready: Vec<DownTrackKey>,
    /// Subscribe side: the downlink estimate of its congestion control, read every room tick.
    estimate: Option<EstimateCell>,
    /// Subscribe side: the room suspended this subscriber's video (its NACKs are not answered).
    video_suspended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Subscribe side: the bandwidth probe being sent.
    probe: Option<ProbeRun>,
    /// Subscribe side: the rate the latest probe asked for (its result is counted against it in
    /// the stats when it comes, after the run has ended).
    probe_asked_bps: u64,
    /// Subscribe side: video waiting to leave at the link's pace (see [`Pacer`]).
    pacer: Pacer,
}

/// The video of a weak or lossy downlink leaves at [`PACING_FACTOR`] times what the connection
/// is being sent, not in the bursts it arrives in. A keyframe arrives from the publisher as a
/// burst of packets (5 KB and more); sent at once to a township link whose bottleneck holds a few
/// kilobytes, it overflows the queue, and the packets lost are video and the audio behind it.
/// libwebrtc paces every send in the same way (at 2.5 times the encoder's rate). The bandwidth
/// estimate cannot say when to: on a link that carries the media with room to spare it stays high
/// while the bursts overflow a short queue. So a connection is paced while its subscriber reports
/// loss ([`PACE_LOSS`] or more of the last second's packets, and [`PACE_HOLD`] after), or while
/// its estimate is below `--pace-below-kbps`; a clean, fast link is not, and pays no latency for
/// it. `--pace-below-kbps 0` turns pacing off.
///
/// Audio is never paced, so it overtakes queued video; probe padding is not either (a probe
/// measures what the link delivers at its own rate).
///
/// Invariant: while `queue` is not empty, every paced packet of the connection goes behind it
/// (a subscriber sees each down track's numbering in order), and the peer is in
/// `Driver::pacing`. Once warm, queueing allocates nothing (the deque keeps its capacity).
#[derive(Default)]
struct Pacer {
    queue: VecDeque<(RTCRtpSenderId, rtc::rtp::Packet)>,
    /// Bytes that may leave now; it grows at the pacing rate up to [`PACE_BURST`] of it, and a
    /// packet may overdraw it.
    credit: f64,
    refilled: Option<Instant>,
    /// Bytes sent to the connection (every packet, paced or not) since `window_start`, and the
    /// rate of the last whole window, in bytes per second: what the pace is a multiple of.
    window_bytes: usize,
    window_start: Option<Instant>,
    sent_rate: f64,
    /// The subscriber last reported loss: the connection stays paced until then (the loss stops
    /// once pacing starts, the bottleneck does not go away).
    lossy_until: Option<Instant>,
}

impl Pacer {
    /// Adds what `rate` (bytes per second) earned since the last refill.
    fn refill(&mut self, now: Instant, rate: f64) {
        let cap = rate * PACE_BURST.as_secs_f64();
        // A link's first paced packet finds a full burst's credit.
        let earned = self.refilled.map_or(cap, |t| rate * now.saturating_duration_since(t).as_secs_f64());
        self.credit = (self.credit + earned).min(cap);
        self.refilled = Some(now);
    }

    /// Counts `bytes` sent to the connection.
    fn on_sent(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= SEND_RATE_WINDOW {
            self.sent_rate = self.window_bytes as f64 / elapsed.as_secs_f64();
            self.window_bytes = 0;
            self.window_start = Some(now);
        }
        self.window_bytes += bytes;
    }
}

/// The pacing rate of a subscribe connection, in bytes per second: `None` when it is not paced
/// (see [`Pacer`]).
fn pacing_rate(now: Instant, estimate: Option<&EstimateCell>, pacer: &mut Pacer, pace_below_bps: u64) -> Option<f64> {
    let e = estimate.filter(|_| pace_below_bps > 0)?;
    let bps = e.get();
    if e.loss() >= PACE_LOSS {
        pacer.lossy_until = Some(now + PACE_HOLD);
    }
    let weak = bps > 0 && bps < pace_below_bps;
    let lossy = pacer.lossy_until.is_some_and(|t| now < t);
    (weak || lossy).then(|| (pacer.sent_rate * PACING_FACTOR).max(PACE_MIN_BPS as f64 / 8.0))
}

/// Multiple of a paced connection's send rate its video leaves at. libwebrtc's factor, 2.5, left
/// 22 queue drops on the netem pacing test's short queue where this one leaves 7–9.
const PACING_FACTOR: f64 = 1.5;
/// Downlinks estimated below this are paced whether or not they lose packets (the default of
/// `--pace-below-kbps`).
const PACE_BELOW_BPS: u64 = 1_000_000;
/// A connection whose subscriber reports this share of packets lost is paced (for [`PACE_HOLD`]).
const PACE_LOSS: f64 = 0.01;
/// How long a connection stays paced after its subscriber last reported loss.
const PACE_HOLD: Duration = Duration::from_secs(10);
/// The slowest pace (a connection that was sent almost nothing must still get a keyframe out).
const PACE_MIN_BPS: u64 = 250_000;
/// The send rate the pace follows is measured over windows this long.
const SEND_RATE_WINDOW: Duration = Duration::from_millis(500);
/// Most a paced link may send at once, in time at its pacing rate (the credit's cap).
const PACE_BURST: Duration = Duration::from_millis(10);
/// How often paced queues are served.
const PACE_TICK: Duration = Duration::from_millis(5);

/// A probe of a subscriber's downlink (see `core::layers::PROBE_CLUSTER`): for its duration the
/// connection is sent `rate_bps` in all, its media counted and padding filling the rest, in bursts
/// of a few milliseconds. The probe's measure is everything that left meanwhile, so the media
/// must count: a fixed padding rate on top of bursty video (two to four frames in 100 ms) measured
/// anywhere from 15 % under to 5 % over what was asked, and a climb needs the measure to reach
/// `PROOF_MARGIN / PROBE_MARGIN` of it.
struct ProbeRun {
    rate_bps: u64,
    start: Instant,
    end: Instant,
    /// Bits sent to the connection since `start` (on the wire: media as it leaves, paced media
    /// included, and padding as it is queued).
    sent_bits: u64,
}

/// One padding packet on the wire (what the link carries, which is what a probe must fill):
/// IPv4 and UDP headers, the RTP header, its transport-wide sequence number extension (with the
/// extension header and alignment), four bytes of padding, the SRTP tag. The probe's measure
/// (`feedback`) counts the same 24 bytes of RTP and 38 around them; counting 72 here left every
/// probe 8–13 % under its rate.
const PADDING_WIRE_BITS: u64 = (20 + 8 + 12 + 8 + 4 + 10) * 8;
/// How often a probe's padding goes out.
const PROBE_PACING: Duration = Duration::from_millis(5);

/// A replayed GOP leaves in bursts of at most this many bytes of payload, one every
/// [`REPLAY_PACING`] (12 Mbit/s). Sent at once, a GOP of a hundred packets or more overflows the
/// receiving socket's buffer (Linux's default of 208 KiB holds about 90 such datagrams), and
/// the holes, a large share of a connection that has only just begun, are more than the NACK
/// budget (`feedback`) resends: the subscriber waited for the next keyframe after all.
const REPLAY_BURST_BYTES: usize = 7_500;
/// How often a paced replay's next burst goes out.
const REPLAY_PACING: Duration = Duration::from_millis(5);
/// A layer switch's replay goes to a subscriber whose downlink is known: it is paced at this
/// multiple of the estimate, not at [`REPLAY_BURST_BYTES`] per burst. Its bottleneck queue grows
/// by half the replay's rate meanwhile; the room keeps the replay to a quarter second of the link
/// (`CoreConfig::switch_replay_link_time`), so the queue takes about what a keyframe would add.
const SWITCH_REPLAY_RATE: f64 = 1.5;

/// The publishing side of an up track, for keyframe requests and for creating down tracks.
struct UpState {
    peer: PeerKey,
    receiver: RTCRtpReceiverId,
    /// Per simulcast layer (spatial index), the SSRC a keyframe request names.
    ssrcs: [Option<u32>; MAX_SPATIAL],
    /// RIDs whose name says nothing of their rank, numbered in order of appearance.
    other_rids: Vec<String>,
    codec: RTCRtpCodec,
}

/// Per publish-side SSRC: the up track, its simulcast layer and the negotiated id of the
/// audio-level extension.
#[derive(Clone, Copy)]
struct UpRoute {
    up: UpTrackKey,
    layer: u8,
    audio_level_ext: Option<u8>,
}

/// A down track's sender on its subscriber's subscribe connection.
struct DownState {
    peer: PeerKey,
    sender: RTCRtpSenderId,
    ssrc: u32,
    /// Negotiated payload type; `None` until the subscriber answered an offer that carried it.
    pt: Option<u8>,
    /// Carried by the outstanding (or an answered) subscribe offer; a down track added while an
    /// offer is out waits for the next one.
    offered: bool,
    codec: RTCRtpCodec,
    view: TrackView,
    /// Packets waiting behind a paced GOP replay, in order: the replay's rest, then what was
    /// forwarded meanwhile (so the subscriber sees the numbering in order). `None` when nothing
    /// waits, which is the per-packet path's only check.
    backlog: Option<VecDeque<Replayed>>,
    /// Bytes the paced replay may still send (topped up every [`REPLAY_PACING`]; a packet may
    /// overdraw it, and the next bursts wait until it is positive again).
    replay_credit: i64,
    /// The paced replay's top-up per burst.
    replay_burst: i64,
}

impl DownState {
    /// The RTP packet this down track's sender writes; `None` until the subscriber has
    /// negotiated the track.
    fn packet(&self, marker: bool, seq: u16, ts: u32, payload: &Bytes) -> Option<rtc::rtp::Packet> {
        Some(rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                padding: payload.is_empty(),
                marker,
                payload_type: self.pt?,
                sequence_number: seq,
                timestamp: ts,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: payload.clone(),
        })
    }
}

struct Driver {
    socket: UdpSocket,
    announced: SocketAddr,
    core: CoreConfig,
    /// Subscribe connections whose estimate is below this (bits per second) are paced (see
    /// [`Pacer`]); 0: none is.
    pace_below_bps: u64,
    commands: mpsc::Receiver<Command>,
    presence: mpsc::UnboundedSender<Presence>,
    keys: KeyAlloc,
    rooms: KeyMap<RoomKey, RoomState>,
    room_by_session: HashMap<String, RoomKey>,
    members: KeyMap<ParticipantKey, Member>,
    peers: KeyMap<PeerKey, Peer>,
    peer_by_ufrag: HashMap<String, PeerKey>,
    peer_by_addr: HashMap<SocketAddr, PeerKey>,
    ups: KeyMap<UpTrackKey, UpState>,
    downs: KeyMap<DownTrackKey, DownState>,
    /// Peer connection deadlines, earliest first.
    timers: BTreeSet<(Instant, PeerKey)>,
    /// Scratch: peers whose timers ran this turn (their output is drained).
    fired: Vec<PeerKey>,
    next_tick: Instant,
    next_peer: u32,
    next_room: u32,
    next_conn: u64,
    stats: DriverStats,
    unroutable_logged_at: Option<Instant>,
    /// Participants (and the connection) whose outbound queue filled up; removed at the next tick.
    stuck: Vec<ConnRef>,
    /// Sessions closed while this process runs: a join racing the close is refused.
    closed_sessions: std::collections::HashSet<String>,
    /// Scratch: rooms to settle on the packet path.
    settle_rooms: Vec<RoomKey>,
    /// What recorders share; `None` runs without recording (benchmarks of the forwarding path).
    recording: Option<std::sync::Arc<RecorderContext>>,
    /// Recorders of sessions whose room emptied: the session, and its recording, go on until
    /// closed; a room that refills takes its recorder back.
    parked_recorders: HashMap<String, RecorderTap>,
    /// Our own command channel, for recorder threads to reach us (weak: it must not keep the
    /// driver alive after every handle is gone).
    self_tx: Option<mpsc::WeakSender<Command>>,
    /// The latest recording status per session: everyone who joins is told at once whether the
    /// session is being recorded.
    recording_status: HashMap<String, rec::RecordingStatus>,
    // Scratch buffers reused on the per-packet path so that it allocates nothing of its own.
    fwd: Vec<Forward>,
    rtp_in: Vec<rtc::rtp::Packet>,
    touched: Vec<PeerKey>,
    to_send: Vec<(SocketAddr, BytesMut)>,
    renegotiate: Vec<PeerKey>,
    replay: Vec<Replayed>,
    /// Where per-subscriber copies of a payload are written (VP8 picture ids rewritten): split off
    /// as `Bytes`, the space is reused once every copy is sent.
    rewritten: BytesMut,
    /// Subscribe connections sending a probe's padding (checked every few milliseconds).
    probing: Vec<PeerKey>,
    /// Padding packets due in one pacing interval (reused).
    padding: Vec<(DownTrackKey, u16, u32)>,
    /// When the probes' next padding is due (an absolute deadline: datagrams arriving more often
    /// than the pacing interval must not postpone it).
    next_probe_at: Option<Instant>,
    /// Down tracks with a backlog (a GOP replay being paced).
    replaying: Vec<DownTrackKey>,
    /// When the paced replays' next bursts are due.
    next_replay_at: Option<Instant>,
    /// Subscribe connections with video waiting in their pacer.
    pacing: Vec<PeerKey>,
    /// When the pacers are next served.
    next_pace_at: Option<Instant>,
    /// NACKed sequence numbers that subscribe connections refused to resend (see `feedback`).
    nacks_refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Reads datagrams without allocating one buffer each.
    rx: udp::Receiver,
    /// The kernel's receive stamps of this turn's datagrams that were forwarded (reused).
    forwarded_stamps: Vec<SystemTime>,
}

// One value per loop turn; its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Datagram(std::io::Result<udp::Datagram>),
    Command(Option<Command>),
    Timer,
}

impl Driver {
    fn new(
        socket: UdpSocket,
        announced: SocketAddr,
        core: CoreConfig,
        commands: mpsc::Receiver<Command>,
        presence: mpsc::UnboundedSender<Presence>,
    ) -> Driver {
        Driver {
            socket,
            announced,
            core,
            pace_below_bps: PACE_BELOW_BPS,
            commands,
            presence,
            keys: KeyAlloc::default(),
            rooms: KeyMap::default(),
            room_by_session: HashMap::new(),
            members: KeyMap::default(),
            peers: KeyMap::default(),
            peer_by_ufrag: HashMap::new(),
            peer_by_addr: HashMap::new(),
            ups: KeyMap::default(),
            downs: KeyMap::default(),
            timers: BTreeSet::new(),
            next_tick: Instant::now() + ROOM_TICK,
            fired: Vec::new(),
            next_peer: 0,
            next_room: 0,
            next_conn: 0,
            stats: DriverStats::default(),
            unroutable_logged_at: None,
            stuck: Vec::new(),
            closed_sessions: std::collections::HashSet::new(),
            settle_rooms: Vec::new(),
            recording: None,
            parked_recorders: HashMap::new(),
            self_tx: None,
            recording_status: HashMap::new(),
            fwd: Vec::with_capacity(64),
            rtp_in: Vec::with_capacity(64),
            touched: Vec::with_capacity(64),
            to_send: Vec::with_capacity(64),
            renegotiate: Vec::new(),
            replay: Vec::new(),
            rewritten: BytesMut::with_capacity(64 * 1024),
            probing: Vec::new(),
            padding: Vec::new(),
            next_probe_at: None,
            replaying: Vec::new(),
            next_replay_at: None,
            pacing: Vec::new(),
            next_pace_at: None,
            nacks_refused: Default::default(),
            rx: udp::Receiver::default(),
            forwarded_stamps: Vec::with_capacity(RX_BATCH),
        }
    }

    /// `timer` is the thread's one timer, set only when the earliest deadline moves.
    async fn run(mut self, mut timer: WakeTimer) {
        loop {
            let next_peer = self.timers.first().map(|(t, _)| *t);
            let mut wake_at = next_peer.map_or(self.next_tick, |t| t.min(self.next_tick));
            for t in [self.next_probe_at, self.next_replay_at, self.next_pace_at].into_iter().flatten() {
                wake_at = wake_at.min(t);
            }
            timer.set(wake_at);
            let wake = tokio::select! {
                biased;
                c = self.commands.recv() => Wake::Command(c),
                r = self.rx.recv(&self.socket) => Wake::Datagram(r),
                _ = timer.fired() => Wake::Timer,
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(cmd)) => self.on_command(cmd, Instant::now()).await,
                Wake::Datagram(Ok(d)) => self.on_datagrams(d, Instant::now()).await,
                Wake::Datagram(Err(e)) => {
                    // ICMP port unreachable surfaces here on some systems; it concerns one peer, not us.
                    debug!(error = %e, "media socket receive error");
                }
                Wake::Timer => self.on_timer(Instant::now()).await,
            }
        }
        info!("media driver stopped");
    }

    // ---- datagrams --------------------------------------------------------------------------

    /// The first datagram and whatever else is already queued on the socket, up to
    /// [`RX_BATCH`] in all, are each handed to their peer connection; then everything they
    /// produced is sent in as few system calls as possible.
    async fn on_datagrams(&mut self, first: udp::Datagram, now: Instant) {
        self.forget_touched();
        self.forwarded_stamps.clear();
        let mut next = Some(first);
        let mut read = 0;
        while let Some(d) = next.take() {
            let forwarded = self.stats.rtp_forwarded;
            self.on_datagram(d.from, d.data, now);
            if self.stats.rtp_forwarded > forwarded {
                self.forwarded_stamps.extend(d.received);
            }
            read += 1;
            // Nothing more queued (WouldBlock), or an error the next wait reports.
            next = if read < RX_BATCH { self.rx.try_recv(&self.socket) } else { None };
        }
        // Whatever came due while these were read runs now, with probes, replays and pacing.
        let ticked = self.run_due(now);
        self.settle(now, ticked).await;
        // Every copy of these packets is with the kernel now: the server's delay for each.
        if !self.forwarded_stamps.is_empty() {
            let sent = SystemTime::now();
            for at in &self.forwarded_stamps {
                self.stats.forward_delay.record(sent.duration_since(*at).unwrap_or_default());
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, d: BytesMut, now: Instant) {
        self.stats.datagrams_in += 1;
        let Some(pk) = self.route(from, &d) else {
            self.stats.datagrams_unroutable += 1;
            if self.unroutable_logged_at.is_none_or(|t| now >= t + UNROUTABLE_LOG_EVERY) {
                self.unroutable_logged_at = Some(now);
                warn!(%from, len = d.len(), dropped_total = self.stats.datagrams_unroutable, "dropping datagrams that belong to no peer connection");
            }
            return;
        };
        self.deliver(pk, from, d, now);
    }

    /// Hands a routed datagram to its peer connection and takes in what that produced.
    fn deliver(&mut self, pk: PeerKey, from: SocketAddr, d: BytesMut, now: Instant) {
        let announced = self.announced;
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        if !peer.remote_known && classify(&d) == DatagramKind::Stun {
            // A subscriber starts its checks as soon as it has set its answer, often before the
            // answer reaches us over signalling; unanswered, each waits for the client's next
            // check (200 ms later in webrtc-rs). RFC 8445 section 7.3 asks for
            // an answer at once; the agent can only give it with the credentials, so the check
            // waits here for the answer instead.
            if peer.early_checks.len() < EARLY_CHECKS {
                peer.early_checks.push((from, d));
                self.stats.early_checks += 1;
            }
            return;
        }
        peer.last_rx = Some(now);
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: announced,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: d,
        };
        if let Err(e) = peer.pc.handle_read(msg) {
            if !peer.read_error_logged {
                peer.read_error_logged = true;
                warn!(%from, error = %e, "unreadable datagram from a peer (logged once per peer)");
            }
        }
        self.touch(pk);
        self.drain_events(pk, now);
        self.drain_reads(pk, now);
    }

    /// Empties the touched list (normally empty already: every handler ends in `settle`).
    fn forget_touched(&mut self) {
        for pk in self.touched.drain(..) {
            if let Some(p) = self.peers.get_mut(&pk) {
                p.touched = false;
            }
        }
    }

    /// Marks a peer as having something to send (flushed by the next [`Driver::settle`]).
    fn touch(&mut self, pk: PeerKey) {
        if let Some(p) = self.peers.get_mut(&pk) {
            if !p.touched {
                p.touched = true;
                self.touched.push(pk);
            }
        }
    }

    fn route(&mut self, from: SocketAddr, d: &[u8]) -> Option<PeerKey> {
        if classify(d) == DatagramKind::Stun {
            if let Some(pk) = stun_local_ufrag(d).and_then(|u| self.peer_by_ufrag.get(u)).copied() {
                if self.peer_by_addr.get(&from) != Some(&pk) {
                    if let Some(old) = self.peer_by_addr.insert(from, pk) {
                        if let Some(p) = self.peers.get_mut(&old) {
                            p.addrs.retain(|a| *a != from);
                        }
                    }
                    if let Some(p) = self.peers.get_mut(&pk) {
                        p.addrs.push(from);
                    }
                }
                return Some(pk);
            }
        }
        self.peer_by_addr.get(&from).copied()
    }

    /// Applies room outputs, renegotiates, sends what the touched peers want to send, and
    /// reschedules their timers. Outputs are applied for every room when `all_rooms`, else only
    /// for the rooms of the touched peers (the datagram and peer-timer paths must not walk every
    /// room).
    async fn settle(&mut self, now: Instant, all_rooms: bool) {
        if all_rooms {
            let rooms: Vec<RoomKey> = self.rooms.keys().copied().collect();
            for rk in rooms {
                self.apply_outputs(rk, now);
            }
        } else {
            // Collect the rooms first: applying outputs may add touched peers (keyframe requests)
            // or remove them (a disconnect closes peers).
            let mut rooms = std::mem::take(&mut self.settle_rooms);
            rooms.clear();
            for pk in &self.touched {
                if let Some(rk) = self.peers.get(pk).map(|p| p.room) {
                    if !rooms.contains(&rk) {
                        rooms.push(rk);
                    }
                }
            }
            for rk in &rooms {
                self.apply_outputs(*rk, now);
            }
            self.settle_rooms = rooms;
        }
        let reneg = std::mem::take(&mut self.renegotiate);
        for pk in &reneg {
            self.negotiate_subscribe(*pk);
        }
        self.renegotiate = reneg;
        self.renegotiate.clear();
        let mut i = 0;
        while i < self.touched.len() {
            let pk = self.touched[i];
            i += 1;
            let Some(peer) = self.peers.get_mut(&pk) else { continue };
            peer.touched = false;
            while let Some(out) = peer.pc.poll_write() {
                self.to_send.push((out.transport.peer_addr, out.message));
            }
            if peer.kick_at.is_some_and(|at| at <= now) {
                peer.kick_at = None;
            }
            // While a kick is pending (always in the future here) it is the connection's next
            // timeout: an earlier one would send the DTLS ClientHello too soon (see `DTLS_KICK`).
            let deadline = peer.kick_at.or_else(|| peer.pc.poll_timeout());
            if deadline != peer.deadline {
                if let Some(old) = peer.deadline {
                    self.timers.remove(&(old, pk));
                }
                if let Some(new) = deadline {
                    self.timers.insert((new, pk));
                }
                peer.deadline = deadline;
            }
        }
        self.touched.clear();
        let sent =
            udp::send_all(&self.socket, &self.to_send, |to, e| debug!(%to, error = %e, "media send failed")).await;
        self.to_send.clear();
        self.stats.datagrams_out += sent.datagrams;
        self.stats.send_syscalls += sent.syscalls;
        self.stats.send_errors += sent.errors;
    }

    fn drain_events(&mut self, pk: PeerKey, now: Instant) {
        loop {
            let Some(peer) = self.peers.get_mut(&pk) else { return };
            let Some(event) = peer.pc.poll_event() else { return };
            let (owner, room, kind) = (peer.owner, peer.room, peer.kind);
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    let since_rx_ms = peer.last_rx.map(|t| now.saturating_duration_since(t).as_millis());
                    debug!(?kind, %state, participant = ?owner, ?since_rx_ms, addrs = ?peer.addrs, "peer connection state");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            peer.connected = true;
                            let pending = std::mem::take(&mut peer.pending_ready);
                            if let Some(r) = self.rooms.get_mut(&room) {
                                r.room.media_alive(owner, now);
                            }
                            self.start_down_tracks(room, &pending, now);
                        }
                        RTCPeerConnectionState::Failed => {
                            info!(?kind, "peer connection failed; removing participant (media_timeout)");
                            if let Some(r) = self.rooms.get_mut(&room) {
                                r.room.leave(now, owner, LeaveCause::MediaTimeout);
                            }
                            return;
                        }
                        _ => {}
                    }
                }
                // Only a subscribe connection can have the server as its DTLS client.
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(RTCIceConnectionState::Connected)
                    if kind == PcKind::Subscribe =>
                {
                    // Every caller touched the peer before draining: `settle` schedules the kick.
                    peer.kick_at = Some(now + DTLS_KICK);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) if kind == PcKind::Publish => {
                    let rid = init.rid.as_deref().map(str::to_owned);
                    self.on_track_open(pk, init.receiver_id, init.track_id, init.ssrc, rid, now);
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) if kind == PcKind::Publish => {
                    debug!(%track_id, "rtc closed a published track");
                    self.unpublish_track(pk, &track_id, now);
                }
                _ => {}
            }
        }
    }

    /// A published track ended (its sender stopped, e.g. a screen share): the room drops it and
    /// its subscriptions, and the recorder closes its last segment.
    fn unpublish_track(&mut self, pk: PeerKey, track_id: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        let Some(up) = peer.track_to_up.remove(track_id) else { return };
        peer.ssrc_to_up.retain(|_, r| r.up != up);
        let room = peer.room;
        self.ups.remove(&up);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.room.unpublish(now, up);
            if let Some(tap) = r.recorder.as_mut() {
                tap.offer(RecInput::TrackEnd(up), now);
            }
        }
    }

    /// A track's first packet arrived, or (simulcast) the first packet of another of its layers.
    fn on_track_open(
        &mut self,
        pk: PeerKey,
        receiver_id: RTCRtpReceiverId,
        track_id: String,
        ssrc: u32,
        rid: Option<String>,
        now: Instant,
    ) {
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        if let Some(up) = peer.track_to_up.get(&track_id).copied() {
            // Another layer (or a new SSRC) of a known track.
            let ext = peer.ssrc_to_up.values().find(|r| r.up == up).and_then(|r| r.audio_level_ext);
            let Some(u) = self.ups.get_mut(&up) else { return };
            let layer = layer_of(u, rid.as_deref());
            // rtc reports a track again after each renegotiation of the publish connection
            // (its first packet under the new description): nothing new when the SSRC is known.
            match u.ssrcs[usize::from(layer)].replace(ssrc) {
                Some(old) if old == ssrc => return,
                // The encoding restarted under a new SSRC: the old one routes nowhere.
                Some(old) => {
                    peer.ssrc_to_up.remove(&old);
                }
                None => {}
            }
            peer.ssrc_to_up.insert(ssrc, UpRoute { up, layer, audio_level_ext: ext });
            self.stats.simulcast_layers += 1;
            debug!(ssrc, ?rid, layer, %track_id, "simulcast layer opened");
            return;
        }
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else { return };
        let audio_level_ext = receiver
            .get_parameters()
            .rtp_parameters
            .header_extensions
            .iter()
            .find(|e| e.uri == super::peer::AUDIO_LEVEL_URI)
            .and_then(|e| u8::try_from(e.id).ok());
        let track = receiver.track();
        let kind = track.kind();
        let Some(codec) = track.codec(ssrc).cloned() else {
            warn!(%track_id, "published track has no negotiated codec; ignored");
            return;
        };
        let (owner, room) = (peer.owner, peer.room);
        let media_kind = if kind == RtpCodecKind::Audio { MediaKind::Audio } else { MediaKind::Video };
        let source = self
            .members
            .get(&owner)
            .and_then(|m| m.sources.get(&track_id).copied())
            .unwrap_or(if media_kind == MediaKind::Audio { TrackSource::Microphone } else { TrackSource::Camera });
        let info = UpTrackInfo {
            track_id: new_id("t"),
            kind: media_kind,
            source,
            mime: codec.mime_type.clone(),
            clock_rate: codec.clock_rate,
        };
        let rec_track_id = info.track_id.clone();
        let Some(r) = self.rooms.get_mut(&room) else { return };
        match r.room.publish(now, owner, info, &mut self.keys) {
            Ok(up) => {
                debug!(mime = %codec.mime_type, ssrc, %track_id, ?rid, "track published");
                let participant_id = self.members.get(&owner).map(|m| m.participant_id.clone()).unwrap_or_default();
                let zone = r.room.zone_name(owner).unwrap_or_else(|| "main".into());
                if let Some(tap) = r.recorder.as_mut() {
                    let start = TrackStart {
                        up,
                        track_id: rec_track_id,
                        participant_id,
                        kind: media_kind,
                        source: source.as_str(),
                        mime: codec.mime_type.clone(),
                        clock_rate: codec.clock_rate,
                        zone,
                    };
                    tap.offer(RecInput::Track(Box::new(start)), now);
                }
                peer.track_to_up.insert(track_id, up);
                let mut state = UpState {
                    peer: pk,
                    receiver: receiver_id,
                    ssrcs: [None; MAX_SPATIAL],
                    other_rids: Vec::new(),
                    codec,
                };
                let layer = layer_of(&mut state, rid.as_deref());
                state.ssrcs[usize::from(layer)] = Some(ssrc);
                peer.ssrc_to_up.insert(ssrc, UpRoute { up, layer, audio_level_ext });
                self.ups.insert(up, state);
            }
            Err(e) => {
                info!(error = %e, "publish refused");
                self.notify(
                    owner,
                    ServerMessage::error("not_allowed", "您的角色不能发布音视频", "your role may not publish media"),
                );
            }
        }
    }

    fn drain_reads(&mut self, pk: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        let (kind, room) = (peer.kind, peer.room);
        self.rtp_in.clear();
        let mut keyframe_requests: Vec<DownTrackKey> = Vec::new();
        let mut sender_reports: Vec<(UpTrackKey, u8, u64, u32)> = Vec::new();
        while let Some(TaggedRTCMessage { message, .. }) = peer.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(_, packet) if kind == PcKind::Publish => self.rtp_in.push(packet),
                RTCMessage::RtcpPacket(_, packets) if kind == PcKind::Publish => {
                    for p in &packets {
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                            if let Some(route) = peer.ssrc_to_up.get(&sr.ssrc) {
                                sender_reports.push((route.up, route.layer, sr.ntp_time, sr.rtp_time));
                            }
                        }
                    }
                }
                RTCMessage::RtcpPacket(track_id, packets) if kind == PcKind::Subscribe => {
                    let wants_key = packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>());
                    if wants_key {
                        if let Some(down) = peer.track_to_down.get(&track_id) {
                            keyframe_requests.push(*down);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            for down in keyframe_requests {
                r.room.on_keyframe_request(now, down);
            }
            if let Some(tap) = r.recorder.as_mut() {
                for (up, layer, ntp, rtp) in sender_reports {
                    // Only the recorded layer's clock (simulcast layers each have their own).
                    if layer == r.room.recorded_layer(up) {
                        tap.offer(RecInput::SenderReport { up, ntp, rtp, at: now }, now);
                    }
                }
            }
        }
        let packets = std::mem::take(&mut self.rtp_in);
        for packet in &packets {
            self.forward(pk, room, packet, now);
        }
        self.rtp_in = packets;
    }

    /// The per-packet path: ask the room where this packet goes and write a rewritten copy to
    /// each subscriber's sender. The payload is shared (`Bytes`), not copied.
    fn forward(&mut self, pk: PeerKey, room: RoomKey, packet: &rtc::rtp::Packet, now: Instant) {
        self.stats.rtp_in += 1;
        let Some(route) = self.peers.get(&pk).and_then(|p| p.ssrc_to_up.get(&packet.header.ssrc)).copied() else {
            return;
        };
        let up = route.up;
        // A padding-only probe goes to the room too: it is forwarded to no one, and the numbering
        // subscribers see closes up behind it.
        let Some(r) = self.rooms.get_mut(&room) else { return };
        let h = &packet.header;
        let audio_level = route
            .audio_level_ext
            .and_then(|id| h.extensions.iter().find(|e| e.id == id))
            .and_then(|e| crate::core::speaker::level_from_extension(&e.payload));
        self.stats.audio_levels += audio_level.is_some() as u64;
        let pkt = RtpIn {
            ssrc: h.ssrc,
            layer: route.layer,
            seq: h.sequence_number,
            ts: h.timestamp,
            marker: h.marker,
            payload: &packet.payload,
            audio_level,
        };
        if r.room.on_rtp(now, up, pkt, &mut self.fwd) {
            if let Some(tap) = r.recorder.as_mut() {
                let input = RecInput::Rtp {
                    up,
                    ssrc: h.ssrc,
                    seq: h.sequence_number,
                    ts: h.timestamp,
                    marker: h.marker,
                    payload: packet.payload.clone(),
                    at: now,
                };
                tap.offer(input, now);
            }
        }
        let fwd = std::mem::take(&mut self.fwd);
        // Where the picture ids sit, read once for every copy that rewrites them.
        let desc = fwd.iter().any(|f| f.vp8_ids.is_some()).then(|| Vp8Desc::parse(&packet.payload)).flatten();
        for f in &fwd {
            match (f.vp8_ids, desc) {
                (None, _) | (Some(_), None) => self.send_down(f.down, h.marker, f.seq, f.ts, &packet.payload, now),
                (Some((pid, tl0)), Some(desc)) => {
                    // This subscriber's copy carries its own picture ids: written into a slice of
                    // one reused buffer, not a new allocation per packet.
                    self.rewritten.extend_from_slice(&packet.payload);
                    desc.write(&mut self.rewritten, pid, tl0);
                    let copy = self.rewritten.split().freeze();
                    if self.rewritten.capacity() < 2048 {
                        self.rewritten.reserve(64 * 1024);
                    }
                    self.send_down(f.down, h.marker, f.seq, f.ts, &copy, now);
                }
            }
        }
        self.fwd = fwd;
    }

    /// Writes one rewritten packet to a down track's sender, or queues it behind the down track's
    /// paced replay. An empty payload is a probe's padding packet (the stack adds four bytes of
    /// RTP padding); forwarded media never has one.
    fn send_down(&mut self, down: DownTrackKey, marker: bool, seq: u16, ts: u32, payload: &Bytes, now: Instant) {
        let Some(d) = self.downs.get_mut(&down) else { return };
        if let Some(q) = d.backlog.as_mut() {
            q.push_back(Replayed { seq, ts, marker, payload: payload.clone() });
            return;
        }
        let Some(out) = d.packet(marker, seq, ts, payload) else { return };
        let (pk, sender) = (d.peer, d.sender);
        let paced = d.view.kind == MediaKind::Video && !payload.is_empty();
        self.write_rtp(pk, sender, out, paced, now);
    }

    /// Writes one packet to a subscriber's sender, or, for `paced` video on a weak downlink,
    /// queues it in the connection's [`Pacer`] when the pacer has no credit or a queue.
    fn write_rtp(&mut self, pk: PeerKey, sender: RTCRtpSenderId, out: rtc::rtp::Packet, paced: bool, now: Instant) {
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        if paced {
            let rate = pacing_rate(now, peer.estimate.as_ref(), &mut peer.pacer, self.pace_below_bps);
            let p = &mut peer.pacer;
            if let Some(rate) = rate {
                p.refill(now, rate);
            }
            if !p.queue.is_empty() || rate.is_some() && p.credit <= 0.0 {
                if p.queue.is_empty() {
                    self.pacing.push(pk);
                    self.next_pace_at.get_or_insert(now + PACE_TICK);
                }
                p.queue.push_back((sender, out));
                self.stats.packets_paced += 1;
                return;
            }
            if rate.is_some() {
                p.credit -= (out.payload.len() + crate::core::layers::PACKET_OVERHEAD) as f64;
            }
        }
        Self::send_rtp(&mut self.stats, &mut self.touched, pk, peer, sender, out, now);
    }

    fn send_rtp(
        stats: &mut DriverStats,
        touched: &mut Vec<PeerKey>,
        pk: PeerKey,
        peer: &mut Peer,
        sender: RTCRtpSenderId,
        out: rtc::rtp::Packet,
        now: Instant,
    ) {
        let Some(mut sender) = peer.pc.rtp_sender(sender) else { return };
        let wire = out.payload.len() + crate::core::layers::PACKET_OVERHEAD;
        peer.pacer.on_sent(now, wire);
        // Media counts toward a running probe's rate; its padding (no payload) was counted when
        // `run_probes` queued it.
        if let Some(run) = peer.probe.as_mut().filter(|r| now < r.end && !out.payload.is_empty()) {
            run.sent_bits += wire as u64 * 8;
        }
        match sender.write_rtp(now, out) {
            Ok(()) => {
                stats.rtp_forwarded += 1;
                if !peer.touched {
                    peer.touched = true;
                    touched.push(pk);
                }
            }
            Err(e) => {
                stats.forward_errors += 1;
                if stats.forward_errors.is_power_of_two() {
                    debug!(error = %e, errors = stats.forward_errors, "forwarding to a subscriber failed");
                }
            }
        }
    }

    /// Sends from every pacer what its credit allows; a pacer whose link is no longer paced (its
    /// estimate rose) sends all it holds. A pacer left empty leaves the list.
    fn run_pacers(&mut self, now: Instant) {
        if self.next_pace_at.is_none_or(|t| now < t) {
            return;
        }
        let mut i = 0;
        while i < self.pacing.len() {
            let pk = self.pacing[i];
            let Some(peer) = self.peers.get_mut(&pk) else {
                self.pacing.swap_remove(i);
                continue;
            };
            let rate = pacing_rate(now, peer.estimate.as_ref(), &mut peer.pacer, self.pace_below_bps);
            if let Some(rate) = rate {
                peer.pacer.refill(now, rate);
            }
            while rate.is_none() || peer.pacer.credit > 0.0 {
                let Some((sender, out)) = peer.pacer.queue.pop_front() else { break };
                peer.pacer.credit -= (out.payload.len() + crate::core::layers::PACKET_OVERHEAD) as f64;
                Self::send_rtp(&mut self.stats, &mut self.touched, pk, peer, sender, out, now);
            }
            if peer.pacer.queue.is_empty() {
                self.pacing.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.next_pace_at = (!self.pacing.is_empty()).then(|| now + PACE_TICK);
    }

    /// Sends the padding each running probe is due by now, and ends the probes whose time is up.
    fn run_probes(&mut self, now: Instant) {
        if self.next_probe_at.is_none_or(|t| now < t) {
            return;
        }
        let mut i = 0;
        while i < self.probing.len() {
            let pk = self.probing[i];
            let Some(peer) = self.peers.get_mut(&pk) else {
                self.probing.swap_remove(i);
                continue;
            };
            let (owner, room) = (peer.owner, peer.room);
            let Some(run) = peer.probe.as_mut() else {
                self.probing.swap_remove(i);
                continue;
            };
            let elapsed = now.min(run.end).saturating_duration_since(run.start);
            let due = (run.rate_bps as f64 * elapsed.as_secs_f64()) as u64;
            let mut sent = std::mem::take(&mut self.padding);
            if let Some(r) = self.rooms.get_mut(&room) {
                while run.sent_bits < due {
                    let Some(slot) = r.room.padding_slot(owner) else { break };
                    sent.push(slot);
                    run.sent_bits += PADDING_WIRE_BITS;
                }
            }
            let done = now >= run.end;
            if done {
                peer.probe = None;
                self.probing.swap_remove(i);
            } else {
                i += 1;
            }
            self.stats.padding_packets += sent.len() as u64;
            if let (Some(first), Some(last)) = (sent.first(), sent.last()) {
                trace!(packets = sent.len(), first_seq = first.1, last_seq = last.1, "probe padding");
            }
            for (down, seq, ts) in sent.drain(..) {
                self.send_down(down, false, seq, ts, &Bytes::new(), now);
            }
            self.padding = sent;
        }
        self.next_probe_at = (!self.probing.is_empty()).then(|| now + PROBE_PACING);
    }

    /// Down tracks negotiated on a connected subscribe connection start forwarding; a video one
    /// gets its track's cached GOP at once (or the publisher is asked for a keyframe).
    fn start_down_tracks(&mut self, rk: RoomKey, downs: &[DownTrackKey], now: Instant) {
        let mut replay = std::mem::take(&mut self.replay);
        let mut rng = rand::thread_rng();
        for &down in downs {
            let Some(r) = self.rooms.get_mut(&rk) else { break };
            r.room.down_track_ready(now, down, rng.gen(), rng.gen(), &mut replay);
            self.stats.gop_replays += !replay.is_empty() as u64;
            if let (Some(first), Some(last)) = (replay.first(), replay.last()) {
                debug!(?down, packets = replay.len(), first_seq = first.seq, last_seq = last.seq, "GOP replayed");
                self.stats.gop_replay_packets += replay.len() as u64;
                // The first burst (the keyframe's start) at once, the rest paced.
                self.start_replay(down, replay.drain(..), REPLAY_BURST_BYTES as i64, now);
            }
        }
        self.replay = replay;
    }

    /// Queues a GOP replay for a down track and sends its first burst; the rest leaves
    /// `burst` bytes per [`REPLAY_PACING`]. A replay that arrives while one is still going
    /// queues behind it (the numbering says so) at the new pace.
    fn start_replay(&mut self, down: DownTrackKey, packets: impl Iterator<Item = Replayed>, burst: i64, now: Instant) {
        let Some(d) = self.downs.get_mut(&down) else { return };
        d.replay_burst = burst.max(1);
        if let Some(q) = d.backlog.as_mut() {
            q.extend(packets);
            return;
        }
        d.backlog = Some(packets.collect());
        d.replay_credit = 0;
        if self.send_backlog(down, now) {
            self.replaying.push(down);
            self.next_replay_at.get_or_insert(now + REPLAY_PACING);
        }
    }

    /// Sends the next burst of every paced replay that is due.
    fn run_replays(&mut self, now: Instant) {
        if self.next_replay_at.is_none_or(|t| now < t) {
            return;
        }
        let mut i = 0;
        while i < self.replaying.len() {
            if self.send_backlog(self.replaying[i], now) {
                i += 1;
            } else {
                self.replaying.swap_remove(i);
            }
        }
        self.next_replay_at = (!self.replaying.is_empty()).then(|| now + REPLAY_PACING);
    }

    /// Sends one burst of a down track's backlog (its credit topped up by its burst size); false
    /// once it is empty (the down track forwards directly again) or the down track is gone.
    fn send_backlog(&mut self, down: DownTrackKey, now: Instant) -> bool {
        let Some(d) = self.downs.get_mut(&down) else { return false };
        d.replay_credit = (d.replay_credit + d.replay_burst).min(d.replay_burst);
        let mut sent = false;
        loop {
            let Some(d) = self.downs.get_mut(&down) else { return false };
            if d.replay_credit <= 0 {
                break;
            }
            let Some(p) = d.backlog.as_mut().and_then(VecDeque::pop_front) else {
                d.backlog = None;
                self.stats.gop_replay_bursts += sent as u64;
                return false;
            };
            d.replay_credit -= p.payload.len().max(1) as i64;
            sent = true;
            let Some(out) = d.packet(p.marker, p.seq, p.ts, &p.payload) else { continue };
            let (pk, sender) = (d.peer, d.sender);
            let paced = d.view.kind == MediaKind::Video && !p.payload.is_empty();
            self.write_rtp(pk, sender, out, paced, now);
        }
        self.stats.gop_replay_bursts += sent as u64;
        true
    }

    // ---- room outputs -----------------------------------------------------------------------

    fn apply_outputs(&mut self, rk: RoomKey, now: Instant) {
        while let Some(out) = self.rooms.get_mut(&rk).and_then(|r| r.room.poll_output()) {
            match out {
                Output::Event { to, event } => {
                    let msg = match event {
                        RoomEvent::ParticipantJoined(participant) => ServerMessage::ParticipantJoined { participant },
                        RoomEvent::ParticipantUpdated(participant) => ServerMessage::ParticipantUpdated { participant },
                        RoomEvent::ParticipantLeft { participant_id, cause } => {
                            ServerMessage::ParticipantLeft { participant_id, cause }
                        }
                        RoomEvent::TrackPublished(track) => ServerMessage::TrackPublished { track },
                        RoomEvent::TrackUnpublished { track_id, participant_id } => {
                            ServerMessage::TrackUnpublished { track_id, participant_id }
                        }
                        RoomEvent::SessionUpdated { locked, spotlight } => {
                            ServerMessage::SessionUpdated { locked, spotlight }
                        }
                        RoomEvent::ActiveSpeaker { participant_id } => ServerMessage::ActiveSpeaker { participant_id },
                        RoomEvent::VideoSuspended { suspended, estimate_kbps } => {
                            let sub = self.members.get(&to).and_then(|m| m.subscribe);
                            if let Some(p) = sub.and_then(|pk| self.peers.get(&pk)) {
                                p.video_suspended.store(suspended, std::sync::atomic::Ordering::Relaxed);
                            }
                            if suspended {
                                info!(participant = ?to, estimate_kbps, "downlink too weak for video: audio only");
                            } else {
                                info!(participant = ?to, estimate_kbps, "trying video again");
                            }
                            ServerMessage::VideoSuspended { suspended, estimate_kbps }
                        }
                    };
                    self.notify(to, msg);
                }
                Output::AddDownTrack { subscriber, down, up } => self.add_down_track(rk, subscriber, down, up, now),
                Output::RemoveDownTrack { subscriber: _, down } => {
                    if let Some(d) = self.downs.remove(&down) {
                        if let Some(peer) = self.peers.get_mut(&d.peer) {
                            peer.track_to_down.remove(&d.view.track_id);
                            if let Err(e) = peer.pc.remove_track(d.sender) {
                                debug!(error = %e, "remove_track failed");
                            }
                            self.mark_renegotiate(d.peer);
                        }
                    }
                }
                Output::RequestKeyframe { publisher: _, up, layer } => {
                    let Some(u) = self.ups.get(&up) else { continue };
                    let Some(ssrc) = u.ssrcs.get(usize::from(layer)).copied().flatten() else { continue };
                    let (upk, receiver) = (u.peer, u.receiver);
                    if let Some(peer) = self.peers.get_mut(&upk) {
                        if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
                            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                            if let Err(e) = r.write_rtcp(now, vec![Box::new(pli)]) {
                                debug!(error = %e, "PLI write failed");
                            }
                            self.touch(upk);
                        }
                    }
                }
                Output::Disconnect { participant, cause } => self.disconnect(rk, participant, cause),
                Output::Probe { subscriber, rate_bps, duration } => {
                    let Some(pk) = self.members.get(&subscriber).and_then(|m| m.subscribe) else { continue };
                    let Some(peer) = self.peers.get_mut(&pk).filter(|p| p.connected) else { continue };
                    let Some(cell) = peer.estimate.as_ref() else { continue };
                    // The window takes in the last burst, which may leave a pacing interval late.
                    cell.start_probe(now, now + duration + PROBE_PACING);
                    let fresh = peer.probe.is_none();
                    peer.probe = Some(ProbeRun { rate_bps, start: now, end: now + duration, sent_bits: 0 });
                    peer.probe_asked_bps = rate_bps;
                    if fresh {
                        self.probing.push(pk);
                    }
                    self.next_probe_at = Some(now);
                    self.stats.probes += 1;
                    let who = self.members.get(&subscriber).map(|m| m.participant_id.as_str()).unwrap_or("?");
                    debug!(participant = who, rate_kbps = rate_bps / 1000, "probing the downlink");
                }
                Output::Replay { subscriber, down, layer, packets } => {
                    // Paced at a multiple of the subscriber's downlink estimate (the room only
                    // replays at a switch what a fraction of a second of the link carries).
                    let estimate = self
                        .downs
                        .get(&down)
                        .and_then(|d| self.peers.get(&d.peer))
                        .and_then(|p| p.estimate.as_ref())
                        .map_or(0, |e| e.get());
                    let burst = if estimate == 0 {
                        REPLAY_BURST_BYTES as i64
                    } else {
                        (estimate as f64 * SWITCH_REPLAY_RATE / 8.0 * REPLAY_PACING.as_secs_f64()) as i64
                    };
                    let who = self.members.get(&subscriber).map(|m| m.participant_id.as_str()).unwrap_or("?");
                    debug!(
                        participant = who,
                        ?down,
                        layer,
                        packets = packets.len(),
                        first_seq = packets.first().map(|p| p.seq),
                        last_seq = packets.last().map(|p| p.seq),
                        estimate_kbps = estimate / 1000,
                        "layer switch from the GOP cache"
                    );
                    self.stats.gop_replay_packets += packets.len() as u64;
                    self.start_replay(down, packets.into_iter(), burst, now);
                }
                Output::ProbeFailed { subscriber, delivered_kbps } => {
                    self.stats.probes_failed += 1;
                    let who = self.members.get(&subscriber).map(|m| m.participant_id.as_str()).unwrap_or("?");
                    debug!(participant = who, delivered_kbps, "the downlink cannot carry higher layers");
                }
                Output::LayerTarget { subscriber, up, spatial, temporal, estimate_kbps } => {
                    let who = self.members.get(&subscriber).map(|m| m.participant_id.as_str()).unwrap_or("?");
                    debug!(participant = who, ?up, spatial, temporal, estimate_kbps, "video layer for the downlink");
                }
                Output::NetworkChanged { participant, quality, sample, estimate_kbps } => {
                    let Some(m) = self.members.get(&participant) else { continue };
                    let detail = sample.describe(quality, estimate_kbps);
                    info!(session = %m.session_id, participant = %m.participant_id, %detail, "network quality changed");
                    let _ = self.presence.send(Presence::Record(PresenceRecord {
                        session_id: m.session_id.clone(),
                        participant_id: m.participant_id.clone(),
                        event: "network",
                        cause: None,
                        detail: Some(detail),
                        at: SystemTime::now(),
                    }));
                }
                Output::ZoneChanged { participant, zone } => {
                    let Some(pid) = self.members.get(&participant).map(|m| m.participant_id.clone()) else { continue };
                    if let Some(tap) = self.rooms.get_mut(&rk).and_then(|r| r.recorder.as_mut()) {
                        tap.offer(RecInput::Zone { participant_id: pid, zone: zone.to_string() }, now);
                    }
                }
            }
        }
        if self.rooms.get(&rk).is_some_and(|r| r.room.is_empty()) {
            if let Some(mut r) = self.rooms.remove(&rk) {
                self.room_by_session.remove(&r.session.id);
                if let Some(tap) = r.recorder.take() {
                    self.parked_recorders.insert(r.session.id.clone(), tap);
                }
                debug!(session = %r.session.id, "room emptied");
            }
        }
    }

    fn add_down_track(
        &mut self,
        rk: RoomKey,
        subscriber: ParticipantKey,
        down: DownTrackKey,
        up: UpTrackKey,
        now: Instant,
    ) {
        let Some(r) = self.rooms.get(&rk) else { return };
        let Some((info, publisher)) = r.room.up_track_info(up).map(|(i, p)| (i.clone(), p)) else { return };
        let Some(up_state) = self.ups.get(&up) else { return };
        let publisher_id = self.members.get(&publisher).map(|m| m.participant_id.clone()).unwrap_or_default();
        let view = TrackView {
            track_id: info.track_id.clone(),
            participant_id: publisher_id.clone(),
            kind: info.kind,
            source: info.source,
            codec: info.mime.clone(),
        };
        let codec = up_state.codec.clone();
        let Some(pk) = self.ensure_peer(subscriber, PcKind::Subscribe, now) else { return };
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        let ssrc: u32 = rand::thread_rng().gen();
        let kind = if info.kind == MediaKind::Audio { RtpCodecKind::Audio } else { RtpCodecKind::Video };
        let track = MediaStreamTrack::new(
            publisher_id,
            info.track_id.clone(),
            info.track_id.clone(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: codec.clone(),
                ..Default::default()
            }],
        );
        match peer.pc.add_track(track) {
            Ok(sender) => {
                peer.track_to_down.insert(info.track_id.clone(), down);
                self.downs.insert(
                    down,
                    DownState {
                        peer: pk,
                        sender,
                        ssrc,
                        pt: None,
                        offered: false,
                        codec,
                        view,
                        backlog: None,
                        replay_credit: 0,
                        replay_burst: 0,
                    },
                );
                self.mark_renegotiate(pk);
            }
            Err(e) => warn!(error = %e, "could not add a down track"),
        }
    }

    fn mark_renegotiate(&mut self, pk: PeerKey) {
        if !self.renegotiate.contains(&pk) {
            self.renegotiate.push(pk);
        }
    }

    /// Sends a fresh subscribe offer, or remembers to once the outstanding one is answered.
    fn negotiate_subscribe(&mut self, pk: PeerKey) {
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        if peer.negotiating {
            peer.renegotiate = true;
            return;
        }
        let offer = match peer.pc.create_offer(None) {
            Ok(o) => o,
            Err(e) => return warn!(error = %e, "create_offer failed"),
        };
        let sdp = offer.sdp.clone();
        if let Err(e) = peer.pc.set_local_description(Instant::now(), offer) {
            return warn!(error = %e, "set_local_description(offer) failed");
        }
        peer.negotiating = true;
        peer.renegotiate = false;
        let owner = peer.owner;
        for d in self.downs.values_mut().filter(|d| d.peer == pk) {
            d.offered = true;
        }
        let tracks = self.downs.values().filter(|d| d.peer == pk).map(|d| d.view.clone()).collect();
        self.touch(pk);
        self.notify(owner, ServerMessage::SubscribeOffer { sdp, tracks });
    }

    fn disconnect(&mut self, rk: RoomKey, key: ParticipantKey, cause: LeaveCause) {
        let Some(member) = self.members.remove(&key) else { return };
        if let Some(r) = self.rooms.get_mut(&rk) {
            r.by_participant_id.remove(&member.participant_id);
        }
        for pk in [member.publish, member.subscribe].into_iter().flatten() {
            self.close_peer(pk);
        }
        let _ = member.outbound.try_send(Outbound::Close(CloseCode::for_cause(cause)));
        info!(session = %member.session_id, participant = %member.participant_id, cause = cause.as_str(), "participant left");
        let _ = self.presence.send(Presence::Record(PresenceRecord {
            session_id: member.session_id,
            participant_id: member.participant_id,
            event: "left",
            cause: Some(cause),
            detail: None,
            at: SystemTime::now(),
        }));
    }

    fn close_peer(&mut self, pk: PeerKey) {
        let Some(mut peer) = self.peers.remove(&pk) else { return };
        if let Err(e) = peer.pc.close() {
            debug!(error = %e, "closing a peer connection");
        }
        self.peer_by_ufrag.remove(&peer.ufrag);
        for a in &peer.addrs {
            if self.peer_by_addr.get(a) == Some(&pk) {
                self.peer_by_addr.remove(a);
            }
        }
        if let Some(d) = peer.deadline {
            self.timers.remove(&(d, pk));
        }
        self.downs.retain(|_, d| d.peer != pk);
        // The recorder closes the last segment of each track now (stored at once, not when the
        // session ends) and marks the track ended, so crash recovery knows it lost nothing.
        let mut recorder = self.rooms.get_mut(&peer.room).and_then(|r| r.recorder.as_mut());
        let now = Instant::now();
        self.ups.retain(|up, u| {
            if u.peer != pk {
                return true;
            }
            if let Some(tap) = recorder.as_deref_mut() {
                tap.offer(RecInput::TrackEnd(*up), now);
            }
            false
        });
        self.touched.retain(|p| *p != pk);
        self.renegotiate.retain(|p| *p != pk);
    }

    fn ensure_peer(&mut self, owner: ParticipantKey, kind: PcKind, now: Instant) -> Option<PeerKey> {
        let member = self.members.get(&owner)?;
        let existing = match kind {
            PcKind::Publish => member.publish,
            PcKind::Subscribe => member.subscribe,
        };
        if existing.is_some() {
            return existing;
        }
        let room = member.room;
        let (mut ufrag, mut pwd) = peer::ice_credentials();
        while self.peer_by_ufrag.contains_key(&ufrag) {
            (ufrag, pwd) = peer::ice_credentials();
        }
        let estimate = (kind == PcKind::Subscribe).then(EstimateCell::default);
        let video_suspended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let extras = estimate.clone().map(|estimate| peer::SubscribeExtras {
            estimate,
            nacks_refused: self.nacks_refused.clone(),
            video_suspended: video_suspended.clone(),
        });
        let pc = match peer::build(&ufrag, &pwd, self.announced, now, extras) {
            Ok(pc) => pc,
            Err(e) => {
                warn!(error = %e, "could not create a peer connection");
                return None;
            }
        };
        self.next_peer += 1;
        let pk = PeerKey(self.next_peer);
        self.peer_by_ufrag.insert(ufrag.clone(), pk);
        self.peers.insert(
            pk,
            Peer {
                pc,
                owner,
                room,
                kind,
                ufrag,
                addrs: Vec::new(),
                deadline: None,
                last_rx: None,
                connected: false,
                read_error_logged: false,
                touched: false,
                pending_ready: Vec::new(),
                estimate,
                video_suspended,
                probe: None,
                probe_asked_bps: 0,
                pacer: Pacer::default(),
                ssrc_to_up: HashMap::new(),
                track_to_up: HashMap::new(),
                track_to_down: HashMap::new(),
                negotiating: false,
                renegotiate: false,
                // A publish connection learns the client's credentials from its offer, before the
                // client can send a check.
                remote_known: kind == PcKind::Publish,
                early_checks: Vec::new(),
                kick_at: None,
            },
        );
        let member = self.members.get_mut(&owner)?;
        match kind {
            PcKind::Publish => member.publish = Some(pk),
            PcKind::Subscribe => member.subscribe = Some(pk),
        }
        Some(pk)
    }

    fn notify(&mut self, to: ParticipantKey, msg: ServerMessage) {
        let Some(m) = self.members.get(&to) else { return };
        let stuck = ConnRef { participant: to, conn: m.conn };
        // The last slot is kept for the `Close` that tells a stuck client why it is dropped.
        if m.outbound.capacity() <= 1 && !m.outbound.is_closed() {
            warn!(participant = %m.participant_id, "signalling queue full; the client is not reading");
            if !self.stuck.contains(&stuck) {
                self.stuck.push(stuck);
            }
            return;
        }
        // A closed queue means signalling is already gone; the grace period runs.
        let _ = m.outbound.try_send(Outbound::Message(msg));
    }

    // ---- commands ---------------------------------------------------------------------------

    fn member_for(&self, from: ConnRef) -> Option<&Member> {
        self.members.get(&from.participant).filter(|m| m.conn == from.conn)
    }

    async fn on_command(&mut self, cmd: Command, now: Instant) {
        self.forget_touched();
        match cmd {
            Command::Join { joiner, outbound, reply } => self.on_join(joiner, outbound, reply, now),
            Command::PublishOffer { from, sdp, sources } => self.on_publish_offer(from, sdp, sources, now),
            Command::SubscribeAnswer { from, sdp } => self.on_subscribe_answer(from, sdp, now),
            Command::Candidate { from, pc, candidate } => {
                let Some(m) = self.member_for(from) else { return };
                let pk = match pc {
                    PcKind::Publish => m.publish,
                    PcKind::Subscribe => m.subscribe,
                };
                let Some(peer) = pk.and_then(|pk| self.peers.get_mut(&pk)) else {
                    return self.notify(
                        from.participant,
                        ServerMessage::error("unknown_pc", "该连接尚未建立", "that peer connection does not exist yet"),
                    );
                };
                let init = RTCIceCandidateInit {
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_m_line_index,
                    username_fragment: candidate.username_fragment,
                    url: None,
                };
                if let Err(e) = peer.pc.add_remote_candidate(init) {
                    debug!(error = %e, "bad remote candidate");
                    self.notify(
                        from.participant,
                        ServerMessage::error("bad_candidate", "ICE 候选无效", "invalid ICE candidate"),
                    );
                }
            }
            Command::Mute { from, kind, muted } => {
                let Some(m) = self.member_for(from) else { return };
                let rk = m.room;
                if let Some(r) = self.rooms.get_mut(&rk) {
                    r.room.set_muted(from.participant, kind, muted);
                }
            }
            Command::Leave { from } => {
                let Some(m) = self.member_for(from) else { return };
                let rk = m.room;
                if let Some(r) = self.rooms.get_mut(&rk) {
                    r.room.leave(now, from.participant, LeaveCause::Left);
                }
            }
            Command::ConnectionLost { from, cause } => {
                let Some(m) = self.member_for(from) else { return };
                let rk = m.room;
                if let Some(r) = self.rooms.get_mut(&rk) {
                    match cause {
                        Some(c) => r.room.leave(now, from.participant, c),
                        None => r.room.signal_lost(now, from.participant),
                    }
                }
            }
            Command::Recorder { session_id, event } => self.on_recorder_event(&session_id, event, now),
            Command::FinishRecording { session_id, reply } => match self.take_recorder(&session_id) {
                Some(tap) => tap.control(rec::RecControl::Finish { reply, cause: rec::FinishCause::SessionClosed }),
                None => drop(reply),
            },
            Command::FinishAllRecordings { reply } => {
                // The server is stopping: every recording, of a live room or an emptied one, ends
                // as final now, while the runtime its store calls need is still there. Nothing
                // records after this; the process is about to end.
                let taps: Vec<RecorderTap> = self
                    .rooms
                    .values_mut()
                    .filter_map(|r| r.recorder.take())
                    .chain(self.parked_recorders.drain().map(|(_, tap)| tap))
                    .collect();
                let waits = taps
                    .into_iter()
                    .map(|tap| {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        tap.control(rec::RecControl::Finish { reply: tx, cause: rec::FinishCause::ServerStopped });
                        rx
                    })
                    .collect();
                let _ = reply.send(waits);
            }
            Command::CloseSession { session_id } => {
                self.recording_status.remove(&session_id);
                self.closed_sessions.insert(session_id.clone());
                if let Some(r) = self.room_by_session.get(&session_id).and_then(|rk| self.rooms.get_mut(rk)) {
                    r.room.close(now);
                }
            }
            Command::RemoveParticipant { session_id, participant_id } => {
                if let Some(r) = self.room_by_session.get(&session_id).and_then(|rk| self.rooms.get_mut(rk)) {
                    if let Some(key) = r.by_participant_id.get(&participant_id).copied() {
                        r.room.leave(now, key, LeaveCause::Removed);
                    }
                }
            }
            Command::Transfer { session_id, participant_id, to_session, join_url } => {
                let key = self
                    .room_by_session
                    .get(&session_id)
                    .and_then(|rk| self.rooms.get(rk))
                    .and_then(|r| r.by_participant_id.get(&participant_id).copied());
                if let Some(key) = key {
                    self.notify(key, ServerMessage::Transferred { session_id: to_session, join_url });
                    if let Some(r) = self.room_by_session.get(&session_id).and_then(|rk| self.rooms.get_mut(rk)) {
                        r.room.leave(now, key, LeaveCause::Transferred);
                    }
                }
            }
            Command::Snapshot { session_id, reply } => {
                let people = self
                    .room_by_session
                    .get(&session_id)
                    .and_then(|rk| self.rooms.get(rk))
                    .map(|r| r.room.snapshot().0)
                    .unwrap_or_default();
                let _ = reply.send(people);
            }
            Command::Control { from, request } => self.on_control(from, request, now),
            Command::Live { reply } => {
                let live = self.rooms.values().map(|r| (r.session.id.clone(), r.room.snapshot().0)).collect();
                let _ = reply.send(live);
            }
            Command::Tracks { session_id, reply } => {
                let tracks = self
                    .room_by_session
                    .get(&session_id)
                    .and_then(|rk| self.rooms.get(rk))
                    .map(|r| r.room.track_report(now))
                    .unwrap_or_default();
                let _ = reply.send(tracks);
            }
            Command::Stats { reply } => {
                let mut s = self.stats.clone();
                s.rooms = self.rooms.len();
                s.packets_thinned = self.rooms.values().map(|r| r.room.packets_thinned()).sum();
                s.switch_replays = self.rooms.values().map(|r| r.room.switch_replays()).sum();
                s.participants = self.members.len();
                s.peer_connections = self.peers.len();
                s.nacks_refused = self.nacks_refused.load(std::sync::atomic::Ordering::Relaxed);
                let _ = reply.send(s);
            }
            Command::PresenceWritten { reply } => {
                let _ = self.presence.send(Presence::Written(reply));
            }
        }
        self.settle(now, true).await;
    }

    /// The session's recorder, whether its room is live or emptied.
    fn take_recorder(&mut self, session_id: &str) -> Option<RecorderTap> {
        let in_room = self.room_by_session.get(session_id).and_then(|rk| self.rooms.get_mut(rk)?.recorder.take());
        in_room.or_else(|| self.parked_recorders.remove(session_id))
    }

    /// The recorder for a new room of `session`: the one it had (a room that emptied and refilled
    /// keeps its recording), or a new one.
    fn recorder_for(&mut self, session: &SessionView) -> Option<RecorderTap> {
        if let Some(tap) = self.parked_recorders.remove(&session.id) {
            return Some(tap);
        }
        let ctx = self.recording.clone()?;
        let facts = rec::SessionFacts {
            session_id: session.id.clone(),
            case_ref: session.case_id.clone(),
            kind: session.kind.clone(),
            title: session.title.clone(),
        };
        let tx = self.self_tx.clone();
        let session_id = session.id.clone();
        let events = Box::new(move |event: RecorderEvent| {
            if let Some(tx) = tx.as_ref().and_then(|t| t.upgrade()) {
                let _ = tx.blocking_send(Command::Recorder { session_id: session_id.clone(), event });
            }
        });
        match rec::start(ctx, facts, events) {
            Ok(tap) => Some(tap),
            Err(e) => {
                // The session goes on, but nobody may believe it is recorded.
                warn!(error = %e, session = %session.id, "the recorder could not start");
                self.recording_status.insert(session.id.clone(), rec::RecordingStatus::not_started());
                None
            }
        }
    }

    fn on_recorder_event(&mut self, session_id: &str, event: RecorderEvent, now: Instant) {
        if let RecorderEvent::Status(status) = &event {
            self.recording_status.insert(session_id.to_string(), status.clone());
        }
        let Some(rk) = self.room_by_session.get(session_id).copied() else { return };
        match event {
            RecorderEvent::KeyframeNeeded(up) => {
                if let Some(r) = self.rooms.get_mut(&rk) {
                    r.room.recorder_wants_keyframe(now, up);
                }
                self.apply_outputs(rk, now);
            }
            RecorderEvent::Status(status) => {
                let members: Vec<ParticipantKey> =
                    self.members.iter().filter(|(_, m)| m.room == rk).map(|(k, _)| *k).collect();
                for m in members {
                    self.notify(m, ServerMessage::RecordingStatus { status: status.clone() });
                }
            }
        }
    }

    fn on_join(
        &mut self,
        joiner: Joiner,
        outbound: mpsc::Sender<Outbound>,
        reply: tokio::sync::oneshot::Sender<Result<ConnRef, JoinRefused>>,
        now: Instant,
    ) {
        if self.closed_sessions.contains(&joiner.session.id) {
            let _ = reply.send(Err(JoinRefused::SessionClosed));
            return;
        }
        let rk = match self.room_by_session.get(&joiner.session.id) {
            Some(rk) => *rk,
            None => {
                self.next_room += 1;
                let rk = RoomKey(self.next_room);
                let room = Room::new(self.core.clone(), Box::new(SameZone));
                let recorder = self.recorder_for(&joiner.session);
                let state =
                    RoomState { room, session: joiner.session.clone(), by_participant_id: HashMap::new(), recorder };
                self.rooms.insert(rk, state);
                self.room_by_session.insert(joiner.session.id.clone(), rk);
                rk
            }
        };
        self.next_conn += 1;
        let conn = self.next_conn;
        let existing = self.rooms.get(&rk).and_then(|r| r.by_participant_id.get(&joiner.participant_id).copied());
        let host = policy(joiner.role).host;
        if existing.is_none() && !host && self.rooms.get(&rk).is_some_and(|r| r.room.is_locked()) {
            let _ = reply.send(Err(JoinRefused::Locked));
            return;
        }
        let (key, event) = if let Some(key) = existing {
            // Same participant again: the new connection replaces the old one.
            let (old_publish, old_subscribe) = match self.members.get_mut(&key) {
                Some(m) => {
                    let _ = m.outbound.try_send(Outbound::Close(CloseCode::Replaced));
                    m.conn = conn;
                    m.outbound = outbound;
                    m.sources.clear();
                    (m.publish.take(), m.subscribe.take())
                }
                None => (None, None),
            };
            for pk in [old_publish, old_subscribe].into_iter().flatten() {
                self.close_peer(pk);
            }
            if let Some(r) = self.rooms.get_mut(&rk) {
                if let Err(e) = r.room.reconnect(now, key, &mut self.keys) {
                    warn!(error = %e, "reconnect of an unknown participant");
                }
            }
            (key, "reconnected")
        } else {
            let key = self.keys.participant();
            let info = ParticipantInfo {
                key,
                id: joiner.participant_id.clone(),
                display_name: joiner.display_name.clone(),
                role: joiner.role,
                site_id: joiner.site_id.clone(),
                group: joiner.group.clone(),
            };
            self.members.insert(
                key,
                Member {
                    room: rk,
                    session_id: joiner.session.id.clone(),
                    participant_id: joiner.participant_id.clone(),
                    conn,
                    outbound,
                    publish: None,
                    subscribe: None,
                    sources: HashMap::new(),
                },
            );
            if let Some(r) = self.rooms.get_mut(&rk) {
                r.by_participant_id.insert(joiner.participant_id.clone(), key);
                // Hosts enter the session; witnesses wait to be called; others wait in the lobby
                // when the session has one. A participant coming back within the grace period
                // keeps its zone (the branch above).
                // A supervisor observing (纪委/检察) is not admitted by the people it oversees: it
                // enters directly, publishes nothing, and everyone sees it there.
                let zone = if host || joiner.role == crate::core::Role::Observer {
                    Zone::Main
                } else if joiner.role == crate::core::Role::Witness {
                    Zone::WitnessWaiting
                } else if joiner.lobby {
                    Zone::Lobby
                } else {
                    Zone::Main
                };
                if let Err(e) = r.room.join(now, info, zone, &mut self.keys) {
                    warn!(error = %e, "join refused by the room");
                }
            }
            (key, "joined")
        };
        let _ = reply.send(Ok(ConnRef { participant: key, conn }));
        if let Some(r) = self.rooms.get(&rk) {
            let (mut participants, tracks) = r.room.snapshot_for(key);
            let me = participants.iter().position(|p| p.id == joiner.participant_id).map(|i| participants.remove(i));
            if let Some(me) = me {
                let mut session = r.session.clone();
                session.locked = r.room.is_locked();
                session.spotlight = r.room.spotlight_id();
                let msg = ServerMessage::Joined {
                    participant_id: joiner.participant_id.clone(),
                    session,
                    me,
                    participants,
                    tracks: tracks.into_iter().filter(|t| t.participant_id != joiner.participant_id).collect(),
                    reconnect_grace_ms: self.core.reconnect_grace.as_millis() as u64,
                };
                self.notify(key, msg);
                if let Some(status) = self.recording_status.get(&joiner.session.id).cloned() {
                    self.notify(key, ServerMessage::RecordingStatus { status });
                }
            }
        }
        info!(session = %joiner.session.id, participant = %joiner.participant_id, role = joiner.role.as_str(), event, "participant joined");
        let _ = self.presence.send(Presence::Record(PresenceRecord {
            session_id: joiner.session.id,
            participant_id: joiner.participant_id,
            event,
            cause: None,
            detail: None,
            at: SystemTime::now(),
        }));
    }

    fn on_control(&mut self, from: ConnRef, req: ControlRequest, now: Instant) {
        let Some(rk) = self.member_for(from).map(|m| m.room) else { return };
        let Some(r) = self.rooms.get(&rk) else { return };
        let me = from.participant;
        let target = req.target.as_ref().and_then(|id| r.by_participant_id.get(id).copied());
        // A named target must exist; actions on oneself may omit it.
        let self_or_target = if req.target.is_none() { Some(me) } else { target };
        let control = match req.action {
            Action::Admit => target.map(Control::Admit),
            Action::Deny => target.map(Control::Deny),
            Action::Move => match req.zone {
                Some(z) => target.map(|t| Control::Move(t, z)),
                None => {
                    return self.notify(me, ServerMessage::error("bad_zone", "请指定会场", "a zone is required"));
                }
            },
            Action::Mute | Action::Unmute => match req.kind {
                Some(k) if req.action == Action::Mute => target.map(|t| Control::Mute(t, k)),
                Some(k) => target.map(|t| Control::Unmute(t, k)),
                None => {
                    return self
                        .notify(me, ServerMessage::error("bad_request", "请指定音频或视频", "kind is required"));
                }
            },
            Action::Remove => target.map(Control::Remove),
            Action::Lock => Some(Control::Lock),
            Action::Unlock => Some(Control::Unlock),
            Action::Spotlight if req.target.is_none() => Some(Control::Spotlight(None)),
            Action::Spotlight => target.map(|t| Control::Spotlight(Some(t))),
            Action::RaiseHand => self_or_target.map(Control::RaiseHand),
            Action::LowerHand => self_or_target.map(Control::LowerHand),
            Action::CallWitness => target.map(Control::CallWitness),
            Action::DismissWitness => target.map(Control::DismissWitness),
            Action::CallNext => Some(Control::CallNext),
            Action::PauseRecording => match req.reason.as_deref() {
                Some("recess" | "non_public_evidence" | "mediation_unsuited_to_recording") => {
                    Some(Control::PauseRecording)
                }
                _ => {
                    return self.notify(
                        me,
                        ServerMessage::error(
                            "bad_reason",
                            "暂停录像须说明法定事由：休庭、不公开证据或不宜录音录像的调解",
                            "pausing the recording needs a statutory reason: recess, non_public_evidence or mediation_unsuited_to_recording",
                        ),
                    );
                }
            },
            Action::ResumeRecording => Some(Control::ResumeRecording),
        };
        let Some(control) = control else {
            return self.notify(
                me,
                ServerMessage::error("bad_target", "找不到该参与人", "no such participant in this session"),
            );
        };
        let Some(r) = self.rooms.get_mut(&rk) else { return };
        match r.room.control(now, me, control, &mut self.keys) {
            Ok(affected) => {
                // The ack names who was affected (for call_next, whom the queue gave).
                let affected_id = affected.and_then(|k| self.members.get(&k)).map(|m| m.participant_id.clone());
                let target_id = affected_id.or(req.target.clone());
                let actor = self.members.get(&me).map(|m| (m.session_id.clone(), m.participant_id.clone()));
                self.notify(me, ServerMessage::ControlAck { action: req.action, target: target_id.clone() });
                if matches!(req.action, Action::PauseRecording | Action::ResumeRecording) {
                    let by = self.members.get(&me).map(|m| m.participant_id.clone()).unwrap_or_default();
                    let session_id = self.members.get(&me).map(|m| m.session_id.clone()).unwrap_or_default();
                    let rk = self.room_by_session.get(&session_id).copied();
                    if let Some(tap) = rk.and_then(|rk| self.rooms.get(&rk)?.recorder.as_ref()) {
                        tap.control(match req.reason.clone().filter(|_| req.action == Action::PauseRecording) {
                            Some(reason) => rec::RecControl::Pause { by, reason },
                            None => rec::RecControl::Resume,
                        });
                    }
                }
                if let Some((session_id, actor_id)) = actor {
                    let action = serde_json::to_value(req.action).ok().and_then(|v| v.as_str().map(String::from));
                    let detail = [action, target_id, req.zone.map(|z| z.to_string()), req.reason.clone()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ");
                    info!(session = %session_id, actor = %actor_id, %detail, "control");
                    let _ = self.presence.send(Presence::Record(PresenceRecord {
                        session_id,
                        participant_id: actor_id,
                        event: "control",
                        cause: None,
                        detail: Some(detail),
                        at: SystemTime::now(),
                    }));
                }
            }
            Err(ControlError::NotAllowed) => self
                .notify(me, ServerMessage::error("not_allowed", "您的角色无权执行此操作", "your role may not do this")),
            Err(ControlError::QueueEmpty) => {
                self.notify(me, ServerMessage::error("queue_empty", "没有等候的来访人", "nobody is waiting"))
            }
            Err(ControlError::GroupLimit) => self.notify(
                me,
                ServerMessage::error(
                    "group_limit",
                    "该群体代表已达5人上限",
                    "the group already has five representatives present",
                ),
            ),
            Err(ControlError::BadTarget) => self.notify(
                me,
                ServerMessage::error(
                    "bad_target",
                    "该操作不适用于此参与人",
                    "the action does not apply to that participant",
                ),
            ),
        }
    }

    fn on_publish_offer(&mut self, from: ConnRef, sdp: String, sources: HashMap<String, TrackSource>, now: Instant) {
        let Some(m) = self.members.get_mut(&from.participant).filter(|m| m.conn == from.conn) else { return };
        m.sources.extend(sources);
        let Some(pk) = self.ensure_peer(from.participant, PcKind::Publish, now) else {
            return self.notify(
                from.participant,
                ServerMessage::error("internal", "服务器无法建立连接", "the server could not create a connection"),
            );
        };
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        // rtc does not report a track whose m-section stopped sending: read it from the offer.
        let sending = super::peer::sending_track_ids(&sdp);
        let room = peer.room;
        let result = RTCSessionDescription::offer(sdp)
            .and_then(|offer| peer.pc.set_remote_description(now, offer))
            .and_then(|()| peer.pc.create_answer(None))
            .and_then(|answer| {
                let sdp = answer.sdp.clone();
                peer.pc.set_local_description(now, answer).map(|()| sdp)
            });
        match result {
            Ok(sdp) => {
                self.touch(pk);
                self.notify(from.participant, ServerMessage::PublishAnswer { sdp });
                self.drain_events(pk, now);
                let stopped: Vec<String> = self
                    .peers
                    .get(&pk)
                    .map(|p| p.track_to_up.keys().filter(|id| !sending.contains(id.as_str())).cloned().collect())
                    .unwrap_or_default();
                if !stopped.is_empty() {
                    for id in &stopped {
                        debug!(track = %id, "published track stopped by a new offer");
                        self.unpublish_track(pk, id, now);
                    }
                    self.apply_outputs(room, now);
                }
            }
            Err(e) => {
                info!(error = %e, "bad publish offer");
                self.notify(
                    from.participant,
                    ServerMessage::error("bad_sdp", "SDP 无效", "the SDP offer was rejected"),
                );
            }
        }
    }

    fn on_subscribe_answer(&mut self, from: ConnRef, sdp: String, now: Instant) {
        let Some(m) = self.member_for(from) else { return };
        let pending = m.subscribe.filter(|pk| self.peers.get(pk).is_some_and(|p| p.negotiating));
        let Some(pk) = pending else {
            return self.notify(
                from.participant,
                ServerMessage::error(
                    "no_pending_offer",
                    "没有待回复的订阅请求",
                    "no subscribe offer is waiting for an answer",
                ),
            );
        };
        let Some(peer) = self.peers.get_mut(&pk) else { return };
        let result = RTCSessionDescription::answer(sdp).and_then(|a| peer.pc.set_remote_description(now, a));
        if let Err(e) = result {
            info!(error = %e, "bad subscribe answer");
            // Offer again, so one bad answer does not freeze this participant's subscriptions.
            peer.negotiating = false;
            self.mark_renegotiate(pk);
            return self
                .notify(from.participant, ServerMessage::error("bad_sdp", "SDP 无效", "the SDP answer was rejected"));
        }
        peer.negotiating = false;
        peer.remote_known = true;
        let early = std::mem::take(&mut peer.early_checks);
        let again = peer.renegotiate;
        if !peer.touched {
            peer.touched = true;
            self.touched.push(pk);
        }
        // Every down track of this peer that now has a payload type starts forwarding.
        let mut ready = Vec::new();
        for (key, d) in self.downs.iter_mut().filter(|(_, d)| d.peer == pk && d.pt.is_none() && d.offered) {
            let Some(mut sender) = peer.pc.rtp_sender(d.sender) else { continue };
            let params = sender.get_parameters();
            let pt = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| {
                    c.rtp_codec.mime_type.eq_ignore_ascii_case(&d.codec.mime_type)
                        && c.rtp_codec.sdp_fmtp_line == d.codec.sdp_fmtp_line
                })
                .or_else(|| {
                    params
                        .rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&d.codec.mime_type))
                })
                .map(|c| c.payload_type);
            match pt {
                Some(pt) => {
                    d.pt = Some(pt);
                    ready.push(*key);
                }
                None => {
                    warn!(track = %d.view.track_id, codec = %d.codec.mime_type, "subscriber did not accept the codec")
                }
            }
        }
        let rk = peer.room;
        if peer.connected {
            self.start_down_tracks(rk, &ready, now);
        } else {
            peer.pending_ready.extend(ready);
        }
        if again {
            self.mark_renegotiate(pk);
        }
        // The checks that came before the answer get their responses now (sent by the settle
        // that follows every command).
        for (addr, d) in early {
            self.deliver(pk, addr, d, now);
        }
    }

    // ---- time -------------------------------------------------------------------------------

    async fn on_timer(&mut self, now: Instant) {
        self.forget_touched();
        let ticked = self.run_due(now);
        self.settle(now, ticked).await;
    }

    /// Runs what is due at `now`: the connections' timers (their output drained), probes,
    /// replays, pacing, and the room tick. Returns whether the room tick ran.
    fn run_due(&mut self, now: Instant) -> bool {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        while let Some(&(t, pk)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, pk));
            let Some(peer) = self.peers.get_mut(&pk) else { continue };
            peer.deadline = None;
            // A deadline that came due on the turn that set a kick (ICE just connected): the kick
            // is the connection's next timeout (`settle` sets it).
            if peer.kick_at.is_none_or(|k| k <= now) {
                if let Err(e) = peer.pc.handle_timeout(now) {
                    debug!(error = %e, "peer timeout handling");
                }
                fired.push(pk);
            }
            self.touch(pk);
        }
        self.run_probes(now);
        self.run_replays(now);
        self.run_pacers(now);
        // A timer's output: events, and reads (which may forward packets and touch more peers;
        // `settle` flushes them all).
        for &pk in &fired {
            self.drain_events(pk, now);
            self.drain_reads(pk, now);
        }
        self.fired = fired;
        let ticked = now >= self.next_tick;
        if ticked {
            self.next_tick = now + ROOM_TICK;
            // Liveness: any datagram a connected peer sent counts as media/ICE traffic. And each
            // subscriber's downlink estimate goes to its room (audio-only fallback).
            for peer in self.peers.values() {
                if let (true, Some(at)) = (peer.connected, peer.last_rx) {
                    if let Some(r) = self.rooms.get_mut(&peer.room) {
                        r.room.media_alive(peer.owner, at);
                        let estimate = peer.estimate.as_ref().map_or(0, |e| e.get());
                        if let Some(delivered) = peer.estimate.as_ref().and_then(|e| e.take_probe_result()) {
                            debug!(
                                participant = ?peer.owner,
                                asked_kbps = peer.probe_asked_bps / 1000,
                                delivered_kbps = delivered / 1000,
                                estimate_kbps = estimate / 1000,
                                "probe measured"
                            );
                            self.stats.probe_asked_kbps += peer.probe_asked_bps / 1000;
                            self.stats.probe_delivered_kbps += delivered / 1000;
                            r.room.on_probe_result(now, peer.owner, delivered);
                        }
                        if estimate > 0 {
                            let loss = peer.estimate.as_ref().map_or(0.0, |e| e.loss());
                            r.room.on_bandwidth(now, peer.owner, estimate, loss);
                        }
                    }
                }
            }
            for stuck in std::mem::take(&mut self.stuck) {
                // Only the connection that got stuck: a newer one replaced it meanwhile.
                if let Some(rk) = self.member_for(stuck).map(|m| m.room) {
                    if let Some(r) = self.rooms.get_mut(&rk) {
                        r.room.leave(now, stuck.participant, LeaveCause::NetworkLost);
                    }
                }
            }
            for r in self.rooms.values_mut() {
                r.room.on_tick(now);
                if r.room.poll_timeout().is_some_and(|t| t <= now) {
                    r.room.handle_timeout(now);
                }
            }
        }
        ticked
    }
}

/// The spatial index of a simulcast layer from its RID: by name when the name says its rank
/// (`q`/`h`/`f`, `low`/`mid`/`high`), else in order of appearance. 0 when not simulcast.
fn layer_of(u: &mut UpState, rid: Option<&str>) -> u8 {
    let Some(rid) = rid.filter(|r| !r.is_empty()) else { return 0 };
    if let Some(i) = rid_index(rid) {
        return i;
    }
    let pos = match u.other_rids.iter().position(|r| r == rid) {
        Some(p) => p,
        None => {
            u.other_rids.push(rid.to_owned());
            u.other_rids.len() - 1
        }
    };
    pos.min(MAX_SPATIAL - 1) as u8
}
