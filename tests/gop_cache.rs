//! The GOP cache with real webrtc-rs peers: a participant who joins a running session starts from
//! the publisher's latest keyframe, replayed by the server from its cache, instead of waiting for
//! a keyframe the publisher is asked for. With the cache turned off the same join still works,
//! through a keyframe request.
//!
//! Each test prints the joiner's time from joining to its first complete keyframe (benchmark
//! figures are in docs/benchmarks.md; nothing here asserts a time).

mod common;

use std::time::{Duration, Instant};

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;

const TIMEOUT: Duration = Duration::from_secs(20);

struct LateJoin {
    /// Joining to the first complete keyframe from the publisher.
    first_keyframe: Duration,
    /// Down tracks started from the cache while the late participant joined.
    replays: u64,
    /// The bursts the server sent the replay in, and the payload bytes of the replayed packets
    /// (the first ones the late joiner received).
    bursts: u64,
    replay_bytes: usize,
    /// First to last replayed packet's arrival at the late joiner.
    replay_spread: Duration,
    /// The late joiner's first received video frame was a complete keyframe.
    starts_at_keyframe: bool,
    /// Complete frames the late joiner had received by then and after, all decodable in order.
    complete_frames: usize,
    incomplete_interior: usize,
}

/// The driver's (`gop_replays`, `gop_replay_packets`, `gop_replay_bursts`) counters.
async fn gop_counters(server: &TestServer) -> [u64; 3] {
    let stats = server.get("/api/v1/media/stats").await;
    ["gop_replays", "gop_replay_packets", "gop_replay_bursts"]
        .map(|k| stats[k].as_u64().unwrap_or_else(|| panic!("no {k} in {stats}")))
}

/// `src/media/driver.rs`, `REPLAY_BURST_BYTES`: payload bytes per paced burst of a replay.
const REPLAY_BURST_BYTES: usize = 7_500;

/// A judge publishes; a first party receives (so the publisher is streaming through the server);
/// then a second party joins late and we watch what it receives.
async fn late_join(cache: bool) -> LateJoin {
    fixtures::prepare(VideoCodec::Vp8).await;
    let server = TestServer::start_with(|c| c.core.gop_cache_bytes = if cache { 1 << 20 } else { 0 }).await;
    let session = server.create_session("hearing").await;
    let judge = server.invite(&session, "王法官", "judge").await;
    let early = server.invite(&session, "张原告", "party").await;
    let late = server.invite(&session, "李被告", "party").await;
    let judge =
        TestClient::join_and_publish(&server.ws_url, &judge.token, "王法官", Media::audio_video(VideoCodec::Vp8))
            .await
            .expect("judge publishes");
    let early = TestClient::connect(&server.ws_url, &early.token, "张原告").await.expect("early party joins");
    early
        .wait_media("video frames", &judge.participant_id, "video", TIMEOUT, |t| t.frame_stats().complete >= 45)
        .await
        .expect("the early party receives the judge's video");

    let before = gop_counters(&server).await;
    let t0 = Instant::now();
    let late = TestClient::connect(&server.ws_url, &late.token, "李被告").await.expect("late party joins");
    late.wait_media("a complete keyframe", &judge.participant_id, "video", TIMEOUT, |t| {
        t.frame_stats().complete_keyframes >= 1
    })
    .await
    .expect("the late party receives a keyframe");
    let first_keyframe = t0.elapsed();
    let after = gop_counters(&server).await;
    let [replays, replayed, bursts] = [0, 1, 2].map(|i| after[i] - before[i]);
    late.wait_media("30 more frames", &judge.participant_id, "video", TIMEOUT, |t| t.frame_stats().complete >= 30)
        .await
        .expect("video keeps flowing to the late party");
    let (starts_at_keyframe, stats, seqs, replay_bytes, replay_spread) = late
        .with_received(&judge.participant_id, "video", |t| {
            let frames = t.frames();
            // The replay comes first and in order (what arrives meanwhile waits behind it).
            let replay = &t.packets[..(replayed as usize).min(t.packets.len())];
            let bytes: usize = replay.iter().map(|p| p.payload.len()).sum();
            let spread = match (replay.first(), replay.last()) {
                (Some(a), Some(b)) => b.arrival.duration_since(a.arrival),
                _ => Duration::ZERO,
            };
            (frames.first().is_some_and(|f| f.keyframe && f.complete), t.frame_stats(), t.seq_report(), bytes, spread)
        })
        .expect("a video track");
    assert!(
        seqs.duplicates.is_empty() && seqs.gaps.is_empty(),
        "replayed and live packets form one sequence: {seqs:?}"
    );
    drop((judge, early, late));
    server.shutdown().await;
    LateJoin {
        first_keyframe,
        replays,
        bursts,
        replay_bytes,
        replay_spread,
        starts_at_keyframe,
        complete_frames: stats.complete,
        incomplete_interior: stats.incomplete_interior,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_starts_from_the_cached_gop_without_waiting_for_the_publisher() {
    let r = late_join(true).await;
    println!(
        "gop cache on: join → first complete keyframe {} ms; {} complete frames, {} incomplete; \
         replay of {} bytes in {} bursts over {} ms",
        r.first_keyframe.as_millis(),
        r.complete_frames,
        r.incomplete_interior,
        r.replay_bytes,
        r.bursts,
        r.replay_spread.as_millis()
    );
    assert_eq!(r.replays, 1, "the late joiner's one video down track started from the cache");
    // Paced, not written at once: a burst of a hundred packets overflows a receiver's socket.
    assert!(
        r.bursts >= r.replay_bytes.div_ceil(REPLAY_BURST_BYTES).min(2) as u64,
        "a replay of {} bytes left in {} bursts",
        r.replay_bytes,
        r.bursts
    );
    assert!(r.starts_at_keyframe, "the first frame it receives is a whole keyframe");
    assert_eq!(r.incomplete_interior, 0, "replayed and live frames join without a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_a_late_joiner_waits_for_a_requested_keyframe() {
    let r = late_join(false).await;
    println!(
        "gop cache off: join → first complete keyframe {} ms; {} complete frames",
        r.first_keyframe.as_millis(),
        r.complete_frames
    );
    assert_eq!(r.replays, 0);
    assert!(r.starts_at_keyframe, "video still starts at a keyframe");
    assert_eq!(r.incomplete_interior, 0);
}
