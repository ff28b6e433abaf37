//! The composite rendition from recorder-like segment files on a session timeline: participants
//! joining late, leaving, with a hole and a resolution change, one with H.264 in MP4, one with
//! audio only. Checked with ffprobe/ffmpeg: the streams, the exact length, clean decoding, every
//! tile dark or lit when it should be, and audio/video sync within 80 ms on every flash of the
//! flash/beep participant. Frame grabs for a human eye go to `target/test-artifacts/composite/`.

mod common;

use common::av::{self, FlashBeep, THUMB_H, THUMB_W};
use qiao::record::composite::{render, CompositeInput, Tile};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 2026-11-21 01:00:00 UTC, i.e. 09:00:00 in Beijing.
const STARTED_AT_UNIX_MS: i64 = 1_795_222_800_000;

/// target/test-artifacts/composite/<name>, emptied: a stale frame grab must not pass for a new one.
fn artifacts(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/composite").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A VP8 WebM of `testsrc2` at `size` lasting `secs`.
fn vp8_clip(path: &Path, size: &str, secs: u32) {
    vp8_clip_bitrate(path, size, secs, "600k");
}

/// An Opus WebM of a quiet sine (far below the beep detector's threshold).
fn opus_tone(path: &Path, hz: u32, secs: u32) {
    av::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("aevalsrc='0.02*sin(2*PI*{hz}*t)':s=48000:c=mono:d={secs}"),
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        s(path),
    ]);
}

fn stream<'a>(probe: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    let streams = probe["streams"].as_array().unwrap();
    let mut of_kind = streams.iter().filter(|st| st["codec_type"] == kind);
    let found = of_kind.next().unwrap_or_else(|| panic!("no {kind} stream"));
    assert!(of_kind.next().is_none(), "one {kind} stream");
    found
}

fn seconds(v: &serde_json::Value) -> f64 {
    v.as_str().and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("a duration: {v}"))
}

/// What a tile shows at the centre of its 2 × 2 grid cell (tiles 0 1 / 2 3 under the header).
#[derive(Debug, PartialEq)]
enum Shows {
    /// The dark tile of a participant without video at that instant.
    Dark,
    /// The black frames of the flash/beep clip between flashes.
    Black,
    /// A test pattern.
    Picture,
}

fn tile_shows(thumb: &[u8], tile: usize) -> Shows {
    // Tile centres in a 1280×720 frame: x 321 / 959, y 223 / 553; thumbnails are 40 px a pixel.
    let (cx, cy) = ([8usize, 23][tile % 2], [5usize, 13][tile / 2]);
    assert_eq!((THUMB_W, THUMB_H), (32, 18));
    let block: Vec<u8> =
        (cy - 1..=cy + 1).flat_map(|y| (cx - 2..=cx + 2).map(move |x| thumb[y * THUMB_W + x])).collect();
    let (min, max) = (*block.iter().min().unwrap(), *block.iter().max().unwrap());
    if max - min > 12 {
        Shows::Picture
    } else if (18..=40).contains(&min) && max <= 40 {
        Shows::Dark
    } else if max <= 12 {
        Shows::Black
    } else {
        panic!("tile {tile}: unexpected block {block:?}")
    }
}

struct Session {
    input: CompositeInput,
    flash: FlashBeep,
    /// Timeline position of the flash/beep clip's start.
    flash_offset_ms: u64,
}

/// Four participants on a 16 s session:
/// 0 张三: the flash/beep clip (VP8 + Opus) from 2.3 s to 14.3 s, in 4 s segments;
/// 1 李四: VP8 640×360 + tone from 0 to 6 s, a hole, then VP8 480×270 + tone from 9 to 15 s;
/// 2 王五: H.264 640×480 in MP4 + tone from 5 to 11 s;
/// 3 赵六: audio only, from 3 to 16 s.
fn session(dir: &Path) -> Session {
    let seg = dir.join("segments");
    let flash = av::flash_beep_fixture(&dir.join("flash"), 12);
    let flash_offset_ms = 2300;
    let a_video = av::session_segments(&flash.video_webm, &seg, "a-video", flash_offset_ms, 4);
    let a_audio = av::session_segments(&flash.audio_webm, &seg, "a-audio", flash_offset_ms, 4);
    assert!(a_video.len() >= 3, "the flash clip is cut into segments: {a_video:?}");

    let (b1, b2, b_tone) = (dir.join("b1.webm"), dir.join("b2.webm"), dir.join("b-tone.webm"));
    vp8_clip(&b1, "640x360", 6);
    vp8_clip(&b2, "480x270", 6);
    opus_tone(&b_tone, 440, 6);
    let mut b_video = av::session_segments(&b1, &seg, "b-video-1", 0, 4);
    b_video.extend(av::session_segments(&b2, &seg, "b-video-2", 9000, 4));
    let mut b_audio = av::session_segments(&b_tone, &seg, "b-audio-1", 0, 4);
    b_audio.extend(av::session_segments(&b_tone, &seg, "b-audio-2", 9000, 4));

    let (c, c_tone) = (dir.join("c.mp4"), dir.join("c-tone.webm"));
    av::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=s=640x480:r=25:d=6",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        s(&c),
    ]);
    opus_tone(&c_tone, 300, 6);
    let c_video = av::session_segments(&c, &seg, "c-video", 5000, 4);
    let c_audio = av::session_segments(&c_tone, &seg, "c-audio", 5000, 4);

    let d_tone = dir.join("d-tone.webm");
    opus_tone(&d_tone, 600, 13);
    let d_audio = av::session_segments(&d_tone, &seg, "d-audio", 3000, 4);

    let input = CompositeInput {
        case_label: "(2024)冀0925民初1234号".into(),
        started_at_unix_ms: STARTED_AT_UNIX_MS,
        duration_ms: 16_000,
        tiles: vec![
            Tile { label: "张三 · 当事人".into(), video: a_video, audio: a_audio },
            Tile { label: "李四 · 调解员".into(), video: b_video, audio: b_audio },
            Tile { label: "王五 · 代理人".into(), video: c_video, audio: c_audio },
            Tile { label: "赵六 · 书记员".into(), video: vec![], audio: d_audio },
        ],
    };
    Session { input, flash, flash_offset_ms }
}

#[test]
fn flash_beep_fixture_is_in_sync_with_itself() {
    let dir = tempfile::tempdir().unwrap();
    let flash = av::flash_beep_fixture(dir.path(), 5);
    for file in [&flash.video_webm, &flash.audio_webm, &flash.av_webm, &flash.video_ivf, &flash.audio_ogg] {
        av::decode_check(file);
    }
    let offsets = av::av_sync_offsets_ms(&flash.av_webm);
    assert_eq!(offsets.len(), flash.events_ms.len(), "one flash and one beep per event: {offsets:?}");
    assert!(offsets.iter().all(|o| o.abs() <= 20.0), "the clip itself is in sync: {offsets:?}");
    let flashes = av::flash_times_ms(&av::video_thumbnails(&flash.video_webm));
    let expected: Vec<f64> = flash.events_ms.iter().map(|&e| e as f64).collect();
    assert_eq!(flashes.len(), expected.len());
    assert!(flashes.iter().zip(&expected).all(|(f, e)| (f - e).abs() < 1.0), "{flashes:?}");
}

#[test]
fn composite_places_every_track_on_the_session_timeline() {
    let tmp = tempfile::tempdir().unwrap();
    let session = session(tmp.path());
    let out = tmp.path().join("composite.mp4");
    let stats = render(&session.input, &out).expect("render");
    let artifacts = artifacts("session");
    std::fs::copy(&out, artifacts.join("composite.mp4")).unwrap();
    println!("rendered 16 s in {:?}: {:.2}× real time", stats.wall, 16.0 / stats.wall.as_secs_f64());
    assert_eq!(stats.frames, 400);
    assert_eq!(stats.duration_ms, 16_000);

    // One H.264 and one AAC stream, both lasting the session (within 1 %), playable from the start.
    let probe = av::ffprobe_json(&out);
    let video = stream(&probe, "video");
    let audio = stream(&probe, "audio");
    assert_eq!(probe["streams"].as_array().unwrap().len(), 2);
    assert_eq!((video["codec_name"].as_str(), video["pix_fmt"].as_str()), (Some("h264"), Some("yuv420p")));
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(1280), Some(720)));
    assert_eq!(video["avg_frame_rate"].as_str(), Some("25/1"));
    assert_eq!(audio["codec_name"].as_str(), Some("aac"));
    assert_eq!((audio["sample_rate"].as_str(), audio["channels"].as_u64()), (Some("48000"), Some(2)));
    for (what, d) in [
        ("file", seconds(&probe["format"]["duration"])),
        ("video", seconds(&video["duration"])),
        ("audio", seconds(&audio["duration"])),
    ] {
        assert!((d - 16.0).abs() <= 0.16, "{what} lasts {d} s, not 16 s");
    }
    let head = std::fs::read(&out).unwrap();
    let moov = head.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = head.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "+faststart: the index comes before the media");
    av::decode_check(&out);

    // Every flash of 张三 (2.3 s + 1 s, 2 s, …) has its beep within 80 ms.
    let offsets = av::av_sync_offsets_ms(&out);
    let flashes = av::flash_times_ms(&av::video_thumbnails(&out));
    println!("flashes at {flashes:?} ms; audio − video offsets {offsets:?} ms");
    assert_eq!(flashes.len(), session.flash.events_ms.len(), "every flash is seen: {flashes:?}");
    for (flash, event) in flashes.iter().zip(&session.flash.events_ms) {
        let at = (event + session.flash_offset_ms) as f64;
        assert!((flash - at).abs() <= 80.0, "flash at {flash} ms, expected on the timeline at {at} ms");
    }
    assert_eq!(offsets.len(), session.flash.events_ms.len(), "every flash has its beep: {offsets:?}");
    assert!(offsets.iter().all(|o| o.abs() <= 80.0), "A/V offsets within 80 ms: {offsets:?}");

    // Who is on screen when.
    use Shows::{Black, Dark, Picture};
    for (at, expected) in [
        (1.0, [Dark, Picture, Dark, Dark]),      // 张三 and 王五 not there yet
        (3.0, [Black, Picture, Dark, Dark]),     // 张三 joined at 2.3 s
        (7.5, [Black, Dark, Picture, Dark]),     // 李四 in a hole from 6 to 9 s; 王五 joined at 5 s
        (10.0, [Black, Picture, Picture, Dark]), // 李四 back at another resolution
        (12.0, [Black, Picture, Dark, Dark]),    // 王五 left at 11 s
        (14.8, [Dark, Picture, Dark, Dark]),     // 张三 left at 14.3 s
        (15.6, [Dark, Dark, Dark, Dark]),        // 李四 left at 15 s
    ] {
        let thumb = av::thumbnail_at(&out, at);
        let shows: Vec<Shows> = (0..4).map(|tile| tile_shows(&thumb, tile)).collect();
        assert_eq!(shows, expected, "at {at} s");
    }

    // Frame grabs for a human eye: labels, case number and the Beijing time (09:00:03 at 3 s).
    for at in ["3", "10"] {
        let png = artifacts.join(format!("frame-{at}s.png"));
        av::ffmpeg(&["-ss", at, "-i", s(&out), "-frames:v", "1", s(&png)]);
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    }
}

#[test]
fn composite_render_speed_four_participants_720p() {
    const SECS: u32 = 20;
    let video = av::cached_fixture("composite-720p30-20s-v1.webm", |p| vp8_clip_bitrate(p, "1280x720", SECS, "1500k"));
    let audio = av::cached_fixture("composite-tone-20s-v1.webm", |p| opus_tone(p, 440, SECS));
    let tile = |name: &str| Tile { label: name.into(), video: vec![video.clone()], audio: vec![audio.clone()] };
    let input = CompositeInput {
        case_label: "(2024)冀0925民初1234号".into(),
        started_at_unix_ms: STARTED_AT_UNIX_MS,
        duration_ms: u64::from(SECS) * 1000,
        tiles: vec![tile("张三 · 当事人"), tile("李四 · 被告"), tile("王五 · 调解员"), tile("赵六 · 书记员")],
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("speed.mp4");
    let cpu_before = process_cpu_seconds();
    let stats = render(&input, &out).expect("render");
    let cpu = process_cpu_seconds() - cpu_before;
    let speed = f64::from(SECS) / stats.wall.as_secs_f64();
    println!(
        "composite render speed: 4 × VP8 1280×720 30 fps + Opus, {SECS} s → 1280×720 25 fps H.264 + AAC \
         in {:.2} s = {speed:.2}× real time ({} frames); CPU {cpu:.1} s (all threads) = {:.2} CPU-s per \
         session second; {} cores, load average {} (the figure is only meaningful with this test run alone)",
        stats.wall.as_secs_f64(),
        stats.frames,
        cpu / f64::from(SECS),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?"),
    );
    assert_eq!(stats.frames, u64::from(SECS * 25));
    let probe = av::ffprobe_json(&out);
    assert!((seconds(&probe["format"]["duration"]) - f64::from(SECS)).abs() <= f64::from(SECS) * 0.01);
    // Sanity bound only (the machine is shared): a rendition must not take 5× the session.
    assert!(stats.wall < Duration::from_secs(u64::from(SECS) * 5), "{:?}", stats.wall);
}

/// User + system CPU time of this process so far (all threads), from /proc (0 elsewhere).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn vp8_clip_bitrate(path: &Path, size: &str, secs: u32, bitrate: &str) {
    av::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=s={size}:r=30:d={secs}"),
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        bitrate,
        "-g",
        "60",
        s(path),
    ]);
}

#[test]
fn composite_without_any_media_is_labelled_dark_tiles_and_silence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("empty.mp4");
    let tile = |name: &str| Tile { label: name.into(), video: vec![], audio: vec![] };
    let input = CompositeInput {
        case_label: "(2024)冀0925民初1234号".into(),
        started_at_unix_ms: STARTED_AT_UNIX_MS,
        duration_ms: 2_500,
        tiles: vec![tile("张三 · 当事人"), tile("李四 · 被告")],
    };
    let stats = render(&input, &out).expect("render");
    assert_eq!((stats.frames, stats.duration_ms), (63, 2_520));
    let probe = av::ffprobe_json(&out);
    assert_eq!(probe["streams"].as_array().unwrap().len(), 2);
    assert!((seconds(&stream(&probe, "audio")["duration"]) - 2.5).abs() <= 0.025);
    assert!((seconds(&stream(&probe, "video")["duration"]) - 2.5).abs() <= 0.025);
    av::decode_check(&out);
    assert!(av::beep_onsets_ms(&out).is_empty());
}

#[test]
fn composite_names_a_missing_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.webm");
    let input = CompositeInput {
        case_label: "x".into(),
        started_at_unix_ms: STARTED_AT_UNIX_MS,
        duration_ms: 1_000,
        tiles: vec![Tile { label: "张三".into(), video: vec![missing.clone()], audio: vec![] }],
    };
    let out = tmp.path().join("out.mp4");
    let err = render(&input, &out).expect_err("a missing segment fails the rendition");
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
    assert!(!out.exists(), "nothing is written");
    let zero = CompositeInput { duration_ms: 0, ..input };
    assert!(render(&zero, &tmp.path().join("out.mp4")).is_err());
}
