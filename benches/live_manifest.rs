//! The working manifest's cost over a long session: what one rewrite of `live.json` and its
//! stored snapshot costs as the manifest grows, and what the recorder's schedule makes of it per
//! second of recording, against the former schedule (a rewrite every second while segments close).
//!
//! A session of six tracks (three participants' camera and microphone) with 4 s segments, at
//! 0.5, 1, 2 and 3 hours: a manifest with that many segments is signed, serialised and written
//! twice with fsync (`live.json` and the snapshot queued for storage), as the recorder does; the
//! upload of the snapshot is not included. Then the whole three hours are replayed through
//! `ManifestSchedule` (the recorder's own) to count the rewrites and the bytes written.
//!
//! Run: `cargo bench --bench live_manifest`.

use std::time::{Duration, Instant};

use qiao::record::live::ManifestSchedule;
use qiao::record::manifest::{chain_next, sha256_hex, Manifest, Segment, SessionInfo};
use qiao::record::recorder::write_atomic;
use qiao::record::SigningKeys;

const TRACKS: u64 = 6;
const SEGMENT: Duration = Duration::from_secs(4);
const BUDGET: u64 = 32 * 1024;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn manifest() -> Manifest {
    let session = SessionInfo {
        id: "s_0123456789abcdef".into(),
        kind: "mediation".into(),
        title: Some("邻里纠纷调解".into()),
        sites: vec![],
    };
    let mut m = Manifest::started(
        "（2026）浙0521民调字第118号".into(),
        "c_0123456789abcdef".into(),
        session,
        "2026-11-22T08:00:00Z".into(),
    );
    m.participants = (0..TRACKS / 2)
        .map(|i| {
            serde_json::json!({ "id": format!("p_{i:016}"), "name": "当事人", "role": "party",
            "presence": [{ "at": "2026-11-22T08:00:01Z", "event": "joined" }] })
        })
        .collect();
    m.tracks = (0..TRACKS)
        .map(|i| {
            serde_json::json!({ "id": format!("t_{i:016}"), "participant_id": format!("p_{:016}", i / 2),
            "kind": if i % 2 == 0 { "video" } else { "audio" }, "codec": "VP8" })
        })
        .collect();
    m
}

/// Adds segments up to `n`, chained, as the recorder lists them.
fn grow(m: &mut Manifest, n: u64) {
    while (m.segments.len() as u64) < n {
        let index = m.segments.len() as u64;
        let track = index % TRACKS;
        let path = format!("tracks/t_{track:016}/{:06}.webm", index / TRACKS);
        let sha256 = sha256_hex(path.as_bytes());
        let chain = chain_next(&m.chain_head, index, &path, &sha256);
        m.chain_head = chain.clone();
        m.segments.push(Segment {
            index,
            track_id: format!("t_{track:016}"),
            path,
            start_ms: index / TRACKS * SEGMENT.as_millis() as u64,
            duration_ms: SEGMENT.as_millis() as u64,
            size: 480_000,
            sha256,
            chain,
            zone: Some("main".into()),
        });
    }
}

/// One rewrite as the recorder does it; returns its size.
fn rewrite(m: &mut Manifest, keys: &SigningKeys, dir: &std::path::Path) -> usize {
    keys.sign(m);
    let bytes = serde_json::to_vec_pretty(m).expect("a manifest serialises");
    write_atomic(&dir.join("live.json"), &bytes).unwrap();
    write_atomic(&dir.join("manifest.000001.json"), &bytes).unwrap();
    bytes.len()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let keys = SigningKeys::from_seed([7; 32]);
    let per_hour = 3600 / SEGMENT.as_secs() * TRACKS;
    let mut m = manifest();
    println!(
        "## The working manifest: {TRACKS} tracks, {} s segments, budget {} KiB/s",
        SEGMENT.as_secs(),
        BUDGET / 1024
    );
    println!();
    println!("| session so far | segments | manifest | one rewrite: CPU / wall | rewrites per s, before → now | CPU per second of recording, before → now | bytes written per s, before → now |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let schedule = ManifestSchedule::new(BUDGET);
    for half_hours in [1u64, 2, 4, 6] {
        grow(&mut m, per_hour * half_hours / 2);
        let reps = 5;
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let mut size = 0;
        for _ in 0..reps {
            size = rewrite(&mut m, &keys, dir.path());
        }
        let cpu = (cpu_seconds() - cpu0) / reps as f64;
        let wall = wall0.elapsed().as_secs_f64() / reps as f64;
        let now_rate = 1.0 / schedule.segments_wait(size).as_secs_f64();
        println!(
            "| {:.1} h | {} | {:.2} MB | {:.1} / {:.1} ms | 1 → {:.3} | {:.1} % → {:.2} % | {:.2} MB → {:.3} MB |",
            half_hours as f64 / 2.0,
            m.segments.len(),
            size as f64 / 1e6,
            cpu * 1e3,
            wall * 1e3,
            now_rate,
            cpu * 100.0,
            cpu * now_rate * 100.0,
            2.0 * size as f64 / 1e6,
            2.0 * size as f64 * now_rate / 1e6,
        );
    }

    // Three hours through the recorder's schedule, a segment closing every SEGMENT / TRACKS;
    // the rewrite's size is the manifest's (measured above, scaled by segment count).
    let per_segment = {
        let mut small = manifest();
        grow(&mut small, 1000);
        let a = serde_json::to_vec_pretty(&small).unwrap().len();
        grow(&mut small, 2000);
        (serde_json::to_vec_pretty(&small).unwrap().len() - a) as f64 / 1000.0
    };
    let header = serde_json::to_vec_pretty(&manifest()).unwrap().len() as f64;
    // The recorder checks every 20 ms; before, a rewrite was due a second after the last one
    // whenever something had changed.
    let t0 = Instant::now();
    let mut s = ManifestSchedule::new(BUDGET);
    let (mut segments, mut writes, mut bytes) = (0u64, 0u64, 0f64);
    let (mut before_writes, mut before_bytes, mut before_last, mut before_dirty) = (0u64, 0f64, None, false);
    let (tick, every) = (Duration::from_millis(20), SEGMENT / TRACKS as u32);
    let mut next_segment = every;
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(3 * 3600) {
        t += tick;
        if t >= next_segment {
            next_segment += every;
            segments += 1;
            s.segment_added();
            before_dirty = true;
        }
        let size = header + per_segment * segments as f64;
        if s.due(t0 + t) {
            s.wrote(t0 + t, size as usize);
            writes += 1;
            bytes += 2.0 * size;
        }
        if before_dirty && before_last.is_none_or(|l| t >= l + Duration::from_secs(1)) {
            before_last = Some(t);
            before_dirty = false;
            before_writes += 1;
            before_bytes += 2.0 * size;
        }
    }
    println!();
    println!(
        "Three hours ({segments} segments, {per_segment:.0} bytes each in the manifest): {writes} rewrites writing {:.1} GB now; before, {before_writes} rewrites wrote {:.1} GB (and uploaded half of it).",
        bytes / 1e9,
        before_bytes / 1e9
    );
}
