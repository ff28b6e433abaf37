//! Recording end to end with the local-directory store: real webrtc-rs clients publish fixture
//! media, the server records every track into segments, and after close the manifest verifies,
//! every segment decodes with ffprobe/ffmpeg, and each track's segments cover its publishing time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client::{ClientOptions, Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::TestServer;
use serde_json::Value;

/// How long the clients publish.
const PUBLISH: Duration = Duration::from_secs(10);

fn find_manifest(root: &Path) -> Option<PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "manifest.json") {
                return Some(p);
            }
        }
    }
    None
}

/// `ffmpeg -v error` decodes the whole file and prints nothing when it is clean. The decoded
/// video keeps the container's millisecond times (`-enc_time_base:v 1:1000`): by default FFmpeg
/// re-times it on a grid of the frame rate it guesses, and two frames of a variable-rate
/// recording that land on one grid step then make its own null muxer complain.
fn decode_errors(path: &Path) -> String {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-enc_time_base:v", "1:1000", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ffprobe_duration_ms(path: &Path) -> f64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap_or(0.0) * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_session_leaves_verified_playable_segments_for_every_track() {
    fixtures::prepare(VideoCodec::Vp8).await;
    fixtures::prepare(VideoCodec::H264).await;
    let server = TestServer::start().await;
    let session = server.create_session("hearing").await;
    let judge = server.invite(&session, "王法官", "judge").await;
    let party = server.invite(&session, "张三", "party").await;
    let counsel = server.invite(&session, "李律师", "counsel").await;
    let a = TestClient::join_and_publish(&server.ws_url, &judge.token, "王法官", Media::audio_video(VideoCodec::Vp8))
        .await
        .expect("judge publishes VP8");
    let b = TestClient::join_and_publish(&server.ws_url, &party.token, "张三", Media::audio_video(VideoCodec::H264))
        .await
        .expect("party publishes H.264");
    // Counsel presents evidence by screen share (a video track declared as `screen`).
    let opts = ClientOptions { name: "李律师".into(), video_source: Some("screen"), ..Default::default() };
    let c = TestClient::connect_with(&server.ws_url, &counsel.token, opts).await.unwrap();
    c.publish(Media { audio: false, video: Some(VideoCodec::Vp8) }).await.expect("counsel shares a screen");
    a.wait_for("recording_status recording", Duration::from_secs(10), |m| {
        m["type"] == "recording_status" && m["state"] == "recording"
    })
    .await
    .expect("participants are told the session is recorded");
    let published = Instant::now();
    tokio::time::sleep(PUBLISH).await; // the media itself is what is being recorded: it must flow this long
    let closed = server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;
    let head = closed["recording"]["chain_head"].as_str().expect("close returns the integrity value").to_string();
    let publish_ms = published.elapsed().as_millis() as f64;
    let fin = b
        .wait_for("recording_status final", Duration::from_secs(10), |m| {
            m["type"] == "recording_status" && m["state"] == "final"
        })
        .await
        .expect("participants receive the final status");
    assert_eq!(fin["chain_head"].as_str(), Some(head.as_str()), "the integrity value shown is the chain head");

    // Storage has the manifest and the segments (the local store is the data dir's recordings/).
    let root = server.data_dir.join("recordings");
    let manifest_path = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(p) = find_manifest(&root) {
                let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap_or_default();
                if m["status"] == "final" {
                    break p;
                }
            }
            assert!(Instant::now() < deadline, "no final manifest under {}", root.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let dir = manifest_path.parent().unwrap();
    let m = qiao::record::verify_recording(dir, None).expect("the recording verifies");
    assert_eq!(m.chain_head, head);
    assert_eq!(m.tracks.len(), 5, "two participants × audio + video, and a screen: {:#?}", m.tracks);
    assert_eq!(m.participants.len(), 3);
    assert!(m.tracks.iter().any(|t| t["source"] == "screen"), "the screen share is recorded as such");
    let case_dir = dir.parent().unwrap().parent().unwrap().parent().unwrap();
    assert!(case_dir.parent().unwrap().ends_with("cases"), "keys live under cases/{{case}}/sessions/{{session}}");

    for t in &m.tracks {
        let id = t["id"].as_str().unwrap();
        let segs: Vec<_> = m.segments.iter().filter(|s| s.track_id == id).collect();
        assert!(segs.len() >= 2, "track {id} ({}) has {} segments", t["codec"], segs.len());
        let mut covered = 0.0;
        for s in &segs {
            let p = dir.join(&s.path);
            let errors = decode_errors(&p);
            assert!(errors.trim().is_empty(), "{} does not decode cleanly: {errors}", s.path);
            let d = ffprobe_duration_ms(&p);
            assert!(d > 0.0, "{} has no duration", s.path);
            assert!(s.duration_ms <= 5_500, "{} lasts {} ms: segments are short", s.path, s.duration_ms);
            covered += s.duration_ms as f64;
        }
        // Each track was published until the close: its segments cover its span on the session
        // timeline (its first segment's start to its last one's end) within 1 %, so nothing in
        // between went missing, and that span reaches the session's end but for the moments
        // between the last packet and the close (a loaded CI machine once took 115 ms there).
        let session_ms = {
            let p = |s: &str| qiao::store::parse_rfc3339(s).unwrap();
            (p(m.ended_at.as_deref().unwrap()) - p(&m.started_at)).whole_milliseconds() as f64
        };
        let start = t["start_ms"].as_f64().expect("track timing");
        let end = t["end_ms"].as_f64().expect("track timing");
        let span = end - start;
        assert!(
            (covered - span).abs() <= span * 0.01,
            "track {id} ({}): segments cover {covered} ms of its {span} ms span (published {publish_ms} ms)",
            t["codec"]
        );
        assert!(
            // (A last frame's duration may reach a little past the close.)
            (-100.0..=500.0).contains(&(session_ms - end)),
            "track {id} ({}) ends at {end} ms, the session at {session_ms} ms",
            t["codec"]
        );
        // Segments of a track follow each other on the session timeline.
        for w in segs.windows(2) {
            assert!(w[1].start_ms >= w[0].start_ms + w[0].duration_ms - 50, "{} overlaps {}", w[1].path, w[0].path);
        }
    }

    // After close the composite is rendered from the stored masters and listed in the manifest.
    let deadline = Instant::now() + Duration::from_secs(120);
    let m = loop {
        let m = qiao::record::verify_recording(dir, None).expect("the recording verifies while the composite is added");
        if !m.renditions.is_empty() {
            break m;
        }
        assert!(Instant::now() < deadline, "no composite rendition after 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let composite = dir.join(m.renditions[0]["path"].as_str().unwrap());
    let errors = decode_errors(&composite);
    assert!(errors.trim().is_empty(), "the composite does not decode cleanly: {errors}");
    let session_ms = {
        let p = |s: &str| qiao::store::parse_rfc3339(s).unwrap();
        (p(m.ended_at.as_deref().unwrap()) - p(&m.started_at)).whole_milliseconds() as f64
    };
    let d = ffprobe_duration_ms(&composite);
    assert!((d - session_ms).abs() <= session_ms * 0.01, "composite lasts {d} ms, the session {session_ms} ms");

    // The API lists the case's recordings and hands out download links; each access is audited.
    let ses = server.get(&format!("/api/v1/sessions/{session}")).await;
    let case = ses["case"].as_str().expect("the session names its case").to_string();
    let list = server.get(&format!("/api/v1/cases/{case}/recordings")).await;
    let rec = &list["recordings"][0];
    assert_eq!(rec["chain_head"].as_str(), Some(head.as_str()));
    assert_eq!(rec["status"], "final");
    let rec_id = rec["id"].as_str().unwrap().to_string();
    let timeline = server.get(&format!("/api/v1/cases/{case}/timeline")).await;
    assert_eq!(timeline["recordings"][0]["id"].as_str(), Some(rec_id.as_str()), "the case timeline lists it");
    let manifest = server.get(&format!("/api/v1/recordings/{rec_id}/manifest")).await;
    assert_eq!(manifest["chain_head"].as_str(), Some(head.as_str()));
    let link = server.get(&format!("/api/v1/recordings/{rec_id}/link?path=composite.mp4")).await;
    let url = link["url"].as_str().expect("a download link").to_string();
    let http = reqwest::Client::new();
    let got = http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), std::fs::read(&composite).unwrap().as_slice());
    let forged = url.replace("sig=", "sig=0");
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 403, "a forged link is refused");
    let audit = server.get(&format!("/api/v1/audit?session_id={session}")).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["recording.manifest", "recording.link", "recording.download"] {
        assert!(actions.contains(&a), "audit log lacks {a}: {actions:?}");
    }
}

fn video_size(path: &Path) -> String {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A camera published as simulcast (three encodings of one track) is one track in the recording,
/// taken from its best layer: 1280×720 from the first keyframe of that layer on, decoding cleanly,
/// while a subscriber on the same session starts on the smallest layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_camera_is_recorded_once_from_its_best_layer() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let layers = tokio::task::spawn_blocking(fixtures::vp8_simulcast).await.expect("simulcast clips");
    let server = TestServer::start().await;
    let session = server.create_session("mediation").await;
    let mediator = server.invite(&session, "调解员", "mediator").await;
    let party = server.invite(&session, "张三", "party").await;
    let opts = ClientOptions { name: "调解员".into(), simulcast: Some(layers), ..Default::default() };
    let a = TestClient::connect_with(&server.ws_url, &mediator.token, opts).await.unwrap();
    a.publish(Media::audio_video(VideoCodec::Vp8)).await.expect("the mediator publishes simulcast");
    let b = TestClient::connect(&server.ws_url, &party.token, "张三").await.unwrap();
    b.wait_media("video", &a.participant_id, "video", Duration::from_secs(20), |t| {
        t.frame_stats().complete_keyframes >= 1
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = server.media().stats().await.unwrap();
    assert_eq!(stats.simulcast_layers, 2, "the two layers above the first opened: {stats:?}");
    server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;

    let root = server.data_dir.join("recordings");
    let deadline = Instant::now() + Duration::from_secs(20);
    let dir = loop {
        if let Some(p) = find_manifest(&root) {
            let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap_or_default();
            if m["status"] == "final" {
                break p.parent().unwrap().to_path_buf();
            }
        }
        assert!(Instant::now() < deadline, "no final manifest under {}", root.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let m = qiao::record::verify_recording(&dir, None).expect("the recording verifies");
    assert_eq!(m.tracks.len(), 2, "one audio and one video track, not one per layer: {:#?}", m.tracks);
    let video = m.tracks.iter().find(|t| t["kind"] == "video").expect("the camera is recorded");
    let id = video["id"].as_str().unwrap();
    let segs: Vec<_> = m.segments.iter().filter(|s| s.track_id == id).collect();
    assert!(!segs.is_empty());
    for s in &segs {
        let p = dir.join(&s.path);
        let errors = decode_errors(&p);
        assert!(errors.trim().is_empty(), "{} does not decode cleanly: {errors}", s.path);
    }
    let last = dir.join(&segs.last().unwrap().path);
    assert_eq!(video_size(&last), "1280,720", "the recording keeps the best layer");
    // The subscriber started on the smallest layer.
    let first_key = b
        .with_received(&a.participant_id, "video", |t| {
            t.packets.iter().find_map(|p| common::simulcast::keyframe_size(&p.payload))
        })
        .flatten();
    assert_eq!(first_key, Some((320, 180)));
}

/// A server stopped during a session (a service restart) ends the session's recording before it
/// exits: the manifest is final and verifies, everyone still present leaves the recording with
/// cause `server_stopped`, and its files are in the store. Without this the recording stayed
/// live until the next start finalised it as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_every_recording_as_final() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let mut server = TestServer::start().await;
    let session = server.create_session("mediation").await;
    let mediator = server.invite(&session, "调解员", "mediator").await;
    let a =
        TestClient::join_and_publish(&server.ws_url, &mediator.token, "调解员", Media::audio_video(VideoCodec::Vp8))
            .await
            .expect("the mediator publishes");
    // The session runs for a while (more than one segment), then the service is stopped.
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.stop().await;
    drop(a);

    let root = server.data_dir.join("recordings");
    let path = find_manifest(&root).unwrap_or_else(|| panic!("no manifest stored under {}", root.display()));
    let dir = path.parent().expect("the recording's directory").to_path_buf();
    let manifest: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    assert_eq!(manifest["status"], "final", "{manifest:#}");
    let people = manifest["participants"].as_array().expect("participants");
    assert_eq!(people.len(), 1, "{manifest:#}");
    let last = people[0]["presence"].as_array().and_then(|a| a.last()).cloned().expect("presence");
    assert_eq!((last["event"].as_str(), last["cause"].as_str()), (Some("left"), Some("server_stopped")), "{last}");
    let m = qiao::record::verify_recording(&dir, None).expect("the recording verifies");
    assert_eq!(m.tracks.len(), 2, "audio and video: {:#?}", m.tracks);
    for s in &m.segments {
        let errors = decode_errors(&dir.join(&s.path));
        assert!(errors.trim().is_empty(), "{} does not decode cleanly: {errors}", s.path);
    }
    assert!(m.segments.len() >= 2, "segments of both tracks are stored: {:?}", m.segments.len());
}

/// The working manifest (`live.json`) of the session's one recording in the spool.
fn live_manifest(data_dir: &Path) -> Option<Value> {
    let dir = std::fs::read_dir(data_dir.join("spool")).ok()?.flatten().map(|e| e.path()).find(|p| p.is_dir())?;
    serde_json::from_slice(&std::fs::read(dir.join("live.json")).ok()?).ok()
}

/// A participant who leaves while the session goes on: the last segment of each of its tracks
/// is closed and listed then (not when the session ends, when a crash in between would have lost
/// it), and the working manifest marks the tracks ended, so crash recovery does not count them
/// as cut. The one who stays is not marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_who_leaves_has_its_last_segments_closed_and_its_tracks_marked_ended() {
    fixtures::prepare(VideoCodec::Vp8).await;
    let server = TestServer::start().await;
    let session = server.create_session("mediation").await;
    let mediator = server.invite(&session, "调解员", "mediator").await;
    let party = server.invite(&session, "张三", "party").await;
    let a =
        TestClient::join_and_publish(&server.ws_url, &mediator.token, "调解员", Media::audio_video(VideoCodec::Vp8))
            .await
            .expect("the mediator publishes");
    let b = TestClient::join_and_publish(&server.ws_url, &party.token, "张三", Media::audio_video(VideoCodec::Vp8))
        .await
        .expect("the party publishes");
    let party_id = b.participant_id.clone();
    let tracks_of = |m: &Value, pid: &str| -> Vec<Value> {
        m["tracks"].as_array().into_iter().flatten().filter(|t| t["participant_id"] == pid).cloned().collect()
    };
    let segments_of = |m: &Value, track: &Value| -> usize {
        m["segments"].as_array().into_iter().flatten().filter(|s| s["track_id"] == track["id"]).count()
    };
    // Wait until the working manifest lists a segment of both of the party's tracks.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        if let Some(m) = live_manifest(&server.data_dir) {
            let tracks = tracks_of(&m, &party_id);
            if tracks.len() == 2 && tracks.iter().all(|t| segments_of(&m, t) >= 1) {
                break tracks.iter().map(|t| (t["id"].clone(), segments_of(&m, t))).collect::<Vec<_>>();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the party's tracks never had a segment: {:?}",
            live_manifest(&server.data_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leaving = std::time::SystemTime::now();
    b.leave(None).await.expect("the party leaves");

    // Within a manifest rewrite (a second, as any change other than a segment), its tracks are
    // ended, each with one more segment: the one its leaving closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        if let Some(m) = live_manifest(&server.data_dir) {
            if tracks_of(&m, &party_id).iter().all(|t| t["ended"] == true) {
                break m;
            }
        }
        assert!(Instant::now() < deadline, "the party's tracks are not ended: {:?}", live_manifest(&server.data_dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let started = qiao::store::parse_rfc3339(m["started_at"].as_str().unwrap()).unwrap();
    let leave_ms = (time::OffsetDateTime::from(leaving) - started).whole_milliseconds() as i64;
    for (id, count) in &before {
        let t = tracks_of(&m, &party_id).into_iter().find(|t| t["id"] == *id).expect("still listed");
        assert!(segments_of(&m, &t) > *count, "track {id}: no segment closed at the leave ({count} before)");
        // The newest segment reaches the leave (its media stopped then), not an earlier timed cut.
        let end = m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["track_id"] == *id)
            .map(|s| s["start_ms"].as_i64().unwrap() + s["duration_ms"].as_i64().unwrap())
            .max()
            .unwrap();
        assert!(
            end >= leave_ms - 1000,
            "track {id}: its newest segment ends at {end} ms, the party left at {leave_ms} ms"
        );
    }
    let mediator_id = a.participant_id.clone();
    let staying = tracks_of(&m, &mediator_id);
    assert!(!staying.is_empty() && staying.iter().all(|t| t.get("ended").is_none()), "{staying:?}");

    server.post(&format!("/api/v1/sessions/{session}/close"), serde_json::json!({})).await;
    a.wait_for("recording_status final", Duration::from_secs(10), |m| {
        m["type"] == "recording_status" && m["state"] == "final"
    })
    .await
    .expect("the recording is final");
}
