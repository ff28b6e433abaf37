//! Three participants publish Opus + VP8 through the SFU; everyone receives everyone.
//!
//! Needs ffmpeg (fixtures) and the in-process server from tests/common/server.rs.

mod common;

use common::client::VideoCodec;
use common::forwarding::{self, Room};

const CODEC: VideoCodec = VideoCodec::Vp8;

async fn room() -> Room {
    forwarding::three_publishers(CODEC).await.expect("three participants join and publish")
}

/// Each client receives both others' audio and video: RTP with the payload types negotiated in
/// its subscribe SDP, a single SSRC per down-track, continuous sequence numbers, at least one
/// complete key frame and ≥ 45 complete frames. The server's stats measured its own delay per
/// forwarded packet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_three_publishers_each_receive_all_others_audio_and_video() {
    let room = room().await;
    if let Err(e) = forwarding::assert_everyone_receives_everyone(&room).await {
        panic!("{e:#}\n\n{}", dump(&room));
    }
    // The server measured its own delay for what it forwarded (kernel receive stamps): one sample
    // per forwarded packet received, each with every copy of it, so never more than the copies.
    let stats = room.server.media().stats().await.unwrap();
    let samples = stats.forward_delay.total();
    assert!(samples > 100, "forward delay samples: {samples}, {stats:?}");
    assert!(samples <= stats.rtp_forwarded, "{samples} samples for {} copies", stats.rtp_forwarded);
    let p50 = stats.forward_delay.percentile_bound_us(50.0).unwrap();
    assert!(p50 < qiao::media::DELAY_BOUNDS_US[qiao::media::DELAY_BOUNDS_US.len() - 1], "median {p50} µs");
}

/// A PLI written by a subscriber on its down-track reaches the publisher's up-track, and a storm
/// of PLIs inside one throttle window reaches it at most twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_pli_from_subscriber_reaches_publisher_throttled() {
    let room = room().await;
    let (publisher, subscriber) = (&room.clients[0], &room.clients[1]);
    match forwarding::assert_pli_reaches_publisher(subscriber, publisher).await {
        Ok(_) => {}
        Err(e) => panic!("{e:#}\n\n{}", dump(&room)),
    }
}

/// A participant who sends `leave` is announced to the others (`participant_left` with cause
/// `left`, `track_unpublished` per track), its tracks disappear from their subscribe offers,
/// and the remaining two keep receiving each other without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_leaving_participant_is_announced_and_its_tracks_removed() {
    let mut room = room().await;
    if let Err(e) = forwarding::assert_leave_is_propagated(&mut room, 2).await {
        panic!("{e:#}\n\n{}", dump(&room));
    }
}

fn dump(room: &Room) -> String {
    room.clients.iter().map(|c| c.diagnostics()).collect::<Vec<_>>().join("\n\n")
}
