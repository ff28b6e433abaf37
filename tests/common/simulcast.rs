//! Simulcast from a webrtc-rs client, as Chromium sends it: three VP8 encodings of one track
//! (RIDs `q`, `h`, `f`, lowest first), each with three temporal layers, every packet carrying the
//! `sdes:mid` and `sdes:rtp-stream-id` header extensions (the server has no `a=ssrc` lines for
//! simulcast and learns each encoding's SSRC from them).
//!
//! webrtc-rs's own VP8 packetizer writes no temporal-layer fields, so this module packetizes:
//! RFC 7741 descriptor with a 15-bit picture id, TL0PICIDX and TID. The clips are encoded with
//! libvpx's three-layer pattern (`fixtures::vp8_temporal_ivf_path`), so the TID written for a
//! frame is the layer libvpx really encoded it in: a receiver that drops TID 2 can decode the rest.

use bytes::{BufMut, Bytes, BytesMut};

/// The RIDs of the encodings, lowest first (Chromium's and the web client's names).
pub const RIDS: [&str; 3] = ["q", "h", "f"];

/// The temporal layer of frame `i` of a clip (libvpx temporal layering mode 3).
pub fn tid_of(frame: usize) -> u8 {
    [0, 2, 1, 2][frame % 4]
}

/// RTP payloads of at most this size (the descriptor included).
const MAX_PAYLOAD: usize = 1200;
pub const DESCRIPTOR: usize = 6;

/// Splits one VP8 frame into RTP payloads, each with a descriptor carrying `pid` (15-bit),
/// `tl0` and `tid` (with Y set on TID 1: it refers only to the base layer).
pub fn packetize(frame: &[u8], pid: u16, tl0: u8, tid: u8, out: &mut Vec<Bytes>) {
    out.clear();
    for (i, chunk) in frame.chunks(MAX_PAYLOAD - DESCRIPTOR).enumerate() {
        let mut p = BytesMut::with_capacity(DESCRIPTOR + chunk.len());
        p.put_u8(0x80 | if i == 0 { 0x10 } else { 0 }); // X, S on the first packet, partition 0
        p.put_u8(0xe0); // I, L, T
        p.put_u16(0x8000 | (pid & 0x7fff)); // M + 15-bit picture id
        p.put_u8(tl0);
        p.put_u8((tid << 6) | if tid == 1 { 0x20 } else { 0 });
        p.extend_from_slice(chunk);
        out.push(p.freeze());
    }
}

/// Width and height of a VP8 keyframe (its RTP payload with descriptor), for telling which layer
/// a subscriber receives.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let b0 = *payload.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let h = payload.get(i..i + 10)?;
    if h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some((u16::from_le_bytes([h[6], h[7]]) & 0x3fff, u16::from_le_bytes([h[8], h[9]]) & 0x3fff))
}
