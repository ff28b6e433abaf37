//! The three-party forwarding scenario shared by `forwarding_vp8.rs` and `forwarding_h264.rs`.

use super::client::{Media, RecvTrack, TestClient, TrackInfo, VideoCodec};
use super::fixtures;
use super::rtp_check::{self, FrameStats};
use super::server::TestServer;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// Complete video frames each subscriber must assemble per publisher (≥ 1.5 s at 30 fps).
pub const MIN_COMPLETE_FRAMES: usize = 45;
/// Audio packets each subscriber must receive per publisher (1 s of 20 ms packets).
pub const MIN_AUDIO_PACKETS: usize = 50;
/// Bound for media to start flowing and reach the thresholds above.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(25);
/// Bound for signalling reactions (participant_left, renegotiation…).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Room {
    pub server: TestServer,
    pub session_id: String,
    pub clients: Vec<TestClient>,
    pub codec: VideoCodec,
}

/// Starts a server, creates a hearing session and has three participants join and publish Opus +
/// `codec` video. Returns once every publish connection is connected and streaming.
pub async fn three_publishers(codec: VideoCodec) -> Result<Room> {
    fixtures::prepare(codec).await;
    let server = TestServer::start().await;
    let session_id = server.create_session("hearing").await;
    let people = [("王法官", "judge"), ("张原告", "party"), ("李被告", "party")];
    let mut invites = Vec::new();
    for (name, role) in people {
        invites.push((name, server.invite(&session_id, name, role).await));
    }
    let clients = futures_util::future::try_join_all(invites.iter().map(|(name, inv)| {
        let ws = server.ws_url.clone();
        async move {
            let c = TestClient::join_and_publish(&ws, &inv.token, name, Media::audio_video(codec)).await?;
            ensure!(
                c.participant_id == inv.participant_id,
                "{name}: joined as {} but was invited as {}",
                c.participant_id,
                inv.participant_id
            );
            Ok(c)
        }
    }))
    .await?;
    Ok(Room { server, session_id, clients, codec })
}

fn stats_ok(t: &RecvTrack) -> (FrameStats, bool) {
    let s = t.frame_stats();
    let ok = s.complete >= MIN_COMPLETE_FRAMES && s.complete_keyframes >= 1;
    (s, ok)
}

/// Waits until `receiver` has ≥ MIN_COMPLETE_FRAMES complete frames (one a key frame) of video
/// and ≥ MIN_AUDIO_PACKETS audio packets from `publisher`.
pub async fn wait_receiving(receiver: &TestClient, publisher: &TestClient) -> Result<()> {
    let pid = &publisher.participant_id;
    receiver
        .wait_media(
            &format!("≥{MIN_COMPLETE_FRAMES} complete video frames incl. a key frame from {}", publisher.name),
            pid,
            "video",
            MEDIA_TIMEOUT,
            |t| stats_ok(t).1,
        )
        .await?;
    receiver
        .wait_media(
            &format!("≥{MIN_AUDIO_PACKETS} audio packets from {}", publisher.name),
            pid,
            "audio",
            MEDIA_TIMEOUT,
            |t| t.packets.len() >= MIN_AUDIO_PACKETS,
        )
        .await
}

/// RTP timestamps never step backwards (mod 2^32) in arrival order.
fn timestamps_monotonic(t: &RecvTrack) -> Result<()> {
    for w in t.packets.windows(2) {
        let d = w[1].timestamp.wrapping_sub(w[0].timestamp) as i32;
        ensure!(
            d >= 0,
            "RTP timestamp went backwards: seq {} ts {} -> seq {} ts {}",
            w[0].seq,
            w[0].timestamp,
            w[1].seq,
            w[1].timestamp
        );
    }
    Ok(())
}

/// Checks one received track against the receiver's negotiated subscribe SDP and loopback
/// expectations. `expected` is the encoding name ("VP8", "H264", "opus").
pub fn check_track(receiver: &TestClient, t: &RecvTrack, expected: &str) -> Result<()> {
    let ctx = || format!("{} receiving {}", receiver.name, t.summary());
    ensure!(
        t.mime.to_ascii_lowercase().ends_with(&format!("/{}", expected.to_ascii_lowercase())),
        "unexpected codec {:?}, want {expected}; {}",
        t.mime,
        ctx()
    );

    // Payload types: exactly those our subscribe answer accepted for this track's m-line, and
    // mapped to the expected codec (no RTX / other codecs on the primary SSRC).
    let accepted = receiver.subscribe_payload_types(&t.track_id).ok_or_else(|| {
        anyhow!(
            "no m-line with msid track id {} in the latest subscribe negotiation; {}\nlatest offer:\n{}",
            t.track_id,
            ctx(),
            receiver.last_subscribe_sdp().map(|(o, _)| o).unwrap_or_default()
        )
    })?;
    for pt in t.payload_types() {
        let name = accepted.iter().find(|(p, _)| *p == pt).map(|(_, n)| n.clone()).ok_or_else(|| {
            anyhow!("RTP payload type {pt} was not accepted in the subscribe answer (accepted {accepted:?}); {}", ctx())
        })?;
        ensure!(
            name.eq_ignore_ascii_case(expected),
            "payload type {pt} is {name} in the subscribe SDP, want {expected}; {}",
            ctx()
        );
    }

    ensure!(t.ssrcs().len() == 1, "expected a single SSRC per down-track, saw {:?}; {}", t.ssrcs(), ctx());
    let seq = t.seq_report();
    ensure!(seq.is_continuous(), "sequence numbers not continuous on loopback: {seq}; {}", ctx());
    timestamps_monotonic(t).with_context(ctx)?;
    if t.kind == "video" {
        let s = t.frame_stats();
        ensure!(s.incomplete_interior == 0, "incomplete video frames in the middle of the stream: {s}; {}", ctx());
        ensure!(
            s.complete >= MIN_COMPLETE_FRAMES && s.complete_keyframes >= 1,
            "not enough complete frames / key frames: {s}; {}",
            ctx()
        );
    }
    Ok(())
}

/// Every client receives every other client's audio and video, correctly.
pub async fn assert_everyone_receives_everyone(room: &Room) -> Result<()> {
    let video_name = room.codec.sdp_name();
    for r in &room.clients {
        for p in room.clients.iter().filter(|p| p.participant_id != r.participant_id) {
            wait_receiving(r, p).await?;
            let video = r
                .received(&p.participant_id, "video")
                .ok_or_else(|| anyhow!("{}: no video track from {}", r.name, p.name))?;
            check_track(r, &video, video_name)?;
            let audio = r
                .received(&p.participant_id, "audio")
                .ok_or_else(|| anyhow!("{}: no audio track from {}", r.name, p.name))?;
            check_track(r, &audio, "opus")?;
        }
        // Nothing from ourselves, nothing from strangers.
        let publishers: BTreeSet<String> = r.received_tracks().into_iter().map(|t| t.publisher).collect();
        let expected: BTreeSet<String> = room
            .clients
            .iter()
            .filter(|p| p.participant_id != r.participant_id)
            .map(|p| p.participant_id.clone())
            .collect();
        ensure!(
            publishers == expected,
            "{} received tracks from {publishers:?}, expected exactly {expected:?}",
            r.name
        );
        r.assert_healthy()?;
    }
    Ok(())
}

/// `subscriber` sends PLIs for `publisher`'s video (once a second, as a decoder missing a key
/// frame would) until the publisher's connection sees a PLI or FIR.
pub async fn assert_pli_reaches_publisher(subscriber: &TestClient, publisher: &TestClient) -> Result<u32> {
    wait_receiving(subscriber, publisher).await?;
    // The server asks for keyframes by itself when a subscription starts. Wait until the publisher
    // has heard no request for longer than the throttle window (1 s by default), so that what
    // arrives next can only be the subscriber's PLI, relayed.
    let count = || publisher.plis_received() + publisher.firs_received();
    let quiet_for = Duration::from_millis(1500);
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let (mut last, mut since) = (count(), tokio::time::Instant::now());
    while since.elapsed() < quiet_for {
        ensure!(tokio::time::Instant::now() < deadline, "keyframe requests to {} never stopped", publisher.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if count() != last {
            (last, since) = (count(), tokio::time::Instant::now());
        }
    }
    let baseline = count();
    subscriber.send_pli(&publisher.participant_id).await?;
    publisher.wait_keyframe_request(baseline, Duration::from_millis(700)).await.map_err(|e| {
        anyhow::anyhow!("{e:#}\n{}'s PLI for {}'s video did not reach the publisher", subscriber.name, publisher.name)
    })?;
    // Throttling: a storm of PLIs inside one window reaches the publisher at most twice (one at
    // once, one coalesced at the end of the 1 s window).
    tokio::time::sleep(Duration::from_millis(1100)).await; // let the window pass
    let before_storm = count();
    for _ in 0..10 {
        subscriber.send_pli(&publisher.participant_id).await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // the window during which we count
    let storm = count() - before_storm;
    ensure!((1..=2).contains(&storm), "10 PLIs inside one throttle window reached the publisher {storm} times");
    Ok(1)
}

/// Track ids (server's, as signalled) that `observer` knows `publisher_id` to have published.
pub fn known_tracks_of(observer: &TestClient, publisher_id: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for m in observer.messages() {
        let tracks: Vec<&Value> = match m["type"].as_str() {
            Some("track_published") => vec![&m["track"]],
            Some("subscribe_offer") => m["tracks"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
            Some("joined") => m["tracks"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
            _ => vec![],
        };
        for t in tracks {
            if let Some(info) = TrackInfo::from_json(t) {
                if info.participant_id == publisher_id {
                    ids.insert(info.track_id);
                }
            }
        }
    }
    ids
}

fn offer_mentions(offer: &Value, publisher_id: &str, track_ids: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for t in offer["tracks"].as_array().into_iter().flatten() {
        if t["participant_id"] == publisher_id {
            found.push(format!("tracks[] entry {t}"));
        }
    }
    let sdp = offer["sdp"].as_str().unwrap_or_default();
    for m in rtp_check::parse_sdp_media(sdp) {
        let active = !m.is_rejected() && m.direction.as_deref() != Some("inactive");
        if let Some((stream, track)) = &m.msid {
            if active && (stream == publisher_id || track_ids.contains(track)) {
                found.push(format!(
                    "active m-line {} (mid {:?}, {:?}) with msid {stream} {track}",
                    m.index, m.mid, m.direction
                ));
            }
        }
    }
    found
}

/// `leaver` sends `leave`; the others get `participant_left` (cause `left`) and
/// `track_unpublished` for each of its tracks, its tracks vanish from their subscribe offers,
/// and they keep receiving each other.
pub async fn assert_leave_is_propagated(room: &mut Room, leaver_index: usize) -> Result<()> {
    // Everyone is receiving everyone first, so the leaver's tracks are known to all.
    for r in &room.clients {
        for p in room.clients.iter().filter(|p| p.participant_id != r.participant_id) {
            wait_receiving(r, p).await?;
        }
    }
    let leaver = room.clients.remove(leaver_index);
    let leaver_id = leaver.participant_id.clone();
    let marks: Vec<usize> = room.clients.iter().map(|c| c.mark()).collect();
    let known: Vec<BTreeSet<String>> = room.clients.iter().map(|c| known_tracks_of(c, &leaver_id)).collect();
    for (c, k) in room.clients.iter().zip(&known) {
        ensure!(
            k.len() >= 2,
            "{} knew only {k:?} as {}'s tracks before the leave (expected audio + video)",
            c.name,
            leaver.name
        );
    }
    let packets_before: Vec<(usize, usize)> = room
        .clients
        .iter()
        .map(|c| {
            let other = room.clients.iter().find(|o| o.participant_id != c.participant_id).unwrap();
            (
                c.with_received(&other.participant_id, "video", |t| t.packets.len()).unwrap_or(0),
                c.with_received(&other.participant_id, "audio", |t| t.packets.len()).unwrap_or(0),
            )
        })
        .collect();

    let close = leaver.leave(Some("test done")).await?;
    ensure!(close.code == Some(1000), "{} expected close code 1000 after leave, got {close}", leaver.name);

    for ((c, mark), track_ids) in room.clients.iter().zip(&marks).zip(&known) {
        let (left_idx, left) = c
            .wait_for_index(*mark, &format!("participant_left for {}", leaver.name), EVENT_TIMEOUT, |m| {
                m["type"] == "participant_left" && m["participant_id"] == leaver_id.as_str()
            })
            .await?;
        ensure!(
            left["cause"] == "left",
            "{}: participant_left for {} has cause {}, want \"left\": {left}",
            c.name,
            leaver.name,
            left["cause"]
        );
        for tid in track_ids {
            c.wait_for_since(*mark, &format!("track_unpublished {tid}"), EVENT_TIMEOUT, |m| {
                m["type"] == "track_unpublished" && m["track_id"] == tid.as_str()
            })
            .await
            .map(|m| {
                if m["participant_id"] != leaver_id.as_str() {
                    Err(anyhow!("{}: track_unpublished names the wrong participant: {m}", c.name))
                } else {
                    Ok(())
                }
            })??;
        }
        // The renegotiation that drops the tracks arrives and is answered…
        c.wait_subscribe_offer_answered(
            *mark,
            &format!("a subscribe_offer without {}'s tracks", leaver.name),
            EVENT_TIMEOUT,
            |m| offer_mentions(m, &leaver_id, track_ids).is_empty(),
        )
        .await?;
        // …and no offer after participant_left still carries them.
        for (i, m) in c.messages().iter().enumerate().skip(left_idx + 1) {
            if m["type"] == "subscribe_offer" {
                let found = offer_mentions(m, &leaver_id, track_ids);
                ensure!(
                    found.is_empty(),
                    "{}: subscribe_offer #{i} after participant_left still carries {}'s tracks: {found:?}",
                    c.name,
                    leaver.name
                );
            }
        }
    }

    // The two remaining participants keep receiving each other, still without gaps.
    for (c, (v0, a0)) in room.clients.iter().zip(packets_before) {
        let other = room.clients.iter().find(|o| o.participant_id != c.participant_id).unwrap();
        c.wait_media(
            "video to keep flowing after the other participant left",
            &other.participant_id,
            "video",
            EVENT_TIMEOUT,
            |t| t.packets.len() >= v0 + 60,
        )
        .await?;
        c.wait_media(
            "audio to keep flowing after the other participant left",
            &other.participant_id,
            "audio",
            EVENT_TIMEOUT,
            |t| t.packets.len() >= a0 + 50,
        )
        .await?;
        for kind in ["video", "audio"] {
            let t = c.received(&other.participant_id, kind).unwrap();
            let expected = if kind == "video" { room.codec.sdp_name() } else { "opus" };
            check_track(c, &t, expected).with_context(|| format!("after {} left", leaver.name))?;
        }
        c.assert_healthy()?;
    }
    Ok(())
}
