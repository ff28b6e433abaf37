//! The composite rendition: every participant in a grid with labels and burnt-in recording time,
//! audio mixed, rendered with FFmpeg after a session closes.
//!
//! The masters (one file list per track, written by the recorder) stay the record; this is the
//! copy anyone can play: H.264 + AAC in an MP4 with `+faststart`, 1280×720 at 25 fps, 48 kHz
//! stereo, lasting exactly the session.
//!
//! How it is put together, and why:
//! - **Placement by timeline pts.** Packet timestamps in the masters are milliseconds since the
//!   session started, so a participant who joined 7 s in has their first frame at ~7000 ms. The
//!   renderer walks the output clock (frame `n` at `n × 40 ms`) and asks every track for the
//!   frame it shows at that instant: the newest decoded frame whose pts is not later. Audio is
//!   placed sample-exactly at its pts and mixed. Tracks are therefore interleaved by time, and
//!   each holds at most two decoded video frames or one decoded audio frame ahead of the clock,
//!   however late a participant joined or however long a hole lasts: memory stays bounded for a
//!   session of any length. (A libavfilter `overlay`/`amix` graph fed from every track would wait
//!   for a late joiner's first frame and buffer every other track until then.)
//! - **Holes and departures.** Inside a segment a frame is held until the next one (up to
//!   [`MAX_HOLD_MS`], so a stalled camera does not freeze forever); at the end of a segment or of
//!   the track it is held for about two frame intervals, then the tile goes dark. Audio gaps are
//!   silence. Resolution may change at any frame: the scaler follows the frame.
//! - **Text with libavfilter.** Tile labels (CJK), the case number and the wall-clock time are
//!   `drawtext` filters on the composed frame; the time is drawtext's `%{pts:gmtime:…}` expansion
//!   offset to Beijing time (UTC+8), so it is exact for every frame.
//! - **Threads.** Decoders use frame threads and x264 its own; the composition itself is plain
//!   copies of pre-scaled tiles.
//!
//! The masters must keep session-timeline timestamps in the file. WebM does; a plain MP4 does
//! (an edit list); FFmpeg's fragmented MP4 (`empty_moov`, checked with the CLI and
//! `-output_ts_offset`) restarts at 0, which would place a late joiner at the session start.
//!
//! [`render`] blocks for the whole rendition; the recorder calls it from a blocking thread.

use ffmpeg_next as ffmpeg;

use ffmpeg::codec::threading;
use ffmpeg::format::{Pixel, Sample};
use ffmpeg::software::{resampling, scaling};
use ffmpeg::util::color;
use ffmpeg::util::mathematics::Rescale;
use ffmpeg::{codec, decoder, encoder, filter, format, frame, media, ChannelLayout, Dictionary, Packet, Rational};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Output frame size: 720p plays everywhere and keeps four tiles legible.
pub const WIDTH: u32 = 1280;
/// See [`WIDTH`].
pub const HEIGHT: u32 = 720;
/// Output frame rate; the clock the composition walks.
pub const FPS: u32 = 25;
/// Output audio sample rate (Opus decodes at 48 kHz, so no resampling in the usual case).
pub const SAMPLE_RATE: u32 = 48_000;
/// Longest time a frame stays on screen while its track is still running but sends nothing
/// (a stalled camera); after that the tile goes dark until the next frame.
pub const MAX_HOLD_MS: i64 = 2_000;
/// Beijing time, the zone of the burnt-in wall clock.
pub const UTC_OFFSET_SECONDS: i64 = 8 * 3600;

/// Height of the bar at the top holding the case number and the time.
const HEADER_HEIGHT: u32 = 56;
/// Space between tiles and around the grid.
const GAP: u32 = 4;
/// Audio frames this far (in samples, 3 ms) from where the previous one ended are taken as
/// continuous: millisecond rounding of the masters' timestamps must not click or drift.
const AUDIO_SNAP_SAMPLES: i64 = 144;
/// AAC frame size; also the mixing block.
const AUDIO_CHUNK: usize = 1024;
/// Fonts with CJK glyphs, in order of preference (Debian packages fonts-wqy-microhei,
/// fonts-wqy-zenhei, fonts-noto-cjk, fonts-droid-fallback).
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
];

/// Colours in limited-range YUV (Y, U, V).
const BLACK: [u8; 3] = [16, 128, 128];
/// The header bar and the gaps between tiles.
const BACKGROUND: [u8; 3] = [24, 128, 128];
/// A tile whose participant shows no video at this instant (none at all, not yet, in a hole,
/// or gone).
const NO_VIDEO: [u8; 3] = [40, 128, 128];

/// What to render: the session's tracks and the text around them.
#[derive(Debug, Clone)]
pub struct CompositeInput {
    /// The external case number shown at the top, e.g. `(2024)冀0925民初1234号`.
    pub case_label: String,
    /// Wall clock (Unix ms) of session timeline 0; the burnt-in time is this plus the frame's
    /// position, shown in Beijing time.
    pub started_at_unix_ms: i64,
    /// The session's length; the output lasts exactly this long (video and audio).
    pub duration_ms: u64,
    /// One per participant, in display order (row by row).
    pub tiles: Vec<Tile>,
}

/// One participant's tile.
#[derive(Debug, Clone)]
pub struct Tile {
    /// Drawn at the bottom of the tile, e.g. `张三 · 当事人`.
    pub label: String,
    /// The video track's segment files (VP8 in WebM or H.264 in MP4) in time order; empty for a
    /// participant without video, whose tile stays dark with its label.
    pub video: Vec<PathBuf>,
    /// The audio track's segment files (Opus in WebM) in time order; may be empty.
    pub audio: Vec<PathBuf>,
}

/// What a rendition produced and what it cost.
#[derive(Debug, Clone)]
pub struct RenderStats {
    /// Video frames encoded.
    pub frames: u64,
    /// Length of the output video (frames × frame duration).
    pub duration_ms: u64,
    /// Time the rendition took, for the speed figure (output duration / wall).
    pub wall: Duration,
}

/// Why a rendition failed. Damaged data inside a segment (a truncated last segment after a
/// crash, a corrupt packet) is not an error: it is skipped with a warning.
#[derive(Debug, thiserror::Error)]
pub enum CompositeError {
    /// The input cannot be rendered as given (a zero duration).
    #[error("invalid composite input: {0}")]
    InvalidInput(&'static str),
    /// Labels need a font with Chinese glyphs; the paths looked at are listed.
    #[error("no font with CJK glyphs found (looked for {0})")]
    NoFont(String),
    /// The FFmpeg build lacks a filter or encoder the rendition needs (libx264, drawtext, …).
    #[error("FFmpeg has no {0}")]
    Missing(&'static str),
    /// A listed segment file is not there: the list and the files disagree.
    #[error("segment file {0} does not exist")]
    MissingSegment(PathBuf),
    /// A segment file is not a media file FFmpeg can open.
    #[error("cannot open segment {path}: {source}")]
    OpenSegment { path: PathBuf, source: ffmpeg::Error },
    /// A segment in a video (audio) list has no video (audio) stream.
    #[error("segment {path} has no {medium} stream")]
    NoStream { path: PathBuf, medium: &'static str },
    /// No decoder could be opened for a segment's codec.
    #[error("cannot decode {path}: {source}")]
    Decoder { path: PathBuf, source: ffmpeg::Error },
    /// Scaling, resampling, filtering or encoding failed at the named stage.
    #[error("FFmpeg failed to {stage}: {source}")]
    Ffmpeg { stage: &'static str, source: ffmpeg::Error },
    /// The output file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: ffmpeg::Error },
}

/// Adds the failing stage to an FFmpeg error.
fn at(stage: &'static str) -> impl FnOnce(ffmpeg::Error) -> CompositeError {
    move |source| CompositeError::Ffmpeg { stage, source }
}

/// Renders `input` into the MP4 file `out` (created or replaced). Blocks until done.
///
/// Every segment file must exist (checked before anything is written). On failure the partial
/// output file is removed.
pub fn render(input: &CompositeInput, out: &Path) -> Result<RenderStats, CompositeError> {
    let started = Instant::now();
    if input.duration_ms == 0 {
        return Err(CompositeError::InvalidInput("duration_ms is 0"));
    }
    if let Some(missing) = input.tiles.iter().flat_map(|t| t.video.iter().chain(&t.audio)).find(|p| !p.is_file()) {
        return Err(CompositeError::MissingSegment(missing.clone()));
    }
    ffmpeg::init().map_err(at("initialise"))?;
    let font = find_font()?;
    let result = render_to(input, &font, out);
    if result.is_err() {
        // Best effort: a half-written rendition must not pass for one.
        let _ = std::fs::remove_file(out);
    }
    let frames = result?;
    Ok(RenderStats { frames, duration_ms: frames * 1000 / u64::from(FPS), wall: started.elapsed() })
}

/// The rendition itself; returns the number of video frames.
fn render_to(input: &CompositeInput, font: &Path, out: &Path) -> Result<u64, CompositeError> {
    let layout = grid(input.tiles.len());

    let mut video: Vec<Option<VideoTrack>> = input
        .tiles
        .iter()
        .zip(&layout)
        .map(|(tile, rect)| (!tile.video.is_empty()).then(|| VideoTrack::new(&tile.video, *rect)))
        .collect();
    let mut audio: Vec<AudioTrack> =
        input.tiles.iter().filter(|t| !t.audio.is_empty()).map(|t| AudioTrack::new(&t.audio)).collect();

    let mut sink = Mp4Sink::create(out)?;
    let mut text = TextOverlay::new(font, input, &layout)?;

    let frame_ms = 1000 / i64::from(FPS);
    let frames = ((input.duration_ms * u64::from(FPS) + 500) / 1000).max(1) as i64;
    let total_samples = (input.duration_ms * u64::from(SAMPLE_RATE) / 1000) as i64;
    let mut audio_pos: i64 = 0;
    let mut mix = MixBuffer::default();

    for n in 0..frames {
        let t_ms = n * frame_ms;
        // Audio up to the end of this video frame, so the muxer interleaves closely.
        let audio_until = total_samples.min((t_ms + frame_ms) * i64::from(SAMPLE_RATE) / 1000);
        while audio_pos < audio_until {
            let len = (total_samples - audio_pos).min(AUDIO_CHUNK as i64) as usize;
            let chunk = mix.mix(&mut audio, audio_pos, len)?;
            sink.audio(chunk, audio_pos)?;
            audio_pos += len as i64;
        }

        let mut canvas = frame::Video::new(Pixel::YUV420P, WIDTH, HEIGHT);
        fill(&mut canvas, Rect { x: 0, y: 0, w: WIDTH, h: HEIGHT }, BACKGROUND);
        for (track, rect) in video.iter_mut().zip(&layout) {
            match track {
                Some(track) => track.draw(&mut canvas, t_ms)?,
                None => fill(&mut canvas, *rect, NO_VIDEO),
            }
        }
        canvas.set_pts(Some(n));
        text.push(canvas)?;
        while let Some(frame) = text.pull()? {
            sink.video(&frame)?;
        }
    }
    while audio_pos < total_samples {
        let len = (total_samples - audio_pos).min(AUDIO_CHUNK as i64) as usize;
        let chunk = mix.mix(&mut audio, audio_pos, len)?;
        sink.audio(chunk, audio_pos)?;
        audio_pos += len as i64;
    }
    text.finish()?;
    while let Some(frame) = text.pull()? {
        sink.video(&frame)?;
    }
    sink.finish()
}

fn find_font() -> Result<PathBuf, CompositeError> {
    FONT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| CompositeError::NoFont(FONT_CANDIDATES.join(", ")))
}

/// A rectangle of the output frame; all values even (4:2:0 chroma).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rect {
    /// Left edge, pixels from the frame's left.
    x: u32,
    /// Top edge, pixels from the frame's top.
    y: u32,
    /// Width.
    w: u32,
    /// Height.
    h: u32,
}

fn even(v: u32) -> u32 {
    v & !1
}

/// Tiles for `n` participants below the header: the column count that gives 16:9 video the
/// largest area, an incomplete last row centred.
fn grid(n: usize) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let n = n as u32;
    let (area_w, area_h) = (WIDTH, HEIGHT - HEADER_HEIGHT);
    let cell = |cols: u32| {
        let rows = n.div_ceil(cols);
        let w = even((area_w - GAP * (cols + 1)) / cols).max(2);
        let h = even((area_h - GAP * (rows + 1)) / rows).max(2);
        (rows, w, h)
    };
    let video_area = |cols: u32| {
        let (_, w, h) = cell(cols);
        let (fw, fh) = fit(16, 9, w, h);
        u64::from(fw) * u64::from(fh)
    };
    let cols = (1..=n).max_by_key(|&c| (video_area(c), std::cmp::Reverse(c))).unwrap_or(1);
    let (rows, w, h) = cell(cols);
    let top = HEADER_HEIGHT + even((area_h - rows * h - (rows + 1) * GAP) / 2);
    (0..n)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            let in_row = if row == rows - 1 { n - row * cols } else { cols };
            let left = even((area_w - in_row * w - (in_row + 1) * GAP) / 2);
            Rect { x: left + GAP + col * (w + GAP), y: top + GAP + row * (h + GAP), w, h }
        })
        .collect()
}

/// Largest even size with the aspect ratio `src_w:src_h` that fits in `w × h`.
fn fit(src_w: u32, src_h: u32, w: u32, h: u32) -> (u32, u32) {
    let (sw, sh) = (u64::from(src_w.max(1)), u64::from(src_h.max(1)));
    let (w64, h64) = (u64::from(w), u64::from(h));
    if sw * h64 >= sh * w64 {
        (w, even(((w64 * sh + sw / 2) / sw) as u32).clamp(2, h))
    } else {
        (even(((h64 * sw + sh / 2) / sh) as u32).clamp(2, w), h)
    }
}

fn fill(frame: &mut frame::Video, r: Rect, color: [u8; 3]) {
    for (plane, value) in color.iter().enumerate() {
        let (x, y, w, h) = if plane == 0 { (r.x, r.y, r.w, r.h) } else { (r.x / 2, r.y / 2, r.w / 2, r.h / 2) };
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        for row in y..y + h {
            let start = row as usize * stride + x as usize;
            data[start..start + w as usize].fill(*value);
        }
    }
}

/// Copies a yuv420p frame into `dst` with its top-left corner at (`x`, `y`), both even.
fn blit(dst: &mut frame::Video, x: u32, y: u32, src: &frame::Video) {
    for plane in 0..3 {
        let (px, py) = if plane == 0 { (x, y) } else { (x / 2, y / 2) };
        let width = src.plane_width(plane) as usize;
        let (src_stride, dst_stride) = (src.stride(plane), dst.stride(plane));
        let src_data = src.data(plane);
        let dst_data = dst.data_mut(plane);
        for row in 0..src.plane_height(plane) as usize {
            let s = row * src_stride;
            let d = (py as usize + row) * dst_stride + px as usize;
            dst_data[d..d + width].copy_from_slice(&src_data[s..s + width]);
        }
    }
}

/// One segment file being decoded.
struct Segment {
    /// For warnings about damaged data.
    path: PathBuf,
    /// The demuxer packets are read from.
    input: format::context::Input,
    /// Index of the decoded stream in `input`.
    stream: usize,
    /// The stream's time base: packet and frame timestamps are in it.
    time_base: Rational,
    /// A decoder per segment: codec parameters (and the resolution) may differ between segments.
    decoder: decoder::Opened,
    /// End of file reached and the decoder told; what remains is its delayed frames.
    draining: bool,
}

impl Segment {
    fn open(path: &Path, medium: media::Type) -> Result<Self, CompositeError> {
        let input =
            format::input(path).map_err(|source| CompositeError::OpenSegment { path: path.to_owned(), source })?;
        let stream = input.streams().best(medium).ok_or_else(|| CompositeError::NoStream {
            path: path.to_owned(),
            medium: if medium == media::Type::Video { "video" } else { "audio" },
        })?;
        let decoder_error = |source| CompositeError::Decoder { path: path.to_owned(), source };
        let mut context = codec::context::Context::from_parameters(stream.parameters()).map_err(decoder_error)?;
        // count 0: one thread per core, chosen by libavcodec.
        context.set_threading(threading::Config::kind(threading::Type::Frame));
        let mut decoder = context.decoder();
        decoder.set_packet_time_base(stream.time_base());
        let id = stream.parameters().id();
        let decoder = decoder.open_as(id).map_err(decoder_error)?;
        Ok(Segment {
            path: path.to_owned(),
            stream: stream.index(),
            time_base: stream.time_base(),
            input,
            decoder,
            draining: false,
        })
    }

    /// Sends the next packet of the stream to the decoder, or end of stream.
    fn feed(&mut self) {
        loop {
            let mut packet = Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) if packet.stream() != self.stream => continue,
                Ok(()) => {
                    if let Err(e) = self.decoder.send_packet(&packet) {
                        tracing::warn!(path = %self.path.display(), error = %e, "composite: packet skipped");
                    }
                    return;
                }
                Err(e) => {
                    if e != ffmpeg::Error::Eof {
                        tracing::warn!(path = %self.path.display(), error = %e, "composite: segment cut short");
                    }
                    // Cannot fail in a way that matters: the next receive reports end of stream.
                    let _ = self.decoder.send_eof();
                    self.draining = true;
                    return;
                }
            }
        }
    }
}

/// Decodes one track's segment files, in order, as one stream of frames on the session timeline.
struct TrackReader {
    /// Segment files not opened yet, in order.
    pending: VecDeque<PathBuf>,
    /// Which stream of each file is decoded (the best one of this type).
    medium: media::Type,
    /// Timestamps are returned in this unit (ms for video, samples for audio).
    unit: Rational,
    /// The segment being decoded; `None` between segments and at the end.
    current: Option<Segment>,
    /// Number of segments opened so far: tells the caller a frame came from a new segment.
    opened: u64,
}

impl TrackReader {
    fn new(paths: &[PathBuf], medium: media::Type, unit: Rational) -> Self {
        TrackReader { pending: paths.iter().cloned().collect(), medium, unit, current: None, opened: 0 }
    }

    /// The next decoded frame and its timestamp in `unit`, or `None` after the last segment.
    fn next(&mut self, frame: &mut ffmpeg::Frame) -> Result<Option<i64>, CompositeError> {
        loop {
            let Some(segment) = self.current.as_mut() else {
                let Some(path) = self.pending.pop_front() else { return Ok(None) };
                self.current = Some(Segment::open(&path, self.medium)?);
                self.opened += 1;
                continue;
            };
            match segment.decoder.receive_frame(frame) {
                Ok(()) => {
                    if let Some(ts) = frame.timestamp() {
                        return Ok(Some(ts.rescale(segment.time_base, self.unit)));
                    }
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN && !segment.draining => {
                    segment.feed()
                }
                Err(ffmpeg::Error::Eof) => self.current = None,
                Err(e) => {
                    tracing::warn!(path = %segment.path.display(), error = %e, "composite: decoding stopped");
                    self.current = None;
                }
            }
        }
    }
}

/// A decoded frame and where it sits on the timeline.
struct Timed {
    /// The decoded picture, in whatever format and size the segment has.
    frame: frame::Video,
    /// Presentation time on the session timeline.
    ms: i64,
    /// Which segment it came from (`TrackReader::opened` at decode time).
    segment: u64,
}

/// A participant's video: the frame on screen at the clock, scaled into its tile.
struct VideoTrack {
    /// The track's frames in time order.
    reader: TrackReader,
    /// Where the track is drawn.
    tile: Rect,
    /// The frame on screen (the newest with pts ≤ clock).
    shown: Option<Timed>,
    /// The next frame, decoded ahead to know when `shown` is replaced.
    ahead: Option<Timed>,
    /// The track has no more frames.
    done: bool,
    /// Last observed frame interval, for how long to keep the last frame of a segment.
    interval_ms: i64,
    /// Counts frames put on screen, to know whether `scaled` is current.
    serial: u64,
    /// `shown` scaled to fit the tile, and the serial it was made from.
    scaled: Option<(u64, frame::Video)>,
    /// Rebuilt when the input format or size changes.
    scaler: Option<scaling::Context>,
}

impl VideoTrack {
    fn new(paths: &[PathBuf], tile: Rect) -> Self {
        VideoTrack {
            reader: TrackReader::new(paths, media::Type::Video, Rational(1, 1000)),
            tile,
            shown: None,
            ahead: None,
            done: false,
            interval_ms: 40,
            serial: 0,
            scaled: None,
            scaler: None,
        }
    }

    /// Moves the track to the clock `t_ms`.
    fn advance(&mut self, t_ms: i64) -> Result<(), CompositeError> {
        loop {
            if self.ahead.is_none() && !self.done {
                let mut frame = frame::Video::empty();
                match self.reader.next(&mut frame)? {
                    Some(ms) => self.ahead = Some(Timed { frame, ms, segment: self.reader.opened }),
                    None => self.done = true,
                }
            }
            match self.ahead.take() {
                Some(next) if next.ms <= t_ms => {
                    if let Some(prev) = &self.shown {
                        let d = next.ms - prev.ms;
                        if (1..=1000).contains(&d) {
                            self.interval_ms = d;
                        }
                    }
                    self.shown = Some(next);
                    self.serial += 1;
                }
                other => {
                    self.ahead = other;
                    return Ok(());
                }
            }
        }
    }

    /// The frame on screen at `t_ms`, if the tile is not dark.
    fn visible(&self, t_ms: i64) -> Option<&frame::Video> {
        let shown = self.shown.as_ref()?;
        let last_of_segment = match &self.ahead {
            Some(next) => next.segment != shown.segment,
            None => self.done,
        };
        let hold = if last_of_segment { (2 * self.interval_ms).clamp(80, 500) } else { MAX_HOLD_MS };
        (t_ms - shown.ms < hold).then_some(&shown.frame)
    }

    fn draw(&mut self, canvas: &mut frame::Video, t_ms: i64) -> Result<(), CompositeError> {
        self.advance(t_ms)?;
        if self.visible(t_ms).is_none() {
            fill(canvas, self.tile, NO_VIDEO);
            return Ok(());
        }
        if self.scaled.as_ref().map(|(serial, _)| *serial) != Some(self.serial) {
            let scaled = self.scale()?;
            self.scaled = Some((self.serial, scaled));
        }
        let Some((_, scaled)) = &self.scaled else { return Ok(()) };
        fill(canvas, self.tile, BLACK);
        let x = self.tile.x + even((self.tile.w - scaled.width()) / 2);
        let y = self.tile.y + even((self.tile.h - scaled.height()) / 2);
        blit(canvas, x, y, scaled);
        Ok(())
    }

    /// `shown` scaled to the largest size that fits the tile, keeping its display aspect.
    fn scale(&mut self) -> Result<frame::Video, CompositeError> {
        let Some(shown) = &self.shown else { return Err(CompositeError::InvalidInput("no frame to scale")) };
        let src = &shown.frame;
        let sar = src.aspect_ratio();
        let display_w = if sar.numerator() > 0 && sar.denominator() > 0 {
            (u64::from(src.width()) * sar.numerator() as u64 / sar.denominator() as u64) as u32
        } else {
            src.width()
        };
        let (w, h) = fit(display_w, src.height(), self.tile.w, self.tile.h);
        let wanted = (src.format(), src.width(), src.height(), w, h);
        let current = self
            .scaler
            .as_ref()
            .map(|s| (s.input().format, s.input().width, s.input().height, s.output().width, s.output().height));
        if current != Some(wanted) {
            self.scaler = Some(
                scaling::Context::get(
                    src.format(),
                    src.width(),
                    src.height(),
                    Pixel::YUV420P,
                    w,
                    h,
                    scaling::Flags::BILINEAR,
                )
                .map_err(at("create a scaler"))?,
            );
        }
        let mut out = frame::Video::new(Pixel::YUV420P, w, h);
        if let Some(scaler) = self.scaler.as_mut() {
            scaler.run(src, &mut out).map_err(at("scale a frame"))?;
        }
        Ok(out)
    }
}

/// Decoded audio placed on the timeline: stereo samples starting at `start`.
struct Block {
    /// Timeline position of the first sample, in samples at [`SAMPLE_RATE`].
    start: i64,
    /// Left channel.
    left: Vec<f32>,
    /// Right channel, as long as `left`.
    right: Vec<f32>,
}

impl Block {
    fn end(&self) -> i64 {
        self.start + self.left.len() as i64
    }
}

/// A participant's audio, decoded and converted to 48 kHz stereo float, placed by pts.
struct AudioTrack {
    /// The track's frames in time order, timestamps in samples.
    reader: TrackReader,
    /// Converts whatever the decoder gives to 48 kHz planar float stereo; rebuilt on change.
    resampler: Option<resampling::Context>,
    /// Placed audio not yet mixed, in time order.
    blocks: VecDeque<Block>,
    /// Where the last placed sample ended (for continuity).
    end: Option<i64>,
    /// The track has no more frames: the rest is silence.
    done: bool,
}

impl AudioTrack {
    fn new(paths: &[PathBuf]) -> Self {
        AudioTrack {
            reader: TrackReader::new(paths, media::Type::Audio, Rational(1, SAMPLE_RATE as i32)),
            resampler: None,
            blocks: VecDeque::new(),
            end: None,
            done: false,
        }
    }

    /// Decodes until the placed audio reaches `until` (or the track ends).
    fn fill(&mut self, until: i64) -> Result<(), CompositeError> {
        while !self.done && self.end.is_none_or(|end| end < until) {
            let mut frame = frame::Audio::empty();
            match self.reader.next(&mut frame)? {
                Some(pos) => self.place(&mut frame, pos)?,
                None => self.done = true,
            }
        }
        Ok(())
    }

    fn place(&mut self, frame: &mut frame::Audio, pos: i64) -> Result<(), CompositeError> {
        if frame.samples() == 0 || frame.rate() == 0 {
            return Ok(());
        }
        if frame.channel_layout().bits() == 0 {
            frame.set_channel_layout(ChannelLayout::default(i32::from(frame.channels())));
        }
        let source = (frame.format(), frame.channel_layout(), frame.rate());
        let current = self.resampler.as_ref().map(|r| (r.input().format, r.input().channel_layout, r.input().rate));
        if current != Some(source) {
            self.resampler = Some(
                resampling::Context::get(
                    source.0,
                    source.1,
                    source.2,
                    Sample::F32(format::sample::Type::Planar),
                    ChannelLayout::STEREO,
                    SAMPLE_RATE,
                )
                .map_err(at("create a resampler"))?,
            );
        }
        let capacity = frame.samples() * SAMPLE_RATE as usize / frame.rate() as usize + 256;
        let mut out = frame::Audio::new(Sample::F32(format::sample::Type::Planar), capacity, ChannelLayout::STEREO);
        if let Some(resampler) = self.resampler.as_mut() {
            resampler.run(frame, &mut out).map_err(at("resample audio"))?;
        }
        let n = out.samples();

        let mut start = pos;
        let mut skip = 0usize;
        if let Some(end) = self.end {
            if (start - end).abs() <= AUDIO_SNAP_SAMPLES {
                start = end;
            } else if start < end {
                // Overlaps what is already placed: keep the earlier audio.
                skip = (end - start) as usize;
                start = end;
            }
        }
        if skip >= n {
            return Ok(());
        }
        let left = out.plane::<f32>(0)[skip..n].to_vec();
        let right = out.plane::<f32>(1)[skip..n].to_vec();
        self.end = Some(start + left.len() as i64);
        self.blocks.push_back(Block { start, left, right });
        Ok(())
    }
}

/// The mix of every audio track for one AAC frame.
#[derive(Default)]
struct MixBuffer {
    /// Left channel of the mix, reused from chunk to chunk.
    left: Vec<f32>,
    /// Right channel of the mix.
    right: Vec<f32>,
}

impl MixBuffer {
    /// Mixes `[start, start + len)` of every track (sum, clipped); tracks silent there add nothing.
    fn mix(&mut self, tracks: &mut [AudioTrack], start: i64, len: usize) -> Result<(&[f32], &[f32]), CompositeError> {
        self.left.clear();
        self.left.resize(len, 0.0);
        self.right.clear();
        self.right.resize(len, 0.0);
        let end = start + len as i64;
        for track in tracks.iter_mut() {
            track.fill(end)?;
            for block in &track.blocks {
                if block.start >= end {
                    break;
                }
                let from = block.start.max(start);
                let to = block.end().min(end);
                if to <= from {
                    continue;
                }
                let (i, j, n) = ((from - start) as usize, (from - block.start) as usize, (to - from) as usize);
                for (out, v) in self.left[i..i + n].iter_mut().zip(&block.left[j..j + n]) {
                    *out += v;
                }
                for (out, v) in self.right[i..i + n].iter_mut().zip(&block.right[j..j + n]) {
                    *out += v;
                }
            }
            while track.blocks.front().is_some_and(|b| b.end() <= end) {
                track.blocks.pop_front();
            }
        }
        for v in self.left.iter_mut().chain(self.right.iter_mut()) {
            *v = v.clamp(-1.0, 1.0);
        }
        Ok((&self.left, &self.right))
    }
}

/// Quotes a filter option value: everything literal inside single quotes.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Shortens `text` so that it is at most `max_em` font sizes wide (CJK glyphs count one, others
/// about half), ending with an ellipsis when cut.
fn fit_label(text: &str, max_em: f32) -> String {
    let width = |c: char| if c as u32 >= 0x1100 { 1.0 } else { 0.55 };
    if text.chars().map(width).sum::<f32>() <= max_em {
        return text.to_owned();
    }
    let mut used = 1.0; // the ellipsis
    let mut out = String::new();
    for c in text.chars() {
        used += width(c);
        if used > max_em {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// The libavfilter graph that draws the text: buffer → drawtext × (labels + 2) → buffersink.
struct TextOverlay {
    /// Filters named `in` (buffer source), `text0`… and `out` (buffer sink).
    graph: filter::Graph,
}

impl TextOverlay {
    fn new(font: &Path, input: &CompositeInput, layout: &[Rect]) -> Result<Self, CompositeError> {
        let mut graph = filter::Graph::new();
        let find = |name: &'static str| filter::find(name).ok_or(CompositeError::Missing(name));
        let buffer_args = format!(
            "video_size={WIDTH}x{HEIGHT}:pix_fmt=yuv420p:time_base=1/{FPS}:pixel_aspect=1/1:frame_rate={FPS}/1"
        );
        graph.add(&find("buffer")?, "in", &buffer_args).map_err(at("create the buffer source"))?;
        let mut sink = graph.add(&find("buffersink")?, "out", "").map_err(at("create the buffer sink"))?;
        sink.set_pixel_format(Pixel::YUV420P);

        let font = quote(&font.to_string_lossy());
        let text = |text: &str, size: u32, x: &str, y: &str, expand: bool| {
            format!(
                "fontfile={font}:text={}:expansion={}:fontsize={size}:fontcolor=white:box=1:\
                 boxcolor=black@0.55:boxborderw={}:x={x}:y={y}",
                quote(text),
                if expand { "normal" } else { "none" },
                (size / 4).max(2),
            )
        };
        let header_size = HEADER_HEIGHT / 2;
        let header_y = format!("{}-th/2", HEADER_HEIGHT / 2);
        // Beijing wall clock of timeline 0, in seconds with milliseconds, for drawtext's
        // `%{pts:gmtime:<offset>}` (it prints frame time + offset as `%Y-%m-%d %H:%M:%S`).
        let epoch_ms = input.started_at_unix_ms + UTC_OFFSET_SECONDS * 1000;
        let sign = if epoch_ms < 0 { "-" } else { "" };
        let epoch = format!("{sign}{}.{:03}", epoch_ms.unsigned_abs() / 1000, epoch_ms.unsigned_abs() % 1000);
        let clock = format!("%{{pts:gmtime:{epoch}}} 北京时间");
        let max_case_em = (WIDTH as f32 * 0.6) / header_size as f32;
        let mut texts = vec![
            text(&fit_label(&input.case_label, max_case_em), header_size, "16", &header_y, false),
            text(&clock, header_size, "w-tw-16", &header_y, true),
        ];
        for (tile, rect) in input.tiles.iter().zip(layout) {
            let size = (rect.h / 14).clamp(14, 28);
            let margin = size / 2 + 6;
            let max_em = rect.w.saturating_sub(3 * margin) as f32 / size as f32;
            let x = (rect.x + margin).to_string();
            let y = format!("{}-th", rect.y + rect.h - margin);
            texts.push(text(&fit_label(&tile.label, max_em), size, &x, &y, false));
        }

        let drawtext = find("drawtext")?;
        let mut previous = "in".to_owned();
        for (i, args) in texts.iter().enumerate() {
            let name = format!("text{i}");
            graph.add(&drawtext, &name, args).map_err(at("create a drawtext filter"))?;
            link(&mut graph, &previous, &name)?;
            previous = name;
        }
        link(&mut graph, &previous, "out")?;
        graph.validate().map_err(at("configure the text filters"))?;
        Ok(TextOverlay { graph })
    }

    fn push(&mut self, frame: frame::Video) -> Result<(), CompositeError> {
        let mut source = self.graph.get("in").ok_or(CompositeError::Missing("buffer source"))?;
        source.source().add(&frame).map_err(at("feed the text filters"))
    }

    fn finish(&mut self) -> Result<(), CompositeError> {
        let mut source = self.graph.get("in").ok_or(CompositeError::Missing("buffer source"))?;
        source.source().flush().map_err(at("end the text filters"))
    }

    /// A finished frame, or `None` when the graph needs more input (or is done).
    fn pull(&mut self) -> Result<Option<frame::Video>, CompositeError> {
        let mut sink = self.graph.get("out").ok_or(CompositeError::Missing("buffer sink"))?;
        let mut frame = frame::Video::empty();
        match sink.sink().frame(&mut frame) {
            Ok(()) => Ok(Some(frame)),
            Err(ffmpeg::Error::Eof) => Ok(None),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => Ok(None),
            Err(e) => Err(at("run the text filters")(e)),
        }
    }
}

fn link(graph: &mut filter::Graph, from: &str, to: &str) -> Result<(), CompositeError> {
    let mut a = graph.get(from).ok_or(CompositeError::Missing("filter to link"))?;
    let mut b = graph.get(to).ok_or(CompositeError::Missing("filter to link"))?;
    a.link(0, &mut b, 0);
    Ok(())
}

/// The encoders and the MP4 muxer.
struct Mp4Sink {
    /// For errors.
    path: PathBuf,
    /// The MP4 muxer.
    output: format::context::Output,
    /// libx264, time base 1/[`FPS`].
    video: encoder::Video,
    /// AAC, time base 1/[`SAMPLE_RATE`].
    audio: encoder::Audio,
    /// Stream indices and time bases (the muxer picks the time bases in `write_header`).
    video_stream: (usize, Rational),
    audio_stream: (usize, Rational),
    /// Video frames sent to the encoder, for [`RenderStats::frames`].
    frames: u64,
}

impl Mp4Sink {
    fn create(path: &Path) -> Result<Self, CompositeError> {
        let out_err = |source| CompositeError::Output { path: path.to_owned(), source };
        let mut output = format::output_as(path, "mp4").map_err(out_err)?;
        let global_header = output.format().flags().contains(format::Flags::GLOBAL_HEADER);

        let x264 = encoder::find_by_name("libx264").ok_or(CompositeError::Missing("libx264 encoder"))?;
        let mut context = codec::context::Context::new_with_codec(x264);
        context.set_threading(threading::Config::kind(threading::Type::Frame));
        let mut video = context.encoder().video().map_err(at("create the H.264 encoder"))?;
        video.set_width(WIDTH);
        video.set_height(HEIGHT);
        video.set_format(Pixel::YUV420P);
        video.set_time_base(Rational(1, FPS as i32));
        video.set_frame_rate(Some(Rational(FPS as i32, 1)));
        video.set_aspect_ratio(Rational(1, 1));
        // Tiles are copied without converting colours, and WebRTC cameras deliver BT.601
        // limited range: say so, or players assume BT.709 for HD sizes and shift the colours.
        video.set_colorspace(color::Space::SMPTE170M);
        video.set_color_range(color::Range::MPEG);
        video.set_color_primaries(color::Primaries::SMPTE170M);
        video.set_color_transfer_characteristic(color::TransferCharacteristic::SMPTE170M);
        // A key frame every 2 s: players seek quickly in a long hearing.
        video.set_gop(2 * FPS);
        if global_header {
            video.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        options.set("preset", "veryfast");
        options.set("crf", "23");
        let video = video.open_with(options).map_err(at("open the H.264 encoder"))?;

        let aac = encoder::find(codec::Id::AAC).ok_or(CompositeError::Missing("AAC encoder"))?;
        let mut audio =
            codec::context::Context::new_with_codec(aac).encoder().audio().map_err(at("create the AAC encoder"))?;
        audio.set_rate(SAMPLE_RATE as i32);
        audio.set_channel_layout(ChannelLayout::STEREO);
        audio.set_channels(2);
        audio.set_format(Sample::F32(format::sample::Type::Planar));
        audio.set_bit_rate(128_000);
        audio.set_time_base(Rational(1, SAMPLE_RATE as i32));
        if global_header {
            audio.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let audio = audio.open().map_err(at("open the AAC encoder"))?;

        let video_index = {
            let mut stream = output.add_stream(x264).map_err(out_err)?;
            stream.set_parameters(&video);
            stream.set_time_base(Rational(1, FPS as i32));
            stream.index()
        };
        let audio_index = {
            let mut stream = output.add_stream(aac).map_err(out_err)?;
            stream.set_parameters(&audio);
            stream.set_time_base(Rational(1, SAMPLE_RATE as i32));
            stream.index()
        };
        let mut options = Dictionary::new();
        options.set("movflags", "+faststart");
        output.write_header_with(options).map_err(out_err)?;
        let time_base = |i: usize| output.stream(i).map(|s| s.time_base()).unwrap_or(Rational(1, 1000));
        let (video_tb, audio_tb) = (time_base(video_index), time_base(audio_index));
        Ok(Mp4Sink {
            path: path.to_owned(),
            output,
            video,
            audio,
            video_stream: (video_index, video_tb),
            audio_stream: (audio_index, audio_tb),
            frames: 0,
        })
    }

    fn video(&mut self, frame: &frame::Video) -> Result<(), CompositeError> {
        self.video.send_frame(frame).map_err(at("encode video"))?;
        self.frames += 1;
        self.drain_video()
    }

    fn audio(&mut self, (left, right): (&[f32], &[f32]), pts: i64) -> Result<(), CompositeError> {
        let layout = ChannelLayout::STEREO;
        let mut frame = frame::Audio::new(Sample::F32(format::sample::Type::Planar), left.len(), layout);
        frame.set_rate(SAMPLE_RATE);
        frame.set_pts(Some(pts));
        frame.plane_mut::<f32>(0).copy_from_slice(left);
        frame.plane_mut::<f32>(1).copy_from_slice(right);
        self.audio.send_frame(&frame).map_err(at("encode audio"))?;
        self.drain_audio()
    }

    fn drain_video(&mut self) -> Result<(), CompositeError> {
        let mut packet = Packet::empty();
        while self.video.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.video_stream.0);
            // Every frame lasts one tick; without it the muxer guesses the last frame's length
            // and the stream ends a frame short.
            packet.set_duration(1);
            packet.rescale_ts(Rational(1, FPS as i32), self.video_stream.1);
            packet
                .write_interleaved(&mut self.output)
                .map_err(|source| CompositeError::Output { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    fn drain_audio(&mut self) -> Result<(), CompositeError> {
        let mut packet = Packet::empty();
        while self.audio.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.audio_stream.0);
            packet.rescale_ts(Rational(1, SAMPLE_RATE as i32), self.audio_stream.1);
            packet
                .write_interleaved(&mut self.output)
                .map_err(|source| CompositeError::Output { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    /// Flushes both encoders and finishes the file (the faststart pass moves the index to the
    /// front). Returns the number of video frames.
    fn finish(mut self) -> Result<u64, CompositeError> {
        self.video.send_eof().map_err(at("finish video"))?;
        self.drain_video()?;
        self.audio.send_eof().map_err(at("finish audio"))?;
        self.drain_audio()?;
        self.output.write_trailer().map_err(|source| CompositeError::Output { path: self.path.clone(), source })?;
        Ok(self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_fills_the_frame_without_overlap() {
        for n in 1..=12 {
            let tiles = grid(n);
            assert_eq!(tiles.len(), n);
            for (i, a) in tiles.iter().enumerate() {
                assert!(a.x % 2 == 0 && a.y % 2 == 0 && a.w % 2 == 0 && a.h % 2 == 0, "{a:?}");
                assert!(a.x + a.w <= WIDTH && a.y >= HEADER_HEIGHT && a.y + a.h <= HEIGHT, "{n}: {a:?}");
                for b in &tiles[i + 1..] {
                    let apart = a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
                    assert!(apart, "{n}: {a:?} overlaps {b:?}");
                }
            }
        }
        // Two side by side, four in a 2 × 2 grid.
        assert_eq!(grid(2)[0].y, grid(2)[1].y);
        let four = grid(4);
        assert_eq!((four[0].y, four[2].x), (four[1].y, four[0].x));
    }

    #[test]
    fn fit_keeps_aspect() {
        assert_eq!(fit(1280, 720, 640, 360), (640, 360));
        assert_eq!(fit(320, 240, 636, 328), (436, 328));
        assert_eq!(fit(720, 1280, 636, 328), (184, 328));
    }

    #[test]
    fn labels_are_shortened_to_fit() {
        assert_eq!(fit_label("张三 · 当事人", 10.0), "张三 · 当事人");
        assert_eq!(fit_label("张三四五六七八九十", 5.0), "张三四五…");
    }

    #[test]
    fn option_values_are_quoted() {
        assert_eq!(quote("a:b"), "'a:b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
