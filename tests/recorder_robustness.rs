//! The recorder against what real networks and clients do, fed directly (no WebRTC, faster than
//! real time): a stream that starts without a keyframe, a lost packet, reordered packets, a
//! camera switch that changes both the SSRC and the resolution, and an audio track that goes
//! silent. Every segment must decode cleanly, the resolution change must start a new segment,
//! the recorder must ask for keyframes, and the manifest must verify.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{av, fixtures};
use qiao::core::UpTrackKey;
use qiao::record::recorder::{FinishCause, RecControl, RecInput, RecorderEvent};

fn ivf(dir: &Path, name: &str, size: &str, secs: u32) -> fixtures::Fixture {
    let path = dir.join(name);
    av::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc=size={size}:rate=15:duration={secs}"),
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-b:v",
        "300k",
        "-g",
        "15",
        "-f",
        "ivf",
        path.to_str().unwrap(),
    ]);
    fixtures::read_ivf(&path)
}

/// One VP8 frame as RTP payloads of at most 600 bytes (several packets per frame).
fn packets(frame: &Bytes) -> Vec<Bytes> {
    frame
        .chunks(600)
        .enumerate()
        .map(|(i, c)| {
            let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
            p.extend_from_slice(c);
            Bytes::from(p)
        })
        .collect()
}

#[test]
fn loss_reordering_a_late_keyframe_and_a_camera_switch_leave_clean_segments() {
    let dir = tempfile::tempdir().unwrap();
    let small = ivf(dir.path(), "small.ivf", "320x240", 4);
    let large = ivf(dir.path(), "large.ivf", "640x480", 4);
    let events: Arc<Mutex<Vec<RecorderEvent>>> = Arc::default();
    let ev = events.clone();
    let mut rec =
        common::recorder::start("ROBUST-1", Duration::from_secs(2), Box::new(move |e| ev.lock().unwrap().push(e)));
    let (rt, queue, keys, tap) = (&rec.rt, rec.queue.clone(), rec.keys.clone(), &mut rec.tap);
    let (v, a) = (UpTrackKey(1), UpTrackKey(2));
    let t0 = Instant::now();
    common::recorder::announce_camera_and_microphone(tap, v, a, t0);

    // Video: the small camera from its 5th frame (no keyframe first), one packet of frame 22
    // lost, packets of frame 30 swapped; then a switch to the large camera with a new SSRC,
    // new sequence numbers and a new RTP clock origin.
    let mut send = |up: UpTrackKey, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Bytes, at: Duration| {
        tap.offer(RecInput::Rtp { up, ssrc, seq, ts, marker, payload, at: t0 + at }, t0 + at);
    };
    let mut media_t = Duration::ZERO;
    let mut seq = 100u16;
    for (i, f) in small.frames.iter().enumerate().skip(4) {
        let ts = (media_t.as_secs_f64() * 90_000.0) as u32;
        let mut pkts: Vec<(u16, Bytes, bool)> = Vec::new();
        let ps = packets(&f.data);
        for (j, p) in ps.iter().enumerate() {
            pkts.push((seq, p.clone(), j + 1 == ps.len()));
            seq = seq.wrapping_add(1);
        }
        if i == 22 && pkts.len() > 1 {
            pkts.remove(0); // lost
        }
        if i == 30 && pkts.len() > 1 {
            pkts.swap(0, 1); // reordered
        }
        for (s, p, m) in pkts {
            send(v, 0x1111, s, ts, m, p, media_t);
        }
        media_t += f.duration;
    }
    let switch_at = media_t;
    let mut seq = 40_000u16;
    let origin = 3_000_000_000u32;
    for f in &large.frames {
        let ts = origin.wrapping_add(((media_t - switch_at).as_secs_f64() * 90_000.0) as u32);
        let ps = packets(&f.data);
        let n = ps.len();
        for (j, p) in ps.into_iter().enumerate() {
            send(v, 0x2222, seq, ts, j + 1 == n, p, media_t);
            seq = seq.wrapping_add(1);
        }
        media_t += f.duration;
    }
    // Audio: 2 s of Opus, 3.5 s of silence on the wire (a muted microphone), 2 s more.
    let opus = fixtures::opus();
    let mut at = Duration::ZERO;
    for (k, f) in opus.frames.iter().cycle().take(375).enumerate() {
        if !(100..275).contains(&k) {
            send(a, 0x3333, k as u16, (at.as_secs_f64() * 48_000.0) as u32, true, f.data.clone(), at);
        }
        at += f.duration;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tap.control(RecControl::Finish { reply: tx, cause: FinishCause::SessionClosed });
    let finished = rx.blocking_recv().expect("the recorder finishes");
    rt.block_on(queue.flush(Duration::from_secs(30))).unwrap();

    assert!(
        events.lock().unwrap().contains(&RecorderEvent::KeyframeNeeded(v)),
        "a stream without a keyframe (and a loss) makes the recorder ask for one"
    );
    let m = &finished.manifest;
    let rec_dir = rec.dir.path().join("recordings").join(&finished.prefix);
    qiao::record::verify_recording(&rec_dir, Some(&keys.public_key_b64())).expect("the recording verifies");
    let video_id = "t_a1";
    let mut widths = Vec::new();
    for s in &m.segments {
        let p = rec_dir.join(&s.path);
        av::decode_check(&p);
        if s.track_id == video_id {
            let probe = av::ffprobe_json(&p);
            widths.push(probe["streams"][0]["width"].as_u64().unwrap());
        }
    }
    assert!(widths.contains(&320) && widths.contains(&640), "segments of both resolutions: {widths:?}");
    let first_large = widths.iter().position(|w| *w == 640).unwrap();
    assert!(widths[first_large..].iter().all(|w| *w == 640), "no small frame after the switch: {widths:?}");
    // The silent microphone is marked as a gap of that track, not papered over.
    assert!(
        m.gaps.iter().any(|g| g["cause"] == "network" && g["track_id"] == "t_a2"),
        "the audio silence is a gap: {:?}",
        m.gaps
    );
}
