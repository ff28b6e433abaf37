//! Pausing the recording (庭审录音录像的若干规定 Art. 3): only a presiding host may, only with a
//! statutory reason; everyone is told; nothing is recorded during the pause; the pause with its
//! reason and who paused goes into the manifest and the audit log.

mod common;

use std::time::Duration;

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;
use serde_json::json;

const T: Duration = Duration::from_secs(15);

fn status(state: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |m| m["type"] == "recording_status" && m["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_pauses_with_a_statutory_reason_and_the_pause_is_in_the_manifest() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let server = TestServer::start_with(|c| c.recording.segment = Duration::from_secs(2)).await;
    let session = server.create_session("hearing").await;
    let judge_inv = server.invite(&session, "王法官", "judge").await;
    let party_inv = server.invite(&session, "张三", "party").await;
    let judge =
        TestClient::join_and_publish(&server.ws_url, &judge_inv.token, "王法官", Media::audio_video(VideoCodec::Vp8))
            .await
            .unwrap();
    let party =
        TestClient::join_and_publish(&server.ws_url, &party_inv.token, "张三", Media::audio_only()).await.unwrap();
    party.wait_for("recording", T, status("recording")).await.unwrap();

    // A party may not pause; nor may a judge without a reason the rules know.
    let mark = party.messages().len();
    party.send(json!({"v": 1, "type": "control", "action": "pause_recording", "reason": "recess"})).unwrap();
    party.wait_for_since(mark, "not_allowed", T, |m| m["type"] == "error" && m["code"] == "not_allowed").await.unwrap();
    let mark = judge.messages().len();
    judge.send(json!({"v": 1, "type": "control", "action": "pause_recording", "reason": "lunch"})).unwrap();
    judge.wait_for_since(mark, "bad_reason", T, |m| m["type"] == "error" && m["code"] == "bad_reason").await.unwrap();

    // Wait for a closed segment of the judge's video before pausing, then pause for recess.
    let first = judge.wait_for("some recording", T, |m| m["type"] == "recording_status").await.unwrap();
    assert_eq!(first["state"], "recording");
    let mark = party.messages().len();
    judge.send(json!({"v": 1, "type": "control", "action": "pause_recording", "reason": "recess"})).unwrap();
    let paused = party.wait_for_since(mark, "paused", T, status("paused")).await.expect("everyone is told");
    assert_eq!(paused["cause"], "recess");
    // The pause lasts until the judge resumes; the recorder drops what arrives meanwhile. Let
    // media flow into the pause for a few segment lengths before resuming.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mark = party.messages().len();
    judge.send(json!({"v": 1, "type": "control", "action": "resume_recording"})).unwrap();
    party.wait_for_since(mark, "recording again", T, status("recording")).await.unwrap();
    // Record after the pause until the judge's video has a segment that starts after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.post(&format!("/api/v1/sessions/{session}/close"), json!({})).await;

    let ses = server.get(&format!("/api/v1/sessions/{session}")).await;
    let list = server.get(&format!("/api/v1/cases/{}/recordings", ses["case"].as_str().unwrap())).await;
    let rec_id = list["recordings"][0]["id"].as_str().unwrap().to_string();
    let m = server.final_manifest(&rec_id).await;
    let pause = &m["pauses"][0];
    assert_eq!(pause["reason"], "recess");
    assert_eq!(pause["by"], judge_inv.participant_id.as_str());
    let ms = |s: &serde_json::Value| {
        let t = qiao::store::parse_rfc3339(s.as_str().unwrap()).unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    };
    let (start, from, to) = (ms(&m["started_at"]), ms(&pause["from"]), ms(&pause["to"]));
    assert!(to - from >= 4_500, "the pause lasted {} ms", to - from);
    // No segment covers the pause (30 ms of slack for the frame that crossed the boundary).
    for s in m["segments"].as_array().unwrap() {
        let (a, b) = (
            start + s["start_ms"].as_i64().unwrap(),
            start + s["start_ms"].as_i64().unwrap() + s["duration_ms"].as_i64().unwrap(),
        );
        assert!(b <= from + 30 || a >= to - 30, "segment {} ({a}–{b}) overlaps the pause {from}–{to}", s["path"]);
    }
    let after =
        m["segments"].as_array().unwrap().iter().filter(|s| start + s["start_ms"].as_i64().unwrap() >= to - 30).count();
    assert!(after >= 1, "recording resumed after the pause");
    let audit = server.get(&format!("/api/v1/audit?session_id={session}")).await;
    assert!(
        audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "control"
            && e["detail"].as_str().is_some_and(|d| d.contains("pause_recording") && d.contains("recess"))),
        "the pause and its reason are in the audit log"
    );
}
