//! Storage down and the spool filling up: the hosts are warned when the spool is nearly full,
//! told when media is being lost, the lost span is a `storage` gap in the manifest, and what was
//! kept reaches S3 when it returns and verifies. A session is never silently unrecorded.

mod common;

use std::time::{Duration, Instant};

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::s3::S3Server;
use common::server::TestServer;
use qiao::config::StoreConfig;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_is_announced_and_marked_as_a_storage_gap() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let mut s3 = S3Server::start();
    s3.stop(); // storage is down from the start
    let cfg = s3.config("q");
    let cfg2 = cfg.clone();
    let server = TestServer::start_with(move |c| {
        c.recording.store = StoreConfig::S3(cfg2);
        c.recording.segment = Duration::from_secs(2);
        c.recording.spool_limit_bytes = 600_000;
    })
    .await;
    let case = server.post("/api/v1/cases", serde_json::json!({ "case_id": "SPOOL-1", "kind": "hearing" })).await;
    let session = server
        .post(
            &format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()),
            serde_json::json!({ "lobby": false, "consent_required": false }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inv = server.invite(&session, "王法官", "judge").await;
    let judge = TestClient::join_and_publish(&server.ws_url, &inv.token, "王法官", Media::audio_video(VideoCodec::Vp8))
        .await
        .unwrap();
    let warned = judge
        .wait_for("spool warning", T, |m| m["type"] == "recording_status" && m["cause"] == "spool")
        .await
        .expect("the host is warned before the spool is full");
    assert_eq!(warned["state"], "degraded");
    let lost = judge
        .wait_for("media lost", T, |m| m["type"] == "recording_status" && m["state"] == "failed")
        .await
        .expect("the host is told media is being lost");
    assert_eq!(lost["cause"], "storage");

    s3.restart();
    let closed = server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;
    let rec_id = closed["recording"]["recording_id"].as_str().unwrap().to_string();
    let list = server.get(&format!("/api/v1/cases/{}/recordings", case["id"].as_str().unwrap())).await;
    let prefix = list["recordings"][0]["prefix"].as_str().unwrap().to_string();
    assert!(prefix.ends_with(&rec_id));
    let objects = qiao::storage::ObjectStore::s3(&cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let dir = tempfile::tempdir().unwrap();
    let m = loop {
        if let Ok(b) = objects.get(&format!("{prefix}/manifest.json")).await {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            if v["status"] == "final" && qiao::storage::download_recording(&objects, &prefix, dir.path()).await.is_ok()
            {
                break qiao::record::verify_recording(dir.path(), None).expect("what was kept verifies");
            }
        }
        assert!(Instant::now() < deadline, "the final recording never reached S3; s3 log:\n{}", s3.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(m.gaps.iter().any(|g| g["cause"] == "storage"), "the lost span is a storage gap: {:?}", m.gaps);
    assert!(!m.segments.is_empty(), "what fitted in the spool was kept");
}
