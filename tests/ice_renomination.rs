//! ICE at the edges of a connection's life: a client that moves its media to another path
//! nominates the new candidate pair, and the server follows it; a subscriber's connectivity check
//! that arrives before its answer is answered once the answer is applied.
//!
//! Chromium, the controlling ICE agent, switches its selected pair when another path becomes
//! preferable: a second interface (a machine's loopback and Ethernet addresses, seconds after a
//! renegotiation) or a phone moving from Wi-Fi to mobile data. It then nominates the new pair with
//! USE-CANDIDATE on every check it sends there. The server (ICE lite, controlled) must send from
//! then on to the new pair; rtc-ice 0.21.1 kept the first nomination, so the connection turned
//! `disconnected` five seconds later and the participant's media stopped (vendor/README.md).
//!
//! The test joins a real webrtc-rs publisher, then acts as the same client's second interface: a
//! UDP socket that speaks the client's ICE credentials, answers the server's checks and nominates
//! its own pair. The server's RTCP (receiver reports, transport-wide feedback) must then arrive
//! on that socket.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;
use futures_util::{SinkExt, StreamExt};
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{
    Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;
use serde_json::{json, Value};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// `a=ice-ufrag` and `a=ice-pwd` of an SDP.
fn ice_credentials(sdp: &str) -> (String, String) {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in\n{sdp}"))
    };
    (attr("a=ice-ufrag:"), attr("a=ice-pwd:"))
}

/// The client's side of one ICE session, on a socket of the test's own (a client's second path, or
/// a client that is only that socket).
struct SecondPath {
    socket: UdpSocket,
    server: SocketAddr,
    /// USERNAME of our checks: the server's ufrag, then ours (RFC 8445 §7.2.2).
    username: String,
    server_pwd: String,
    client_pwd: String,
    crypto: std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider>,
}

impl SecondPath {
    /// A new local socket checking toward the server with the credentials of one connection's
    /// two descriptions (the server's and the client's, whichever made the offer).
    async fn new(server: SocketAddr, server_sdp: &str, client_sdp: &str) -> SecondPath {
        let (server_ufrag, server_pwd) = ice_credentials(server_sdp);
        let (client_ufrag, client_pwd) = ice_credentials(client_sdp);
        SecondPath {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            username: format!("{server_ufrag}:{client_ufrag}"),
            server_pwd,
            client_pwd,
            crypto: rtc::crypto::default_provider().unwrap(),
        }
    }

    /// A check that nominates this path (what the controlling agent sends on its selected pair).
    fn nomination(&self) -> Vec<u8> {
        self.check(true).raw
    }

    /// A connectivity check of this path, nominating it when `nominate`.
    fn check(&self, nominate: bool) -> Message {
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(Username::new(ATTR_USERNAME, self.username.clone())),
        ];
        if nominate {
            setters.push(Box::<UseCandidateAttr>::default());
        }
        setters.extend([
            Box::new(AttrControlling(0x5eed)) as Box<dyn Setter>,
            Box::new(PriorityAttr(0x6e7f_1eff)),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.server_pwd.clone(),
                self.crypto.crypto(),
            )),
            Box::new(FINGERPRINT),
        ]);
        let mut m = Message::new();
        m.build(&setters).expect("a STUN message");
        m
    }

    /// The success response to a check the server sent us.
    fn answer(&self, request: &Message, from: SocketAddr) -> Vec<u8> {
        stun(&[
            Box::new(BINDING_SUCCESS),
            Box::new(request.transaction_id),
            Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.client_pwd.clone(),
                self.crypto.crypto(),
            )),
            Box::new(FINGERPRINT),
        ])
    }
}

/// One STUN message, encoded.
fn stun(setters: &[Box<dyn Setter + '_>]) -> Vec<u8> {
    let mut m = Message::new();
    m.build(setters).expect("a STUN message");
    m.raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_to_the_candidate_pair_the_client_nominated_last() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let judge = s.invite(&sid, "王法官", "judge").await;
    let party = s.invite(&sid, "张三", "party").await;
    let media = Media::audio_video(VideoCodec::Vp8);
    let a = TestClient::join_and_publish(&s.ws_url, &judge.token, "judge", media).await.unwrap();
    let b = TestClient::join_and_publish(&s.ws_url, &party.token, "party", media).await.unwrap();
    // Media flows on the first path (the pair the client's agent nominated).
    a.wait_media("party's video at the judge", &party.participant_id, "video", Duration::from_secs(15), |t| {
        t.packets.len() > 10
    })
    .await
    .unwrap();

    let (offer, answer) = b.publish_sdp().await.expect("the party's publish negotiation");
    let path = SecondPath::new(s.media_addr, &answer, &offer).await;

    // Nominate the second path as Chromium does (a check with USE-CANDIDATE every 50 ms on its
    // selected pair), answer the server's own checks, and wait for the first datagram that is
    // not STUN: SRTCP the server now sends here.
    let mut checks = tokio::time::interval(Duration::from_millis(50));
    let mut buf = vec![0u8; 2048];
    let (mut answered, mut responses) = (0, 0);
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    let first_byte = loop {
        tokio::select! {
            _ = &mut deadline => panic!(
                "nothing but STUN reached the nominated path within 10 s \
                 (answered {answered} checks of the server, got {responses} responses to ours)"
            ),
            _ = checks.tick() => {
                path.socket.send_to(&path.nomination(), path.server).await.unwrap();
            }
            r = path.socket.recv_from(&mut buf) => {
                let (n, from) = r.unwrap();
                let d = &buf[..n];
                if d.first().is_some_and(|b| (128..=191).contains(b)) {
                    break d[0];
                }
                let mut m = Message::new();
                m.raw = d.to_vec();
                if m.decode().is_err() {
                    continue;
                }
                if m.typ.class == CLASS_REQUEST {
                    answered += 1;
                    path.socket.send_to(&path.answer(&m, from), from).await.unwrap();
                } else if m.typ.class == CLASS_SUCCESS_RESPONSE {
                    responses += 1;
                }
            }
        }
    };
    assert!(answered >= 1, "the server checked the new path before using it");
    assert!(responses >= 1, "the server accepted the nomination");
    // RTCP (payload types 192–223 in the second byte's range) from the server, on the new path.
    assert!((128..=191).contains(&first_byte));

    // The server keeps the session: the party is still there and no one was told otherwise.
    a.assert_healthy().unwrap();
    b.assert_healthy().unwrap();
}

/// The client's answer to a subscribe offer, made by a sans-IO rtc peer connection that never
/// sends anything: the test is the only thing on the client's side of the wire.
fn answer_to(offer: &str) -> String {
    use rtc::peer_connection::configuration::media_engine::MediaEngine;
    use rtc::peer_connection::sdp::RTCSessionDescription;
    let now = std::time::Instant::now();
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new().with_media_engine(media).build(now).unwrap();
    pc.set_remote_description(now, RTCSessionDescription::offer(offer.to_owned()).unwrap()).unwrap();
    let answer = pc.create_answer(None).unwrap();
    pc.set_local_description(now, answer.clone()).unwrap();
    answer.sdp
}

/// A subscriber sets its answer and starts its checks at once; the answer reaches the server over
/// signalling after the first check does. The server must answer that check once it has the
/// answer (RFC 8445 section 7.3), not drop it: a dropped check costs the client its next
/// retransmission (200 ms in webrtc-rs, more in a browser) before the connection can come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_arrives_before_the_subscribers_answer_is_answered_once_the_answer_is_applied() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let judge = s.invite(&sid, "王法官", "judge").await;
    let party = s.invite(&sid, "张三", "party").await;
    let _a = TestClient::join_and_publish(&s.ws_url, &judge.token, "judge", Media::audio_video(VideoCodec::Vp8))
        .await
        .unwrap();

    // The party joins on a bare signalling connection and receives its subscribe offer.
    let (mut ws, _) = tokio_tungstenite::connect_async(&s.ws_url).await.expect("websocket connects");
    let join = json!({"v": 1, "type": "join", "token": party.token, "client": {"user_agent": "early-check test"}});
    ws.send(WsMessage::text(join.to_string())).await.unwrap();
    let offer = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            if let Ok(WsMessage::Text(t)) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "subscribe_offer" {
                    return v["sdp"].as_str().unwrap().to_owned();
                }
            }
        }
        panic!("signalling closed before a subscribe offer")
    })
    .await
    .expect("a subscribe offer within 10 s");
    let answer = answer_to(&offer);

    // The first check, sent before the answer, and held by the server until the answer comes.
    let path = SecondPath::new(s.media_addr, &offer, &answer).await;
    let check = path.check(false);
    path.socket.send_to(&check.raw, path.server).await.unwrap();
    let mut held = tokio::time::interval(Duration::from_millis(10));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.media().stats().await.unwrap().early_checks == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the server did not hold the early check");
        held.tick().await;
    }

    // The answer: the held check gets its success response, without a retransmission.
    ws.send(WsMessage::text(json!({"v": 1, "type": "subscribe_answer", "sdp": answer}).to_string())).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (n, _) = path.socket.recv_from(&mut buf).await.unwrap();
            let mut m = Message::new();
            m.raw = buf[..n].to_vec();
            if m.decode().is_ok() && m.transaction_id == check.transaction_id {
                return m;
            }
        }
    })
    .await
    .expect("the early check was answered within 10 s of the answer (it was dropped)");
    assert_eq!(response.typ.class, CLASS_SUCCESS_RESPONSE, "the early check succeeded: {response}");
    assert_eq!(s.media().stats().await.unwrap().early_checks, 1, "one check was held");
}
