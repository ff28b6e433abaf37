//! The recorder records per zone, and a caucus recording (背对背调解) is readable only by the
//! mediator and that party (在线调解规则 Art. 18): the other party's download link is refused and
//! audited, the composite (the joint session) leaves the caucus out.

mod common;

use std::time::Duration;

use common::client::{Media, TestClient};
use common::server::TestServer;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

async fn move_to(mediator: &TestClient, target: &str, zone: &str) {
    let mark = mediator.messages().len();
    mediator.send(json!({"v": 1, "type": "control", "action": "move", "target": target, "zone": zone})).unwrap();
    mediator
        .wait_for_since(mark, "move ack", T, |m| m["type"] == "control_ack")
        .await
        .expect("the move is acknowledged");
}

async fn as_participant(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(format!("{}{path}", server.base_url)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caucus_recording_is_readable_by_the_mediator_and_that_party_only() {
    common::fixtures::prepare(common::client::VideoCodec::Vp8).await;
    let server = TestServer::start_with(|c| c.recording.segment = Duration::from_secs(1)).await;
    let session = server.create_session("mediation").await;
    let m_inv = server.invite(&session, "调解员", "mediator").await;
    let a_inv = server.invite(&session, "甲方", "party").await;
    let b_inv = server.invite(&session, "乙方", "party").await;
    let mediator =
        TestClient::join_and_publish(&server.ws_url, &m_inv.token, "调解员", Media::audio_only()).await.unwrap();
    let _a = TestClient::join_and_publish(&server.ws_url, &a_inv.token, "甲方", Media::audio_only()).await.unwrap();
    let _b = TestClient::join_and_publish(&server.ws_url, &b_inv.token, "乙方", Media::audio_only()).await.unwrap();
    mediator.wait_for("recording", T, |m| m["type"] == "recording_status" && m["state"] == "recording").await.unwrap();

    // Joint session, then a caucus with party A, then joint again; each phase spans segments.
    let phase = Duration::from_millis(2500);
    tokio::time::sleep(phase).await;
    move_to(&mediator, &a_inv.participant_id, "caucus:1").await;
    move_to(&mediator, &m_inv.participant_id, "caucus:1").await;
    tokio::time::sleep(phase).await;
    move_to(&mediator, &a_inv.participant_id, "main").await;
    move_to(&mediator, &m_inv.participant_id, "main").await;
    tokio::time::sleep(phase).await;
    let closed = server.post(&format!("/api/v1/sessions/{session}/close"), json!({})).await;
    let rec_id = closed["recording"]["recording_id"].as_str().unwrap().to_string();

    // The stored manifest tags segments by zone.
    let manifest = server.final_manifest(&rec_id).await;
    let track_of = |pid: &str| -> Vec<String> {
        manifest["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["participant_id"] == pid)
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let caucus: Vec<&Value> =
        manifest["segments"].as_array().unwrap().iter().filter(|s| s["zone"] == "caucus:1").collect();
    assert!(!caucus.is_empty(), "segments recorded in the caucus: {}", manifest["segments"]);
    let a_tracks = track_of(&a_inv.participant_id);
    let b_tracks = track_of(&b_inv.participant_id);
    assert!(caucus.iter().any(|s| a_tracks.contains(&s["track_id"].as_str().unwrap().to_string())));
    assert!(
        caucus.iter().all(|s| !b_tracks.contains(&s["track_id"].as_str().unwrap().to_string())),
        "B was never in it"
    );
    let caucus_path = caucus[0]["path"].as_str().unwrap().to_string();

    // Party B: the caucus is not among B's files, and a link to it is refused.
    let (status, mine) = as_participant(&server, &b_inv.token, "/api/v1/my/recordings").await;
    assert_eq!(status, 200);
    let files: Vec<&str> =
        mine["recordings"][0]["files"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(files.contains(&"manifest.json") && !files.contains(&caucus_path.as_str()), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("tracks/")), "B may read the joint session: {files:?}");
    let (status, body) =
        as_participant(&server, &b_inv.token, &format!("/api/v1/my/recordings/{rec_id}/link?path={caucus_path}")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"].as_str().or(body["code"].as_str()), Some("not_allowed"), "{body}");

    // Party A and the mediator may; A's link really downloads.
    for token in [&a_inv.token, &m_inv.token] {
        let (status, link) =
            as_participant(&server, token, &format!("/api/v1/my/recordings/{rec_id}/link?path={caucus_path}")).await;
        assert_eq!(status, 200, "{link}");
        let got = reqwest::get(link["url"].as_str().unwrap()).await.unwrap();
        assert_eq!(got.status(), 200);
    }
    let audit = server.get(&format!("/api/v1/audit?session_id={session}")).await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "recording.refused" && e["actor"] == b_inv.participant_id.as_str()),
        "the refusal is audited"
    );
}
