//! The GOP cache: per published video track, the packets from its latest keyframe on, so that a
//! subscriber who starts receiving (a late joiner, a reconnect, a layer switch) gets a decodable
//! picture at once instead of asking the publisher for a new keyframe. A township uplink of a few
//! hundred kbps pays for every keyframe a PLI storm would ask for; the cache asks for none.
//!
//! Replay must not make the joiner's player late. The cached frames span up to `max_age` of media
//! time; sent with their real timestamps in one burst, a browser's jitter buffer would schedule
//! them over that span and stay that far behind live. So on replay the cached frames are given
//! timestamps one millisecond apart, ending where the live stream continues: the decoder gets the
//! whole GOP, the renderer shows the newest picture, and what follows is on time.
//!
//! Invariants:
//! - the cache holds either nothing usable or one keyframe's first packet followed by the packets
//!   of that GOP as they arrived (retransmissions included), all of one SSRC. While no GOP is
//!   open it holds the latest packets (a quarter of its byte limit at most): a keyframe's first
//!   packet lost on the uplink comes back resent after the rest of the keyframe, and the GOP it
//!   opens keeps what came before it;
//! - it never holds more than `max_bytes` of payload nor serves a keyframe older than `max_age`:
//!   past either, it empties and waits for the next keyframe (a long replay to a weak link would
//!   be worse than a keyframe request);
//! - filling it allocates nothing once warm: the packet list keeps its capacity and payloads are
//!   shared (`Bytes`), not copied.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::room::RtpIn;

/// One cached packet, as the publisher sent it; replay rewrites it like any forwarded packet.
#[derive(Debug, Clone)]
pub struct CachedPacket {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
    /// Index of its frame within the GOP (0 for the keyframe): replay spaces frames by it.
    pub frame: u32,
}

#[derive(Debug)]
pub struct GopCache {
    packets: Vec<CachedPacket>,
    /// Payload bytes held, checked against `max_bytes` on every append.
    bytes: usize,
    /// The SSRC the cached packets came from; a packet of another SSRC empties the cache (the
    /// source switched and nothing held belongs to it).
    ssrc: u32,
    /// Arrival of the keyframe's first packet; `None` while there is nothing to serve.
    keyframe_at: Option<Instant>,
    /// Timestamp of the newest frame so far and its index, to number frames as they arrive.
    newest_ts: u32,
    frames: u32,
    max_bytes: usize,
    max_age: Duration,
}

/// While no GOP is open the cache holds at most this share (1/n) of its byte limit: enough for the
/// packets a keyframe's late first packet may come after.
const WAITING_SHARE: usize = 4;

impl GopCache {
    pub fn new(max_bytes: usize, max_age: Duration) -> GopCache {
        GopCache {
            packets: Vec::new(),
            bytes: 0,
            ssrc: 0,
            keyframe_at: None,
            newest_ts: 0,
            frames: 0,
            max_bytes,
            max_age,
        }
    }

    /// Takes one packet of the track. `keyframe_start` says whether it is the first packet of a
    /// keyframe (the caller's codec knowledge).
    pub fn on_packet(&mut self, now: Instant, pkt: &RtpIn<'_>, keyframe_start: bool) {
        let RtpIn { ssrc, seq, ts, marker, payload, .. } = *pkt;
        if ssrc != self.ssrc || self.expired(now) {
            self.clear();
            self.ssrc = ssrc;
        }
        let keyframe_seq = self.keyframe_at.and(self.packets.first()).map(|k| k.seq);
        if keyframe_seq.is_some_and(|k| seq.wrapping_sub(k) >= 0x8000) {
            return; // older than the keyframe (a late packet of an earlier GOP, even its keyframe)
        }
        let packet = CachedPacket { seq, ts, marker, payload: payload.clone(), frame: 0 };
        self.bytes += payload.len();
        if keyframe_start && keyframe_seq != Some(seq) {
            self.start_gop(now, packet);
        } else if self.keyframe_at.is_none() {
            self.hold(packet);
        } else {
            let frame = self.frame_of(ts, self.packets.len());
            self.packets.push(CachedPacket { frame, ..packet });
        }
        if self.keyframe_at.is_some() && self.bytes > self.max_bytes {
            self.clear();
        }
    }

    /// Starts a GOP at a keyframe's first packet. Packets after it that arrived before it (it was
    /// lost and came back resent, a round trip later) are held already and stay, in their order;
    /// anything older goes. Without them a replay would carry the keyframe's first packet and a
    /// hole where the rest of it was, which no subscriber's NACK can fill.
    fn start_gop(&mut self, now: Instant, keyframe: CachedPacket) {
        let first = keyframe.seq;
        self.packets.retain(|p| p.seq != first && p.seq.wrapping_sub(first) < 0x8000);
        self.packets.insert(0, keyframe);
        self.bytes = self.packets.iter().map(|p| p.payload.len()).sum();
        self.keyframe_at = Some(now);
        for i in 0..self.packets.len() {
            self.packets[i].frame = self.frame_of(self.packets[i].ts, i);
        }
    }

    /// Keeps a packet while no keyframe has started a GOP: the keyframe's first packet may come
    /// after the rest of it (see [`Self::start_gop`]). Past [`WAITING_SHARE`] of the byte limit,
    /// the older half goes (a copy of the list every so many packets, not one per packet).
    fn hold(&mut self, packet: CachedPacket) {
        self.packets.push(packet);
        let limit = self.max_bytes / WAITING_SHARE;
        if self.bytes <= limit {
            return;
        }
        let mut drop = 0;
        while self.bytes > limit / 2 && drop < self.packets.len() {
            self.bytes -= self.packets[drop].payload.len();
            drop += 1;
        }
        self.packets.drain(..drop);
    }

    /// The cached GOP, if there is one worth replaying at `now`, with its SSRC.
    pub fn replayable(&self, now: Instant) -> Option<(u32, &[CachedPacket])> {
        if self.keyframe_at.is_none() || self.packets.is_empty() || self.expired(now) {
            return None;
        }
        Some((self.ssrc, &self.packets))
    }

    /// Timestamp of the newest cached frame and how many frames are cached: replay maps that
    /// frame onto the live timeline.
    pub fn newest(&self) -> (u32, u32) {
        (self.newest_ts, self.frames)
    }

    /// Payload bytes held (for memory accounting).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn expired(&self, now: Instant) -> bool {
        self.keyframe_at.is_some_and(|k| now.saturating_duration_since(k) > self.max_age)
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.keyframe_at = None;
        self.frames = 0;
    }

    /// The frame index for a packet with timestamp `ts` that follows `self.packets[..upto]`: a new
    /// newest frame gets the next index; a packet of an earlier frame (a retransmission) gets that
    /// frame's index.
    fn frame_of(&mut self, ts: u32, upto: usize) -> u32 {
        if upto == 0 {
            self.newest_ts = ts;
            self.frames = 1;
            return 0;
        }
        let newer = ts.wrapping_sub(self.newest_ts);
        if newer != 0 && newer < 0x8000_0000 {
            self.newest_ts = ts;
            self.frames += 1;
            return self.frames - 1;
        }
        if newer == 0 {
            return self.frames - 1;
        }
        self.packets[..upto].iter().rev().find(|p| p.ts == ts).map_or(0, |p| p.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KB: usize = 1024;

    fn pay(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(c: &mut GopCache, at: Instant, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: &Bytes, key: bool) {
        let pkt = RtpIn { ssrc, layer: 0, seq, ts, marker, payload, audio_level: None };
        c.on_packet(at, &pkt, key);
    }

    fn cache() -> GopCache {
        GopCache::new(64 * KB, Duration::from_secs(4))
    }

    #[test]
    fn nothing_is_served_before_a_keyframe() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 10, 0, true, &pay(100), false);
        assert!(c.replayable(t0).is_none());
    }

    #[test]
    fn a_keyframe_starts_a_new_gop_and_frames_are_numbered_in_order() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 9, 0, true, &pay(100), false); // before any keyframe: ignored
        feed(&mut c, t0, 1, 10, 3000, false, &pay(1000), true);
        feed(&mut c, t0, 1, 11, 3000, true, &pay(1000), false);
        feed(&mut c, t0, 1, 12, 6000, true, &pay(200), false);
        feed(&mut c, t0, 1, 14, 9000, true, &pay(200), false);
        feed(&mut c, t0, 1, 13, 6000, false, &pay(50), false); // late retransmission of frame 1
        let (ssrc, gop) = c.replayable(t0).unwrap();
        assert_eq!(ssrc, 1);
        let seen: Vec<(u16, u32)> = gop.iter().map(|p| (p.seq, p.frame)).collect();
        assert_eq!(seen, [(10, 0), (11, 0), (12, 1), (14, 2), (13, 1)]);
        assert_eq!(c.newest(), (9000, 3));
        assert_eq!(c.bytes(), 2450);

        feed(&mut c, t0, 1, 15, 12000, false, &pay(900), true);
        let (_, gop) = c.replayable(t0).unwrap();
        assert_eq!(gop.len(), 1, "the next keyframe replaces the GOP");
        assert_eq!(c.newest(), (12000, 1));
    }

    #[test]
    fn a_repeated_keyframe_packet_does_not_restart_the_gop() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 10, 3000, true, &pay(100), true);
        feed(&mut c, t0, 1, 11, 6000, true, &pay(100), false);
        feed(&mut c, t0, 1, 10, 3000, true, &pay(100), true); // retransmitted
        assert_eq!(c.replayable(t0).unwrap().1.len(), 3);
    }

    #[test]
    fn packets_older_than_the_keyframe_are_left_out() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 65535, 3000, true, &pay(100), true);
        feed(&mut c, t0, 1, 0, 6000, true, &pay(100), false); // wraps: newer
        feed(&mut c, t0, 1, 65534, 0, true, &pay(100), false); // before the keyframe
        let seqs: Vec<u16> = c.replayable(t0).unwrap().1.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [65535, 0]);
    }

    #[test]
    fn a_gop_too_large_or_too_old_is_not_served() {
        let t0 = Instant::now();
        let mut c = GopCache::new(2 * KB, Duration::from_secs(4));
        feed(&mut c, t0, 1, 1, 0, true, &pay(KB), true);
        feed(&mut c, t0, 1, 2, 3000, true, &pay(KB), false);
        assert!(c.replayable(t0).is_some());
        feed(&mut c, t0, 1, 3, 6000, true, &pay(1), false);
        assert!(c.replayable(t0).is_none(), "over the byte limit");
        assert_eq!(c.bytes(), 0);
        feed(&mut c, t0, 1, 4, 9000, true, &pay(1), false);
        assert!(c.replayable(t0).is_none(), "serves nothing until the next keyframe");

        feed(&mut c, t0, 1, 5, 12000, true, &pay(10), true);
        assert!(c.replayable(t0 + Duration::from_secs(4)).is_some());
        assert!(c.replayable(t0 + Duration::from_millis(4001)).is_none(), "older than max_age");
    }

    #[test]
    fn another_source_without_a_keyframe_empties_the_cache() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 1, 0, true, &pay(10), true);
        feed(&mut c, t0, 2, 500, 0, true, &pay(10), false);
        assert!(c.replayable(t0).is_none());
        feed(&mut c, t0, 2, 501, 0, true, &pay(10), true);
        assert_eq!(c.replayable(t0).unwrap().0, 2);
    }

    #[test]
    fn a_keyframe_whose_first_packet_comes_resent_keeps_the_rest_of_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for open_gop in [true, false] {
            let mut c = cache();
            if open_gop {
                feed(&mut c, at(0), 1, 10, 0, true, &pay(100), true);
                feed(&mut c, at(33), 1, 11, 3000, true, &pay(100), false);
            }
            // The next keyframe's first packet (20) is lost; the rest of it and the next frame
            // arrive, then 20 comes back resent a round trip later.
            for (seq, ts, marker) in [(21, 6000, false), (22, 6000, true), (23, 9000, true)] {
                feed(&mut c, at(66), 1, seq, ts, marker, &pay(100), false);
            }
            feed(&mut c, at(120), 1, 20, 6000, false, &pay(100), true);
            feed(&mut c, at(130), 1, 24, 12000, true, &pay(100), false);
            let (_, gop) = c.replayable(at(130)).expect("a GOP from the resent keyframe start");
            let seen: Vec<(u16, u32)> = gop.iter().map(|p| (p.seq, p.frame)).collect();
            assert_eq!(seen, [(20, 0), (21, 0), (22, 0), (23, 1), (24, 2)], "with an open GOP before: {open_gop}");
            assert_eq!(c.newest(), (12000, 3));
            assert_eq!(c.bytes(), 500);
        }
    }

    #[test]
    fn a_late_resend_of_an_earlier_keyframe_start_does_not_restart_the_gop() {
        let t0 = Instant::now();
        let mut c = cache();
        feed(&mut c, t0, 1, 10, 0, true, &pay(100), true);
        feed(&mut c, t0, 1, 20, 6000, true, &pay(100), true);
        feed(&mut c, t0, 1, 21, 9000, true, &pay(100), false);
        feed(&mut c, t0, 1, 10, 0, true, &pay(100), true); // the earlier keyframe, resent late
        let seqs: Vec<u16> = c.replayable(t0).unwrap().1.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [20, 21]);
    }

    #[test]
    fn while_no_gop_is_open_only_a_share_of_the_limit_is_held() {
        let t0 = Instant::now();
        let mut c = GopCache::new(64 * KB, Duration::from_secs(4));
        for seq in 0..1000u16 {
            feed(&mut c, t0, 1, seq, u32::from(seq) * 3000, true, &pay(KB), false);
            assert!(c.bytes() <= 16 * KB, "held {} bytes at packet {seq}", c.bytes());
        }
        assert!(c.bytes() >= 8 * KB, "the newer half stays");
        assert!(c.replayable(t0).is_none());
    }
}
