//! From RTP packets to whole frames, with no IO and no clock: a reorder buffer that waits a
//! bounded time for late packets and then declares them lost, and frame assemblers for VP8
//! (RFC 7741) and H.264 (RFC 6184: single NAL, STAP-A, FU-A). Opus needs no assembly: one packet
//! is one frame.
//!
//! Invariants:
//! - packets leave the reorder buffer in sequence order, each at most once; a sequence number is
//!   either delivered or reported lost, never skipped silently;
//! - a frame is emitted only when every packet of it arrived (start and marker seen, no loss in
//!   between); anything else is dropped and reported, so a recording never holds a corrupt frame.

use bytes::Bytes;

/// How long a gap may stay open before the packets behind it are released (late packets are
/// usually NACK retransmissions, which arrive within one RTT).
pub const MAX_WAIT_MS: i64 = 150;
const SLOTS: usize = 512;

/// One received packet, owned (the payload is a shared `Bytes`, not a copy).
#[derive(Debug, Clone)]
pub struct Held {
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub payload: Bytes,
    /// Arrival, in milliseconds on the session timeline.
    pub at_ms: i64,
}

/// What the reorder buffer releases.
#[derive(Debug)]
pub enum Released {
    Packet(Held),
    /// This many sequence numbers never arrived.
    Lost(u64),
}

/// Extends 16-bit sequence numbers to 64 bits across wrap-around.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqUnwrap {
    last: Option<u64>,
}

impl SeqUnwrap {
    pub fn unwrap(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            let v = (1u64 << 16) + u64::from(seq); // start one cycle up so a reordered packet stays positive
            self.last = Some(v);
            return v;
        };
        let delta = seq.wrapping_sub(last as u16) as i16;
        let v = (last as i64 + i64::from(delta)).max(0) as u64;
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

/// Extends 32-bit RTP timestamps to 64 bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct TsUnwrap {
    last: Option<i64>,
}

impl TsUnwrap {
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let Some(last) = self.last else {
            self.last = Some(i64::from(ts));
            return i64::from(ts);
        };
        let delta = ts.wrapping_sub(last as u32) as i32;
        let v = last + i64::from(delta);
        if v > last {
            self.last = Some(v);
        }
        v
    }
}

/// Puts packets back in order, waiting at most [`MAX_WAIT_MS`] for a missing one.
pub struct Reorder {
    slots: Vec<Option<Held>>,
    unwrap: SeqUnwrap,
    /// The next sequence number to release; `None` before the first packet.
    next: Option<u64>,
    highest: u64,
}

impl Default for Reorder {
    fn default() -> Self {
        Reorder { slots: (0..SLOTS).map(|_| None).collect(), unwrap: SeqUnwrap::default(), next: None, highest: 0 }
    }
}

impl Reorder {
    /// Forgets everything (an SSRC change restarts numbering).
    pub fn reset(&mut self) {
        *self = Reorder::default();
    }

    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: Bytes, at_ms: i64, out: &mut Vec<Released>) {
        let seq = self.unwrap.unwrap(seq);
        let next = *self.next.get_or_insert(seq);
        if seq < next {
            return; // a duplicate, or later than we were willing to wait
        }
        if seq >= next + SLOTS as u64 {
            // Too far ahead to hold: give up on everything before the new window.
            let new_next = seq + 1 - SLOTS as u64;
            while self.next.is_some_and(|n| n < new_next) {
                self.release_one(out);
            }
        }
        let slot = &mut self.slots[(seq % SLOTS as u64) as usize];
        if slot.is_none() {
            *slot = Some(Held { seq, ts, marker, payload, at_ms });
            self.highest = self.highest.max(seq);
        }
        self.drain(at_ms, out);
    }

    /// Releases what is in order, and skips gaps older than [`MAX_WAIT_MS`].
    pub fn drain(&mut self, now_ms: i64, out: &mut Vec<Released>) {
        loop {
            let Some(next) = self.next else { return };
            if self.slots[(next % SLOTS as u64) as usize].is_some() {
                self.release_one(out);
                continue;
            }
            if self.highest <= next {
                return; // nothing buffered behind the gap
            }
            let oldest = (next + 1..=self.highest).find_map(|s| self.slots[(s % SLOTS as u64) as usize].as_ref());
            match oldest {
                Some(h) if now_ms - h.at_ms >= MAX_WAIT_MS => self.release_one(out),
                _ => return,
            }
        }
    }

    /// Releases everything held (end of the track), reporting gaps as lost.
    pub fn flush(&mut self, out: &mut Vec<Released>) {
        while self.next.is_some_and(|n| n <= self.highest) {
            self.release_one(out);
        }
    }

    fn release_one(&mut self, out: &mut Vec<Released>) {
        let Some(next) = self.next else { return };
        match self.slots[(next % SLOTS as u64) as usize].take() {
            Some(h) => out.push(Released::Packet(h)),
            None => match out.last_mut() {
                Some(Released::Lost(n)) => *n += 1,
                _ => out.push(Released::Lost(1)),
            },
        }
        self.next = Some(next + 1);
    }
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub ts: u32,
    pub keyframe: bool,
    pub data: Vec<u8>,
    /// Arrival of the frame's first packet, in ms on the session timeline.
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// Assembles video frames from in-order packets.
pub struct FrameAssembler {
    codec: VideoCodec,
    ts: Option<u32>,
    buf: Vec<u8>,
    /// The frame's first packet was seen.
    started: bool,
    /// A packet of this frame was lost or could not be parsed.
    broken: bool,
    keyframe: bool,
    at_ms: i64,
    /// Frames dropped because they were incomplete.
    pub dropped: u64,
    /// The latest SPS and PPS (H.264), for the container's codec private data.
    pub sps: Option<Vec<u8>>,
    pub pps: Option<Vec<u8>>,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl FrameAssembler {
    pub fn new(codec: VideoCodec) -> FrameAssembler {
        FrameAssembler {
            codec,
            ts: None,
            buf: Vec::with_capacity(64 * 1024),
            started: false,
            broken: false,
            keyframe: false,
            at_ms: 0,
            dropped: 0,
            sps: None,
            pps: None,
        }
    }

    /// Packets were lost: the frame in progress cannot be completed.
    pub fn on_lost(&mut self) {
        if self.ts.is_some() {
            self.broken = true;
        }
    }

    /// Feeds one in-order packet; returns a frame when this packet completed one.
    pub fn push(&mut self, h: &Held) -> Option<Frame> {
        if self.ts != Some(h.ts) {
            if self.ts.is_some() {
                self.dropped += 1; // the previous frame never saw its marker
            }
            self.ts = Some(h.ts);
            self.buf.clear();
            self.started = false;
            self.broken = false;
            self.keyframe = false;
            self.at_ms = h.at_ms;
        }
        let ok = match self.codec {
            VideoCodec::Vp8 => self.push_vp8(&h.payload),
            VideoCodec::H264 => self.push_h264(&h.payload),
        };
        if !ok {
            self.broken = true;
        }
        if !h.marker {
            return None;
        }
        let complete = self.started && !self.broken && !self.buf.is_empty();
        self.ts = None;
        if !complete {
            self.dropped += 1;
            return None;
        }
        Some(Frame { ts: h.ts, keyframe: self.keyframe, data: std::mem::take(&mut self.buf), at_ms: self.at_ms })
    }

    fn push_vp8(&mut self, p: &[u8]) -> bool {
        let Some((start, offset)) = vp8_descriptor(p) else { return false };
        let body = &p[offset..];
        if start {
            if !self.buf.is_empty() {
                return false; // a second start within one frame
            }
            self.started = true;
            self.keyframe = body.first().is_some_and(|b| b & 1 == 0);
        } else if !self.started {
            return false;
        }
        self.buf.extend_from_slice(body);
        true
    }

    fn push_h264(&mut self, p: &[u8]) -> bool {
        let Some(&b0) = p.first() else { return false };
        match b0 & 0x1f {
            1..=23 => {
                self.nal(p);
                true
            }
            24 => {
                let mut rest = &p[1..];
                while rest.len() >= 2 {
                    let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    if n == 0 || rest.len() < 2 + n {
                        return false;
                    }
                    self.nal(&rest[2..2 + n]);
                    rest = &rest[2 + n..];
                }
                true
            }
            28 => {
                let Some(&fu) = p.get(1) else { return false };
                let (start, nal_type) = (fu & 0x80 != 0, fu & 0x1f);
                if start {
                    self.started = true;
                    self.buf.extend_from_slice(&START_CODE);
                    self.buf.push((b0 & 0xe0) | nal_type);
                    self.keyframe |= nal_type == 5;
                } else if !self.started {
                    return false;
                }
                self.buf.extend_from_slice(&p[2..]);
                true
            }
            _ => false,
        }
    }

    fn nal(&mut self, nal: &[u8]) {
        let t = nal[0] & 0x1f;
        match t {
            5 => self.keyframe = true,
            7 => self.sps = Some(nal.to_vec()),
            8 => self.pps = Some(nal.to_vec()),
            _ => {}
        }
        self.started = true;
        self.buf.extend_from_slice(&START_CODE);
        self.buf.extend_from_slice(nal);
    }
}

/// Parses a VP8 payload descriptor: (start of a frame, offset of the VP8 payload).
pub fn vp8_descriptor(p: &[u8]) -> Option<(bool, usize)> {
    let b0 = *p.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let pid = *p.get(i)?;
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    if i > p.len() {
        return None;
    }
    let start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    Some((start, i))
}

/// Width and height from a VP8 keyframe's header.
pub fn vp8_dimensions(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let h = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (w > 0 && h > 0).then_some((w, h))
}

/// Width and height from an H.264 SPS NAL unit (with its one-byte header).
pub fn h264_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    // Remove emulation prevention bytes (00 00 03 → 00 00).
    let mut rbsp = Vec::with_capacity(sps.len());
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = Bits { data: &rbsp, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bits(1)?;
        }
        r.ue()?;
        r.ue()?;
        r.bits(1)?;
        if r.bits(1)? == 1 {
            for i in 0..if chroma_format_idc == 3 { 12 } else { 8 } {
                if r.bits(1)? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + r.se()? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()? {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bits(1)?;
    let w_mbs = r.ue()? + 1;
    let h_units = r.ue()? + 1;
    let frame_mbs_only = r.bits(1)?;
    if frame_mbs_only == 0 {
        r.bits(1)?;
    }
    r.bits(1)?;
    let (mut cl, mut cr, mut ct, mut cb) = (0, 0, 0, 0);
    if r.bits(1)? == 1 {
        (cl, cr, ct, cb) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let crop_x = if chroma_format_idc == 0 { 1 } else { sub_w };
    let crop_y = (if chroma_format_idc == 0 { 1 } else { sub_h }) * (2 - frame_mbs_only);
    let w = w_mbs * 16 - crop_x * (cl + cr);
    let h = (2 - frame_mbs_only) * h_units * 16 - crop_y * (ct + cb);
    (w > 0 && h > 0).then_some((w as u32, h as u32))
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bits(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | i64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<i64> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1i64 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkts(out: &[Released]) -> Vec<u64> {
        out.iter()
            .filter_map(|r| match r {
                Released::Packet(h) => Some(h.seq - (1 << 16)),
                Released::Lost(_) => None,
            })
            .collect()
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut r = Reorder::default();
        let mut out = Vec::new();
        for (s, t) in [(0u16, 0), (2, 1), (1, 2), (3, 3)] {
            r.push(s, 0, false, Bytes::from_static(b"x"), t, &mut out);
        }
        assert_eq!(pkts(&out), vec![0, 1, 2, 3]);
        assert!(!out.iter().any(|r| matches!(r, Released::Lost(_))));
    }

    #[test]
    fn a_gap_is_declared_lost_only_after_the_wait() {
        let mut r = Reorder::default();
        let mut out = Vec::new();
        r.push(10, 0, false, Bytes::from_static(b"x"), 0, &mut out);
        r.push(12, 0, false, Bytes::from_static(b"x"), 10, &mut out);
        assert_eq!(pkts(&out), vec![10]);
        r.drain(10 + MAX_WAIT_MS - 1, &mut out);
        assert_eq!(out.len(), 1);
        r.drain(10 + MAX_WAIT_MS, &mut out);
        assert!(matches!(out[1], Released::Lost(1)));
        assert_eq!(pkts(&out), vec![10, 12]);
        // The late packet is dropped, not delivered twice or out of order.
        r.push(11, 0, false, Bytes::from_static(b"x"), 500, &mut out);
        assert_eq!(pkts(&out), vec![10, 12]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reorder::default();
        let mut out = Vec::new();
        for s in [65534u16, 65535, 0, 1] {
            r.push(s, 0, false, Bytes::from_static(b"x"), 0, &mut out);
        }
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|r| matches!(r, Released::Packet(_))));
    }

    fn held(seq: u64, ts: u32, marker: bool, payload: &[u8]) -> Held {
        Held { seq, ts, marker, payload: Bytes::copy_from_slice(payload), at_ms: 0 }
    }

    #[test]
    fn vp8_frames_assemble_and_a_lost_middle_packet_drops_the_frame() {
        let mut a = FrameAssembler::new(VideoCodec::Vp8);
        // Keyframe (first payload byte bit 0 = 0) in two packets: S bit set on the first only.
        assert_eq!(a.push(&held(1, 90, false, &[0x10, 0x00, 0xAA])), None);
        let f = a.push(&held(2, 90, true, &[0x00, 0xBB])).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0x00, 0xAA, 0xBB]);
        // Interframe with its middle lost.
        a.push(&held(3, 180, false, &[0x10, 0x01]));
        a.on_lost();
        assert_eq!(a.push(&held(5, 180, true, &[0x00, 0xCC])), None);
        assert_eq!(a.dropped, 1);
        // A frame whose start was lost is dropped too.
        assert_eq!(a.push(&held(7, 270, true, &[0x00, 0xDD])), None);
        assert_eq!(a.dropped, 2);
    }

    #[test]
    fn the_vp8_descriptor_skips_picture_id_and_tl0() {
        // X=1, S=1; I=1 with 15-bit picture id, L=1, T=1.
        let p = [0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0xAB];
        assert_eq!(vp8_descriptor(&p), Some((true, 6)));
        assert_eq!(vp8_descriptor(&[0x80]), None);
    }

    #[test]
    fn h264_fu_a_and_stap_a_become_annex_b() {
        let mut a = FrameAssembler::new(VideoCodec::H264);
        // STAP-A with SPS (7) and PPS (8), then an IDR (5) in two FU-A fragments.
        let stap = [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xCE];
        assert_eq!(a.push(&held(1, 3000, false, &stap)), None);
        assert_eq!(a.push(&held(2, 3000, false, &[0x7C, 0x85, 0x11])), None);
        let f = a.push(&held(3, 3000, true, &[0x7C, 0x45, 0x22])).unwrap();
        assert!(f.keyframe);
        assert_eq!(f.data, vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x68, 0xCE, 0, 0, 0, 1, 0x65, 0x11, 0x22]);
        assert_eq!(a.sps.as_deref(), Some(&[0x67, 0x42][..]));
    }

    #[test]
    fn dimensions_come_from_vp8_keyframes_and_h264_sps() {
        let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        kf.extend_from_slice(&640u16.to_le_bytes());
        kf.extend_from_slice(&480u16.to_le_bytes());
        assert_eq!(vp8_dimensions(&kf), Some((640, 480)));
        // SPS written by x264 (high, baseline and main profiles; 360 and 720 need cropping).
        let high_320x240 = [
            0x67, 0x64, 0x00, 0x0c, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
            0x03, 0x01, 0x40, 0xf1, 0x42, 0x99, 0x60,
        ];
        let baseline_640x360 = [
            0x67, 0x42, 0xc0, 0x16, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
            0x03, 0x00, 0x14, 0x0f, 0x16, 0x2e, 0x48,
        ];
        let main_1280x720 = [
            0x67, 0x4d, 0x40, 0x1f, 0xec, 0xa0, 0x28, 0x02, 0xdd, 0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00,
            0x03, 0x00, 0xa0, 0x78, 0xc1, 0x8c, 0xb0,
        ];
        assert_eq!(h264_dimensions(&high_320x240), Some((320, 240)));
        assert_eq!(h264_dimensions(&baseline_640x360), Some((640, 360)));
        assert_eq!(h264_dimensions(&main_1280x720), Some((1280, 720)));
    }
}
