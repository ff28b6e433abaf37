//! Latency through a server, measured in one process (the load benchmark, benches/room_load.rs).
//!
//! When publishers and subscribers share a process, the time a packet spends between them needs
//! no clock synchronisation: the publish side stamps each RTP payload as it leaves its pacer,
//! when there is one, for the wire ([`LatencyTap`]) and the subscribe side looks the payload up as
//! it arrives (`RecvPacket::sent_at`). An SFU forwards payloads unchanged (it rewrites headers:
//! sequence numbers, timestamps, SSRCs), so a hash of the payload names the packet on both sides.
//! The VP8 payload descriptor carries the picture ID, so video payloads differ even when the
//! fixture loops; for a payload sent more than once (an Opus frame that repeats) the latest send
//! time that is not after the arrival is kept, which can only under-state the latency.
//!
//! Optional: clients built without a probe (every test) do none of this.

use qiao::media::tap::TapHooks;
use rtc::interceptor::{Packet, TaggedPacket};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Send times older than this are forgotten, so that a long run does not grow the map without
/// bound; a packet that takes longer to arrive has no latency sample.
const KEEP_SENT: Duration = Duration::from_secs(10);

/// Shared by every publish and subscribe side of one load run.
#[derive(Debug, Default)]
pub struct LatencyProbe {
    /// Written by every publish side's interceptor, read by every subscribe side's track task.
    inner: Mutex<ProbeInner>,
}

#[derive(Debug, Default)]
struct ProbeInner {
    /// Payload hash → when a publish side last sent that payload.
    sent: HashMap<u64, Instant>,
    /// When entries older than `KEEP_SENT` were last dropped.
    pruned_at: Option<Instant>,
}

fn payload_hash(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}

impl LatencyProbe {
    /// A publish side handed this RTP payload to its stack at `at`.
    pub fn note_sent(&self, payload: &[u8], at: Instant) {
        let key = payload_hash(payload);
        let mut inner = self.inner.lock().unwrap();
        inner.sent.insert(key, at);
        let pruned_at = *inner.pruned_at.get_or_insert(at);
        if at.duration_since(pruned_at) > KEEP_SENT {
            inner.sent.retain(|_, t| at.duration_since(*t) <= KEEP_SENT);
            inner.pruned_at = Some(at);
        }
    }

    /// When this payload, arriving at `arrival`, was sent; `None` if no publish side of the run
    /// sent it (or it was sent more than `KEEP_SENT` ago).
    pub fn sent_at(&self, payload: &[u8], arrival: Instant) -> Option<Instant> {
        let key = payload_hash(payload);
        self.inner.lock().unwrap().sent.get(&key).copied().filter(|t| *t <= arrival)
    }
}

/// Publish-side interceptor that stamps every outgoing RTP payload in a [`LatencyProbe`].
/// Registered between the pacer and the wire ([`LATENCY_TAP_SLOT`]), so a packet is stamped when
/// it leaves for the server, not when the packetizer queued it behind a paced key frame. A
/// retransmission passes here too: one on the packet's own SSRC (its sequence number is not
/// newer than the SSRC's newest) keeps the original send time, so its delay counts; one over RTX
/// carries another payload, which no receiver looks up.
pub struct LatencyTap {
    /// Where the send times go.
    probe: Arc<LatencyProbe>,
    /// Newest sequence number sent on each SSRC.
    newest: HashMap<u32, u16>,
}

/// Where the tap sits in the publish chain: below the pacer (`Slot::Pacer`, 3 000), above the
/// transport-wide numbering (2 000).
pub const LATENCY_TAP_SLOT: usize = 2_500;

impl LatencyTap {
    pub fn new(probe: Arc<LatencyProbe>) -> LatencyTap {
        LatencyTap { probe, newest: HashMap::new() }
    }
}

impl TapHooks for LatencyTap {
    fn on_write(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(p) = &msg.message.packet {
            let seq = p.header.sequence_number;
            let newer = match self.newest.get(&p.header.ssrc) {
                Some(&n) => seq.wrapping_sub(n) != 0 && seq.wrapping_sub(n) < 0x8000,
                None => true,
            };
            if newer {
                self.newest.insert(p.header.ssrc, seq);
                self.probe.note_sent(&p.payload, Instant::now());
            }
        }
    }
}
