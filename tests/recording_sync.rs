//! Audio/video sync through the whole chain: a webrtc-rs client publishes the flash-and-beep clip
//! (a white flash and a 1 kHz beep at the same instants, every second) as VP8 + Opus; the server
//! records both tracks, and after close the composite rendition must show every flash within
//! 80 ms of its beep.

mod common;

use std::time::{Duration, Instant};

use common::client::{ClientOptions, Media, TestClient, VideoCodec};
use common::server::TestServer;
use common::{av, fixtures};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flashes_and_beeps_stay_within_80_ms_in_the_composite() {
    let dir = tempfile::tempdir().unwrap();
    let clip = av::flash_beep_fixture(dir.path(), 14);
    let video = std::sync::Arc::new(fixtures::read_ivf(&clip.video_ivf));
    let audio = std::sync::Arc::new(fixtures::read_ogg_opus(&clip.audio_ogg));
    let server = TestServer::start().await;
    let session = server.create_session("mediation").await;
    let inv = server.invite(&session, "调解员", "mediator").await;
    let opts = ClientOptions {
        name: "调解员".into(),
        video_fixture: Some(video),
        audio_fixture: Some(audio),
        ..Default::default()
    };
    let c = TestClient::connect_with(&server.ws_url, &inv.token, opts).await.unwrap();
    c.publish(Media::audio_video(VideoCodec::Vp8)).await.unwrap();
    c.wait_for("recording", Duration::from_secs(10), |m| m["type"] == "recording_status" && m["state"] == "recording")
        .await
        .unwrap();
    // The clip must play long enough for several flashes to be recorded.
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;

    let ses = server.get(&format!("/api/v1/sessions/{session}")).await;
    let case = ses["case"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let rec = loop {
        let list = server.get(&format!("/api/v1/cases/{case}/recordings")).await;
        let r = list["recordings"][0].clone();
        if r["composite"] == "done" {
            break r;
        }
        assert_ne!(r["composite"], "failed", "the composite failed");
        assert!(Instant::now() < deadline, "no composite after 120 s: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let link = server.get(&format!("/api/v1/recordings/{}/link?path=composite.mp4", rec["id"].as_str().unwrap())).await;
    let bytes = reqwest::get(link["url"].as_str().unwrap()).await.unwrap().bytes().await.unwrap();
    let out = dir.path().join("composite.mp4");
    std::fs::write(&out, &bytes).unwrap();
    av::decode_check(&out);
    let offsets = av::av_sync_offsets_ms(&out);
    println!("audio − video per flash (ms): {offsets:?}");
    assert!(offsets.len() >= 6, "too few flash/beep pairs found: {offsets:?}");
    for d in &offsets {
        assert!(d.abs() <= 80.0, "audio and video are {d} ms apart (all: {offsets:?})");
    }
}
