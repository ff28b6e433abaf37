//! Recorder cost: CPU per recorded 1 Mbps VP8 track (remux only, no transcoding), plus Opus.
//!
//! Feeds the recorder of one session, faster than real time, with RTP packets cut from a 1 Mbps
//! VP8 clip and the Opus clip (the same fixtures the tests use), for `--seconds` of media, then
//! finishes the recording and reads the process's CPU time from /proc. The recorder writes real
//! segments into a spool and a local store (SQLite upload queue included), as in production.
//!
//! Run: `scripts/bench-record.sh` (or `cargo bench --bench record_track -- --seconds 120`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fixtures;
use qiao::core::UpTrackKey;
use qiao::record::recorder::{FinishCause, RecControl, RecInput};

/// Process CPU time (user + system) from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// One VP8 frame as RTP payloads of at most 1200 bytes (one-byte payload descriptor, S bit on the
/// first).
fn vp8_payloads(frame: &Bytes, out: &mut Vec<Bytes>) {
    out.clear();
    for (i, chunk) in frame.chunks(1200).enumerate() {
        let mut p = Vec::with_capacity(chunk.len() + 1);
        p.push(if i == 0 { 0x10 } else { 0x00 });
        p.extend_from_slice(chunk);
        out.push(Bytes::from(p));
    }
}

/// Makes the fixtures (once, cached under target/).
fn rt_prepare() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(fixtures::prepare(common::client::VideoCodec::Vp8));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    rt_prepare();
    let video = fixtures::vp8_cbr(1280, 720, 1000);
    let audio = fixtures::opus();
    let mut rec = common::recorder::start("BENCH-1", Duration::from_secs(4), Box::new(|_| {}));
    let (rt, queue) = (&rec.rt, rec.queue.clone());
    let tap = &mut rec.tap;
    let (v, a) = (UpTrackKey(1), UpTrackKey(2));
    let t0 = Instant::now();
    common::recorder::announce_camera_and_microphone(tap, v, a, t0);
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut payloads = Vec::new();
    let (mut vseq, mut aseq, mut bytes) = (0u16, 0u16, 0u64);
    let (mut vt, mut at) = (Duration::ZERO, Duration::ZERO);
    let (mut vi, mut ai) = (0usize, 0usize);
    let end = Duration::from_secs(seconds);
    while vt < end || at < end {
        // Interleave by media time, as they would arrive.
        if vt <= at {
            let f = &video.frames[vi % video.frames.len()];
            vp8_payloads(&f.data, &mut payloads);
            let ts = (vt.as_secs_f64() * 90_000.0) as u32;
            for (i, p) in payloads.iter().enumerate() {
                bytes += p.len() as u64;
                let marker = i + 1 == payloads.len();
                let input = RecInput::Rtp { up: v, ssrc: 1, seq: vseq, ts, marker, payload: p.clone(), at: t0 + vt };
                // The channel is bounded: wait for room rather than drop (this measures the recorder).
                loop {
                    let before = tap.dropped;
                    tap.offer(input_clone(&input), t0 + vt);
                    if tap.dropped == before {
                        break;
                    }
                    std::thread::yield_now();
                }
                vseq = vseq.wrapping_add(1);
            }
            vt += f.duration;
            vi += 1;
        } else {
            let f = &audio.frames[ai % audio.frames.len()];
            let ts = (at.as_secs_f64() * 48_000.0) as u32;
            let input =
                RecInput::Rtp { up: a, ssrc: 2, seq: aseq, ts, marker: true, payload: f.data.clone(), at: t0 + at };
            loop {
                let before = tap.dropped;
                tap.offer(input_clone(&input), t0 + at);
                if tap.dropped == before {
                    break;
                }
                std::thread::yield_now();
            }
            aseq = aseq.wrapping_add(1);
            at += f.duration;
            ai += 1;
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tap.control(RecControl::Finish { reply: tx, cause: FinishCause::SessionClosed });
    let finished = rx.blocking_recv().expect("the recorder finishes");
    // Everything stored (the local store copies from the spool) before the clock stops.
    rt.block_on(queue.flush(Duration::from_secs(120))).expect("the upload queue drains");
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed();
    let video_mbps = bytes as f64 * 8.0 / seconds as f64 / 1e6;
    println!("## Recorder: one 720p VP8 track at {video_mbps:.2} Mbps + Opus, {seconds} s of media");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| segments written | {} |", finished.segments);
    println!("| wall time | {:.2} s ({:.0}× real time) |", wall.as_secs_f64(), seconds as f64 / wall.as_secs_f64());
    println!("| process CPU | {cpu:.2} s |");
    println!("| CPU per recorded track (video + its audio) | {:.2} % of one core |", cpu / seconds as f64 * 100.0);
    println!("| tracks one core can record (remux only) | ≈ {:.0} |", seconds as f64 / cpu.max(0.01));
}

fn input_clone(i: &RecInput) -> RecInput {
    match i {
        RecInput::Rtp { up, ssrc, seq, ts, marker, payload, at } => RecInput::Rtp {
            up: *up,
            ssrc: *ssrc,
            seq: *seq,
            ts: *ts,
            marker: *marker,
            payload: payload.clone(),
            at: *at,
        },
        _ => unreachable!("only packets are re-offered"),
    }
}
