//! Recording into a real S3 server (s3s-fs, which checks SigV4): two participants publish while
//! S3 goes down and comes back. The hosts are told while storage is unreachable, the spool holds
//! the segments, and after S3 returns nothing is lost: every track's segments follow each other
//! without a hole, the manifest is final, and `qiao verify s3://…` passes. The test prints the
//! time from close to a verified manifest in S3 (a figure for docs/benchmarks.md).

mod common;

use std::time::{Duration, Instant};

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::s3::S3Server;
use common::server::TestServer;
use qiao::config::StoreConfig;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_session_loses_nothing_and_the_recording_verifies_from_s3() {
    fixtures::prepare(VideoCodec::Vp8).await;
    fixtures::prepare(VideoCodec::H264).await;
    let mut s3 = S3Server::start();
    // s3s-fs keeps per-object metadata in a file named by the base64 of the whole key, so keys
    // must stay under ~158 bytes there: a short prefix and case number (real S3 allows 1024).
    let cfg = s3.config("q");
    let cfg2 = cfg.clone();
    let server = TestServer::start_with(move |c| {
        c.recording.store = StoreConfig::S3(cfg2);
        c.recording.segment = Duration::from_secs(2);
    })
    .await;
    let session = server.create_session_in_case("S3-1", "hearing").await;
    let judge = server.invite(&session, "王法官", "judge").await;
    let party = server.invite(&session, "张三", "party").await;
    let a = TestClient::join_and_publish(&server.ws_url, &judge.token, "王法官", Media::audio_video(VideoCodec::Vp8))
        .await
        .expect("judge publishes");
    let _b = TestClient::join_and_publish(&server.ws_url, &party.token, "张三", Media::audio_video(VideoCodec::H264))
        .await
        .expect("party publishes");
    let objects = qiao::storage::ObjectStore::s3(&cfg).expect("an S3 client");

    // Segments reach S3.
    let deadline = Instant::now() + Duration::from_secs(30);
    while objects.list("cases/").await.map_or(0, |k| k.iter().filter(|k| k.contains("/tracks/")).count()) < 4 {
        assert!(Instant::now() < deadline, "no segments in S3; s3 log:\n{}", s3.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Outage: the hosts hear that storage is unreachable and the media is kept locally.
    s3.stop();
    let t_down = a.messages().len();
    a.wait_for_since(t_down, "recording_status degraded (storage)", Duration::from_secs(40), |m| {
        m["type"] == "recording_status" && m["state"] == "degraded" && m["cause"] == "storage"
    })
    .await
    .expect("the host is told storage is down");
    s3.restart();
    let t_up = a.messages().len();
    a.wait_for_since(t_up, "recording_status recording again", Duration::from_secs(60), |m| {
        m["type"] == "recording_status" && m["state"] == "recording"
    })
    .await
    .expect("the host is told recording storage is back");

    let closed_at = Instant::now();
    let closed = server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;
    let head = closed["recording"]["chain_head"].as_str().expect("an integrity value").to_string();
    let rec_id = closed["recording"]["recording_id"].as_str().unwrap().to_string();

    // The final manifest reaches S3 and verifies from there with the CLI.
    let key_prefix = objects
        .list("cases/")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.contains(&rec_id))
        .map(|k| k[..k.find(&rec_id).unwrap() + rec_id.len()].to_string())
        .expect("the recording is in S3 under cases/…");
    let deadline = Instant::now() + Duration::from_secs(60);
    let manifest: Value = loop {
        if let Ok(b) = objects.get(&format!("{key_prefix}/manifest.json")).await {
            let m: Value = serde_json::from_slice(&b).unwrap();
            if m["status"] == "final" {
                break m;
            }
        }
        assert!(Instant::now() < deadline, "no final manifest in S3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!("s3://{}/{}/{}", cfg.bucket, cfg.prefix, key_prefix);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qiao"))
        .args(["verify", &url])
        .env("AWS_ACCESS_KEY_ID", &cfg.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &cfg.secret_key)
        .env("AWS_REGION", &cfg.region)
        .env("AWS_ENDPOINT_URL", cfg.endpoint.as_deref().unwrap())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "qiao verify {url} failed: {text}");
    assert!(text.contains(&head), "verify reports the integrity value: {text}");
    println!("close to verified manifest in S3: {} ms", closed_at.elapsed().as_millis());

    // Nothing lost: no storage or recorder gap, and each track's segments are contiguous.
    let gaps: Vec<&Value> = manifest["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["cause"] == "storage" || g["cause"] == "recorder")
        .collect();
    assert!(gaps.is_empty(), "media was lost: {gaps:?}");
    for t in manifest["tracks"].as_array().unwrap() {
        let segs: Vec<&Value> =
            manifest["segments"].as_array().unwrap().iter().filter(|s| s["track_id"] == t["id"]).collect();
        assert!(segs.len() >= 5, "track {} has {} segments", t["id"], segs.len());
        for w in segs.windows(2) {
            let end = w[0]["start_ms"].as_i64().unwrap() + w[0]["duration_ms"].as_i64().unwrap();
            let hole = w[1]["start_ms"].as_i64().unwrap() - end;
            assert!(hole <= 150, "track {}: {hole} ms missing between {} and {}", t["id"], w[0]["path"], w[1]["path"]);
        }
    }
}
