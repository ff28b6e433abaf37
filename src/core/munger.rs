//! Per-down-track rewriting of sequence numbers and timestamps (LiveKit's `rtpmunger`, mediasoup's
//! `SeqManager`). A subscriber must see one continuous stream on each down track even when the
//! source behind it changes SSRC (a publisher reconnects, a track is replaced): at a switch the
//! next output sequence number follows the last one sent, and the timestamp advances by the wall
//! time that passed. Within one source, reordered and retransmitted packets keep their relative
//! order, and nothing older than the first forwarded packet of that source is let through.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Munger {
    /// Where the first output sequence number and timestamp start. Chosen by the caller (random in
    /// the driver) so that a subscriber cannot infer anything from them.
    start_seq: u16,
    start_ts: u32,
    state: Option<Segment>,
    /// The source before the current one: its late packets are dropped, not taken for a switch.
    prev_ssrc: Option<u32>,
    /// The next packet starts a new segment even from the same source (forwarding resumes after
    /// a pause: no gap in the output for the packets that were not sent), or from the previous
    /// source (a simulcast layer switch back).
    rebase: bool,
    /// Input sequence numbers of the current segment left out on purpose (temporal-layer dropping,
    /// padding): the output closes up behind them, and a late packet from before one of them is
    /// placed by the drops that came after it. A fixed ring: no allocation per packet.
    dropped: DropLog<DROP_LOG>,
    /// Padding packets put into the current segment (bandwidth probes), each logged as the input
    /// sequence number it went before: a late packet from before one keeps its place.
    inserted: DropLog<DROP_LOG>,
}

/// The latest numbers left out on purpose, in a fixed ring (no allocation): a late packet is
/// shifted back by the drops that came after it. Used for sequence numbers here and for VP8
/// picture ids (`vp8::PictureMunger`).
#[derive(Debug, Clone)]
pub struct DropLog<const N: usize> {
    at: [u16; N],
    len: usize,
    next: usize,
}

impl<const N: usize> Default for DropLog<N> {
    fn default() -> Self {
        DropLog { at: [0; N], len: 0, next: 0 }
    }
}

impl<const N: usize> DropLog<N> {
    pub fn push(&mut self, n: u16) {
        self.at[self.next] = n;
        self.next = (self.next + 1) % N;
        self.len = (self.len + 1).min(N);
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many logged drops came after `n`, by `newer(drop, n)`.
    pub fn after(&self, n: u16, newer: impl Fn(u16, u16) -> bool) -> u16 {
        self.at[..self.len].iter().filter(|&&d| newer(d, n)).count() as u16
    }
}

/// How many deliberate drops a late packet can be placed behind (a second of dropped packets of
/// a 1 Mbps layer).
const DROP_LOG: usize = 128;

/// The current source segment: one input SSRC and the offsets that map it onto the output.
#[derive(Debug, Clone, Copy)]
struct Segment {
    in_ssrc: u32,
    first_in_seq: u16,
    /// The newest input sequence number seen (forwarded or dropped).
    max_in_seq: u16,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest output sequence number and the timestamp sent with it.
    max_out_seq: u16,
    max_out_ts: u32,
    max_out_at: Instant,
}

/// How far behind the newest packet a reordered packet may be and still be forwarded.
const MAX_REORDER: u16 = 1000;

/// `a` is newer than `b` in RFC 3550 serial-number arithmetic.
fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

impl Munger {
    pub fn new(start_seq: u16, start_ts: u32) -> Munger {
        Munger {
            start_seq,
            start_ts,
            state: None,
            prev_ssrc: None,
            rebase: false,
            dropped: DropLog::default(),
            inserted: DropLog::default(),
        }
    }

    /// Maps an input packet to its output `(sequence number, timestamp)`, or `None` if it must be
    /// dropped (older than this source's first forwarded packet, or from a previous source).
    /// A packet with a new SSRC starts a new segment: call this only for a packet that may start
    /// one (for video, a keyframe); the room makes sure of that.
    pub fn rewrite(&mut self, ssrc: u32, seq: u16, ts: u32, clock_rate: u32, now: Instant) -> Option<(u16, u32)> {
        match &mut self.state {
            Some(seg) if seg.in_ssrc == ssrc && !self.rebase => {
                if seq.wrapping_sub(seg.first_in_seq) >= 0x8000 {
                    return None; // before this segment began
                }
                let newest = seq_newer(seq, seg.max_in_seq) || seq == seg.max_in_seq;
                let offset = if newest || (self.dropped.is_empty() && self.inserted.is_empty()) {
                    seg.seq_offset
                } else {
                    // Undo the drops and insertions that came after this late packet.
                    seg.seq_offset
                        .wrapping_add(self.dropped.after(seq, seq_newer))
                        .wrapping_sub(self.inserted.after(seq, seq_newer))
                };
                if newest {
                    seg.max_in_seq = seq;
                }
                let out_seq = seq.wrapping_add(offset);
                let out_ts = ts.wrapping_add(seg.ts_offset);
                if seq_newer(out_seq, seg.max_out_seq) {
                    seg.max_out_seq = out_seq;
                    seg.max_out_ts = out_ts;
                    seg.max_out_at = now;
                } else if seg.max_out_seq.wrapping_sub(out_seq) > MAX_REORDER {
                    return None;
                }
                Some((out_seq, out_ts))
            }
            Some(seg) if seg.in_ssrc != ssrc && self.prev_ssrc == Some(ssrc) && !self.rebase => None,
            Some(seg) => {
                // Source switch (or resume): continue right after what the subscriber last saw.
                let (out_seq, out_ts) = seg.next_out(now, clock_rate);
                if seg.in_ssrc != ssrc {
                    self.prev_ssrc = Some(seg.in_ssrc);
                }
                self.rebase = false;
                self.dropped.clear();
                self.inserted.clear();
                *seg = Segment::start(ssrc, seq, ts, out_seq, out_ts, now);
                Some((out_seq, out_ts))
            }
            None => {
                let seg = Segment::start(ssrc, seq, ts, self.start_seq, self.start_ts, now);
                self.state = Some(seg);
                Some((self.start_seq, self.start_ts))
            }
        }
    }

    /// Where the next segment would start: the output sequence number after the last one sent,
    /// and a timestamp advanced by the wall time since it (at least one tick); the chosen start
    /// before anything was sent.
    pub fn next_out(&self, now: Instant, clock_rate: u32) -> (u16, u32) {
        self.state.map_or((self.start_seq, self.start_ts), |seg| seg.next_out(now, clock_rate))
    }

    /// Starts a segment of `ssrc` with a chosen mapping instead of at its first packet: input
    /// `first_seq` maps to `out_seq`, and input timestamp `in_ts` to `out_ts`. A GOP replay uses
    /// it (at a join or a layer switch) so that live packets continue right after the replayed
    /// ones. The source before, if another, is the previous one: its late packets are dropped.
    pub fn start_segment(&mut self, ssrc: u32, first_seq: u16, out_seq: u16, in_ts: u32, out_ts: u32, now: Instant) {
        if let Some(prev) = self.state.filter(|s| s.in_ssrc != ssrc) {
            self.prev_ssrc = Some(prev.in_ssrc);
        }
        let mut seg = Segment::start(ssrc, first_seq, in_ts, out_seq, out_ts, now);
        seg.max_out_seq = out_seq.wrapping_sub(1);
        self.state = Some(seg);
        self.rebase = false;
        self.dropped.clear();
        self.inserted.clear();
    }

    /// Leaves out one packet of the current source on purpose: the packets after it close up, so
    /// the subscriber sees no gap to ask for. Only the newest packet can be left out this way; an
    /// older one had its place reserved already (the subscriber will ask for it and get nothing).
    pub fn drop_packet(&mut self, ssrc: u32, seq: u16) {
        let Some(seg) = self.state.as_mut() else { return };
        if seg.in_ssrc != ssrc || self.rebase || !seq_newer(seq, seg.max_in_seq) {
            return;
        }
        if seq.wrapping_sub(seg.first_in_seq) >= 0x8000 {
            return;
        }
        // Packets between the newest and this one were lost upstream: they keep their places.
        seg.max_in_seq = seq;
        seg.seq_offset = seg.seq_offset.wrapping_sub(1);
        self.dropped.push(seq);
    }

    /// Takes an output sequence number for a packet of our own (padding of a bandwidth probe)
    /// right after the newest one sent, with its timestamp; the source's next packets follow it.
    /// `None` before the first packet or while a new segment is due. Call it only between frames:
    /// a receiver assembles a frame from consecutive sequence numbers.
    pub fn insert_padding(&mut self) -> Option<(u16, u32)> {
        let seg = self.state.as_mut().filter(|_| !self.rebase)?;
        seg.max_out_seq = seg.max_out_seq.wrapping_add(1);
        seg.seq_offset = seg.seq_offset.wrapping_add(1);
        self.inserted.push(seg.max_in_seq.wrapping_add(1));
        Some((seg.max_out_seq, seg.max_out_ts))
    }

    /// Whether `seq` is the newest output sequence number so far.
    pub fn is_newest(&self, seq: u16) -> bool {
        self.state.is_some_and(|s| s.max_out_seq == seq)
    }

    /// Makes the next packet start a new segment (see `rebase`); call it when forwarding resumes
    /// after packets were held back, and let only a keyframe through next.
    pub fn rebase(&mut self) {
        self.rebase = self.state.is_some();
    }

    /// True once the first packet went out.
    pub fn started(&self) -> bool {
        self.state.is_some()
    }

    /// The SSRC of the current source segment.
    pub fn current_ssrc(&self) -> Option<u32> {
        self.state.map(|s| s.in_ssrc)
    }
}

impl Segment {
    fn next_out(&self, now: Instant, clock_rate: u32) -> (u16, u32) {
        let elapsed = now.saturating_duration_since(self.max_out_at);
        let advance = (elapsed.as_secs_f64() * clock_rate as f64) as u64;
        (self.max_out_seq.wrapping_add(1), self.max_out_ts.wrapping_add(advance.clamp(1, u32::MAX as u64) as u32))
    }

    fn start(ssrc: u32, seq: u16, ts: u32, out_seq: u16, out_ts: u32, now: Instant) -> Segment {
        Segment {
            in_ssrc: ssrc,
            first_in_seq: seq,
            max_in_seq: seq,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            max_out_seq: out_seq,
            max_out_ts: out_ts,
            max_out_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_source_is_shifted_by_a_constant_offset() {
        let t0 = Instant::now();
        let mut m = Munger::new(1000, 5000);
        // (ssrc, seq, ts) -> (seq, ts)
        let table = [
            ((7, 65534, 90_000), Some((1000, 5000))),
            ((7, 65535, 93_000), Some((1001, 8000))),
            ((7, 0, 96_000), Some((1002, 11000))), // input wraps
            ((7, 1, 96_000), Some((1003, 11000))),
        ];
        for ((ssrc, seq, ts), want) in table {
            assert_eq!(m.rewrite(ssrc, seq, ts, 90_000, t0), want, "input seq {seq}");
        }
    }

    #[test]
    fn reordered_and_retransmitted_packets_keep_their_place() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        assert_eq!(m.rewrite(1, 100, 0, 90_000, t0), Some((0, 0)));
        assert_eq!(m.rewrite(1, 102, 0, 90_000, t0), Some((2, 0)));
        assert_eq!(m.rewrite(1, 101, 0, 90_000, t0), Some((1, 0)), "late packet fills its gap");
        assert_eq!(m.rewrite(1, 101, 0, 90_000, t0), Some((1, 0)), "a retransmission maps the same");
    }

    #[test]
    fn packets_from_before_the_first_forwarded_one_are_dropped() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        m.rewrite(1, 500, 0, 90_000, t0);
        assert_eq!(m.rewrite(1, 499, 0, 90_000, t0), None);
        assert_eq!(m.rewrite(1, 100, 0, 90_000, t0), None);
    }

    #[test]
    fn an_ssrc_change_continues_the_output_without_a_gap() {
        let t0 = Instant::now();
        let mut m = Munger::new(10, 1000);
        assert_eq!(m.rewrite(1, 7, 50, 90_000, t0), Some((10, 1000)));
        assert_eq!(m.rewrite(1, 8, 3050, 90_000, t0), Some((11, 4000)));
        // New source 100 ms later with unrelated numbering.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(m.rewrite(2, 40000, 777, 90_000, t1), Some((12, 4000 + 9000)));
        assert_eq!(m.rewrite(2, 40001, 3777, 90_000, t1), Some((13, 16000)));
        // Stragglers of the old source are dropped.
        assert_eq!(m.rewrite(1, 9, 6050, 90_000, t1), None);
        assert_eq!(m.current_ssrc(), Some(2));
    }

    #[test]
    fn a_resume_after_a_pause_continues_the_output_without_a_gap() {
        let t0 = Instant::now();
        let mut m = Munger::new(10, 0);
        assert_eq!(m.rewrite(1, 100, 0, 90_000, t0), Some((10, 0)));
        m.rebase();
        // 200 packets and 2 s later, same source.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(m.rewrite(1, 300, 180_000, 90_000, t1), Some((11, 180_000)));
        assert_eq!(m.rewrite(1, 301, 183_000, 90_000, t1), Some((12, 183_000)));
        assert_eq!(m.rewrite(1, 250, 170_000, 90_000, t1), None, "held-back packets stay behind");
    }

    #[test]
    fn dropped_packets_leave_no_gap_and_late_packets_keep_their_place() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        assert_eq!(m.rewrite(1, 100, 0, 90_000, t0), Some((0, 0)));
        m.drop_packet(1, 101);
        m.drop_packet(1, 102);
        assert_eq!(m.rewrite(1, 104, 0, 90_000, t0), Some((2, 0)), "103 lost upstream keeps its place");
        assert_eq!(m.rewrite(1, 103, 0, 90_000, t0), Some((1, 0)));
        m.drop_packet(1, 105);
        assert_eq!(m.rewrite(1, 106, 0, 90_000, t0), Some((3, 0)));
        // A late packet from before all the drops.
        assert_eq!(m.rewrite(1, 100, 0, 90_000, t0), Some((0, 0)));
        // Dropping an old packet changes nothing that was already sent.
        m.drop_packet(1, 103);
        assert_eq!(m.rewrite(1, 107, 0, 90_000, t0), Some((4, 0)));
    }

    #[test]
    fn padding_takes_the_next_number_and_late_packets_keep_their_place() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        assert_eq!(m.insert_padding(), None, "nothing to follow yet");
        assert_eq!(m.rewrite(1, 100, 900, 90_000, t0), Some((0, 0)));
        assert_eq!(m.rewrite(1, 102, 900, 90_000, t0), Some((2, 0)), "101 lost upstream");
        assert_eq!(m.insert_padding(), Some((3, 0)), "after the newest, with its timestamp");
        assert_eq!(m.insert_padding(), Some((4, 0)));
        assert_eq!(m.rewrite(1, 103, 3900, 90_000, t0), Some((5, 3000)));
        assert_eq!(m.rewrite(1, 101, 900, 90_000, t0), Some((1, 0)), "the late packet fills its own gap");
        m.drop_packet(1, 104);
        assert_eq!(m.insert_padding(), Some((6, 3000)));
        assert_eq!(m.rewrite(1, 105, 6900, 90_000, t0), Some((7, 6000)));
        assert_eq!(m.rewrite(1, 103, 3900, 90_000, t0), Some((5, 3000)), "a repeat maps the same");
        m.rebase();
        assert_eq!(m.insert_padding(), None, "no padding while a new segment is due");
    }

    #[test]
    fn a_rebase_lets_the_previous_source_back_in() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        m.rewrite(1, 10, 0, 90_000, t0);
        m.rebase();
        assert_eq!(m.rewrite(2, 500, 0, 90_000, t0), Some((1, 1)));
        assert_eq!(m.rewrite(1, 11, 0, 90_000, t0), None, "the previous source's stragglers stay out");
        m.rebase();
        assert_eq!(m.rewrite(1, 12, 0, 90_000, t0), Some((2, 2)), "a switch back to it is let in");
    }

    #[test]
    fn a_segment_started_at_a_chosen_mapping_continues_the_numbering_and_drops_the_old_source() {
        let t0 = Instant::now();
        let mut m = Munger::new(100, 5_000);
        assert_eq!(m.next_out(t0, 90_000), (100, 5_000));
        assert_eq!(m.rewrite(1, 10, 1_000, 90_000, t0), Some((100, 5_000)));
        assert_eq!(m.rewrite(1, 11, 4_000, 90_000, t0), Some((101, 8_000)));
        // 100 ms later another source starts with a replay: its packet 500 (timestamp 70_000)
        // goes right after output 101, its newest cached frame (timestamp 76_000) lands at a
        // chosen output timestamp.
        let t1 = t0 + Duration::from_millis(100);
        let (seq, ts) = m.next_out(t1, 90_000);
        assert_eq!((seq, ts), (102, 8_000 + 9_000));
        m.start_segment(2, 500, seq, 76_000, ts + 180, t1);
        assert_eq!(m.rewrite(2, 500, 70_000, 90_000, t1), Some((102, ts + 180 - 6_000)));
        assert_eq!(m.rewrite(2, 501, 76_000, 90_000, t1), Some((103, ts + 180)));
        // The old source's late packet is not taken for a switch; the new one goes on.
        assert_eq!(m.rewrite(1, 12, 7_000, 90_000, t1), None);
        assert_eq!(m.rewrite(2, 502, 79_000, 90_000, t1), Some((104, ts + 180 + 3_000)));
        assert!(m.is_newest(104));
    }

    #[test]
    fn a_switch_with_no_time_elapsed_still_advances_the_timestamp() {
        let t0 = Instant::now();
        let mut m = Munger::new(0, 0);
        m.rewrite(1, 1, 0, 48_000, t0);
        assert_eq!(m.rewrite(2, 1, 0, 48_000, t0), Some((1, 1)));
    }
}
