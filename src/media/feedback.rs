//! Two interceptors of a subscribe connection that the stack's defaults lack.
//!
//! **[`NackLimiter`]** sits between the wire and the NACK responder and drops requests that would
//! overload the link. The responder resends whatever any NACK asks for, as often as asked. A
//! subscriber that repeats a NACK every 100 ms until the packet is "received" (webrtc-rs itself
//! does, for packets repaired over RTX) makes the server send each lost packet dozens of times:
//! measured on a 300 kbps link, 35 Mbit/s of retransmissions. So, like libwebrtc's sender:
//! - a packet is resent at most [`MAX_RESENDS`] times (Chrome's receiver gives up after 10) and
//!   not again within a round trip and an eighth (at least [`MIN_RESEND_GAP`]): a request that
//!   soon left the receiver before the resend could reach it, so it is the same loss asked
//!   twice. The round trip comes from the subscriber's receiver reports (RFC 3550 §6.4.1: the
//!   time since the sender report they echo, less the delay they state). At 10 % loss and a
//!   100 ms round trip a fixed 100 ms gap sent 124–138 resends for the ~52 packets the down leg
//!   lost, this gap 75–98 (`tests/netem.rs`), and a longer round trip gains more;
//! - first resends of a packet share a budget of a quarter of the media the connection sends
//!   (retransmissions not counted), and further resends one of another quarter, in packets of
//!   `TYPICAL_PACKET_BITS`: a link that lost a packet has no room for ten copies of everything,
//!   and a receiver that asks again for what it got (webrtc-rs does, see above) must not use up
//!   what a packet asked for the first time needs (measured at 10 % loss: 7.4 % left unrepaired
//!   with one shared budget, under 2 % with two). The estimate is no measure for it either way: GCC's estimate on a link
//!   that was never full can be many times what it carries (6 Mbit/s measured on a 190 kbps link),
//!   and on a link with random loss it is cut well below what the link carries (130 kbps on a
//!   link carrying 270 kbps at 10 % loss). With first resends outside the budget, or
//!   retransmissions counted as media, an overloaded link got as many resends as media and
//!   stayed overloaded. The budget starts with the connection's first estimate;
//! - a packet is resent only while it is younger than [`MAX_RESEND_AGE`] (three round trips when
//!   that is longer), as libwebrtc's packet history keeps it. A receiver asks for a missing packet
//!   again and again for as long as its receive log holds it (webrtc-rs: 512 packets, 50 s of a
//!   low layer), and NACKs list the oldest first: with the budget spent, the refused requests
//!   were served later in that order, each a resend seconds too late for any jitter buffer. On
//!   the 190 kbps link of `tests/netem.rs` resends arrived 2–10 s after the loss, up to 60 in
//!   8 s, none of them a repair, and overloaded the link enough to cost its voice;
//! - nothing is resent while the room has suspended the subscriber's video.
//!
//! **[`EstimateCell`]** carries the subscribe connection's bandwidth estimate (GCC over
//! transport-wide congestion control feedback, from the stack) out of the interceptor chain to the
//! driver, which hands it to the room every tick (audio-only fallback, `core::bwe`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, Packet, PacketReport, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{nack_pairs_from_sequence_numbers, TransportLayerNack};

use super::tap::TapHooks;
use crate::core::layers::RateMeter;

/// Most times one packet is resent.
pub const MAX_RESENDS: u8 = 10;
/// Least time between two resends of one packet; the gap is a round trip and an eighth when the
/// subscriber's receiver reports say that is longer.
pub const MIN_RESEND_GAP: Duration = Duration::from_millis(100);
/// Share of the estimated link rate resends may use, counted in packets of this size (a full
/// video packet; smaller ones make the budget conservative).
const RESEND_SHARE: f64 = 0.25;
const REPEAT_SHARE: f64 = 0.25;
const TYPICAL_PACKET_BITS: f64 = 1200.0 * 8.0;
/// The budget never falls below this many resends a second, nor holds more than a second's worth.
const MIN_RESENDS_PER_SEC: f64 = 2.0;
/// Packets per SSRC whose resend history is kept (the responder's own buffer is 1024).
const HISTORY: usize = 1024;
/// A packet older than this (or than three round trips, when that is longer) is not resent: the
/// receiver's jitter buffer has moved on.
pub const MAX_RESEND_AGE: Duration = Duration::from_secs(1);
/// A stream's departure times are kept as one (sequence number, time) mark per this many ms at
/// most, the latest `MARKS` of them (3.2 s: three round trips of an RTT up to a second): per packet that is a comparison, and a write
/// twenty times a second. A packet left at or after the latest mark not above its number, so the
/// age told is at most 50 ms too old (and, for a packet forwarded late with its own number, by
/// its lateness: the publisher's side repaired it, within a round trip of that leg).
const MARK_EVERY_MS: u32 = 50;
const MARKS: usize = 64;

/// When a media stream's packets left, as marks.
struct SentTimes {
    /// Ring of (first sequence number sent at or after `at`, `at` in ms after the epoch).
    marks: [(u16, u32); MARKS],
    /// Marks written so far (the ring's next slot is `written % MARKS`).
    written: usize,
}

impl SentTimes {
    fn new() -> SentTimes {
        SentTimes { marks: [(0, 0); MARKS], written: 0 }
    }

    /// A packet newer than any before left at `at_ms`.
    fn sent(&mut self, seq: u16, at_ms: u32) {
        let due = self.written == 0 || at_ms.wrapping_sub(self.marks[(self.written - 1) % MARKS].1) >= MARK_EVERY_MS;
        if due {
            self.marks[self.written % MARKS] = (seq, at_ms);
            self.written += 1;
        }
    }

    /// Whether packet `seq` is too old to resend at `now_ms`: the latest mark at or below it is
    /// more than `max_age_ms` old, or it is older than every mark kept. A packet older than the
    /// first packet seen is left to the responder.
    fn too_old(&self, seq: u16, now_ms: u32, max_age_ms: u32) -> bool {
        let kept = self.written.min(MARKS);
        for i in 1..=kept {
            let (mark, at) = self.marks[(self.written - i) % MARKS];
            if seq.wrapping_sub(mark) < 0x8000 {
                return now_ms.wrapping_sub(at) > max_age_ms;
            }
        }
        self.written > MARKS
    }
}

/// Per media SSRC: when each recently requested sequence number was last let through, and how
/// often; oldest first, bounded by `HISTORY`.
#[derive(Default)]
struct Asked {
    by_seq: HashMap<u16, (Instant, u8)>,
    order: VecDeque<u16>,
}

impl Asked {
    /// Whether a request for `seq` at `now` goes to the responder. It needs a token of `budget`
    /// (`None`: no budget yet; `[first resends, further resends]`) and takes it.
    fn allow(&mut self, seq: u16, now: Instant, gap: Duration, budget: &mut Option<[f64; 2]>) -> bool {
        let repeat = self.by_seq.contains_key(&seq);
        let take = |budget: &mut Option<[f64; 2]>| match budget.as_mut().map(|b| &mut b[usize::from(repeat)]) {
            Some(tokens) if *tokens < 1.0 => false,
            Some(tokens) => {
                *tokens -= 1.0;
                true
            }
            None => true,
        };
        match self.by_seq.get_mut(&seq) {
            Some((last, count)) => {
                if *count >= MAX_RESENDS || now.saturating_duration_since(*last) < gap {
                    return false;
                }
                if !take(budget) {
                    return false;
                }
                *last = now;
                *count += 1;
                true
            }
            None => {
                if !take(budget) {
                    return false;
                }
                if self.order.len() >= HISTORY {
                    if let Some(old) = self.order.pop_front() {
                        self.by_seq.remove(&old);
                    }
                }
                self.by_seq.insert(seq, (now, 1));
                self.order.push_back(seq);
                true
            }
        }
    }
}

/// A sender report sent: the middle 32 bits of its NTP time and when it left.
type SentReport = (u32, Instant);

/// Drops NACK entries asked too often or too soon (see the module documentation).
#[derive(Default)]
pub struct NackLimiter {
    asked: HashMap<u32, Asked>,
    /// NACKed sequence numbers dropped, for the driver's counters.
    dropped: Arc<AtomicU64>,
    /// Set while the room has suspended this subscriber's video: every request is refused (video
    /// resumes at a new keyframe; repairing frames nobody will decode only loads the weak link).
    paused: Arc<AtomicBool>,
    /// The connection's bandwidth estimate (0 before the first feedback: no budget yet).
    estimate: EstimateCell,
    /// First and further resends the budget allows now, and when it was last refilled.
    tokens: [f64; 2],
    refilled: Option<Instant>,
    /// Media RTP this connection sent over the last second (retransmissions not counted).
    media: RateMeter,
    /// Per media SSRC, the newest sequence number sent (an older one is a retransmission). A
    /// handful of streams per connection: a list searched per packet beats hashing.
    newest: Vec<(u32, u16)>,
    /// When each stream's packets left, at the same index as in `newest` (apart, so that the
    /// per-packet search stays within a few cache lines).
    sent: Vec<SentTimes>,
    /// The instant the departure times count from (the first packet sent).
    epoch: Option<Instant>,
    /// SSRCs of retransmission (RTX) streams.
    rtx: Vec<u32>,
    /// Per sending SSRC, its two latest sender reports: the middle 32 bits of their NTP time
    /// (what a receiver report echoes) and when they left. Two, because a receiver report may
    /// cross the next sender report in flight; per SSRC, because a subscriber of a large room
    /// has dozens of streams, each with its own reports.
    sent_reports: Vec<(u32, [Option<SentReport>; 2])>,
    /// Smoothed round trip to the subscriber (RFC 6298's 1/8 gain); `None` before the first
    /// receiver report that echoes a sender report.
    rtt: Option<Duration>,
}

impl NackLimiter {
    pub fn new(dropped: Arc<AtomicU64>, paused: Arc<AtomicBool>, estimate: EstimateCell) -> NackLimiter {
        NackLimiter { dropped, paused, estimate, ..Default::default() }
    }

    /// Refills the resend budget for `now` and returns it; `None` before the connection's first
    /// estimate (no limit yet).
    fn refill(&mut self, now: Instant) -> Option<[f64; 2]> {
        let estimate = self.estimate.get();
        if estimate == 0 {
            return None;
        }
        let media = self.media.bps(now, 0) as f64;
        let rate = |share: f64| (media * share / TYPICAL_PACKET_BITS).max(MIN_RESENDS_PER_SEC);
        let rates = [rate(RESEND_SHARE), rate(REPEAT_SHARE)];
        let elapsed = self.refilled.map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64());
        for (t, r) in self.tokens.iter_mut().zip(rates) {
            *t = (*t + elapsed * r).min(r);
        }
        self.refilled = Some(now);
        Some(self.tokens)
    }

    /// An RTP packet went out: counted if it is media, not a retransmission (RTX, or a sequence
    /// number not newer than its SSRC's newest).
    fn on_rtp_sent(&mut self, now: Instant, ssrc: u32, seq: u16, bytes: usize) {
        if self.rtx.contains(&ssrc) {
            return;
        }
        let stream = self.newest.iter().position(|(s, _)| *s == ssrc);
        if let Some(i) = stream {
            let newest = self.newest[i].1;
            if seq == newest || seq.wrapping_sub(newest) >= 0x8000 {
                return;
            }
        }
        let at_ms = self.ms(now);
        match stream {
            Some(i) => {
                self.newest[i].1 = seq;
                self.sent[i].sent(seq, at_ms);
            }
            None => {
                self.newest.push((ssrc, seq));
                let mut times = SentTimes::new();
                times.sent(seq, at_ms);
                self.sent.push(times);
            }
        }
        self.media.on_packet(now, 0, bytes);
    }

    /// How long after a resend the same packet may be resent: a round trip and an eighth, at
    /// least `MIN_RESEND_GAP`.
    fn resend_gap(&self) -> Duration {
        self.rtt.map_or(MIN_RESEND_GAP, |rtt| MIN_RESEND_GAP.max(rtt + rtt / 8))
    }

    /// How old a packet may be and still be resent: `MAX_RESEND_AGE`, or three round trips.
    fn max_age(&self) -> Duration {
        self.rtt.map_or(MAX_RESEND_AGE, |rtt| MAX_RESEND_AGE.max(rtt * 3))
    }

    /// Milliseconds since the first packet sent (wraps after 49 days; ages are far shorter).
    fn ms(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_millis() as u32
    }

    /// A sender report of `ssrc` stamped `ntp_time` left at `now`.
    fn on_sender_report_sent(&mut self, now: Instant, ssrc: u32, ntp_time: u64) {
        let entry = (((ntp_time >> 16) as u32), now);
        match self.sent_reports.iter_mut().find(|(s, _)| *s == ssrc) {
            Some((_, latest)) => *latest = [Some(entry), latest[0]],
            None => self.sent_reports.push((ssrc, [Some(entry), None])),
        }
    }

    /// A reception report about `ssrc` arrived at `now`, echoing the sender report `lsr` (0: none
    /// yet) after holding it `dlsr` (1/65536 s).
    fn on_reception_report(&mut self, now: Instant, ssrc: u32, lsr: u32, dlsr: u32) {
        if lsr == 0 {
            return;
        }
        let Some(sent) = self
            .sent_reports
            .iter()
            .find(|(s, _)| *s == ssrc)
            .and_then(|(_, latest)| latest.iter().flatten().find(|(mid, _)| *mid == lsr))
            .map(|(_, sent)| *sent)
        else {
            return;
        };
        let held = Duration::from_micros(u64::from(dlsr) * 1_000_000 / 65_536);
        let Some(sample) = now.saturating_duration_since(sent).checked_sub(held) else { return };
        self.rtt = Some(self.rtt.map_or(sample, |rtt| (rtt * 7 + sample) / 8));
    }

    fn limit(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let paused = self.paused.load(Ordering::Relaxed);
        let gap = self.resend_gap();
        let mut budget = self.refill(now);
        let now_ms = self.ms(now);
        let max_age_ms = self.max_age().as_millis() as u32;
        let sent = self.newest.iter().position(|(s, _)| *s == nack.media_ssrc).map(|i| &self.sent[i]);
        let asked = self.asked.entry(nack.media_ssrc).or_default();
        let mut requested = 0u64;
        let mut allowed = Vec::new();
        for pair in &nack.nacks {
            // RFC 4585 §6.2.1: the packet id, and a bitmask of the 16 that follow it.
            let bits = (0..16u16).filter(|i| pair.lost_packets & (1 << i) != 0).map(|i| i + 1);
            for seq in std::iter::once(0).chain(bits).map(|d| pair.packet_id.wrapping_add(d)) {
                requested += 1;
                // A stale request is refused before it can take a token a fresh loss needs.
                let stale = sent.is_some_and(|s| s.too_old(seq, now_ms, max_age_ms));
                if !paused && !stale && asked.allow(seq, now, gap, &mut budget) {
                    allowed.push(seq);
                }
            }
        }
        if let Some(t) = budget {
            self.tokens = t;
        }
        self.dropped.fetch_add(requested - allowed.len() as u64, Ordering::Relaxed);
        if allowed.len() as u64 == requested {
            return None; // unchanged
        }
        Some(TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&allowed),
        })
    }
}

impl TapHooks for NackLimiter {
    fn on_bind_local(&mut self, info: &StreamInfo) {
        self.rtx.extend(info.ssrc_rtx);
    }

    fn on_write(&mut self, msg: &mut TaggedPacket) {
        match &msg.message.packet {
            Packet::Rtp(p) => self.on_rtp_sent(msg.now, p.header.ssrc, p.header.sequence_number, 12 + p.payload.len()),
            Packet::Rtcp(packets) => {
                for sr in packets.iter().filter_map(|p| p.as_any().downcast_ref::<SenderReport>()) {
                    self.on_sender_report_sent(msg.now, sr.ssrc, sr.ntp_time);
                }
            }
            _ => {}
        }
    }

    fn on_read(&mut self, msg: &mut TaggedPacket) {
        let now = msg.now;
        let Packet::Rtcp(packets) = &mut msg.message.packet else { return };
        for p in packets.iter_mut() {
            if let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() {
                for r in &rr.reports {
                    self.on_reception_report(now, r.ssrc, r.last_sender_report, r.delay);
                }
                continue;
            }
            let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() else { continue };
            if let Some(limited) = self.limit(now, nack) {
                *p = Box::new(limited);
            }
        }
    }
    fn on_unbind_local(&mut self, info: &StreamInfo) {
        self.asked.remove(&info.ssrc);
        if let Some(i) = self.newest.iter().position(|(s, _)| *s == info.ssrc) {
            self.newest.remove(i);
            self.sent.remove(i);
        }
        self.rtx.retain(|s| Some(*s) != info.ssrc_rtx);
        self.sent_reports.retain(|(s, _)| *s != info.ssrc);
    }
}

/// What one subscribe connection's congestion control knows, shared between its interceptor
/// chain and the driver: the latest bandwidth estimate, and the probe the driver is sending with
/// what it measured.
#[derive(Clone, Default)]
pub struct EstimateCell(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Bits per second; 0 until the first feedback arrives.
    bps: AtomicU64,
    /// Share of the last second's packets the receiver reported lost, in millionths.
    loss_ppm: AtomicU64,
    /// Locked once per probe and once per feedback batch, never per packet.
    probe: Mutex<ProbeSlot>,
}

#[derive(Default)]
struct ProbeSlot {
    /// The departure window of the probe being sent (set by the driver).
    window: Option<(Instant, Instant)>,
    /// What the latest finished probe measured, until the driver takes it.
    result: Option<u64>,
}

impl EstimateCell {
    pub fn get(&self) -> u64 {
        self.0.bps.load(Ordering::Relaxed)
    }

    /// The share of the last second's packets that were lost (0 to 1).
    pub fn loss(&self) -> f64 {
        self.0.loss_ppm.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The driver is about to send a probe: every packet leaving between `from` and `to` belongs
    /// to it.
    pub fn start_probe(&self, from: Instant, to: Instant) {
        let mut slot = self.0.probe.lock().expect("probe slot");
        slot.window = Some((from, to));
        slot.result = None;
    }

    /// What the latest probe measured (bits per second the link delivered), once.
    pub fn take_probe_result(&self) -> Option<u64> {
        self.0.probe.lock().expect("probe slot").result.take()
    }
}

/// IPv4 and UDP headers and the SRTP tag: a probe of small padding packets costs the link these
/// bytes per packet on top of the RTP size the feedback reports.
const WIRE_OVERHEAD: usize = 38;
/// Fewer packets than this arriving says nothing about the link's rate.
const PROBE_MIN_PACKETS: u32 = 5;

/// Measures one probe from transport-wide feedback, as libwebrtc's probe estimator does: the rate
/// the packets that left during the probe were sent at, and the rate they arrived at on the
/// receiver's clock. A link that carries the probe delivers it as fast as it was sent; a narrower
/// one spreads the arrivals out to its own rate. The smaller of the two is what the link showed.
#[derive(Debug, Default)]
struct ProbeMeter {
    window: Option<(Instant, Instant)>,
    sent: u32,
    sent_bytes: usize,
    first_departure: Option<Instant>,
    last_departure: Option<(Instant, usize)>,
    arrived: u32,
    arrived_bytes: usize,
    first_arrival: Option<(Duration, usize)>,
    last_arrival: Option<Duration>,
}

impl ProbeMeter {
    fn start(&mut self, window: (Instant, Instant)) {
        *self = ProbeMeter { window: Some(window), ..ProbeMeter::default() };
    }

    /// Takes one report; returns the measured rate once a packet sent after the probe is
    /// reported (feedback comes in sending order, so the probe's packets are all in).
    fn on_report(&mut self, r: &PacketReport) -> Option<u64> {
        let (from, to) = self.window?;
        if r.departure < from {
            return None;
        }
        if r.departure > to {
            self.window = None;
            return Some(self.rate());
        }
        let size = r.size + WIRE_OVERHEAD;
        self.sent += 1;
        self.sent_bytes += size;
        self.first_departure.get_or_insert(r.departure);
        self.last_departure = Some((r.departure, size));
        if let (true, Some(at)) = (r.arrived, r.arrival) {
            self.arrived += 1;
            self.arrived_bytes += size;
            match self.first_arrival {
                Some((first, _)) if first <= at => {}
                _ => self.first_arrival = Some((at, size)),
            }
            self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
        }
        None
    }

    /// Bits per second; 0 when too little arrived to tell.
    fn rate(&self) -> u64 {
        let (Some(d0), Some((d1, last_size)), Some((a0, first_size)), Some(a1)) =
            (self.first_departure, self.last_departure, self.first_arrival, self.last_arrival)
        else {
            return 0;
        };
        if self.arrived < PROBE_MIN_PACKETS {
            return 0;
        }
        // Over n packets' spacing, n − 1 packets' bytes: the last one sent (the first one
        // arrived) had its bytes on the wire outside the span.
        let per_sec = |bytes: usize, span: Duration| -> Option<f64> {
            (span >= Duration::from_millis(1)).then(|| bytes as f64 * 8.0 / span.as_secs_f64())
        };
        let sent = per_sec(self.sent_bytes - last_size, d1.duration_since(d0));
        let received = per_sec(self.arrived_bytes - first_size, a1.saturating_sub(a0));
        match (sent, received) {
            (Some(s), Some(r)) => s.min(r) as u64,
            (None, Some(r)) => r as u64,
            _ => 0,
        }
    }
}

/// GCC, publishing its target into an [`EstimateCell`] whenever it may have moved.
///
/// What is published is GCC's target, except while the link is losing a large share of what is
/// sent: then it is what the receiver acknowledged. Below that share of loss it is at least what
/// the receiver acknowledged. Either way GCC's delay half, which sees queueing, bounds what the
/// acknowledged rate lifts it to. GCC's loss half is never what takes it below the acknowledged
/// rate: it answers random loss around 10 % with a cut it never takes back, and a second of random
/// loss that happens to cross the overload share must not take a collapsed loss half at its word.
///
/// GCC's target starts high and, with no probing, says little about a link until that link is
/// overloaded; its loss-based cut is gradual (it took 5 s to come down from 15 Mbps to 2.7 Mbps on
/// a 400 kbps link in `tests/netem.rs`), while the acknowledged rate of an overloaded link is its
/// capacity at once.
/// The share is well above the random loss of a bad mobile link (10 % in the tests), so such a
/// link is not mistaken for an overloaded one.
pub struct ReportingGcc {
    gcc: Gcc,
    out: EstimateCell,
    delivery: Delivery,
    probe: ProbeMeter,
    /// No estimate is published before the first feedback: until then GCC only repeats its
    /// starting value, which says nothing about the link.
    fed: bool,
}

/// Where GCC starts and its bounds, in bits per second. It starts high: an SFU forwards what the
/// publishers send from the first packet, and GCC lowers its target as soon as the link shows
/// delay growth or loss.
const GCC_START: f64 = 10_000_000.0;
const GCC_MIN: f64 = 30_000.0;
const GCC_MAX: f64 = 50_000_000.0;

impl ReportingGcc {
    pub fn new(out: EstimateCell) -> ReportingGcc {
        ReportingGcc {
            gcc: Gcc::new(GCC_START, GCC_MIN, GCC_MAX),
            out,
            fed: false,
            delivery: Delivery::default(),
            probe: ProbeMeter::default(),
        }
    }

    fn publish(&self) {
        if self.fed {
            let target = self.gcc.target_bitrate() as u64;
            let delay_half = self.gcc.delay_based_bitrate() as u64;
            let usable = match self.delivery.overloaded() {
                // An overloaded link is worth what it delivered. Not GCC's target, whose loss half
                // may have been cut to its floor by the random loss before (see below).
                Some(acked_bps) => acked_bps.min(delay_half),
                // Loss short of overload does not take the estimate below what the receiver
                // acknowledged: GCC's loss half cuts at every batch over 10 % and never climbs
                // back while loss stays over 2 %, so a link with random loss around 10 % (a bad
                // mobile link) would fall to the floor and lose its video for nothing. Queueing
                // still lowers it (the delay half bounds what is kept).
                None => target.max(self.delivery.acked_bps().min(delay_half)),
            };
            self.out.0.bps.store(usable, Ordering::Relaxed);
            self.out.0.loss_ppm.store((self.delivery.loss() * 1e6) as u64, Ordering::Relaxed);
        }
    }
}

impl ReportingGcc {
    /// Feeds a probe the driver started (see [`EstimateCell::start_probe`]) and hands its result
    /// over once it is in.
    fn measure_probe(&mut self, reports: &[PacketReport]) {
        let mut slot = self.out.0.probe.lock().expect("probe slot");
        if let Some(w) = slot.window.take() {
            self.probe.start(w);
        }
        for r in reports {
            if let Some(bps) = self.probe.on_report(r) {
                slot.result = Some(bps);
            }
        }
    }
}

/// Loss above this share of the last second's packets means the link is overloaded.
const OVERLOAD_LOSS: f64 = 0.15;
const DELIVERY_BUCKET: Duration = Duration::from_millis(250);
const DELIVERY_BUCKETS: usize = 4;

/// What the receiver acknowledged over the last second, by departure time: four 250 ms buckets
/// of (bytes sent, bytes acknowledged, packets sent, packets lost). No allocation.
#[derive(Debug, Default)]
struct Delivery {
    start: Option<Instant>,
    /// Index of the bucket `start` begins.
    head: usize,
    buckets: [[u64; 4]; DELIVERY_BUCKETS],
}

impl Delivery {
    fn on_report(&mut self, r: &PacketReport) {
        let start = *self.start.get_or_insert(r.departure);
        if r.departure < start {
            return; // older than the window
        }
        let mut ahead = (r.departure.duration_since(start).as_millis() / DELIVERY_BUCKET.as_millis()) as usize;
        while ahead >= DELIVERY_BUCKETS {
            // Slide the window one bucket.
            self.head = (self.head + 1) % DELIVERY_BUCKETS;
            self.buckets[(self.head + DELIVERY_BUCKETS - 1) % DELIVERY_BUCKETS] = [0; 4];
            self.start = Some(self.start.expect("set") + DELIVERY_BUCKET);
            ahead -= 1;
        }
        let b = &mut self.buckets[(self.head + ahead) % DELIVERY_BUCKETS];
        b[0] += r.size as u64;
        b[2] += 1;
        if r.arrived {
            b[1] += r.size as u64;
        } else {
            b[3] += 1;
        }
    }

    /// The share of the window's packets that were lost.
    fn loss(&self) -> f64 {
        let (sent, lost) = self.buckets.iter().fold((0, 0), |(s, l), b| (s + b[2], l + b[3]));
        if sent == 0 {
            0.0
        } else {
            lost as f64 / sent as f64
        }
    }

    /// The acknowledged rate (bits per second) if the link is overloaded, else `None`.
    fn overloaded(&self) -> Option<u64> {
        let (sent_pkts, lost) = (self.sum(2), self.sum(3));
        if sent_pkts < 50 || (lost as f64) < sent_pkts as f64 * OVERLOAD_LOSS {
            return None;
        }
        Some(self.acked_bps())
    }

    /// Bits per second the receiver acknowledged over the window (of packets sent in it).
    fn acked_bps(&self) -> u64 {
        let window = DELIVERY_BUCKET * DELIVERY_BUCKETS as u32;
        self.sum(1) * 8 * 1000 / window.as_millis() as u64
    }

    fn sum(&self, i: usize) -> u64 {
        self.buckets.iter().map(|b| b[i]).sum()
    }
}

impl BandwidthEstimator for ReportingGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        for r in reports {
            self.delivery.on_report(r);
        }
        self.measure_probe(reports);
        self.fed = true;
        self.publish();
    }
    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
        self.publish();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }
    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(departure: Instant, arrived: bool) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: 0,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: 0,
            size: 1000,
            arrived,
            departure,
            arrival: arrived.then_some(Duration::ZERO),
            ecn: Default::default(),
        }
    }

    /// 1000-byte packets sent 1 ms apart for 40 ms, arriving `arrive_every` apart; then one packet
    /// after the probe.
    fn probe_result(arrive_every: Duration, lose_every: usize) -> Option<u64> {
        let t0 = Instant::now();
        let mut m = ProbeMeter::default();
        m.start((t0, t0 + Duration::from_millis(40)));
        let mut result = None;
        for i in 0..=41u32 {
            let mut r = report(t0 + Duration::from_millis(i as u64), true);
            r.arrival = Some(Duration::from_secs(5) + arrive_every * i);
            if lose_every > 0 && i as usize % lose_every == 0 {
                r.arrived = false;
                r.arrival = None;
            }
            if let Some(bps) = m.on_report(&r) {
                assert!(result.is_none(), "one result per probe");
                result = Some(bps);
            }
        }
        result
    }

    #[test]
    fn a_probe_measures_what_the_link_delivered_at_most_what_was_sent() {
        let mbps = |r: Option<u64>| r.expect("a result once a later packet is reported") as f64 / 1e6;
        // Sent at 8.3 Mbit/s (1038 bytes on the wire every ms).
        let carried = mbps(probe_result(Duration::from_millis(1), 0));
        assert!((8.1..8.5).contains(&carried), "a link that carries the probe: {carried}");
        let narrow = mbps(probe_result(Duration::from_millis(4), 0));
        assert!((2.0..2.1).contains(&narrow), "a link 4× narrower: {narrow}");
        let lossy = mbps(probe_result(Duration::from_millis(4), 4));
        assert!((1.4..1.6).contains(&lossy), "a narrow link that also loses a quarter: {lossy}");
        // Nothing arrived: the link showed nothing.
        assert_eq!(probe_result(Duration::from_millis(1), 1), Some(0));
    }

    /// Feeds `secs` seconds of 1000-byte packets, 100 a second (800 kbps) in frames of four 1 ms
    /// apart, one every 40 ms; packet `i` is lost when `lost(i)`, else arrives at `arrival(i)` ms.
    /// Feedback every 100 ms reports what arrived (or would have) since the last.
    fn feed_gcc(
        g: &mut ReportingGcc,
        t0: Instant,
        secs: u64,
        lost: impl Fn(u64) -> bool,
        arrival: impl Fn(u64) -> u64,
    ) {
        let (mut next, total) = (0, secs * 100);
        let mut tick = 0;
        while next < total {
            tick += 100;
            let mut reports = Vec::new();
            while next < total && arrival(next) <= tick {
                let i = next;
                let mut r = report(t0 + Duration::from_millis(depart_ms(i)), !lost(i));
                (r.id, r.rtp_sequence_number, r.twcc_sequence_number) = (i, i as u16, i as u16);
                r.arrival = r.arrived.then(|| Duration::from_millis(arrival(i)));
                reports.push(r);
                next += 1;
            }
            g.on_reports(t0 + Duration::from_millis(tick + 10), &reports);
        }
    }

    fn depart_ms(i: u64) -> u64 {
        i / 4 * 40 + i % 4
    }

    #[test]
    fn random_loss_short_of_overload_keeps_the_estimate_at_what_was_acknowledged() {
        let t0 = Instant::now();
        let cell = EstimateCell::default();
        let mut g = ReportingGcc::new(cell.clone());
        // Every eighth packet lost (12.5 %), no queueing: GCC's loss half cuts 6 % whenever a
        // report shows more than 10 % and never climbs while loss is over 2 %.
        feed_gcc(&mut g, t0, 20, |i| i % 8 == 0, |i| depart_ms(i) + 20);
        let (loss_half, kept) = (g.gcc.loss_based_bitrate(), cell.get());
        assert!(loss_half < 100_000.0, "GCC's own loss half fell to about its floor: {loss_half}");
        assert!((650_000..=720_000).contains(&kept), "the acknowledged 700 kbps: {kept}");
        assert!((cell.loss() - 0.125).abs() < 0.01, "{}", cell.loss());
    }

    #[test]
    fn a_stretch_of_loss_over_the_overload_share_is_worth_what_was_acknowledged_not_the_cut_loss_half() {
        let t0 = Instant::now();
        let cell = EstimateCell::default();
        let mut g = ReportingGcc::new(cell.clone());
        // 20 s of 12.5 % loss cut GCC's loss half to about its floor; then 2 s of 20 % (a bad
        // stretch of a random-loss link, or a link that became full).
        feed_gcc(&mut g, t0, 22, |i| if i < 2000 { i % 8 == 0 } else { i % 5 == 0 }, |i| depart_ms(i) + 20);
        let (loss_half, est) = (g.gcc.loss_based_bitrate(), cell.get());
        assert!(loss_half < 100_000.0, "GCC's own loss half is about its floor: {loss_half}");
        assert!(g.delivery.overloaded().is_some(), "20 % is over the overload share");
        assert!((600_000..=680_000).contains(&est), "the acknowledged 640 kbps: {est}");
    }

    #[test]
    fn a_queueing_link_still_lowers_the_estimate_below_what_was_acknowledged() {
        let t0 = Instant::now();
        let cell = EstimateCell::default();
        let mut g = ReportingGcc::new(cell.clone());
        // 800 kbps into a 400 kbps link with a deep buffer: nothing lost, the link takes 20 ms per
        // packet and the queue grows.
        feed_gcc(&mut g, t0, 10, |_| false, |i| 20 + 20 * i);
        let (delay_half, est) = (g.gcc.delay_based_bitrate(), cell.get());
        assert!(delay_half < 500_000.0, "GCC's delay half sees the queue: {delay_half}");
        assert!(est <= delay_half as u64, "the acknowledged 800 kbps do not hide it: {est}");
    }

    #[test]
    fn an_overloaded_link_is_worth_what_it_delivered_and_random_loss_is_not_overload() {
        let t0 = Instant::now();
        let mut d = Delivery::default();
        // 1.5 s of 100 packets a second (800 kbps), every fourth lost: 600 kbps acknowledged.
        for i in 0..150u64 {
            d.on_report(&report(t0 + Duration::from_millis(i * 10), i % 4 != 0));
        }
        let acked = d.overloaded().expect("25 % loss is overload");
        assert!((560_000..=640_000).contains(&acked), "{acked}");
        // Then a second with every tenth lost (a bad mobile link): not overload.
        for i in 150..250u64 {
            d.on_report(&report(t0 + Duration::from_millis(i * 10), i % 10 != 0));
        }
        assert_eq!(d.overloaded(), None);
    }

    #[test]
    fn a_packet_is_resent_at_most_ten_times_and_not_twice_within_100_ms() {
        let t0 = Instant::now();
        let mut a = Asked::default();
        let at = |ms| t0 + Duration::from_millis(ms);
        let no_budget = &mut None;
        let gap = MIN_RESEND_GAP;
        assert!(a.allow(7, at(0), gap, no_budget));
        assert!(!a.allow(7, at(50), gap, no_budget), "asked again before the answer could arrive");
        for i in 1..10 {
            assert!(a.allow(7, at(i * 100), gap, no_budget), "resend {}", i + 1);
        }
        assert!(!a.allow(7, at(1000), gap, no_budget), "an eleventh time");
        assert!(!a.allow(7, at(5000), gap, no_budget));
        assert!(a.allow(8, at(1000), gap, no_budget), "other packets are independent");
    }

    #[test]
    fn a_resend_waits_a_round_trip_measured_from_the_receiver_reports() {
        use rtc::interceptor::AttributedPacket;
        use rtc::rtcp::reception_report::ReceptionReport;
        use rtc::shared::TransportContext;
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let tagged = |now, packet| TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        };
        let mut l = NackLimiter::new(Default::default(), Default::default(), EstimateCell::default());
        assert_eq!(l.resend_gap(), MIN_RESEND_GAP, "no round trip known yet");
        // A sender report leaves at 0; the receiver report echoing it arrives at 400 ms, having
        // held it 100 ms: a 300 ms round trip.
        let ntp: u64 = 0x1234_5678_9abc_0000;
        let sr = SenderReport { ssrc: 9, ntp_time: ntp, ..Default::default() };
        l.on_write(&mut tagged(at(0), Packet::Rtcp(vec![Box::new(sr)])));
        let report = ReceptionReport {
            ssrc: 9,
            last_sender_report: (ntp >> 16) as u32,
            delay: 65_536 / 10,
            ..Default::default()
        };
        let rr = ReceiverReport { ssrc: 1, reports: vec![report], ..Default::default() };
        l.on_read(&mut tagged(at(400), Packet::Rtcp(vec![Box::new(rr)])));
        let gap = l.resend_gap();
        assert!((Duration::from_millis(336)..Duration::from_millis(339)).contains(&gap), "{gap:?}");

        let nack = TransportLayerNack { sender_ssrc: 1, media_ssrc: 9, nacks: nack_pairs_from_sequence_numbers(&[7]) };
        assert_eq!(l.limit(at(1000), &nack), None, "the first request passes unchanged");
        let refused = l.limit(at(1200), &nack).expect("asked again within a round trip");
        assert!(refused.nacks.is_empty());
        assert_eq!(l.limit(at(1400), &nack), None, "a round trip and an eighth later the resend was lost");
    }

    #[test]
    fn first_resends_and_repeats_each_get_a_quarter_of_the_media_sent() {
        let t0 = Instant::now();
        let estimate = EstimateCell::default();
        let mut l = NackLimiter::new(Default::default(), Default::default(), estimate.clone());
        let nack = |from: u16| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 9,
            nacks: nack_pairs_from_sequence_numbers(&(from..from + 100).collect::<Vec<_>>()),
        };
        let count = |n: Option<TransportLayerNack>| {
            n.map_or(100, |n| n.nacks.iter().map(|p| p.packet_list().len()).sum::<usize>())
        };
        assert_eq!(count(l.limit(t0, &nack(0))), 100, "no estimate yet: no budget");
        // The connection sends 768 kbps of media (100 packets of 960 bytes a second), and as
        // many retransmissions again, which do not count… (on stream 8: stream 9's packets left
        // before this limiter saw them, so their age is unknown and only the budget applies)
        let ms = |n: u64| t0 + Duration::from_millis(n);
        l.rtx.push(77);
        let send = |l: &mut NackLimiter, from: u64, to: u64| {
            for i in from / 10..to / 10 {
                l.on_rtp_sent(ms(i * 10), 8, i as u16, 960);
                l.on_rtp_sent(ms(i * 10), 8, (i as u16).wrapping_sub(5), 960);
                l.on_rtp_sent(ms(i * 10), 77, i as u16, 960);
            }
        };
        send(&mut l, 0, 1000);
        // … a quarter is 20 packets of 9 600 bits a second, whatever the estimate says.
        estimate.0.bps.store(384_000, Ordering::Relaxed);
        assert_eq!(count(l.limit(ms(1000), &nack(1000))), 20, "first resends are budgeted");
        send(&mut l, 1000, 2000);
        // Further resends of the same packets: their own quarter, 20 a second; 80 new ones keep
        // their own 20.
        assert_eq!(count(l.limit(ms(2000), &nack(1000))), 20 + 20, "repeats have their own budget");
        send(&mut l, 2000, 2500);
        assert_eq!(count(l.limit(ms(2500), &nack(1000))), 10 + 10, "refilled for 0.5 s");
        estimate.0.bps.store(20_000_000, Ordering::Relaxed);
        send(&mut l, 2500, 4000);
        assert_eq!(count(l.limit(ms(4000), &nack(1000))), 20 + 20, "an estimate far above the media raises nothing");
    }

    #[test]
    fn a_packet_older_than_a_second_is_not_resent_and_takes_no_token_from_a_fresh_loss() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let estimate = EstimateCell::default();
        let mut l = NackLimiter::new(Default::default(), Default::default(), estimate.clone());
        estimate.0.bps.store(1_000_000, Ordering::Relaxed);
        // 768 kbps on stream 9 for 3 s (seq = ms / 10): a first-resend budget of 20 a second.
        for i in 0..300u64 {
            l.on_rtp_sent(ms(i * 10), 9, i as u16, 960);
        }
        let nack = |seqs: Vec<u16>| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 9,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        };
        let passed = |n: Option<TransportLayerNack>, asked: &[u16]| {
            n.map_or(asked.to_vec(), |n| n.nacks.iter().flat_map(|p| p.packet_list()).collect::<Vec<u16>>())
        };
        // A receiver still asking for 100 packets lost 1–2 s ago, oldest first, and for 5 just
        // lost: only the fresh five are resent.
        let asked: Vec<u16> = (100..200).chain(290..295).collect();
        assert_eq!(passed(l.limit(ms(3000), &nack(asked.clone())), &asked), (290..295).collect::<Vec<u16>>());
        // Three round trips, when longer than a second, are the limit instead.
        l.rtt = Some(Duration::from_millis(600));
        let asked: Vec<u16> = vec![110, 150];
        assert_eq!(passed(l.limit(ms(3000), &nack(asked.clone())), &asked), vec![150], "1.5 s old, within 1.8 s");
        // Older than every mark kept (3.2 s of them): too old, whatever the age limit.
        l.rtt = Some(Duration::from_secs(10));
        for i in 300..800u64 {
            l.on_rtp_sent(ms(i * 10), 9, i as u16, 960);
        }
        let asked: Vec<u16> = vec![160, 790];
        assert_eq!(passed(l.limit(ms(8000), &nack(asked.clone())), &asked), vec![790]);
    }

    #[test]
    fn the_history_is_bounded() {
        let t0 = Instant::now();
        let mut a = Asked::default();
        for seq in 0..(HISTORY as u16 + 10) {
            assert!(a.allow(seq, t0, MIN_RESEND_GAP, &mut None));
        }
        assert_eq!(a.by_seq.len(), HISTORY);
        assert!(a.allow(0, t0, MIN_RESEND_GAP, &mut None), "forgotten: treated as new");
    }

    #[test]
    fn a_nack_is_rewritten_without_the_refused_sequence_numbers() {
        let t0 = Instant::now();
        let dropped = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let mut l = NackLimiter::new(dropped.clone(), paused.clone(), EstimateCell::default());
        let nack = |seqs: &[u16]| TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 9,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        };
        assert!(l.limit(t0, &nack(&[10, 11, 14])).is_none(), "all new: passed unchanged");
        let limited = l.limit(t0 + Duration::from_millis(10), &nack(&[10, 12])).expect("rewritten");
        let mut seqs = Vec::new();
        for p in &limited.nacks {
            seqs.extend(p.packet_list());
        }
        assert_eq!(seqs, [12]);
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        paused.store(true, Ordering::Relaxed);
        let limited = l.limit(t0 + Duration::from_millis(20), &nack(&[30])).expect("rewritten");
        assert!(limited.nacks.is_empty(), "nothing is resent while video is suspended");
    }
}
