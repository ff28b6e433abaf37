//! Pure checks over received RTP: sequence continuity, VP8 and H.264 frame assembly.
//!
//! Nothing here touches the network or the `webrtc` crate, so every rule is unit tested in
//! `tests/rtp_check_logic.rs` (and exercised against the real `rtc` packetizers in
//! `tests/harness_selfcheck.rs`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// One received RTP packet, as far as these checks care.
#[derive(Debug, Clone, Copy)]
pub struct PacketRef<'a> {
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: &'a [u8],
}

// ───────────────────────────── sequence numbers ─────────────────────────────

/// Result of [`check_sequence`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqReport {
    /// Packets examined.
    pub packets: usize,
    /// First and last sequence number in arrival order.
    pub first: Option<u16>,
    pub last: Option<u16>,
    /// Number of times the (unwrapped) sequence number crossed 65535 → 0.
    pub wraps: usize,
    /// Forward jumps: (last seq before the hole, number of seqs skipped).
    pub gaps: Vec<(u16, u32)>,
    /// Sequence numbers that arrived more than once (each repeat counted).
    pub duplicates: Vec<u16>,
    /// Sequence numbers that arrived after a higher one (late, filling a hole).
    pub reordered: Vec<u16>,
    /// Seqs that were skipped and never arrived.
    pub lost: u64,
}

impl SeqReport {
    /// No gaps, no duplicates, no reordering.
    pub fn is_continuous(&self) -> bool {
        self.gaps.is_empty() && self.duplicates.is_empty() && self.reordered.is_empty()
    }
}

impl fmt::Display for SeqReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets, seq {:?}..{:?}, {} wrap(s), {} gap(s) {:?}, {} duplicate(s) {:?}, {} reordered {:?}, {} lost",
            self.packets,
            self.first,
            self.last,
            self.wraps,
            self.gaps.len(),
            truncate(&self.gaps, 8),
            self.duplicates.len(),
            truncate(&self.duplicates, 8),
            self.reordered.len(),
            truncate(&self.reordered, 8),
            self.lost
        )
    }
}

fn truncate<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    v.iter().take(n).cloned().collect()
}

/// Extends 16-bit sequence numbers to i64 relative to the previous one (RFC 3550 A.1 style:
/// the nearest of the candidates, so a step back of up to 32767 is a reorder, not a wrap).
#[derive(Debug, Default, Clone)]
pub struct SeqUnwrapper {
    last: Option<(u16, i64)>,
}

impl SeqUnwrapper {
    pub fn unwrap(&mut self, seq: u16) -> i64 {
        let ext = match self.last {
            None => seq as i64,
            Some((prev, prev_ext)) => prev_ext + (seq.wrapping_sub(prev) as i16) as i64,
        };
        self.last = Some((seq, ext));
        ext
    }
}

/// Analyses sequence numbers in arrival order. Allows wrap-around at 65535.
pub fn check_sequence(seqs: &[u16]) -> SeqReport {
    let mut r = SeqReport {
        packets: seqs.len(),
        first: seqs.first().copied(),
        last: seqs.last().copied(),
        ..Default::default()
    };
    let mut unwrapper = SeqUnwrapper::default();
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut max_ext: Option<i64> = None;
    let mut missing: BTreeSet<i64> = BTreeSet::new();
    for &seq in seqs {
        let ext = unwrapper.unwrap(seq);
        if !seen.insert(ext) {
            r.duplicates.push(seq);
            continue;
        }
        match max_ext {
            None => max_ext = Some(ext),
            Some(max) if ext == max + 1 => max_ext = Some(ext),
            Some(max) if ext > max + 1 => {
                r.gaps.push(((max.rem_euclid(65536)) as u16, (ext - max - 1) as u32));
                // Guard against absurd jumps eating memory: record at most 65536 holes.
                for m in (max + 1)..ext.min(max + 1 + 65536) {
                    missing.insert(m);
                }
                max_ext = Some(ext);
            }
            Some(_) => {
                r.reordered.push(seq);
                missing.remove(&ext);
            }
        }
    }
    r.lost = missing.len() as u64;
    if let (Some(first), Some(max)) = (seqs.first(), max_ext) {
        r.wraps = (max.div_euclid(65536) - (*first as i64).div_euclid(65536)).max(0) as usize;
    }
    r
}

// ───────────────────────────── frame assembly ─────────────────────────────

/// One frame (all packets sharing an RTP timestamp), after assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledFrame {
    pub timestamp: u32,
    /// Lowest and highest sequence number in the frame (after unwrapping).
    pub first_seq: u16,
    pub last_seq: u16,
    pub packets: usize,
    /// Codec payload bytes (descriptors / FU headers stripped).
    pub bytes: usize,
    /// Every packet from start of frame to the marker, consecutive seqs, codec structure sound.
    pub complete: bool,
    /// VP8: key frame (P bit 0 and start code). H.264: contains an IDR slice (NAL type 5).
    pub keyframe: bool,
    /// H.264 only: NAL unit types seen (inside STAP-A / FU-A too), in order, deduplicated.
    pub nal_types: Vec<u8>,
    /// Why the frame is not complete (empty when complete).
    pub problems: Vec<String>,
}

/// Summary over assembled frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameStats {
    pub frames: usize,
    pub complete: usize,
    pub complete_keyframes: usize,
    /// Incomplete frames excluding the first (may have started before we joined) and the last
    /// (may still be arriving).
    pub incomplete_interior: usize,
    /// (timestamp, problems) of up to 10 incomplete frames.
    pub examples: Vec<(u32, Vec<String>)>,
}

impl fmt::Display for FrameStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames, {} complete ({} complete key frames), {} incomplete interior frames; examples: {:?}",
            self.frames, self.complete, self.complete_keyframes, self.incomplete_interior, self.examples
        )
    }
}

pub fn frame_stats(frames: &[AssembledFrame]) -> FrameStats {
    let mut s = FrameStats { frames: frames.len(), ..Default::default() };
    for (i, f) in frames.iter().enumerate() {
        if f.complete {
            s.complete += 1;
            if f.keyframe {
                s.complete_keyframes += 1;
            }
        } else {
            if i != 0 && i + 1 != frames.len() {
                s.incomplete_interior += 1;
            }
            if s.examples.len() < 10 {
                s.examples.push((f.timestamp, f.problems.clone()));
            }
        }
    }
    s
}

/// Groups packets (arrival order) by RTP timestamp, keeping first-appearance order, and sorts each
/// group by unwrapped sequence number. Returns (timestamp, [(ext_seq, packet)]).
fn group_by_timestamp<'a>(packets: &[PacketRef<'a>]) -> Vec<(u32, Vec<(i64, PacketRef<'a>)>)> {
    let mut unwrapper = SeqUnwrapper::default();
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut groups: Vec<(u32, Vec<(i64, PacketRef<'a>)>)> = Vec::new();
    for p in packets {
        let ext = unwrapper.unwrap(p.seq);
        if p.payload.is_empty() {
            // Padding only (a sender's bandwidth probe): no part of any frame, as for a decoder.
            continue;
        }
        let gi = *index.entry(p.timestamp).or_insert_with(|| {
            groups.push((p.timestamp, Vec::new()));
            groups.len() - 1
        });
        groups[gi].1.push((ext, *p));
    }
    for (_, g) in groups.iter_mut() {
        g.sort_by_key(|(ext, _)| *ext);
        g.dedup_by_key(|(ext, _)| *ext);
    }
    groups
}

fn check_consecutive(group: &[(i64, PacketRef<'_>)], problems: &mut Vec<String>) {
    for w in group.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            problems.push(format!("seq gap inside frame: {} -> {}", w[0].1.seq, w[1].1.seq));
        }
    }
    if let Some((_, last)) = group.last() {
        if !last.marker {
            problems.push(format!("last packet (seq {}) has no marker bit", last.seq));
        }
    }
}

// ───────────────────────────── VP8 ─────────────────────────────

/// RFC 7741 §4.2 payload descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    pub x: bool,
    pub n: bool,
    /// Start of VP8 partition.
    pub s: bool,
    /// Partition index.
    pub pid: u8,
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
    pub tid: Option<u8>,
    pub y: Option<bool>,
    pub keyidx: Option<u8>,
    /// Bytes of descriptor before the VP8 payload.
    pub header_len: usize,
}

pub fn parse_vp8_descriptor(p: &[u8]) -> Result<Vp8Descriptor, String> {
    let b0 = *p.first().ok_or("empty VP8 payload")?;
    let mut d = Vp8Descriptor {
        x: b0 & 0x80 != 0,
        n: b0 & 0x20 != 0,
        s: b0 & 0x10 != 0,
        pid: b0 & 0x07,
        header_len: 1,
        ..Default::default()
    };
    let mut i = 1;
    let need = |i: usize, what: &str| -> Result<u8, String> {
        p.get(i).copied().ok_or_else(|| format!("VP8 descriptor truncated reading {what}"))
    };
    if d.x {
        let b1 = need(i, "X byte")?;
        i += 1;
        let (has_i, has_l, has_t, has_k) = (b1 & 0x80 != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 0x10 != 0);
        if has_i {
            let b = need(i, "PictureID")?;
            i += 1;
            if b & 0x80 != 0 {
                let b2 = need(i, "PictureID (15-bit)")?;
                i += 1;
                d.picture_id = Some((((b & 0x7f) as u16) << 8) | b2 as u16);
            } else {
                d.picture_id = Some((b & 0x7f) as u16);
            }
        }
        if has_l {
            d.tl0picidx = Some(need(i, "TL0PICIDX")?);
            i += 1;
        }
        if has_t || has_k {
            let b = need(i, "TID/KEYIDX")?;
            i += 1;
            if has_t {
                d.tid = Some(b >> 6);
                d.y = Some(b & 0x20 != 0);
            }
            if has_k {
                d.keyidx = Some(b & 0x1f);
            }
        }
    }
    d.header_len = i;
    Ok(d)
}

/// VP8 payload header (RFC 6386 §9.1): P bit 0 means key frame, whose header then carries the
/// start code 9d 01 2a at bytes 3..6.
pub fn vp8_payload_is_keyframe(vp8: &[u8]) -> bool {
    vp8.len() >= 6 && vp8[0] & 0x01 == 0 && vp8[3..6] == [0x9d, 0x01, 0x2a]
}

/// Assembles VP8 frames from RTP packets in arrival order.
pub fn assemble_vp8(packets: &[PacketRef<'_>]) -> Vec<AssembledFrame> {
    let groups = group_by_timestamp(packets);
    let mut out = Vec::with_capacity(groups.len());
    for (ts, group) in groups {
        let mut problems = Vec::new();
        let mut bytes = 0usize;
        let mut keyframe = false;
        let mut picture_ids = BTreeSet::new();
        for (idx, (_, p)) in group.iter().enumerate() {
            match parse_vp8_descriptor(p.payload) {
                Err(e) => problems.push(format!("seq {}: {e}", p.seq)),
                Ok(d) => {
                    if let Some(pid) = d.picture_id {
                        picture_ids.insert(pid);
                    }
                    let body = &p.payload[d.header_len.min(p.payload.len())..];
                    bytes += body.len();
                    let starts_frame = d.s && d.pid == 0;
                    if idx == 0 {
                        if !starts_frame {
                            problems.push(format!(
                                "first packet (seq {}) is not a frame start (S={}, PID={})",
                                p.seq, d.s as u8, d.pid
                            ));
                        } else if body.is_empty() {
                            problems.push(format!("start packet seq {} has no payload", p.seq));
                        } else {
                            keyframe = body[0] & 0x01 == 0;
                            if keyframe && !vp8_payload_is_keyframe(body) {
                                problems.push(format!(
                                    "seq {}: P bit says key frame but start code 9d 01 2a is missing",
                                    p.seq
                                ));
                            }
                        }
                    } else if starts_frame {
                        problems.push(format!("second frame start (S=1, PID=0) at seq {} within one timestamp", p.seq));
                    }
                }
            }
        }
        if picture_ids.len() > 1 {
            problems.push(format!("several PictureIDs in one frame: {picture_ids:?}"));
        }
        check_consecutive(&group, &mut problems);
        out.push(AssembledFrame {
            timestamp: ts,
            first_seq: group.first().map(|(_, p)| p.seq).unwrap_or(0),
            last_seq: group.last().map(|(_, p)| p.seq).unwrap_or(0),
            packets: group.len(),
            bytes,
            complete: problems.is_empty(),
            keyframe,
            nal_types: vec![],
            problems,
        });
    }
    out
}

// ───────────────────────────── H.264 ─────────────────────────────

pub const H264_STAP_A: u8 = 24;
pub const H264_FU_A: u8 = 28;
pub const H264_IDR: u8 = 5;
pub const H264_SPS: u8 = 7;
pub const H264_PPS: u8 = 8;

/// Assembles H.264 access units (RFC 6184, packetization-mode 1: single NAL, STAP-A, FU-A).
///
/// All packets with one RTP timestamp form one access unit. Note that the `rtc` H.264 payloader
/// (used by the test client) sets the marker on the last packet of every *sample*, and samples are
/// NAL units, so a parameter-set/SEI packet may carry a marker before the slice of the same
/// timestamp: a marker is therefore required only on the last packet of the access unit.
pub fn assemble_h264(packets: &[PacketRef<'_>]) -> Vec<AssembledFrame> {
    let groups = group_by_timestamp(packets);
    let mut out = Vec::with_capacity(groups.len());
    for (ts, group) in groups {
        let mut problems = Vec::new();
        let mut nal_types: Vec<u8> = Vec::new();
        let mut bytes = 0usize;
        let mut fu_open: Option<u8> = None;
        let add_type = |t: u8, v: &mut Vec<u8>| {
            if !v.contains(&t) {
                v.push(t);
            }
        };
        for (idx, (_, p)) in group.iter().enumerate() {
            let Some(&b0) = p.payload.first() else {
                problems.push(format!("seq {}: empty payload", p.seq));
                continue;
            };
            if b0 & 0x80 != 0 {
                problems.push(format!("seq {}: forbidden_zero_bit set", p.seq));
            }
            let t = b0 & 0x1f;
            match t {
                1..=23 => {
                    if let Some(ft) = fu_open.take() {
                        problems.push(format!("seq {}: FU-A of NAL type {ft} not terminated before a new NAL", p.seq));
                    }
                    add_type(t, &mut nal_types);
                    bytes += p.payload.len();
                }
                H264_STAP_A => {
                    if let Some(ft) = fu_open.take() {
                        problems.push(format!("seq {}: FU-A of NAL type {ft} not terminated before STAP-A", p.seq));
                    }
                    let mut off = 1usize;
                    let mut n = 0;
                    while off < p.payload.len() {
                        if off + 2 > p.payload.len() {
                            problems.push(format!("seq {}: STAP-A truncated length field", p.seq));
                            break;
                        }
                        let size = u16::from_be_bytes([p.payload[off], p.payload[off + 1]]) as usize;
                        off += 2;
                        if size == 0 || off + size > p.payload.len() {
                            problems.push(format!("seq {}: STAP-A NAL of size {size} overruns payload", p.seq));
                            break;
                        }
                        add_type(p.payload[off] & 0x1f, &mut nal_types);
                        bytes += size;
                        off += size;
                        n += 1;
                    }
                    if n == 0 {
                        problems.push(format!("seq {}: empty STAP-A", p.seq));
                    }
                }
                H264_FU_A => {
                    let Some(&b1) = p.payload.get(1) else {
                        problems.push(format!("seq {}: FU-A without FU header", p.seq));
                        continue;
                    };
                    let (start, end, ft) = (b1 & 0x80 != 0, b1 & 0x40 != 0, b1 & 0x1f);
                    if start && end {
                        problems.push(format!("seq {}: FU-A with both S and E set", p.seq));
                    }
                    if start {
                        if let Some(prev) = fu_open {
                            problems
                                .push(format!("seq {}: FU-A start while FU-A of NAL type {prev} still open", p.seq));
                        }
                        fu_open = Some(ft);
                        add_type(ft, &mut nal_types);
                        bytes += 1; // reconstructed NAL header
                    } else {
                        match fu_open {
                            None => problems.push(format!(
                                "seq {}: FU-A continuation without its start{}",
                                p.seq,
                                if idx == 0 { " (frame begins mid-NAL)" } else { "" }
                            )),
                            Some(open) if open != ft => {
                                problems.push(format!("seq {}: FU-A type {ft} continues an FU-A of type {open}", p.seq))
                            }
                            _ => {}
                        }
                    }
                    bytes += p.payload.len() - 2;
                    if end {
                        fu_open = None;
                    }
                }
                other => problems.push(format!(
                    "seq {}: unsupported packetization NAL type {other} (mode 1 allows 1-23, 24, 28)",
                    p.seq
                )),
            }
        }
        if let Some(ft) = fu_open {
            problems.push(format!("FU-A of NAL type {ft} never ended (no E bit)"));
        }
        if !nal_types.iter().any(|t| (1..=5).contains(t)) {
            problems.push(format!("no slice NAL (types 1-5) in access unit; NAL types {nal_types:?}"));
        }
        check_consecutive(&group, &mut problems);
        out.push(AssembledFrame {
            timestamp: ts,
            first_seq: group.first().map(|(_, p)| p.seq).unwrap_or(0),
            last_seq: group.last().map(|(_, p)| p.seq).unwrap_or(0),
            packets: group.len(),
            bytes,
            complete: problems.is_empty(),
            keyframe: nal_types.contains(&H264_IDR),
            nal_types,
            problems,
        });
    }
    out
}

// ───────────────────────────── SDP helpers ─────────────────────────────

/// One `m=` section of an SDP, as far as the tests care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpMedia {
    pub index: usize,
    pub kind: String,
    pub port: u16,
    pub mid: Option<String>,
    /// sendrecv / sendonly / recvonly / inactive (None when absent).
    pub direction: Option<String>,
    /// (stream id, track id) from `a=msid:` or `a=ssrc:N msid:`.
    pub msid: Option<(String, String)>,
    pub ssrcs: Vec<u32>,
    /// Payload types on the m= line, in order.
    pub payload_types: Vec<u8>,
    /// pt → "VP8/90000" (encoding name/clock[/channels]) from a=rtpmap.
    pub rtpmap: Vec<(u8, String)>,
    /// pt → fmtp parameters.
    pub fmtp: Vec<(u8, String)>,
}

impl SdpMedia {
    /// Encoding name (e.g. "VP8", "opus", "rtx") for a payload type.
    pub fn codec_name(&self, pt: u8) -> Option<&str> {
        self.rtpmap.iter().find(|(p, _)| *p == pt).map(|(_, v)| v.split('/').next().unwrap_or(""))
    }

    /// Payload types whose encoding name equals `name` (case-insensitive).
    pub fn payload_types_for(&self, name: &str) -> Vec<u8> {
        self.rtpmap
            .iter()
            .filter(|(_, v)| v.split('/').next().unwrap_or("").eq_ignore_ascii_case(name))
            .map(|(p, _)| *p)
            .collect()
    }

    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }
}

/// Minimal SDP parse: the `m=` sections with their payload types, rtpmap, msid, mid, direction.
pub fn parse_sdp_media(sdp: &str) -> Vec<SdpMedia> {
    let mut out: Vec<SdpMedia> = Vec::new();
    for raw in sdp.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut it = rest.split_whitespace();
            let kind = it.next().unwrap_or("").to_string();
            let port = it.next().and_then(|p| p.split('/').next()?.parse().ok()).unwrap_or(0);
            let _proto = it.next();
            let payload_types = it.filter_map(|p| p.parse().ok()).collect();
            out.push(SdpMedia { index: out.len(), kind, port, payload_types, ..Default::default() });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (key, value) = match attr.split_once(':') {
            Some((k, v)) => (k, Some(v)),
            None => (attr, None),
        };
        match (key, value) {
            ("mid", Some(v)) => m.mid = Some(v.trim().to_string()),
            ("sendrecv" | "sendonly" | "recvonly" | "inactive", None) => m.direction = Some(key.to_string()),
            ("msid", Some(v)) => {
                let mut p = v.split_whitespace();
                if let (Some(s), t) = (p.next(), p.next()) {
                    m.msid = Some((s.to_string(), t.unwrap_or("").to_string()));
                }
            }
            ("ssrc", Some(v)) => {
                let mut p = v.splitn(2, ' ');
                if let Some(Ok(ssrc)) = p.next().map(str::parse::<u32>) {
                    if !m.ssrcs.contains(&ssrc) {
                        m.ssrcs.push(ssrc);
                    }
                    if let Some(rest) = p.next() {
                        if let Some(msid) = rest.strip_prefix("msid:") {
                            let mut q = msid.split_whitespace();
                            if let (Some(s), Some(t)) = (q.next(), q.next()) {
                                if m.msid.is_none() {
                                    m.msid = Some((s.to_string(), t.to_string()));
                                }
                            }
                        }
                    }
                }
            }
            ("rtpmap", Some(v)) => {
                if let Some((pt, enc)) = v.split_once(' ') {
                    if let Ok(pt) = pt.parse() {
                        m.rtpmap.push((pt, enc.trim().to_string()));
                    }
                }
            }
            ("fmtp", Some(v)) => {
                if let Some((pt, params)) = v.split_once(' ') {
                    if let Ok(pt) = pt.parse() {
                        m.fmtp.push((pt, params.trim().to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Value of the first `a=<key>:` attribute anywhere in the SDP.
pub fn sdp_attribute(sdp: &str, key: &str) -> Option<String> {
    let prefix = format!("a={key}:");
    sdp.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(|v| v.trim().to_string()))
}
