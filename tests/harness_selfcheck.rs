//! Checks the test harness itself, without the Qiao server: fixtures decode as expected, the
//! `rtc` packetizers' output reassembles into complete frames, and a `PublishSide` connected
//! back-to-back to a `SubscribeSide` delivers media that passes the same checks the forwarding
//! tests apply (and a PLI gets back to the publisher).
//!
//! If these fail, fix the harness before blaming the SFU.

mod common;

use common::client::{poll_until, CandidateSink, Media, OutCandidate, PublishSide, SubscribeSide, VideoCodec};
use common::fixtures;
use common::rtp_check::{self, PacketRef};

use rtc::rtp::packetizer::{new_packetizer, Packetizer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::peer_connection::PeerConnection;

#[test]
fn fixtures_decode_with_expected_timing_and_keyframes() {
    let secs = fixtures::CLIP_SECONDS as f64;

    let vp8 = fixtures::vp8();
    assert_eq!(vp8.frames.len() as u32, fixtures::CLIP_SECONDS * fixtures::VIDEO_FPS);
    let keys: Vec<usize> = vp8.frames.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
    assert_eq!(keys.first(), Some(&0), "VP8 clip must start with a key frame");
    assert!(keys.windows(2).all(|w| w[1] - w[0] <= fixtures::KEYFRAME_INTERVAL as usize), "VP8 key frames at {keys:?}");
    assert!((vp8.total_duration().as_secs_f64() - secs).abs() < 0.01);

    let opus = fixtures::opus();
    assert!(opus.frames.iter().all(|f| f.duration == Duration::from_millis(20)));
    assert!((opus.total_duration().as_secs_f64() - secs).abs() < 0.1, "{:?}", opus.total_duration());

    let h264 = fixtures::h264();
    let first_types: Vec<u8> = h264.frames.iter().take(3).map(|f| f.data[0] & 0x1f).collect();
    assert_eq!(&first_types[..2], &[7, 8], "H.264 clip must start with SPS, PPS");
    let slices = h264.frames.iter().filter(|f| !f.duration.is_zero()).count();
    assert_eq!(slices as u32, fixtures::CLIP_SECONDS * fixtures::VIDEO_FPS, "one slice per frame");
    let idrs = h264.frames.iter().filter(|f| f.data[0] & 0x1f == 5).count();
    assert_eq!(idrs as u32, fixtures::CLIP_SECONDS * fixtures::VIDEO_FPS / fixtures::KEYFRAME_INTERVAL);
    assert!((h264.total_duration().as_secs_f64() - secs).abs() < 0.01);
}

fn packetize(codec: VideoCodec) -> Vec<rtc::rtp::Packet> {
    let fixture = fixtures::video(codec);
    let rtp_codec = common::client::video_codec(codec).rtp_codec;
    let payloader = rtp_codec.payloader().expect("payloader");
    let mut p = new_packetizer(
        Instant::now(),
        1200,
        96,
        0x1234_5678,
        payloader,
        Box::new(rtc::rtp::sequence::new_fixed_sequencer(65_500)),
        90_000,
    );
    let mut out = Vec::new();
    for f in &fixture.frames {
        let samples = (f.duration.as_secs_f64() * 90_000.0) as u32;
        out.extend(p.packetize(Instant::now(), &f.data, samples).expect("packetize"));
    }
    out
}

#[test]
fn packetized_fixtures_reassemble_into_complete_frames() {
    for codec in [VideoCodec::Vp8, VideoCodec::H264] {
        let packets = packetize(codec);
        let refs: Vec<PacketRef<'_>> = packets
            .iter()
            .map(|p| PacketRef {
                seq: p.header.sequence_number,
                timestamp: p.header.timestamp,
                marker: p.header.marker,
                payload: &p.payload,
            })
            .collect();
        let seqs: Vec<u16> = refs.iter().map(|r| r.seq).collect();
        let report = rtp_check::check_sequence(&seqs);
        assert!(report.is_continuous() && report.wraps == 1, "{codec:?}: {report}");
        let frames = match codec {
            VideoCodec::Vp8 => rtp_check::assemble_vp8(&refs),
            VideoCodec::H264 => rtp_check::assemble_h264(&refs),
        };
        let stats = rtp_check::frame_stats(&frames);
        let n = (fixtures::CLIP_SECONDS * fixtures::VIDEO_FPS) as usize;
        assert_eq!(stats.frames, n, "{codec:?}: {stats}");
        assert_eq!(stats.complete, n, "{codec:?}: {stats}");
        assert_eq!(stats.complete_keyframes, n / fixtures::KEYFRAME_INTERVAL as usize, "{codec:?}: {stats}");
        // RTP clock advances exactly one frame (3000 ticks) per frame.
        for w in frames.windows(2) {
            assert_eq!(w[1].timestamp.wrapping_sub(w[0].timestamp), 3000, "{codec:?}");
        }
        // Multi-packet frames exist, so fragmentation is exercised.
        assert!(frames.iter().any(|f| f.packets > 2), "{codec:?}: no fragmented frame");
    }
}

#[test]
fn opus_toc_durations() {
    assert_eq!(fixtures::opus_packet_samples(&[0xfc]), Some(960)); // CELT FB 20 ms
    assert_eq!(fixtures::opus_packet_samples(&[0x78]), Some(960)); // Hybrid FB 20 ms
    assert_eq!(fixtures::opus_packet_samples(&[0x18]), Some(2880)); // SILK 60 ms
    assert_eq!(fixtures::opus_packet_samples(&[0x01]), Some(960)); // SILK 10 ms, code 1 → 2 frames
    assert_eq!(fixtures::opus_packet_samples(&[0xe3, 0x03]), Some(3 * 120)); // CELT 2.5 ms ×3
    assert_eq!(fixtures::opus_packet_samples(&[0xe3]), None);
}

struct Pair {
    publisher: PublishSide,
    subscriber: SubscribeSide,
    errors: Arc<Mutex<Vec<String>>>,
}

const STREAM_ID: &str = "selfcheck-publisher";

/// Wires a publish side to a subscribe side directly (the subscribe side answers the publish
/// offer, candidates are exchanged in-process), waits until both are connected.
async fn connect_back_to_back(codec: VideoCodec) -> Pair {
    fixtures::prepare(codec).await;
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (to_sub_tx, mut to_sub_rx) = mpsc::unbounded_channel::<OutCandidate>();
    let (to_pub_tx, mut to_pub_rx) = mpsc::unbounded_channel::<OutCandidate>();
    let pub_sink: CandidateSink = Arc::new(move |c| {
        let _ = to_sub_tx.send(c);
    });
    let sub_sink: CandidateSink = Arc::new(move |c| {
        let _ = to_pub_tx.send(c);
    });
    let mut publisher = PublishSide::new("pub", STREAM_ID, Media::audio_video(codec), pub_sink, Arc::clone(&errors))
        .await
        .expect("publish side");
    let subscriber = SubscribeSide::new("sub", sub_sink, Arc::clone(&errors)).await.expect("subscribe side");

    let offer = publisher.create_offer().await.expect("offer");
    let answer = subscriber.answer(&offer).await.expect("answer");
    publisher.apply_answer(&answer).await.expect("apply answer");

    let sub_pc: Arc<dyn PeerConnection> = Arc::clone(&subscriber.pc);
    tokio::spawn(async move {
        while let Some(c) = to_sub_rx.recv().await {
            if let Some(init) = c.candidate {
                if let Err(e) = sub_pc.add_ice_candidate(init).await {
                    eprintln!("sub add_ice_candidate: {e}");
                }
            }
        }
    });
    let pub_pc: Arc<dyn PeerConnection> = Arc::clone(&publisher.pc);
    tokio::spawn(async move {
        while let Some(c) = to_pub_rx.recv().await {
            if let Some(init) = c.candidate {
                if let Err(e) = pub_pc.add_ice_candidate(init).await {
                    eprintln!("pub add_ice_candidate: {e}");
                }
            }
        }
    });
    publisher.gate.open_with(&offer);
    subscriber.gate.open_with(&answer);

    publisher.wait_connected(Duration::from_secs(15)).await.expect("publish side connected");
    subscriber.wait_connected(Duration::from_secs(15)).await.expect("subscribe side connected");
    Pair { publisher, subscriber, errors }
}

/// Offer from the publisher, answered by the subscriber, applied.
async fn renegotiate(pair: &Pair) {
    let offer = pair.publisher.create_offer().await.expect("re-offer");
    let answer = pair.subscriber.answer(&offer).await.expect("re-answer");
    pair.publisher.apply_answer(&answer).await.expect("apply re-answer");
}

async fn back_to_back(codec: VideoCodec) {
    let Pair { publisher, subscriber, errors } = connect_back_to_back(codec).await;
    let stream_id = STREAM_ID;
    publisher.start_streaming().await.expect("start streaming");

    let rec = Arc::clone(&subscriber.recorder);
    poll_until(
        "45 complete video frames incl. a key frame and 50 audio packets",
        Duration::from_secs(20),
        || {
            let v = rec
                .with_track(stream_id, "video", |t| {
                    let s = t.frame_stats();
                    s.complete >= 45 && s.complete_keyframes >= 1
                })
                .unwrap_or(false);
            let a = rec.with_track(stream_id, "audio", |t| t.packets.len() >= 50).unwrap_or(false);
            v && a
        },
        || format!("{}\nerrors: {:?}", rec.describe(), errors.lock().unwrap()),
    )
    .await
    .unwrap();

    let negotiated = subscriber.negotiated_media();
    for (kind, name) in [("video", codec.sdp_name()), ("audio", "opus")] {
        let t = rec.track(stream_id, kind).unwrap();
        let accepted = subscriber
            .accepted_payload_types(&t.track_id)
            .unwrap_or_else(|| panic!("no m-line for {} in {negotiated:#?}", t.track_id));
        for pt in t.payload_types() {
            assert!(
                accepted.iter().any(|(p, n)| *p == pt && n.eq_ignore_ascii_case(name)),
                "PT {pt} not accepted as {name}: {accepted:?}"
            );
        }
        assert_eq!(t.ssrcs().len(), 1, "{}", t.summary());
        assert!(t.seq_report().is_continuous(), "{}", t.summary());
        if kind == "video" {
            assert_eq!(t.frame_stats().incomplete_interior, 0, "{}", t.summary());
        }
        eprintln!("{}", t.summary());
    }

    // PLI travels back to the publisher's track.
    let before = publisher.plis_received();
    rec.send_pli(stream_id).await.expect("send PLI");
    poll_until(
        "the PLI to reach the publisher",
        Duration::from_secs(5),
        || publisher.plis_received() > before,
        || format!("plis {} firs {}", publisher.plis_received(), publisher.firs_received()),
    )
    .await
    .unwrap();

    let errs = errors.lock().unwrap().clone();
    assert!(errs.is_empty(), "background errors: {errs:?}");
    publisher.close().await;
    let _ = subscriber.pc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vp8_publish_side_to_subscribe_side_back_to_back() {
    back_to_back(VideoCodec::Vp8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_publish_side_to_subscribe_side_back_to_back() {
    back_to_back(VideoCodec::H264).await;
}

/// The subscribe side answers repeated offers on a live connection: a track added later is
/// received (new on_track), a removed track's m-line is answered without error, and the
/// remaining tracks keep flowing without sequence gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_side_answers_renegotiation_as_tracks_come_and_go() {
    let pair = connect_back_to_back(VideoCodec::Vp8).await;
    pair.publisher.start_streaming().await.unwrap();
    let rec = Arc::clone(&pair.subscriber.recorder);
    let errors = Arc::clone(&pair.errors);
    let describe = || format!("{}\nerrors: {:?}", rec.describe(), errors.lock().unwrap());

    poll_until(
        "first video",
        Duration::from_secs(15),
        || rec.with_track(STREAM_ID, "video", |t| t.frame_stats().complete >= 10).unwrap_or(false),
        describe,
    )
    .await
    .unwrap();

    // A second participant's camera appears (new msid stream), as when someone joins.
    let late = pair
        .publisher
        .add_track("late-publisher", "video", common::client::video_codec(VideoCodec::Vp8), fixtures::vp8())
        .await
        .expect("add late track");
    renegotiate(&pair).await;
    pair.publisher.start_track(&late).await.expect("stream late track");
    poll_until(
        "video from the track added by renegotiation",
        Duration::from_secs(15),
        || {
            rec.with_track("late-publisher", "video", |t| {
                let s = t.frame_stats();
                s.complete >= 30 && s.complete_keyframes >= 1
            })
            .unwrap_or(false)
        },
        describe,
    )
    .await
    .unwrap();
    assert_eq!(pair.subscriber.negotiations.lock().unwrap().len(), 2);
    let late_track_id = rec.track("late-publisher", "video").unwrap().track_id;
    assert!(pair.subscriber.accepted_payload_types(&late_track_id).is_some());

    // …and leaves again.
    pair.publisher.remove_track(&late).await.expect("remove late track");
    renegotiate(&pair).await;
    let media = pair.subscriber.negotiated_media();
    eprintln!(
        "after removal: {:?}",
        media
            .iter()
            .map(|m| (
                m.mid.clone(),
                m.offered.direction.clone(),
                m.offered.port,
                m.msid.clone(),
                m.answered.direction.clone()
            ))
            .collect::<Vec<_>>()
    );

    // The original tracks keep flowing, continuously, across both renegotiations.
    let before = rec.with_track(STREAM_ID, "video", |t| t.packets.len()).unwrap();
    poll_until(
        "original video to keep flowing after two renegotiations",
        Duration::from_secs(10),
        || rec.with_track(STREAM_ID, "video", |t| t.packets.len() >= before + 30).unwrap_or(false),
        describe,
    )
    .await
    .unwrap();
    for kind in ["audio", "video"] {
        let t = rec.track(STREAM_ID, kind).unwrap();
        assert!(t.seq_report().is_continuous(), "{}", t.summary());
        assert_eq!(t.ssrcs().len(), 1, "{}", t.summary());
    }
    let late_now = rec.track("late-publisher", "video").unwrap();
    eprintln!("late track after removal: ended={} {}", late_now.ended, late_now.summary());
    let errs = errors.lock().unwrap().clone();
    assert!(errs.is_empty(), "background errors: {errs:?}");
    pair.publisher.close().await;
    let _ = pair.subscriber.pc.close().await;
}
