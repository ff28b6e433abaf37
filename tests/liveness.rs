//! A participant whose media stops is detected and removed within seconds, and the cause is
//! recorded as a network failure (`media_timeout`), not as walking out.

mod common;

use std::time::Duration;

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_media_stops_is_removed_with_cause_media_timeout() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let s = TestServer::start_with(|c| c.core.peer_timeout = Duration::from_secs(2)).await;
    let sid = s.create_session("hearing").await;
    let judge = s.invite(&sid, "王法官", "judge").await;
    let party = s.invite(&sid, "张三", "party").await;
    let media = Media::audio_video(VideoCodec::Vp8);
    let a = TestClient::join_and_publish(&s.ws_url, &judge.token, "judge", media).await.unwrap();
    let b = TestClient::join_and_publish(&s.ws_url, &party.token, "party", media).await.unwrap();
    a.wait_media("party's video at the judge", &party.participant_id, "video", Duration::from_secs(15), |t| {
        t.packets.len() > 10
    })
    .await
    .unwrap();

    // While media flows, the server keeps per-track receive statistics.
    let tracks = s.get(&format!("/api/v1/sessions/{sid}/tracks")).await;
    let tracks = tracks["tracks"].as_array().unwrap().clone();
    assert_eq!(tracks.len(), 4, "audio and video from each of two publishers: {tracks:?}");
    for t in &tracks {
        assert_eq!(t["subscribers"], 1, "{t}");
        assert!(t["receive"]["packets"].as_u64().unwrap() > 0, "{t}");
        assert!(t["receive"]["expected"].as_u64().unwrap() >= t["receive"]["packets"].as_u64().unwrap() - 5, "{t}");
    }

    let stopped = tokio::time::Instant::now();
    b.stop_media().await; // peer connections gone, WebSocket still up
    let left = a
        .wait_for("party removed", Duration::from_secs(10), |m| {
            m["type"] == "participant_left" && m["participant_id"] == party.participant_id.as_str()
        })
        .await
        .unwrap();
    let detected = stopped.elapsed();
    assert_eq!(left["cause"], "media_timeout", "{left}");
    assert!(detected < Duration::from_secs(6), "detected after {detected:?} with a 2 s peer timeout");
    let close = b.wait_closed(Duration::from_secs(5)).await.unwrap();
    assert_eq!(close.code, Some(4011), "the participant is told why: {close:?}");

    // The cause is in the participant's record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
        let p = v["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == party.participant_id.as_str())
            .cloned()
            .unwrap();
        if p["leave_cause"] == "media_timeout" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cause not recorded: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The judge is still there and still connected.
    let v = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let j = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == judge.participant_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(j["online"], true, "{j}");
}
