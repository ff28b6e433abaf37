//! Audio/video fixtures and checks built on the ffmpeg and ffprobe command-line tools: a
//! flash-and-beep clip whose events happen at known instants, recorder-like segment files on a
//! session timeline, and measurements of a finished file (streams, clean decoding, A/V offset).
//!
//! The flash/beep clip is also meant as input for WebRTC test clients (IVF and Ogg Opus
//! variants), so that a recording made through the server can be checked the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Frame size of the flash/beep video.
pub const FLASH_WIDTH: u32 = 320;
/// See [`FLASH_WIDTH`].
pub const FLASH_HEIGHT: u32 = 240;
/// Frame rate of the flash/beep video; a flash lasts two frames.
pub const FLASH_FPS: u32 = 30;
/// Length of a beep.
pub const BEEP_MS: u32 = 60;

/// The flash/beep clip in the forms the recorder and the test clients use.
#[derive(Debug, Clone)]
pub struct FlashBeep {
    /// VP8 in WebM, video only: black, a full-white flash for two frames at each event.
    pub video_webm: PathBuf,
    /// Opus in WebM, audio only (mono 48 kHz): silence, a 1 kHz beep of [`BEEP_MS`] at each event.
    pub audio_webm: PathBuf,
    /// Both streams in one WebM, for checking the clip itself.
    pub av_webm: PathBuf,
    /// The same VP8 stream in IVF (for `rtc::media::io::ivf_reader`).
    pub video_ivf: PathBuf,
    /// The same Opus stream in Ogg (for `rtc::media::io::ogg_reader`).
    pub audio_ogg: PathBuf,
    /// Clip time of every flash and beep: every full second from 1 s to the end.
    pub events_ms: Vec<u64>,
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `ffmpeg -v error -y` followed by `args`.
pub fn ffmpeg(args: &[&str]) -> Output {
    run(Command::new("ffmpeg").args(["-hide_banner", "-nostdin", "-v", "error", "-y"]).args(args))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Makes the flash/beep clip of `secs` seconds in `dir`: events at 1 s, 2 s, … (none at 0, so
/// every event has a dark, silent moment before it). Key frames every second.
pub fn flash_beep_fixture(dir: &Path, secs: u32) -> FlashBeep {
    assert!(secs >= 2, "at least one event");
    std::fs::create_dir_all(dir).unwrap();
    let video_webm = dir.join("flash.webm");
    let audio_ogg = dir.join("beep.ogg");
    let audio_webm = dir.join("beep.webm");
    let av_webm = dir.join("flash_beep.webm");
    let video_ivf = dir.join("flash.ivf");
    let fps = FLASH_FPS;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("color=c=black:s={FLASH_WIDTH}x{FLASH_HEIGHT}:r={fps}:d={secs},format=yuv420p"),
        "-vf",
        &format!("drawbox=x=0:y=0:w=iw:h=ih:t=fill:c=white:enable='lt(mod(n\\,{fps})\\,2)*gte(n\\,{fps})'"),
        "-c:v",
        "libvpx",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "400k",
        "-g",
        &fps.to_string(),
        "-keyint_min",
        &fps.to_string(),
        path_str(&video_webm),
    ]);
    let beep_s = f64::from(BEEP_MS) / 1000.0;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!(
            "aevalsrc='if(gte(t\\,1)*lt(mod(t\\,1)\\,{beep_s})\\,0.8*sin(2*PI*1000*t)\\,0)':s=48000:c=mono:d={secs}"
        ),
        "-c:a",
        "libopus",
        "-b:a",
        "64k",
        "-frame_duration",
        "20",
        // One packet per Ogg page: the test clients' Ogg reader returns whole pages as packets.
        "-page_duration",
        "20000",
        path_str(&audio_ogg),
    ]);
    ffmpeg(&["-i", path_str(&audio_ogg), "-c", "copy", path_str(&audio_webm)]);
    ffmpeg(&["-i", path_str(&video_webm), "-c", "copy", "-f", "ivf", path_str(&video_ivf)]);
    ffmpeg(&["-i", path_str(&video_webm), "-i", path_str(&audio_ogg), "-c", "copy", path_str(&av_webm)]);
    FlashBeep {
        video_webm,
        audio_webm,
        av_webm,
        video_ivf,
        audio_ogg,
        events_ms: (1..secs).map(|s| u64::from(s) * 1000).collect(),
    }
}

/// Cuts `src` (one stream, stream copy) into segment files as the recorder would write them:
/// timestamps on the session timeline, i.e. shifted by `offset_ms`, a new file at every
/// `segment_s` seconds of the clip (at the next key frame for video). Returns the files in order.
pub fn session_segments(src: &Path, dir: &Path, name: &str, offset_ms: u64, segment_s: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("webm").to_owned();
    let format = if ext == "mp4" { "mp4" } else { "webm" };
    let duration = probe_duration_s(src);
    let offset_s = offset_ms as f64 / 1000.0;
    // The segment muxer sees the shifted timestamps, so the split points are shifted too.
    let times: Vec<String> = (1..)
        .map(|k| f64::from(k * segment_s))
        .take_while(|t| *t < duration)
        .map(|t| format!("{:.3}", t + offset_s))
        .collect();
    let pattern = dir.join(format!("{name}-%03d.{ext}"));
    let mut args = vec!["-i", path_str(src), "-c", "copy", "-output_ts_offset"];
    let offset = format!("{offset_s:.3}");
    args.push(&offset);
    let joined = times.join(",");
    args.extend(["-f", "segment", "-segment_format", format]);
    if !times.is_empty() {
        args.extend(["-segment_times", &joined]);
    } else {
        args.extend(["-segment_time", "100000"]);
    }
    args.push(path_str(&pattern));
    ffmpeg(&args);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            file.starts_with(&format!("{name}-")) && file.ends_with(&format!(".{ext}"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no segments from {}", src.display());
    files
}

/// `ffprobe -show_format -show_streams` as JSON.
pub fn ffprobe_json(path: &Path) -> serde_json::Value {
    let out = run(Command::new("ffprobe").args([
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        path_str(path),
    ]));
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

fn probe_duration_s(path: &Path) -> f64 {
    let json = ffprobe_json(path);
    json["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration")
}

/// Decodes every stream of `path` and asserts FFmpeg reports no error at all. Video keeps the
/// container's millisecond times: FFmpeg's default re-timing on a guessed frame-rate grid makes
/// its own null muxer complain about variable-rate video (see `tests/recording.rs`).
pub fn decode_check(path: &Path) {
    let out = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        path_str(path),
        "-enc_time_base:v",
        "1:1000",
        "-f",
        "null",
        "-",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "decoding {} reported: {stderr}", path.display());
}

/// Width and height of the thumbnails [`video_thumbnails`] returns.
pub const THUMB_W: usize = 32;
/// See [`THUMB_W`].
pub const THUMB_H: usize = 18;

/// Every frame of the first video stream as a `THUMB_W × THUMB_H` grayscale thumbnail (full
/// range), with its presentation time in ms.
pub fn video_thumbnails(path: &Path) -> Vec<(f64, Vec<u8>)> {
    let raw = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        path_str(path),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-vf",
        &format!("scale={THUMB_W}:{THUMB_H},format=gray"),
        "-f",
        "rawvideo",
        "-",
    ]))
    .stdout;
    let times = run(Command::new("ffprobe").args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "frame=best_effort_timestamp_time",
        "-of",
        "csv=p=0",
        path_str(path),
    ]))
    .stdout;
    let times: Vec<f64> = String::from_utf8_lossy(&times)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    let frames: Vec<Vec<u8>> = raw.chunks_exact(THUMB_W * THUMB_H).map(<[u8]>::to_vec).collect();
    assert_eq!(frames.len(), times.len(), "one time per decoded frame of {}", path.display());
    times.into_iter().zip(frames).collect()
}

/// One frame (the first at or after `at_s`) as a grayscale thumbnail.
pub fn thumbnail_at(path: &Path, at_s: f64) -> Vec<u8> {
    let raw = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-ss",
        &format!("{at_s:.3}"),
        "-i",
        path_str(path),
        "-frames:v",
        "1",
        "-vf",
        &format!("scale={THUMB_W}:{THUMB_H},format=gray"),
        "-f",
        "rawvideo",
        "-",
    ]))
    .stdout;
    assert_eq!(raw.len(), THUMB_W * THUMB_H, "one thumbnail from {} at {at_s} s", path.display());
    raw
}

/// Flash instants (ms): a frame where many thumbnail pixels brighten sharply and that is dark
/// again within four frames (a tile appearing and staying is not a flash).
pub fn flash_times_ms(frames: &[(f64, Vec<u8>)]) -> Vec<f64> {
    const JUMP: i32 = 60;
    const MIN_PIXELS: usize = 12;
    let count = |a: &[u8], b: &[u8], up: bool| {
        a.iter()
            .zip(b)
            .filter(|(&x, &y)| if up { i32::from(y) - i32::from(x) > JUMP } else { i32::from(x) - i32::from(y) > JUMP })
            .count()
    };
    let mut flashes = Vec::new();
    let mut i = 1;
    while i < frames.len() {
        if count(&frames[i - 1].1, &frames[i].1, true) >= MIN_PIXELS {
            let falls =
                (i + 1..frames.len().min(i + 5)).any(|j| count(&frames[j - 1].1, &frames[j].1, false) >= MIN_PIXELS);
            if falls {
                flashes.push(frames[i].0);
                i += 5;
                continue;
            }
        }
        i += 1;
    }
    flashes
}

/// Beep onsets (ms) in the first audio stream: the first 5 ms window whose RMS exceeds 0.15 of
/// full scale after at least 100 ms below 0.08.
pub fn beep_onsets_ms(path: &Path) -> Vec<f64> {
    const RATE: usize = 8000;
    const WINDOW: usize = RATE / 200; // 5 ms
    let start_s: f64 = {
        let out = run(Command::new("ffprobe").args([
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=start_time",
            "-of",
            "csv=p=0",
            path_str(path),
        ]))
        .stdout;
        String::from_utf8_lossy(&out).trim().trim_end_matches(',').parse().unwrap_or(0.0)
    };
    let raw = run(Command::new("ffmpeg").args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-i",
        path_str(path),
        "-map",
        "0:a:0",
        "-ac",
        "1",
        "-ar",
        &RATE.to_string(),
        "-f",
        "s16le",
        "-",
    ]))
    .stdout;
    let samples: Vec<f64> =
        raw.chunks_exact(2).map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    let mut onsets = Vec::new();
    let mut quiet_windows = 0usize;
    for (w, chunk) in samples.chunks(WINDOW).enumerate() {
        let rms = (chunk.iter().map(|s| s * s).sum::<f64>() / chunk.len() as f64).sqrt();
        if rms > 0.15 && quiet_windows >= 20 {
            onsets.push(start_s * 1000.0 + (w * WINDOW) as f64 * 1000.0 / RATE as f64);
        }
        if rms < 0.08 {
            quiet_windows += 1;
        } else {
            quiet_windows = 0;
        }
    }
    onsets
}

/// For every flash in the video, the nearest beep onset within 500 ms: audio minus video, ms.
/// Flashes without a beep nearby are left out (the caller checks the count).
pub fn av_sync_offsets_ms(path: &Path) -> Vec<f64> {
    let flashes = flash_times_ms(&video_thumbnails(path));
    let beeps = beep_onsets_ms(path);
    flashes
        .iter()
        .filter_map(|&v| {
            beeps.iter().map(|&a| a - v).filter(|d| d.abs() <= 500.0).min_by(|x, y| x.abs().total_cmp(&y.abs()))
        })
        .collect()
}

/// A fixture file under `target/test-fixtures/`, made by `make(path)` on first use. Written under
/// a unique temporary name and renamed into place, so parallel test binaries never see half a
/// file. Bump the name when the command that makes it changes.
pub fn cached_fixture(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-fixtures");
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap();
    // The temporary name keeps the extension: ffmpeg picks the container from it.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = dir.join(format!("tmp-{}-{nanos}-{name}", std::process::id()));
    make(&tmp);
    std::fs::rename(&tmp, &path).unwrap();
    path
}
