//! Zones and host controls, enforced by the server at the media level: a participant in the
//! lobby, in witness waiting or outside a caucus receives zero RTP packets of the tracks it may
//! not see, whatever its client does; a host mute stops a participant's media at the server.
//! Real webrtc-rs clients publish VP8 + Opus throughout.

mod common;

use std::time::Duration;

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn client(s: &TestServer, sid: &str, name: &str, role: &str) -> (TestClient, String) {
    let inv = s.invite(sid, name, role).await;
    let c = TestClient::join_and_publish(&s.ws_url, &inv.token, name, Media::audio_video(VideoCodec::Vp8))
        .await
        .unwrap_or_else(|e| panic!("{name} joins and publishes: {e:#}"));
    (c, inv.participant_id)
}

/// Every packet `c` has received, from anyone.
fn total_packets(c: &TestClient) -> usize {
    c.received_tracks().iter().map(|t| t.packets.len()).sum()
}

fn packets_from(c: &TestClient, publisher: &str, kind: &str) -> usize {
    c.received(publisher, kind).map(|t| t.packets.len()).unwrap_or(0)
}

/// Waits until `c` has received `more` packets of `publisher`'s `kind` beyond `from`.
async fn wait_more(c: &TestClient, publisher: &str, kind: &str, from: usize, more: usize) {
    c.wait_media("media keeps flowing", publisher, kind, WAIT, |t| t.packets.len() >= from + more)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", c.name, c.diagnostics()));
}

async fn control(c: &TestClient, msg: Value) -> Value {
    let mark = c.mark();
    let mut m = json!({"v": 1, "type": "control"});
    m.as_object_mut().unwrap().extend(msg.as_object().unwrap().clone());
    c.send(m).unwrap();
    c.wait_for_since(mark, "control answer", WAIT, |m| m["type"] == "control_ack" || m["type"] == "error")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn zone_of(c: &TestClient, pid: &str, zone: &str) {
    c.wait_for(&format!("{pid} in {zone}"), WAIT, |m| {
        ((m["type"] == "participant_updated" || m["type"] == "participant_joined")
            && m["participant"]["id"] == pid
            && m["participant"]["zone"] == zone)
            || (m["type"] == "joined" && m["participant_id"] == pid && m["self"]["zone"] == zone)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_in_the_lobby_receives_no_packet_until_a_host_admits_it() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session_with_lobby("hearing").await;
    let (judge, judge_id) = client(&s, &sid, "王法官", "judge").await;
    let (a, a_id) = client(&s, &sid, "张三", "party").await;
    zone_of(&a, &a_id, "lobby").await;
    assert_eq!(control(&judge, json!({"action": "admit", "target": a_id})).await["type"], "control_ack");
    wait_more(&a, &judge_id, "video", 0, 30).await;

    let (b, b_id) = client(&s, &sid, "李四", "party").await;
    zone_of(&b, &b_id, "lobby").await;
    // While the judge's video reaches A, B (in the lobby) gets nothing, and nobody gets B.
    let from = packets_from(&a, &judge_id, "video");
    wait_more(&a, &judge_id, "video", from, 90).await;
    assert_eq!(total_packets(&b), 0, "a lobby participant received media:\n{}", b.diagnostics());
    assert_eq!(packets_from(&a, &b_id, "video") + packets_from(&judge, &b_id, "video"), 0, "the lobby was heard");
    // A party may not admit anyone.
    let refused = control(&a, json!({"action": "admit", "target": b_id})).await;
    assert_eq!(refused["code"], "not_allowed", "{refused}");

    assert_eq!(control(&judge, json!({"action": "admit", "target": b_id})).await["type"], "control_ack");
    wait_more(&b, &judge_id, "video", 0, 30).await;
    wait_more(&judge, &b_id, "video", 0, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_receives_no_packet_of_the_hearing_until_called_and_none_after_dismissal() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let (judge, judge_id) = client(&s, &sid, "王法官", "judge").await;
    let (party, _party_id) = client(&s, &sid, "张三", "party").await;
    let (witness, witness_id) = client(&s, &sid, "证人赵六", "witness").await;
    zone_of(&witness, &witness_id, "witness_waiting").await;
    let from = packets_from(&party, &judge_id, "audio");
    wait_more(&party, &judge_id, "audio", from, 100).await;
    assert_eq!(total_packets(&witness), 0, "the witness received the hearing:\n{}", witness.diagnostics());

    let wrong = control(&judge, json!({"action": "call_witness", "target": _party_id})).await;
    assert_eq!(wrong["code"], "bad_target", "only a witness can be called: {wrong}");
    assert_eq!(control(&judge, json!({"action": "call_witness", "target": witness_id})).await["type"], "control_ack");
    wait_more(&witness, &judge_id, "video", 0, 30).await;

    assert_eq!(
        control(&judge, json!({"action": "dismiss_witness", "target": witness_id})).await["type"],
        "control_ack"
    );
    zone_of(&witness, &witness_id, "witness_waiting").await;
    // The server removed the witness's down tracks; once that renegotiation is answered, the
    // judge's packets stop reaching the witness while they keep reaching the party.
    let mark = witness.mark();
    witness
        .wait_subscribe_offer_answered(mark.saturating_sub(1), "removal offer", WAIT, |m| {
            m["tracks"].as_array().is_some_and(|t| t.iter().all(|t| t["participant_id"] != judge_id.as_str()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let frozen = packets_from(&witness, &judge_id, "video");
    let from = packets_from(&party, &judge_id, "video");
    wait_more(&party, &judge_id, "video", from, 60).await;
    assert_eq!(packets_from(&witness, &judge_id, "video"), frozen, "packets reached a dismissed witness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caucus_is_isolated_from_the_other_party_at_the_rtp_level() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session("mediation").await;
    let (mediator, m_id) = client(&s, &sid, "调解员", "mediator").await;
    let (a, a_id) = client(&s, &sid, "张三", "party").await;
    let (b, _b_id) = client(&s, &sid, "李四", "party").await;
    wait_more(&b, &m_id, "audio", 0, 20).await;
    wait_more(&b, &a_id, "audio", 0, 20).await;

    for target in [&m_id, &a_id] {
        let ack = control(&mediator, json!({"action": "move", "target": target, "zone": "caucus:1"})).await;
        assert_eq!(ack["type"], "control_ack", "{ack}");
    }
    zone_of(&b, &a_id, "caucus:1").await;
    // B's next subscribe offer carries neither the mediator's nor A's tracks.
    b.wait_subscribe_offer_answered(0, "caucus removal", WAIT, |m| {
        m["tracks"].as_array().is_some_and(|t| {
            t.iter().all(|t| t["participant_id"] != m_id.as_str() && t["participant_id"] != a_id.as_str())
        })
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let frozen = (packets_from(&b, &m_id, "audio"), packets_from(&b, &a_id, "audio"));
    let from = packets_from(&a, &m_id, "audio");
    wait_more(&a, &m_id, "audio", from, 100).await; // 2 s of the caucus talking
    assert_eq!((packets_from(&b, &m_id, "audio"), packets_from(&b, &a_id, "audio")), frozen, "the caucus reached B");

    let bad = control(&mediator, json!({"action": "move", "target": a_id, "zone": "ballroom"})).await;
    assert_eq!(bad["code"], "bad_zone", "{bad}");
    for target in [&m_id, &a_id] {
        control(&mediator, json!({"action": "move", "target": target, "zone": "main"})).await;
    }
    let from = packets_from(&b, &m_id, "audio");
    wait_more(&b, &m_id, "audio", from, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_mute_stops_a_participants_audio_at_the_server() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let (judge, _) = client(&s, &sid, "王法官", "judge").await;
    let (a, a_id) = client(&s, &sid, "张三", "party").await;
    let (b, _) = client(&s, &sid, "李四", "party").await;
    wait_more(&b, &a_id, "audio", 0, 20).await;
    let ack = control(&judge, json!({"action": "mute", "target": a_id, "kind": "audio"})).await;
    assert_eq!(ack["type"], "control_ack", "{ack}");
    a.wait_for("told it is muted", WAIT, |m| {
        m["type"] == "participant_updated"
            && m["participant"]["id"] == a_id.as_str()
            && m["participant"]["audio_muted_by_host"] == true
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Packets already in flight may land; after that, nothing while A keeps sending and its video flows.
    let video_from = packets_from(&b, &a_id, "video");
    wait_more(&b, &a_id, "video", video_from, 15).await;
    let frozen = packets_from(&b, &a_id, "audio");
    let video_from = packets_from(&b, &a_id, "video");
    wait_more(&b, &a_id, "video", video_from, 60).await;
    assert_eq!(packets_from(&b, &a_id, "audio"), frozen, "muted audio was forwarded");
    control(&judge, json!({"action": "unmute", "target": a_id, "kind": "audio"})).await;
    wait_more(&b, &a_id, "audio", frozen, 20).await;
}

#[tokio::test]
async fn a_locked_session_refuses_new_parties_but_admits_hosts_and_deny_closes_with_4013() {
    let s = TestServer::start().await;
    let sid = s.create_session_with_lobby("mediation").await;
    let mediator_inv = s.invite(&sid, "调解员", "mediator").await;
    let mediator = TestClient::connect(&s.ws_url, &mediator_inv.token, "mediator").await.unwrap();
    let waiting_inv = s.invite(&sid, "等候者", "party").await;
    let waiting = TestClient::connect(&s.ws_url, &waiting_inv.token, "waiting").await.unwrap();
    zone_of(&mediator, &waiting_inv.participant_id, "lobby").await;

    let ack = control(&mediator, json!({"action": "lock"})).await;
    assert_eq!(ack["type"], "control_ack", "{ack}");
    mediator.wait_for("lock announced", WAIT, |m| m["type"] == "session_updated" && m["locked"] == true).await.unwrap();
    let late_inv = s.invite(&sid, "迟到者", "party").await;
    // The join is refused before `joined`: connect fails, naming the close code.
    let late = TestClient::connect(&s.ws_url, &late_inv.token, "late").await;
    let err = late.err().expect("a party may not join a locked session");
    assert!(format!("{err:#}").contains("4012"), "{err:#}");
    let clerk_inv = s.invite(&sid, "书记员", "clerk").await;
    let clerk = TestClient::connect(&s.ws_url, &clerk_inv.token, "clerk").await.expect("a host joins a locked session");
    assert_eq!(clerk.joined["self"]["zone"], "main");

    let ack = control(&mediator, json!({"action": "deny", "target": waiting_inv.participant_id})).await;
    assert_eq!(ack["type"], "control_ack", "{ack}");
    let closed = waiting.wait_closed(WAIT).await.unwrap();
    assert_eq!(closed.code, Some(4013));
    let left = mediator
        .wait_for("denied", WAIT, |m| {
            m["type"] == "participant_left" && m["participant_id"] == waiting_inv.participant_id.as_str()
        })
        .await
        .unwrap();
    assert_eq!(left["cause"], "denied");
    // The same link cannot queue again.
    let again = TestClient::connect(&s.ws_url, &waiting_inv.token, "waiting again").await;
    let err = format!("{:#}", again.err().expect("a denied link does not join again"));
    assert!(err.contains("4013"), "{err}");
    // Nor can a removed participant's, even while offline.
    let (status, _) = s
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{sid}/participants/{}", clerk_inv.participant_id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    clerk.wait_closed(WAIT).await.unwrap();
    let back = TestClient::connect(&s.ws_url, &clerk_inv.token, "clerk again").await;
    let err = format!("{:#}", back.err().expect("a removed link does not join again"));
    assert!(err.contains("4004"), "{err}");
    let unknown = control(&mediator, json!({"action": "remove", "target": "p_nobody"})).await;
    assert_eq!(unknown["code"], "bad_target");
}
