//! Unit tests for the pure RTP checks in tests/common/rtp_check.rs (no network, no ffmpeg).

#[allow(dead_code)]
#[path = "common/rtp_check.rs"]
mod rtp_check;

use rtp_check::*;

fn pkt(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> (u16, u32, bool, Vec<u8>) {
    (seq, ts, marker, payload.to_vec())
}

fn refs(v: &[(u16, u32, bool, Vec<u8>)]) -> Vec<PacketRef<'_>> {
    v.iter().map(|(seq, ts, m, p)| PacketRef { seq: *seq, timestamp: *ts, marker: *m, payload: p }).collect()
}

// ───────────── sequence numbers ─────────────

#[test]
fn continuous_sequence_is_continuous() {
    let r = check_sequence(&[10, 11, 12, 13]);
    assert!(r.is_continuous(), "{r}");
    assert_eq!(r.packets, 4);
    assert_eq!(r.lost, 0);
    assert_eq!(r.wraps, 0);
}

#[test]
fn sequence_wrap_is_not_a_gap() {
    let r = check_sequence(&[65533, 65534, 65535, 0, 1, 2]);
    assert!(r.is_continuous(), "{r}");
    assert_eq!(r.wraps, 1);
}

#[test]
fn gap_is_reported_with_size_and_loss() {
    let r = check_sequence(&[1, 2, 5, 6]);
    assert_eq!(r.gaps, vec![(2, 2)]);
    assert_eq!(r.lost, 2);
    assert!(!r.is_continuous());
}

#[test]
fn gap_across_wrap() {
    let r = check_sequence(&[65534, 1, 2]);
    assert_eq!(r.gaps, vec![(65534, 2)]);
    assert_eq!(r.lost, 2);
    assert_eq!(r.wraps, 1);
}

#[test]
fn duplicate_is_reported() {
    let r = check_sequence(&[1, 2, 2, 3]);
    assert_eq!(r.duplicates, vec![2]);
    assert!(r.gaps.is_empty());
    assert!(!r.is_continuous());
}

#[test]
fn late_packet_is_a_reorder_that_fills_the_gap() {
    let r = check_sequence(&[1, 2, 4, 3, 5]);
    assert_eq!(r.gaps, vec![(2, 1)]);
    assert_eq!(r.reordered, vec![3]);
    assert_eq!(r.lost, 0);
    assert!(!r.is_continuous());
}

#[test]
fn reorder_across_wrap() {
    let r = check_sequence(&[65535, 1, 0, 2]);
    assert_eq!(r.reordered, vec![0]);
    assert_eq!(r.lost, 0);
}

#[test]
fn empty_sequence_is_continuous() {
    let r = check_sequence(&[]);
    assert!(r.is_continuous());
    assert_eq!(r.first, None);
}

// ───────────── VP8 descriptor ─────────────

#[test]
fn vp8_minimal_descriptor() {
    let d = parse_vp8_descriptor(&[0x10, 0xaa]).unwrap();
    assert!(d.s && !d.x && d.pid == 0 && d.header_len == 1);
    let d = parse_vp8_descriptor(&[0x03, 0xaa]).unwrap();
    assert!(!d.s && d.pid == 3);
}

#[test]
fn vp8_picture_id_7_and_15_bit() {
    // X, S | I | M=0 pid 0x55
    let d = parse_vp8_descriptor(&[0x90, 0x80, 0x55, 0x00]).unwrap();
    assert_eq!(d.picture_id, Some(0x55));
    assert_eq!(d.header_len, 3);
    // M=1 → 15 bits 0x1234
    let d = parse_vp8_descriptor(&[0x90, 0x80, 0x92, 0x34, 0x00]).unwrap();
    assert_eq!(d.picture_id, Some(0x1234));
    assert_eq!(d.header_len, 4);
}

#[test]
fn vp8_all_extensions() {
    // X=1 N=1 S=1 PID=0 | I L T K | M=1 pid 0x0102 | tl0 7 | tid=2 Y=1 keyidx=5
    let d = parse_vp8_descriptor(&[0xb0, 0xf0, 0x81, 0x02, 0x07, 0b1010_0101, 0x9d]).unwrap();
    assert!(d.x && d.n && d.s);
    assert_eq!(d.picture_id, Some(0x0102));
    assert_eq!(d.tl0picidx, Some(7));
    assert_eq!(d.tid, Some(2));
    assert_eq!(d.y, Some(true));
    assert_eq!(d.keyidx, Some(5));
    assert_eq!(d.header_len, 6);
    // K without T
    let d = parse_vp8_descriptor(&[0x80, 0x10, 0x1f]).unwrap();
    assert_eq!(d.tid, None);
    assert_eq!(d.keyidx, Some(0x1f));
}

#[test]
fn vp8_truncated_descriptor_is_an_error() {
    assert!(parse_vp8_descriptor(&[]).is_err());
    assert!(parse_vp8_descriptor(&[0x80]).is_err());
    assert!(parse_vp8_descriptor(&[0x80, 0x80]).is_err());
    assert!(parse_vp8_descriptor(&[0x80, 0x80, 0x80]).is_err());
}

// ───────────── VP8 frames ─────────────

/// VP8 key frame header: P=0 in byte 0, start code at 3..6.
const KEY: [u8; 8] = [0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01];
const INTER: [u8; 4] = [0x51, 0x02, 0x00, 0x11];

fn vp8(s: bool, body: &[u8]) -> Vec<u8> {
    let mut v = vec![if s { 0x90 } else { 0x80 }, 0x80, 0x05]; // X, I, 7-bit pid 5
    v.extend_from_slice(body);
    v
}

#[test]
fn vp8_complete_keyframe_and_inter_frame() {
    let p = vec![
        pkt(100, 1000, false, &vp8(true, &KEY)),
        pkt(101, 1000, false, &vp8(false, &[1, 2, 3])),
        pkt(102, 1000, true, &vp8(false, &[4, 5])),
        pkt(103, 4000, true, &vp8(true, &INTER)),
    ];
    let f = assemble_vp8(&refs(&p));
    assert_eq!(f.len(), 2);
    assert!(f[0].complete && f[0].keyframe, "{:?}", f[0]);
    assert_eq!(f[0].packets, 3);
    assert_eq!(f[0].bytes, KEY.len() + 5);
    assert!(f[1].complete && !f[1].keyframe, "{:?}", f[1]);
    let s = frame_stats(&f);
    assert_eq!((s.complete, s.complete_keyframes, s.incomplete_interior), (2, 1, 0));
}

#[test]
fn vp8_missing_middle_packet_makes_frame_incomplete() {
    let p = vec![
        pkt(1, 0, true, &vp8(true, &INTER)),
        pkt(10, 9000, false, &vp8(true, &KEY)),
        pkt(12, 9000, true, &vp8(false, &[1])),
        pkt(13, 12000, true, &vp8(true, &INTER)),
    ];
    let f = assemble_vp8(&refs(&p));
    assert!(!f[1].complete);
    assert!(f[1].problems.iter().any(|p| p.contains("seq gap")), "{:?}", f[1].problems);
    assert_eq!(frame_stats(&f).incomplete_interior, 1);
}

#[test]
fn vp8_frame_without_marker_or_start_is_incomplete() {
    let no_marker = vec![pkt(1, 0, false, &vp8(true, &INTER))];
    assert!(!assemble_vp8(&refs(&no_marker))[0].complete);
    let no_start = vec![pkt(1, 0, false, &vp8(false, &[9])), pkt(2, 0, true, &vp8(false, &[9]))];
    let f = assemble_vp8(&refs(&no_start));
    assert!(!f[0].complete);
    assert!(f[0].problems[0].contains("not a frame start"), "{:?}", f[0].problems);
}

#[test]
fn vp8_keyframe_needs_start_code() {
    let p = vec![pkt(1, 0, true, &vp8(true, &[0x50, 0x01, 0x00, 0x00, 0x00, 0x00]))];
    let f = assemble_vp8(&refs(&p));
    assert!(!f[0].complete, "{:?}", f[0]);
}

#[test]
fn vp8_reordered_packets_within_frame_still_assemble() {
    let p = vec![
        pkt(5, 0, false, &vp8(true, &KEY)),
        pkt(7, 0, true, &vp8(false, &[2])),
        pkt(6, 0, false, &vp8(false, &[1])),
    ];
    let f = assemble_vp8(&refs(&p));
    assert!(f[0].complete, "{:?}", f[0]);
}

#[test]
fn vp8_frame_across_seq_wrap() {
    let p = vec![pkt(65535, 0, false, &vp8(true, &KEY)), pkt(0, 0, true, &vp8(false, &[1]))];
    assert!(assemble_vp8(&refs(&p))[0].complete);
}

// ───────────── H.264 frames ─────────────

fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![0x78];
    for n in nals {
        v.extend_from_slice(&(n.len() as u16).to_be_bytes());
        v.extend_from_slice(n);
    }
    v
}

fn fu_a(start: bool, end: bool, nal_type: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60 | 28, nal_type | if start { 0x80 } else { 0 } | if end { 0x40 } else { 0 }];
    v.extend_from_slice(body);
    v
}

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x0d];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const SEI: &[u8] = &[0x06, 0x05, 0x01, 0x00];

#[test]
fn h264_idr_as_rtc_packetizes_it() {
    // What the rtc payloader emits: STAP-A(SPS,PPS) + SEI (marker!), then FU-A IDR.
    let p = vec![
        pkt(1, 90, false, &stap_a(&[SPS, PPS])),
        pkt(2, 90, true, SEI),
        pkt(3, 90, false, &fu_a(true, false, 5, &[1, 2])),
        pkt(4, 90, false, &fu_a(false, false, 5, &[3])),
        pkt(5, 90, true, &fu_a(false, true, 5, &[4])),
        pkt(6, 3090, true, &[0x41, 0x9a, 0x01]),
    ];
    let f = assemble_h264(&refs(&p));
    assert_eq!(f.len(), 2);
    assert!(f[0].complete && f[0].keyframe, "{:?}", f[0]);
    assert_eq!(f[0].nal_types, vec![7, 8, 6, 5]);
    assert!(f[1].complete && !f[1].keyframe, "{:?}", f[1]);
    assert_eq!(f[1].nal_types, vec![1]);
}

#[test]
fn h264_unterminated_fu_a_is_incomplete() {
    let p = vec![pkt(1, 0, false, &fu_a(true, false, 5, &[1])), pkt(2, 0, true, &fu_a(false, false, 5, &[2]))];
    let f = assemble_h264(&refs(&p));
    assert!(!f[0].complete);
    assert!(f[0].problems.iter().any(|p| p.contains("never ended")), "{:?}", f[0].problems);
}

#[test]
fn h264_fu_a_continuation_without_start_is_incomplete() {
    let p = vec![pkt(7, 0, true, &fu_a(false, true, 1, &[1]))];
    let f = assemble_h264(&refs(&p));
    assert!(!f[0].complete);
    assert!(f[0].problems[0].contains("without its start"), "{:?}", f[0].problems);
}

#[test]
fn h264_lost_fragment_is_incomplete() {
    let p = vec![pkt(1, 0, false, &fu_a(true, false, 5, &[1])), pkt(3, 0, true, &fu_a(false, true, 5, &[2]))];
    let f = assemble_h264(&refs(&p));
    assert!(!f[0].complete);
    assert!(f[0].problems.iter().any(|p| p.contains("seq gap")), "{:?}", f[0].problems);
}

#[test]
fn h264_parameter_sets_alone_are_not_a_frame() {
    let p = vec![pkt(1, 0, true, &stap_a(&[SPS, PPS]))];
    let f = assemble_h264(&refs(&p));
    assert!(!f[0].complete);
}

#[test]
fn h264_bad_stap_a_and_unsupported_types() {
    let p = vec![pkt(1, 0, true, &[0x78, 0x00, 0x09, 0x65])];
    assert!(!assemble_h264(&refs(&p))[0].complete);
    let p = vec![pkt(1, 0, true, &[0x7a, 0x00])]; // STAP-B
    assert!(!assemble_h264(&refs(&p))[0].complete);
}

// ───────────── SDP ─────────────

const SDP: &str = "v=0\r\n\
o=- 1 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=mid:0\r\n\
a=ice-ufrag:abcd\r\n\
a=sendonly\r\n\
a=msid:p_1 t_a\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=ssrc:1234 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=ssrc:5678 msid:p_1 t_v\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
a=mid:2\r\n\
a=inactive\r\n";

#[test]
fn sdp_media_sections_are_parsed() {
    let m = parse_sdp_media(SDP);
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].kind, "audio");
    assert_eq!(m[0].mid.as_deref(), Some("0"));
    assert_eq!(m[0].msid, Some(("p_1".into(), "t_a".into())));
    assert_eq!(m[0].payload_types, vec![111]);
    assert_eq!(m[0].codec_name(111), Some("opus"));
    assert_eq!(m[0].ssrcs, vec![1234]);
    assert_eq!(m[1].msid, Some(("p_1".into(), "t_v".into())));
    assert_eq!(m[1].payload_types_for("vp8"), vec![96]);
    assert_eq!(m[1].codec_name(97), Some("rtx"));
    assert_eq!(m[1].fmtp, vec![(97, "apt=96".to_string())]);
    assert_eq!(m[1].direction.as_deref(), Some("sendonly"));
    assert!(m[2].is_rejected());
    assert_eq!(m[2].direction.as_deref(), Some("inactive"));
    assert_eq!(sdp_attribute(SDP, "ice-ufrag").as_deref(), Some("abcd"));
}
