//! The NACK generator both Qiao (toward publishers) and the test clients (toward Qiao) run is
//! rtc-interceptor's, with the `vendor/rtc-interceptor` patch: a packet repaired over RTX
//! (RFC 4588: its own SSRC, the original sequence number in the first two payload bytes) counts
//! as received. Upstream never learned it, because RTX is unwrapped only after the interceptors,
//! so every repaired packet was NACKed again every 100 ms for as long as it stayed in the log.
//! Qiao's NACK limiter held that to ten resends per packet, but the repeats took the resend
//! budget that fresh losses needed (about 1 % of the video was never repaired at 10 % loss; see
//! `tests/netem.rs::video_keeps_flowing_through_10pct_loss_and_100ms_rtt`), and a browser
//! publisher was asked for each repaired packet up to five times.
//!
//! A unit test of one pure part: the generator is driven directly, with no socket or clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{
    AttributedPacket, Interceptor, NackGeneratorBuilder, NackGeneratorInterceptor, Packet, RTCPFeedback, StreamInfo,
    TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

const MEDIA: u32 = 1111;
const RTX: u32 = 2222;
const INTERVAL: Duration = Duration::from_millis(100);

fn rtp(now: Instant, ssrc: u32, seq: u16, payload: &[u8]) -> TaggedPacket {
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::header::Header { ssrc, sequence_number: seq, payload_type: 96, ..Default::default() },
        payload: Bytes::copy_from_slice(payload),
    };
    TaggedPacket { now, transport: TransportContext::default(), message: AttributedPacket::new(Packet::Rtp(packet)) }
}

/// The sequence numbers each NACK written at `now` asks for, per media SSRC.
fn nacked(g: &mut NackGeneratorInterceptor, now: Instant) -> Vec<(u32, Vec<u16>)> {
    g.handle_timeout(now).unwrap();
    let mut out = Vec::new();
    while let Some(msg) = g.poll_write() {
        let Packet::Rtcp(rtcp) = msg.message.packet else { continue };
        for p in rtcp {
            if let Some(n) = p.as_any().downcast_ref::<TransportLayerNack>() {
                let seqs = n.nacks.iter().flat_map(|pair| pair.packet_list()).collect();
                out.push((n.media_ssrc, seqs));
            }
        }
    }
    out
}

/// A video stream with RTX, bound as rtc binds it: the primary (naming its RTX SSRC), then the
/// RTX stream in its own right.
fn generator() -> NackGeneratorInterceptor {
    let mut g = NackGeneratorBuilder::new().with_interval(INTERVAL).build();
    let nack = vec![RTCPFeedback { typ: "nack".into(), parameter: String::new() }];
    g.bind_remote_stream(&StreamInfo {
        ssrc: MEDIA,
        ssrc_rtx: Some(RTX),
        payload_type: 96,
        payload_type_rtx: Some(97),
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        rtcp_feedback: nack.clone(),
        ..Default::default()
    });
    g.bind_remote_stream(&StreamInfo {
        ssrc: RTX,
        payload_type: 97,
        mime_type: "video/VP8".into(),
        clock_rate: 90_000,
        rtcp_feedback: nack,
        ..Default::default()
    });
    g
}

#[test]
fn a_packet_repaired_over_rtx_is_not_nacked_again() {
    let t0 = Instant::now();
    let mut g = generator();
    for seq in [100u16, 101, 103, 104] {
        g.handle_read(rtp(t0, MEDIA, seq, b"media")).unwrap();
    }
    while g.poll_read().is_some() {}
    assert_eq!(nacked(&mut g, t0 + INTERVAL), vec![(MEDIA, vec![102])], "the hole is asked for");

    // The repair: RTX sequence number 7 (its own numbering), OSN 102, then the original payload.
    g.handle_read(rtp(t0 + INTERVAL, RTX, 7, &[0, 102, b'm'])).unwrap();
    g.handle_read(rtp(t0 + INTERVAL, MEDIA, 105, b"media")).unwrap();
    while g.poll_read().is_some() {}
    for tick in 2..6 {
        assert_eq!(nacked(&mut g, t0 + INTERVAL * tick), vec![], "tick {tick}: nothing is missing any more");
    }
}

#[test]
fn gaps_in_the_rtx_numbering_are_not_nacked_and_padding_repairs_nothing() {
    let t0 = Instant::now();
    let mut g = generator();
    for seq in [10u16, 12] {
        g.handle_read(rtp(t0, MEDIA, seq, b"media")).unwrap();
    }
    // RTX packets 1 and 5: the gap between them is the sender's business (other streams'
    // repairs, probes), not a loss. The second is padding only: no OSN, it repairs nothing.
    g.handle_read(rtp(t0, RTX, 1, &[0, 10, b'm'])).unwrap();
    g.handle_read(rtp(t0, RTX, 5, &[])).unwrap();
    while g.poll_read().is_some() {}
    assert_eq!(nacked(&mut g, t0 + INTERVAL), vec![(MEDIA, vec![11])]);
    assert_eq!(nacked(&mut g, t0 + INTERVAL * 2), vec![(MEDIA, vec![11])], "11 is still missing");
}
