//! Media fixtures made with the ffmpeg CLI at test time and cached under
//! `target/test-fixtures/`, plus in-memory readers built on `rtc::media::io`.
//!
//! Files are written under a unique temporary name and renamed into place, so test binaries
//! running in parallel never see a half-written file (rename is atomic on one filesystem; the
//! loser of a race simply replaces an identical file).

use bytes::Bytes;
use rtc::media::io::h26x_reader::H26xSampleReader;
use rtc::media::io::ivf_reader::IVFReader;
use rtc::media::io::ogg_reader::OggReader;
use std::collections::HashMap;
use std::io::{BufReader, Cursor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Length of every generated clip. The client loops clips, so this only bounds generation time.
pub const CLIP_SECONDS: u32 = 6;
pub const VIDEO_FPS: u32 = 30;
/// A key frame every this many frames (both codecs).
pub const KEYFRAME_INTERVAL: u32 = 30;
pub const VIDEO_WIDTH: u32 = 320;
pub const VIDEO_HEIGHT: u32 = 240;

/// Bump when an ffmpeg command line changes, so stale cached files are not reused.
const FIXTURE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    /// MIME type as used by `rtc` and in the signalling `track.codec` field.
    pub fn mime(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        }
    }
    /// Encoding name in SDP `a=rtpmap`.
    pub fn sdp_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

/// One unit handed to `TrackLocalStaticSample::write_sample`.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    pub data: Bytes,
    /// How far the RTP clock advances after this sample (zero for H.264 SPS/PPS/SEI, which share
    /// the timestamp of the slice that follows them).
    pub duration: Duration,
    /// VP8 key frame / H.264 IDR slice or a parameter set preceding one.
    pub keyframe: bool,
}

#[derive(Debug)]
pub struct Fixture {
    pub path: PathBuf,
    pub frames: Vec<MediaFrame>,
}

impl Fixture {
    pub fn total_duration(&self) -> Duration {
        self.frames.iter().map(|f| f.duration).sum()
    }
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("test-fixtures")
}

/// Path of the VP8 IVF clip, generating it if needed.
pub fn vp8_ivf_path() -> PathBuf {
    ensure_fixture(
        &format!("vp8-{VIDEO_WIDTH}x{VIDEO_HEIGHT}-{VIDEO_FPS}fps-{CLIP_SECONDS}s-v{FIXTURE_VERSION}.ivf"),
        |out| {
            let mut c = Command::new("ffmpeg");
            c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
                .args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc=size={VIDEO_WIDTH}x{VIDEO_HEIGHT}:rate={VIDEO_FPS}"))
                .args(["-t", &CLIP_SECONDS.to_string()])
                .args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
                .args(["-b:v", "500k", "-g", &KEYFRAME_INTERVAL.to_string()])
                .args(["-keyint_min", &KEYFRAME_INTERVAL.to_string()])
                .args(["-auto-alt-ref", "0", "-lag-in-frames", "0", "-pix_fmt", "yuv420p"])
                .args(["-f", "ivf"])
                .arg(out);
            c
        },
    )
}

/// Path of a VP8 clip encoded at a constant `kbps` for load benchmarks (`width`×`height`,
/// VIDEO_FPS, a key frame every KEYFRAME_INTERVAL frames, CLIP_SECONDS long).
///
/// The default clip (plain `testsrc`) is too easy for libvpx to fill 1 Mbps: it undershoots to
/// about 60 % of the target. Here the source is `testsrc2` with per-frame noise, the rate control
/// is CBR with undershoot disabled, and key frames are capped at 6× an average frame
/// (`max-intra-rate 600`, as real-time encoders do), so every second of the loop carries close to
/// `kbps` — without this the first key frame alone is ~1.4 Mbit and the loop bursts every 6 s.
pub fn vp8_cbr_ivf_path(width: u32, height: u32, kbps: u32) -> PathBuf {
    ensure_fixture(
        &format!("vp8-cbr{kbps}k-{width}x{height}-{VIDEO_FPS}fps-{CLIP_SECONDS}s-v{FIXTURE_VERSION}.ivf"),
        |out| vp8_cbr_command(out, width, height, kbps, KEYFRAME_INTERVAL, None),
    )
}

/// Path of a VP8 clip with three temporal layers, as one simulcast encoding of Chromium's camera
/// (libvpx temporal layering mode 3, the L1T3 pattern TID 0, 2, 1, 2; see
/// `simulcast::tid_of`): otherwise made like [`vp8_cbr_ivf_path`]. The base layer carries 40 % of
/// `kbps`, the first two layers 60 %. The key frame interval and clip length are multiples of 4,
/// so the pattern runs on across the loop.
pub fn vp8_temporal_ivf_path(width: u32, height: u32, kbps: u32) -> PathBuf {
    ensure_fixture(
        &format!("vp8-l1t3-{kbps}k-{width}x{height}-{VIDEO_FPS}fps-{CLIP_SECONDS}s-v{FIXTURE_VERSION}.ivf"),
        |out| {
            let layers = format!(
                "ts_number_layers=3:ts_target_bitrate={},{},{kbps}:ts_rate_decimator=4,2,1:\
                 ts_periodicity=4:ts_layer_id=0,2,1,2:ts_layering_mode=3",
                kbps * 4 / 10,
                kbps * 6 / 10
            );
            vp8_cbr_command(out, width, height, kbps, KEYFRAME_INTERVAL * 2, Some(&layers))
        },
    )
}

/// The ffmpeg command of the constant-rate clips; `temporal`: libvpx's `-ts-parameters`.
fn vp8_cbr_command(out: &Path, width: u32, height: u32, kbps: u32, keyint: u32, temporal: Option<&str>) -> Command {
    let rate = format!("{kbps}k");
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={width}x{height}:rate={VIDEO_FPS},noise=alls=12:allf=t"))
        .args(["-t", &CLIP_SECONDS.to_string()])
        .args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
        .args(["-b:v", &rate, "-minrate", &rate, "-maxrate", &rate])
        .args(["-undershoot-pct", "0", "-max-intra-rate", "600"])
        .args(["-g", &keyint.to_string()])
        .args(["-keyint_min", &keyint.to_string()])
        .args(["-auto-alt-ref", "0", "-lag-in-frames", "0", "-pix_fmt", "yuv420p"]);
    if let Some(t) = temporal {
        c.args(["-ts-parameters", t]);
    }
    c.args(["-f", "ivf"]).arg(out);
    c
}

/// The three encodings a simulcast camera sends (lowest first): 320×180 at 150 kbps, 640×360 at
/// 500 kbps and 1280×720 at 1.2 Mbps, each with three temporal layers. Blocking.
pub fn vp8_simulcast() -> Vec<Arc<Fixture>> {
    static LAYERS: OnceLock<Vec<Arc<Fixture>>> = OnceLock::new();
    LAYERS
        .get_or_init(|| {
            [(320, 180, 150), (640, 360, 500), (1280, 720, 1200)]
                .into_iter()
                .map(|(w, h, kbps)| Arc::new(read_ivf(&vp8_temporal_ivf_path(w, h, kbps))))
                .collect()
        })
        .clone()
}

/// Path of the Opus-in-Ogg clip (48 kHz stereo, 20 ms frames, one Opus packet per Ogg page).
pub fn opus_ogg_path() -> PathBuf {
    ensure_fixture(&format!("opus-48k-20ms-{CLIP_SECONDS}s-v{FIXTURE_VERSION}.ogg"), |out| {
        let mut c = Command::new("ffmpeg");
        c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &CLIP_SECONDS.to_string()])
            .args(["-c:a", "libopus", "-b:a", "48k", "-ac", "2", "-ar", "48000"])
            .args(["-frame_duration", "20", "-application", "audio"])
            // One packet per page: the rtc OggReader returns whole pages.
            .args(["-page_duration", "20000"])
            .args(["-f", "ogg"])
            .arg(out);
        c
    })
}

/// Path of the H.264 Annex-B clip (baseline, no B-frames, one slice per frame, in-band SPS/PPS
/// before every IDR).
pub fn h264_annexb_path() -> PathBuf {
    ensure_fixture(
        &format!("h264-baseline-{VIDEO_WIDTH}x{VIDEO_HEIGHT}-{VIDEO_FPS}fps-{CLIP_SECONDS}s-v{FIXTURE_VERSION}.h264"),
        |out| {
            let mut c = Command::new("ffmpeg");
            c.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
                .args(["-f", "lavfi", "-i"])
                .arg(format!("testsrc=size={VIDEO_WIDTH}x{VIDEO_HEIGHT}:rate={VIDEO_FPS}"))
                .args(["-t", &CLIP_SECONDS.to_string()])
                .args(["-c:v", "libx264", "-profile:v", "baseline", "-bf", "0"])
                .args(["-g", &KEYFRAME_INTERVAL.to_string()])
                .args(["-keyint_min", &KEYFRAME_INTERVAL.to_string(), "-sc_threshold", "0"])
                // One thread → one slice per frame (sliced threads would split frames, and the
                // rtc H26xSampleReader times every slice as a frame).
                .args(["-threads", "1", "-preset", "veryfast", "-b:v", "500k"])
                .args(["-pix_fmt", "yuv420p", "-bsf:v", "h264_mp4toannexb"])
                .args(["-f", "h264"])
                .arg(out);
            c
        },
    )
}

fn ensure_fixture(name: &str, make: impl FnOnce(&Path) -> Command) -> PathBuf {
    let dir = fixture_dir();
    let path = dir.join(name);
    if std::fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false) {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create fixture dir {}: {e}", dir.display()));
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    // Keep the real extension last: ffmpeg picks nothing from it (we pass -f) but it keeps the
    // temp file recognisable.
    let tmp = dir.join(format!(".{name}.{}.{}.tmp.{ext}", std::process::id(), rand::random::<u32>()));
    let mut cmd = make(&tmp);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run ffmpeg ({e}); it is required to generate {}", path.display()));
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "ffmpeg failed generating {} ({}):\n{}\ncommand: {:?}",
            path.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            cmd
        );
    }
    std::fs::rename(&tmp, &path)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), path.display()));
    path
}

/// Duration of `units` at `den/num` per second, rounded *up* to the nanosecond, so that
/// `TrackLocalStaticSample` (which truncates `duration × clock_rate`) lands on the exact tick count
/// (e.g. 1/30 s → 3000 ticks at 90 kHz, not 2999).
pub fn exact_duration(units: u64, num: u64, den: u64) -> Duration {
    let nanos = (units as u128 * num as u128 * 1_000_000_000u128).div_ceil(den as u128);
    Duration::from_nanos(nanos as u64)
}

// ───────────────────────────── readers ─────────────────────────────

/// Reads every frame of an IVF (VP8) file. Durations come from the frame timestamps and the
/// file's timebase; the last frame repeats the previous duration.
pub fn read_ivf(path: &Path) -> Fixture {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (mut reader, header) = IVFReader::new(BufReader::new(Cursor::new(data)))
        .unwrap_or_else(|e| panic!("{}: not an IVF file: {e}", path.display()));
    assert_eq!(&header.four_cc, b"VP80", "{}: not VP8", path.display());
    let (num, den) = (header.timebase_numerator.max(1) as u64, header.timebase_denominator.max(1) as u64);
    let mut raw: Vec<(Bytes, u64)> = Vec::new();
    while let Ok((frame, fh)) = reader.parse_next_frame() {
        raw.push((frame.freeze(), fh.timestamp));
    }
    assert!(!raw.is_empty(), "{}: no frames", path.display());
    let mut frames = Vec::with_capacity(raw.len());
    let mut last_units = 1u64;
    for i in 0..raw.len() {
        let units = if i + 1 < raw.len() { raw[i + 1].1.saturating_sub(raw[i].1).max(1) } else { last_units };
        last_units = units;
        let data = raw[i].0.clone();
        let keyframe = !data.is_empty() && data[0] & 0x01 == 0;
        frames.push(MediaFrame { data, duration: exact_duration(units, num, den), keyframe });
    }
    Fixture { path: path.to_path_buf(), frames }
}

/// Reads every Opus packet of an Ogg file (one packet per page, as generated above). The
/// OpusHead page is consumed by `OggReader::new`; the OpusTags page is skipped. Durations come
/// from the Opus TOC byte (RFC 6716 §3.1), not the granule positions, so the pre-skip and
/// end-trimming of the first and last pages do not distort pacing.
pub fn read_ogg_opus(path: &Path) -> Fixture {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (mut reader, _header) = OggReader::new(BufReader::new(Cursor::new(data)), true)
        .unwrap_or_else(|e| panic!("{}: not an Ogg/Opus file: {e}", path.display()));
    let mut frames = Vec::new();
    while let Ok((page, _ph)) = reader.parse_next_page() {
        if page.starts_with(b"OpusTags") || page.starts_with(b"OpusHead") || page.is_empty() {
            continue;
        }
        let samples = opus_packet_samples(&page).unwrap_or_else(|| {
            panic!(
                "{}: page payload is not one Opus packet (TOC {:#04x}, {} bytes)",
                path.display(),
                page[0],
                page.len()
            )
        });
        frames.push(MediaFrame {
            data: page.freeze(),
            duration: exact_duration(samples as u64, 1, 48_000),
            keyframe: true,
        });
    }
    assert!(!frames.is_empty(), "{}: no Opus packets", path.display());
    Fixture { path: path.to_path_buf(), frames }
}

/// Samples at 48 kHz in one Opus packet, from its TOC byte (and frame count byte for code 3).
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame size in samples at 48 kHz, by configuration number (RFC 6716 Table 2).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let count = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3f) as u32,
    };
    if count == 0 {
        return None;
    }
    Some(frame * count)
}

/// Reads an H.264 Annex-B file as `rtc`'s sample reader yields it: one NAL unit per sample
/// (without start code). SPS/PPS/SEI/AUD get zero duration (they share the next slice's
/// timestamp); every slice advances the clock by one frame (1/30 s).
pub fn read_h264(path: &Path) -> Fixture {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut reader = H26xSampleReader::new(BufReader::new(Cursor::new(data)), 1_048_576, false);
    let frame_duration = exact_duration(1, 1, VIDEO_FPS as u64);
    let mut frames = Vec::new();
    while let Ok(sample) = reader.next_sample() {
        if sample.data.is_empty() {
            continue;
        }
        let nal_type = sample.data[0] & 0x1f;
        frames.push(MediaFrame {
            duration: if sample.timed { frame_duration } else { Duration::ZERO },
            keyframe: matches!(nal_type, 5 | 7 | 8),
            data: sample.data,
        });
    }
    assert!(!frames.is_empty(), "{}: no NAL units", path.display());
    Fixture { path: path.to_path_buf(), frames }
}

// ───────────────────────────── cached loaders ─────────────────────────────

static VP8: OnceLock<Arc<Fixture>> = OnceLock::new();
static OPUS: OnceLock<Arc<Fixture>> = OnceLock::new();
static H264: OnceLock<Arc<Fixture>> = OnceLock::new();

/// The VP8 clip, generated on first use and kept in memory for the process.
pub fn vp8() -> Arc<Fixture> {
    VP8.get_or_init(|| Arc::new(read_ivf(&vp8_ivf_path()))).clone()
}

/// The constant-bit-rate VP8 clip of [`vp8_cbr_ivf_path`], generated on first use and kept in
/// memory for the process (one per parameter set). Blocking: call off the async runtime.
pub fn vp8_cbr(width: u32, height: u32, kbps: u32) -> Arc<Fixture> {
    /// (width, height, kbps) → clip.
    type Cache = Mutex<HashMap<(u32, u32, u32), Arc<Fixture>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(f) = cache.lock().unwrap().get(&(width, height, kbps)) {
        return Arc::clone(f);
    }
    // Generated outside the lock; a concurrent first use just reads the same file twice.
    let f = Arc::new(read_ivf(&vp8_cbr_ivf_path(width, height, kbps)));
    Arc::clone(cache.lock().unwrap().entry((width, height, kbps)).or_insert(f))
}

pub fn opus() -> Arc<Fixture> {
    OPUS.get_or_init(|| Arc::new(read_ogg_opus(&opus_ogg_path()))).clone()
}

pub fn h264() -> Arc<Fixture> {
    H264.get_or_init(|| Arc::new(read_h264(&h264_annexb_path()))).clone()
}

pub fn video(codec: VideoCodec) -> Arc<Fixture> {
    match codec {
        VideoCodec::Vp8 => vp8(),
        VideoCodec::H264 => h264(),
    }
}

/// Generates and loads all fixtures off the async runtime (ffmpeg takes a few seconds the first
/// time). Call at the start of a test so the clients do not stall a runtime worker.
pub async fn prepare(codec: VideoCodec) {
    tokio::task::spawn_blocking(move || {
        let _ = opus();
        let _ = video(codec);
    })
    .await
    .expect("fixture generation panicked");
}
