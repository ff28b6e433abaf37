//! Bad input on the signalling WebSocket and the media port: every case gets its documented close
//! code (or is dropped), and the session goes on for everyone else.

mod common;

use std::time::Duration;

use common::server::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &TestServer) -> Ws {
    tokio_tungstenite::connect_async(&s.ws_url).await.expect("websocket connects").0
}

/// Reads until the server closes; returns the close code (panics after 10 s).
async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("server closes within 10 s") {
            Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a code"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("websocket error before a close frame: {e}"),
        }
    }
}

/// Waits for a server message of `ty`, returning it.
async fn expect_message(ws: &mut Ws, ty: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.unwrap_or_else(|_| panic!("no {ty} within 10 s")) {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["v"], 1, "every server message carries the protocol version");
                if v["type"] == ty {
                    return v;
                }
            }
            Some(Ok(Message::Close(f))) => panic!("closed while waiting for {ty}: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("while waiting for {ty}: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn join(s: &TestServer, token: &str) -> Ws {
    let mut ws = connect(s).await;
    send(&mut ws, json!({"v": 1, "type": "join", "token": token})).await;
    ws
}

fn sign(secret: &[u8], claims: Value) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(secret))
        .unwrap()
}

fn claims(sid: &str, pid: &str, exp: u64) -> Value {
    json!({"iss": "qiao", "aud": "qiao-join", "sub": pid, "sid": sid, "role": "party", "iat": 1, "exp": exp, "jti": "t"})
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn a_valid_join_gets_joined_with_the_session_and_the_others() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let judge = s.invite(&sid, "王法官", "judge").await;
    let party = s.invite(&sid, "张三", "party").await;
    let mut a = join(&s, &judge.token).await;
    let joined = expect_message(&mut a, "joined").await;
    assert_eq!(joined["participant_id"], judge.participant_id.as_str());
    assert_eq!(joined["self"]["role"], "judge");
    assert_eq!(joined["session"]["id"], sid.as_str());
    let mut b = join(&s, &party.token).await;
    let joined_b = expect_message(&mut b, "joined").await;
    assert_eq!(joined_b["participants"][0]["display_name"], "王法官");
    let seen = expect_message(&mut a, "participant_joined").await;
    assert_eq!(seen["participant"]["display_name"], "张三");
    send(&mut b, json!({"v": 1, "type": "ping", "ts": 42})).await;
    assert_eq!(expect_message(&mut b, "pong").await["ts"], 42);
    send(&mut b, json!({"v": 1, "type": "leave"})).await;
    assert_eq!(close_code(&mut b).await, 1000);
    let left = expect_message(&mut a, "participant_left").await;
    assert_eq!(
        (left["participant_id"].as_str(), left["cause"].as_str()),
        (Some(party.participant_id.as_str()), Some("left"))
    );
    // Presence is written to the store by a background task; wait (bounded) for it to land.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
        let p = stored["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == party.participant_id.as_str())
            .unwrap()
            .clone();
        if p["leave_cause"] == "left" {
            assert!(p["left_at"].is_string() && p["joined_at"].is_string(), "{p}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cause of the departure is recorded: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn forged_foreign_expired_and_unknown_tokens_are_refused_with_their_close_codes() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let party = s.invite(&sid, "张三", "party").await;
    let secret = std::fs::read(s.data_dir.join("join-token.key")).unwrap();

    let mut forged = party.token.clone();
    forged.pop();
    forged.push(if party.token.ends_with('A') { 'B' } else { 'A' });
    let foreign = sign(&[9u8; 32], claims(&sid, &party.participant_id, now_secs() + 600));
    let expired = sign(&secret, claims(&sid, &party.participant_id, now_secs() - 10));
    let unknown_session = sign(&secret, claims("ses_nope", &party.participant_id, now_secs() + 600));
    let unknown_participant = sign(&secret, claims(&sid, "p_nope", now_secs() + 600));
    for (name, token, code) in [
        ("forged", forged.as_str(), 4001),
        ("garbage", "not-a-token", 4001),
        ("signed by another server", foreign.as_str(), 4001),
        ("expired", expired.as_str(), 4002),
        ("unknown session", unknown_session.as_str(), 4003),
        ("unknown participant", unknown_participant.as_str(), 4001),
    ] {
        let mut ws = join(&s, token).await;
        assert_eq!(close_code(&mut ws).await, code, "{name}");
    }
}

#[tokio::test]
async fn joining_a_closed_session_is_refused_and_closing_disconnects_everyone() {
    let s = TestServer::start().await;
    let sid = s.create_session("mediation").await;
    let a = s.invite(&sid, "调解员", "mediator").await;
    let b = s.invite(&sid, "李四", "party").await;
    let mut ws = join(&s, &a.token).await;
    expect_message(&mut ws, "joined").await;
    s.close_session(&sid).await;
    assert_eq!(close_code(&mut ws).await, 4005);
    let mut late = join(&s, &b.token).await;
    assert_eq!(close_code(&mut late).await, 4005);
}

#[tokio::test]
async fn malformed_unknown_oversized_binary_and_premature_messages_close_with_protocol_codes() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let watcher = s.invite(&sid, "书记员", "clerk").await;
    let mut w = join(&s, &watcher.token).await;
    expect_message(&mut w, "joined").await;

    // Before join.
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"v": 1, "type": "ping"})).await;
    assert_eq!(close_code(&mut ws).await, 4006, "a message before join");
    let mut ws = connect(&s).await;
    ws.send(Message::Text("{\"v\":1,\"type\":\"join\",".into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 4006, "malformed join");

    // After join, each of these ends that connection only.
    let bad: Vec<(&str, Message, u16)> = vec![
        ("malformed JSON", Message::Text("{oops".into()), 4006),
        ("unknown type", Message::Text(r#"{"v":1,"type":"teleport"}"#.into()), 4006),
        ("wrong version", Message::Text(r#"{"v":9,"type":"ping"}"#.into()), 4006),
        ("binary frame", Message::Binary(vec![1, 2, 3].into()), 4006),
        (
            "oversized",
            Message::Text(format!(r#"{{"v":1,"type":"ping","ts":"{}"}}"#, "x".repeat(70 * 1024)).into()),
            1009,
        ),
    ];
    for (name, msg, code) in bad {
        let p = s.invite(&sid, name, "party").await;
        let mut ws = join(&s, &p.token).await;
        expect_message(&mut ws, "joined").await;
        ws.send(msg).await.unwrap();
        assert_eq!(close_code(&mut ws).await, code, "{name}");
    }

    // The session went on: the watcher is still connected and answered.
    send(&mut w, json!({"v": 1, "type": "ping", "ts": 1})).await;
    expect_message(&mut w, "pong").await;
}

#[tokio::test]
async fn a_bad_sdp_is_an_error_message_not_a_disconnect() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let p = s.invite(&sid, "张三", "party").await;
    let mut ws = join(&s, &p.token).await;
    expect_message(&mut ws, "joined").await;
    send(&mut ws, json!({"v": 1, "type": "publish_offer", "sdp": "this is not SDP"})).await;
    let err = expect_message(&mut ws, "error").await;
    assert_eq!(err["code"], "bad_sdp");
    assert!(err["message"].as_str().is_some() && err["message_en"].as_str().is_some());
    send(&mut ws, json!({"v": 1, "type": "subscribe_answer", "sdp": "v=0"})).await;
    expect_message(&mut ws, "error").await;
    send(&mut ws, json!({"v": 1, "type": "ping", "ts": 2})).await;
    expect_message(&mut ws, "pong").await;
}

#[tokio::test]
async fn a_vanished_client_is_shown_reconnecting_then_removed_with_cause_network_lost() {
    let s = TestServer::start_with(|c| c.core.reconnect_grace = Duration::from_millis(800)).await;
    let sid = s.create_session("hearing").await;
    let a = s.invite(&sid, "王法官", "judge").await;
    let b = s.invite(&sid, "张三", "party").await;
    let mut wa = join(&s, &a.token).await;
    expect_message(&mut wa, "joined").await;
    let wb = join(&s, &b.token).await;
    expect_message(&mut wa, "participant_joined").await;
    drop(wb); // the TCP connection goes away without a leave or a close frame
    let upd = expect_message(&mut wa, "participant_updated").await;
    assert_eq!(upd["participant"]["connection"], "reconnecting");
    let left = expect_message(&mut wa, "participant_left").await;
    assert_eq!(left["cause"], "network_lost");
}

#[tokio::test]
async fn rejoining_within_the_grace_period_replaces_the_old_connection_and_keeps_the_place() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let a = s.invite(&sid, "王法官", "judge").await;
    let b = s.invite(&sid, "张三", "party").await;
    let mut wa = join(&s, &a.token).await;
    expect_message(&mut wa, "joined").await;
    let mut first = join(&s, &b.token).await;
    expect_message(&mut first, "joined").await;
    let mut second = join(&s, &b.token).await;
    expect_message(&mut second, "joined").await;
    assert_eq!(close_code(&mut first).await, 4007, "the old connection is told it was replaced");
    expect_message(&mut wa, "participant_joined").await;
    let upd = expect_message(&mut wa, "participant_updated").await;
    assert_eq!(upd["participant"]["id"], b.participant_id.as_str());
}

#[tokio::test]
async fn garbage_on_the_media_port_is_dropped_and_counted_and_the_server_goes_on() {
    let s = TestServer::start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    // Sent in bursts of 20, each waited for, so that loopback buffers never overflow and the
    // count below is exact.
    for burst in 0..10usize {
        for i in 0..20usize {
            let len = 1 + ((burst * 20 + i) * 37) % 1400;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            sock.send_to(&bytes, s.media_addr).await.unwrap();
        }
        wait_unroutable(&s, (burst as u64 + 1) * 20).await;
    }
    // A STUN-looking datagram with an unknown ufrag.
    let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
    stun.extend_from_slice(b"nope:xy\0");
    sock.send_to(&stun, s.media_addr).await.unwrap();
    wait_unroutable(&s, 201).await;
    let v: Value = reqwest::get(format!("{}/healthz", s.base_url)).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ok");
    let sid = s.create_session("reception").await;
    let p = s.invite(&sid, "信访人", "party").await;
    let mut ws = join(&s, &p.token).await;
    expect_message(&mut ws, "joined").await;
}

async fn wait_unroutable(s: &TestServer, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = s.media().stats().await.unwrap();
        if stats.datagrams_unroutable >= n {
            assert_eq!(stats.datagrams_unroutable, stats.datagrams_in, "nothing unroutable reached a peer");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "datagrams not all seen: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
