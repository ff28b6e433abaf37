//! Just enough codec knowledge for forwarding decisions: is this RTP payload the first packet of a
//! keyframe? Pure functions on payload bytes; no allocation.

use super::vp8::Vp8Desc;

/// The codecs Qiao forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    H264,
    /// Anything else negotiated (e.g. VP9): forwarded, but no keyframe gating.
    Other,
}

impl Codec {
    /// From an SDP MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Codec {
        let sub = mime.rsplit('/').next().unwrap_or("");
        if sub.eq_ignore_ascii_case("opus") {
            Codec::Opus
        } else if sub.eq_ignore_ascii_case("vp8") {
            Codec::Vp8
        } else if sub.eq_ignore_ascii_case("h264") {
            Codec::H264
        } else {
            Codec::Other
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::H264)
    }
}

/// True if `payload` (an RTP payload of `codec`) starts a keyframe. For codecs without keyframes
/// (audio) and unknown codecs this is always true, so nothing waits on it.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        Codec::Opus | Codec::Other => true,
    }
}

/// RFC 7741: payload descriptor, then the VP8 payload header whose first bit P is 0 on keyframes
/// (read by [`Vp8Desc`], which forwarding uses for temporal layers too).
fn vp8_starts_keyframe(p: &[u8]) -> bool {
    Vp8Desc::parse(p).is_some_and(|d| d.keyframe)
}

/// RFC 6184: an IDR slice (5) or SPS (7) in a single NAL unit, a STAP-A aggregate, or the first
/// fragment of an FU-A.
fn h264_starts_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: (16-bit size, NAL)*
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if let Some(&nal) = p.get(i + 2) {
                    if matches!(nal & 0x1f, 5 | 7) {
                        return true;
                    }
                }
                i += 2 + size;
            }
            false
        }
        28 => matches!(p.get(1), Some(&fu) if fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_map_to_codecs() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("video/h264"), Codec::H264);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/VP9"), Codec::Other);
    }

    #[test]
    fn vp8_keyframe_detection_follows_the_payload_descriptor() {
        // (payload, is keyframe start)
        let cases: &[(&[u8], bool)] = &[
            (&[0x10, 0x00], true),                                // S=1, PID=0, P=0
            (&[0x10, 0x01], false),                               // interframe
            (&[0x00, 0x00], false),                               // not start of partition
            (&[0x11, 0x00], false),                               // PID 1
            (&[0x90, 0x80, 0x05, 0x00], true),                    // X, I with 7-bit picture id
            (&[0x90, 0x80, 0x85, 0x01, 0x00], true),              // X, I with 15-bit picture id
            (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x01], false), // X,I,L,T; P=1
            (&[0x90, 0xe0, 0x85, 0x01, 0x07, 0x20, 0x00], true),
            (&[0x90], false), // truncated
            (&[], false),
        ];
        for (p, want) in cases {
            assert_eq!(starts_keyframe(Codec::Vp8, p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn h264_keyframe_detection_covers_single_stap_a_and_fu_a() {
        let cases: &[(&[u8], bool)] = &[
            (&[0x65, 0x88], true),                                           // IDR
            (&[0x67, 0x42], true),                                           // SPS
            (&[0x41, 0x9a], false),                                          // non-IDR slice
            (&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce], true), // STAP-A SPS,PPS
            (&[0x78, 0x00, 0x02, 0x68, 0xce], false),                        // STAP-A PPS only
            (&[0x7c, 0x85, 0x88], true),                                     // FU-A start of IDR
            (&[0x7c, 0x05, 0x88], false),                                    // FU-A continuation
            (&[0x7c, 0x81, 0x88], false),                                    // FU-A start of non-IDR
            (&[], false),
        ];
        for (p, want) in cases {
            assert_eq!(starts_keyframe(Codec::H264, p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn audio_never_waits_for_a_keyframe() {
        assert!(starts_keyframe(Codec::Opus, &[0xfc]));
    }
}
