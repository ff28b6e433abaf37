//! One segment file of one track, written with FFmpeg (ffmpeg-next): WebM for VP8 and Opus, MP4
//! for H.264. No transcoding: the depacketized frames go in as they came.
//!
//! Invariants:
//! - timestamps are milliseconds on the session timeline (time base 1/1000 asked for; the muxer
//!   may pick another, so every packet is rescaled to the stream's real time base);
//! - a segment is complete only after [`SegmentMuxer::finish`] wrote the trailer: a file left by a
//!   crash is an open segment and is never listed in the manifest;
//! - together with `composite`, this is the only module that touches FFmpeg.

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("FFmpeg could not initialise: {0}")]
    Init(ffmpeg::Error),
    #[error("opening {path}: {source}")]
    Open { path: String, source: ffmpeg::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: ffmpeg::Error },
}

/// What a segment holds; video carries the dimensions the container header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    Vp8 {
        width: u32,
        height: u32,
    },
    /// `extradata` is the SPS and PPS in Annex B form; the MP4 muxer turns it into avcC.
    H264 {
        width: u32,
        height: u32,
        extradata: Vec<u8>,
    },
    Opus {
        channels: u8,
    },
}

impl Codec {
    /// The file extension, which is also the name of FFmpeg's muxer for it.
    pub fn extension(&self) -> &'static str {
        match self {
            Codec::H264 { .. } => "mp4",
            Codec::Vp8 { .. } | Codec::Opus { .. } => "webm",
        }
    }
}

/// Initialises FFmpeg once per process (idempotent) and keeps its log quiet: errors surface as
/// `MuxError`, not as stderr noise.
pub fn init() -> Result<(), MuxError> {
    ffmpeg::init().map_err(MuxError::Init)?;
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    Ok(())
}

/// An open segment file.
pub struct SegmentMuxer {
    octx: ffmpeg::format::context::Output,
    path: PathBuf,
    /// The stream's time base after `write_header` (Matroska forces 1/1000, MP4 picks its own).
    time_base: ffmpeg::Rational,
    first_ms: Option<i64>,
    last_ms: i64,
    last_duration_ms: i64,
    frames: u64,
}

/// What a finished segment covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    pub start_ms: i64,
    pub duration_ms: i64,
    pub frames: u64,
}

impl SegmentMuxer {
    pub fn create(path: &Path, codec: &Codec) -> Result<SegmentMuxer, MuxError> {
        let err = |source| MuxError::Open { path: path.display().to_string(), source };
        let mut octx = ffmpeg::format::output_as(path, codec.extension()).map_err(err)?;
        {
            let mut st = octx.add_stream(None::<ffmpeg::Codec>).map_err(err)?;
            st.set_time_base(ffmpeg::Rational::new(1, 1000));
            // SAFETY: the stream was just created by avformat_new_stream and owns a valid,
            // zeroed codecpar; extradata is allocated with av_mallocz plus the padding FFmpeg reads.
            unsafe {
                let par = (*st.as_mut_ptr()).codecpar;
                match codec {
                    Codec::Vp8 { width, height } => {
                        (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                        (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_VP8;
                        (*par).width = *width as i32;
                        (*par).height = *height as i32;
                    }
                    Codec::H264 { width, height, extradata } => {
                        (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                        (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_H264;
                        (*par).width = *width as i32;
                        (*par).height = *height as i32;
                        set_extradata(par, extradata);
                    }
                    Codec::Opus { channels } => {
                        (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
                        (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_OPUS;
                        (*par).sample_rate = 48_000;
                        ffi::av_channel_layout_default(&mut (*par).ch_layout, i32::from(*channels));
                        set_extradata(par, &opus_head(*channels));
                    }
                }
            }
        }
        octx.write_header().map_err(err)?;
        let time_base = octx.stream(0).map(|s| s.time_base()).unwrap_or(ffmpeg::Rational::new(1, 1000));
        Ok(SegmentMuxer {
            octx,
            path: path.to_path_buf(),
            time_base,
            first_ms: None,
            last_ms: 0,
            last_duration_ms: 0,
            frames: 0,
        })
    }

    /// Writes one frame. `pts_ms` must not go backwards (the caller keeps it monotonic).
    pub fn write(&mut self, pts_ms: i64, duration_ms: i64, keyframe: bool, data: &[u8]) -> Result<(), MuxError> {
        let mut p = ffmpeg::Packet::copy(data);
        let ms = ffmpeg::Rational::new(1, 1000);
        let pts = ffmpeg::Rescale::rescale(&pts_ms, ms, self.time_base);
        p.set_pts(Some(pts));
        p.set_dts(Some(pts));
        p.set_duration(ffmpeg::Rescale::rescale(&duration_ms.max(1), ms, self.time_base));
        p.set_stream(0);
        if keyframe {
            p.set_flags(ffmpeg::packet::Flags::KEY);
        }
        p.write(&mut self.octx).map_err(|source| MuxError::Write { path: self.path.display().to_string(), source })?;
        self.first_ms.get_or_insert(pts_ms);
        self.last_ms = pts_ms;
        self.last_duration_ms = duration_ms.max(1);
        self.frames += 1;
        Ok(())
    }

    pub fn first_ms(&self) -> Option<i64> {
        self.first_ms
    }

    pub fn last_ms(&self) -> i64 {
        self.last_ms
    }

    /// Writes the trailer and closes the file.
    pub fn finish(mut self) -> Result<SegmentSpan, MuxError> {
        self.octx
            .write_trailer()
            .map_err(|source| MuxError::Write { path: self.path.display().to_string(), source })?;
        let start = self.first_ms.unwrap_or(0);
        Ok(SegmentSpan {
            start_ms: start,
            duration_ms: (self.last_ms + self.last_duration_ms - start).max(0),
            frames: self.frames,
        })
    }
}

/// # Safety
/// `par` must point to a valid AVCodecParameters without extradata.
unsafe fn set_extradata(par: *mut ffi::AVCodecParameters, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let pad = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    let buf = ffi::av_mallocz(data.len() + pad) as *mut u8;
    if buf.is_null() {
        return;
    }
    std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    (*par).extradata = buf;
    (*par).extradata_size = data.len() as i32;
}

/// The Opus identification header (RFC 7845 §5.1) Matroska stores as codec private data.
fn opus_head(channels: u8) -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1; // version
    h[9] = channels;
    // pre-skip 0: WebRTC Opus streams start mid-conversation, there is no encoder delay to skip.
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opus_head_is_the_rfc_7845_layout() {
        let h = opus_head(2);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[8], 1);
        assert_eq!(h[9], 2);
        assert_eq!(u32::from_le_bytes(h[12..16].try_into().unwrap()), 48_000);
    }

    #[test]
    fn an_opus_segment_is_written_on_the_session_timeline() {
        init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.webm");
        let mut m = SegmentMuxer::create(&path, &Codec::Opus { channels: 2 }).unwrap();
        // A 20 ms Opus "silence" frame (TOC 0xf8 = CELT FB 20 ms, mono→ decoders accept it).
        for i in 0..50 {
            m.write(7000 + i * 20, 20, true, &[0xf8, 0xff, 0xfe]).unwrap();
        }
        let span = m.finish().unwrap();
        assert_eq!(span, SegmentSpan { start_ms: 7000, duration_ms: 1000, frames: 50 });
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
    }
}
