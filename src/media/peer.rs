//! Building one server-side peer connection: ICE-lite with credentials we choose (so STUN can be
//! routed by ufrag), one host candidate at the announced address, mDNS off, default codecs and
//! interceptors for the one direction the connection carries media (NACK, RTCP reports, TWCC) plus
//! one that hands incoming RTCP to us.

use std::net::SocketAddr;
use std::time::Instant;

use rand::distributions::Alphanumeric;
use rand::Rng;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    Attribute, CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, Packet, ReceiverReportBuilder,
    Registry, SenderReportBuilder, Slot, TaggedPacket, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, TYPE_RTCP_FB_TRANSPORT_CC};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};

/// RFC 6464 client-to-mixer audio level.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
use rtc::shared::error::Error;

use super::feedback::{EstimateCell, NackLimiter, ReportingGcc};
use super::tap::{Tap, TapHooks};

/// How often the publish side asks for one lost packet before giving up on it. The stack's
/// default is unlimited, and a packet repaired over RTX is never marked received there, so it is
/// asked for again every 100 ms until 512 newer packets arrive.
const MAX_NACKS_PER_PACKET: u16 = 5;

/// Packets of each sent stream kept for retransmission (the stack's default is 1 024). 512 are
/// more than a second of a 4 Mbit/s stream (libwebrtc keeps a sender's history for at least a
/// second or three round trips) and five of the 1 Mbit/s camera layer; a NACK for anything older
/// arrives after the subscriber's jitter buffer gave the packet up. Every down track holds one
/// such history, and what it holds is most of a subscriber's memory: the slots themselves, each
/// packet's header, and the payloads it keeps alive.
const SEND_HISTORY: u16 = 512;

/// What a subscribe connection adds to the defaults (see `feedback`): send-side bandwidth
/// estimation, and a limit on how often one lost packet is resent.
pub struct SubscribeExtras {
    pub estimate: EstimateCell,
    /// Counts NACKed sequence numbers the limiter refused (shared by all subscribe connections).
    pub nacks_refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Set by the driver while the room has suspended this subscriber's video.
    pub video_suspended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Random ICE credentials. The ufrag is what incoming STUN is routed by, so it must be unique
/// among live peers; 16 alphanumerics make a collision practically impossible, and the driver
/// checks anyway.
pub fn ice_credentials() -> (String, String) {
    let mut rng = rand::thread_rng();
    let ufrag: String = (&mut rng).sample_iter(&Alphanumeric).take(16).map(char::from).collect();
    let pwd: String = (&mut rng).sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    (ufrag, pwd)
}

pub fn build(
    ufrag: &str,
    pwd: &str,
    announced: SocketAddr,
    now: Instant,
    subscribe: Option<SubscribeExtras>,
) -> Result<RTCPeerConnection, Error> {
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.to_string(), pwd.to_string())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // libwebrtc's SRTP replay window (the stack's default is 64 packets): a publisher that
        // resends on the media SSRC (no RTX) reaches us more than 64 packets late on any link
        // with a few hundred milliseconds of round trip at 1–2 Mbit/s, and such a resend would
        // be dropped as a replay.
        .with_srtp_replay_protection_window(1024)
        .build();
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    // Clients put their microphone level in every audio packet: active speaker detection.
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: AUDIO_LEVEL_URI.to_string() },
        RtpCodecKind::Audio,
        None,
    )?;
    // NACK and PLI for video, the simulcast header extensions, and transport-wide feedback both
    // ways (the extension and `transport-cc` are negotiated on every connection).
    for parameter in ["", "pli"] {
        let feedback = RTCPFeedback { typ: "nack".to_owned(), parameter: parameter.to_owned() };
        media.register_feedback(feedback, RtpCodecKind::Video);
    }
    configure_simulcast_extension_headers(&mut media)?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media.register_feedback(RTCPFeedback { typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(), ..Default::default() }, kind);
        media.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned() },
            kind,
            None,
        )?;
    }
    // Each connection carries media one way, so its interceptor chain holds only the interceptors
    // of that direction: every interceptor in a chain takes every packet in and out of its own
    // queue, sent or received, whether it acts on the packet or not (the per-packet moves were the
    // first thing in the forwarding profile). A publish connection receives media: NACKs for what
    // is lost, transport-wide feedback and receiver reports for the publisher's own bandwidth
    // estimate. A subscribe connection sends media: the send history that answers NACKs, sender
    // reports (the subscriber's lip sync), transport-wide sequence numbers and the congestion
    // controller (see `feedback`). Both hand incoming RTCP to the driver.
    let mut registry = Registry::new().with(Slot::from(14_000), Tap::new(DeliverRtcp));
    match subscribe {
        None => {
            registry = registry
                .with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new().with_max_nacks_per_packet(MAX_NACKS_PER_PACKET).build(),
                )
                .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
                .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build());
        }
        Some(x) => {
            // The limiter sits between the wire and the NACK responder (4 000), so it sees requests
            // first; GCC and the transport-wide sequence numbers it needs sit closest to the wire.
            // No pacer in the stack: an SFU forwards at the publishers' pace, the driver paces a
            // weak or lossy link's video itself (`driver::Pacer`), and the room suspends video a
            // link cannot carry.
            registry = registry
                .with(Slot::NackResponder, NackResponderBuilder::new().with_size(SEND_HISTORY).build())
                .with(Slot::SenderReport, SenderReportBuilder::new().build())
                .with(
                    Slot::from(3_500),
                    Tap::new(NackLimiter::new(x.nacks_refused, x.video_suspended, x.estimate.clone())),
                )
                .with(Slot::CongestionControl, CongestionControlBuilder::new(ReportingGcc::new(x.estimate)).build())
                .with(Slot::TwccSender, TwccSenderBuilder::new().build());
        }
    }
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)?;
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: announced.ip().to_string(),
            port: announced.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&host).to_json()?)?;
    Ok(pc)
}

/// Marks incoming RTCP for delivery to the application. Without it the interceptor chain ends in
/// a sink and subscribers' PLI/FIR never reach us (so late joiners would never get a keyframe).
struct DeliverRtcp;

impl TapHooks for DeliverRtcp {
    fn on_read(&mut self, msg: &mut TaggedPacket) {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            msg.message.add(Attribute::DeliverToApplication);
        }
    }
}

/// The track ids an SDP offer still sends: m-sections with a port other than 0, a sending
/// direction (`sendonly`, `sendrecv`, or none given) and an `a=msid:<stream> <track>`. A browser
/// that stops a track (removeTrack, transceiver.stop) re-offers its m-section as `inactive`,
/// `recvonly` or port 0, and may keep the msid line.
pub fn sending_track_ids(sdp: &str) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut section: Option<(bool, bool, Option<String>)> = None; // (port open, sending, track)
    let flush = |s: Option<(bool, bool, Option<String>)>, out: &mut std::collections::HashSet<String>| {
        if let Some((true, true, Some(track))) = s {
            out.insert(track);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            flush(section.take(), &mut out);
            let port_open = m.split_whitespace().nth(1).is_some_and(|p| p != "0");
            section = Some((port_open, true, None));
        } else if let Some((_, sending, track)) = section.as_mut() {
            match line {
                "a=inactive" | "a=recvonly" => *sending = false,
                "a=sendonly" | "a=sendrecv" => *sending = true,
                _ => {
                    if let Some(msid) = line.strip_prefix("a=msid:") {
                        *track = msid.split_whitespace().nth(1).map(str::to_string);
                    }
                }
            }
        }
    }
    flush(section, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::sending_track_ids;

    #[test]
    fn an_inactive_or_closed_m_section_no_longer_sends_its_track() {
        let sdp = "v=0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\na=msid:s mic\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=msid:s cam\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\na=msid:s screen1\r\n\
m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=msid:s screen2\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        let ids = sending_track_ids(sdp);
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains("mic") && ids.contains("cam"));
    }
}
