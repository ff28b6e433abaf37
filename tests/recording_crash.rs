//! Crash safety and tamper evidence with the real binary: `kill -9` of `qiao serve` mid-session
//! loses at most the open segment of each track; the restarted server finalises the recording as
//! `interrupted` with the interruption marked, and `qiao verify` passes. Flipping one byte of one
//! segment makes `qiao verify` fail and name that segment.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::client::{Media, TestClient, VideoCodec};
use common::fixtures;
use common::server::ServerProcess;
use serde_json::Value;

const SEGMENT_SECS: u64 = 2;

fn manifests(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "manifest.json") {
                out.push(p);
            }
        }
    }
    out
}

fn read_json(p: &Path) -> Value {
    std::fs::read(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

fn verify(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qiao")).arg("verify").arg(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn unix_ms(rfc3339: &str) -> i64 {
    let t = qiao::store::parse_rfc3339(rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Whether each of the manifest's two tracks has at least three closed segments.
fn three_segments_per_track(m: &Value) -> bool {
    let tracks = m["tracks"].as_array().map_or(0, |t| t.len());
    tracks == 2
        && m["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| m["segments"].as_array().unwrap().iter().filter(|s| s["track_id"] == t["id"]).count() >= 3)
}

/// The one recording's working files in the spool: `live.json` and the lines of its segment journal.
fn spool_state(data: &Path) -> Option<(Value, Vec<Value>)> {
    let dir = std::fs::read_dir(data.join("spool")).ok()?.flatten().map(|e| e.path()).find(|p| p.is_dir())?;
    let live = read_json(&dir.join("live.json"));
    let journal = std::fs::read_to_string(dir.join("segments.jsonl")).unwrap_or_default();
    let lines = journal.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (!live.is_null()).then_some((live, lines))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_the_open_segment_and_the_restart_finalises_an_interrupted_recording() {
    // Wait until storage holds at least three closed segments of each of the two tracks.
    crash_and_recover(&[], |_, root| {
        three_segments_per_track(&manifests(root).first().map(|p| read_json(p)).unwrap_or(Value::Null))
    })
    .await;
}

/// With a manifest budget of 1 KiB/s, `live.json` is rewritten only every few seconds and the
/// segments closed in between are only in the journal: the recovered recording has them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_manifest_rewrites_recovers_the_journaled_segments() {
    let journaled = crash_and_recover(&["--manifest-budget-kib", "1"], |data, _| {
        spool_state(data).is_some_and(|(mut live, lines)| {
            let behind = lines.len() >= 2;
            if let Some(segs) = live["segments"].as_array_mut() {
                let listed = segs.len() as u64;
                segs.extend(lines.into_iter().filter(|l| l["index"].as_u64() >= Some(listed)));
            }
            behind && three_segments_per_track(&live)
        })
    })
    .await;
    let (recovered, in_journal) = journaled;
    assert!(in_journal >= 2, "the kill fell between two rewrites: {in_journal} segments only in the journal");
    assert_eq!(recovered, in_journal, "the recovered manifest lists every journaled segment");
}

/// Waits until the process is stopped (a signal is delivered asynchronously).
fn wait_stopped(pid: libc::pid_t) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
        if matches!(state, Some("T") | Some("t")) {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not stop: {stat}");
        std::thread::yield_now();
    }
}

/// Runs a publishing mediator until `ready(data dir, recordings root)` holds for the stopped
/// server (SIGSTOP, so nothing changes between the check and the kill), kills it with SIGKILL,
/// restarts it and checks the recovered recording. Returns how many of the recovered manifest's
/// segments were not in `live.json` at the kill, and how many the journal held beyond it.
async fn crash_and_recover(extra: &[&str], ready: impl Fn(&Path, &Path) -> bool) -> (usize, usize) {
    fixtures::prepare(VideoCodec::Vp8).await;
    let data = tempfile::tempdir().unwrap();
    let seg = SEGMENT_SECS.to_string();
    let args: Vec<&str> = ["--segment-secs", seg.as_str()].into_iter().chain(extra.iter().copied()).collect();
    let mut server = ServerProcess::spawn(data.path(), &args);
    let session = server.api.create_session("mediation").await;
    let inv = server.api.invite(&session, "调解员", "mediator").await;
    let client =
        TestClient::join_and_publish(&server.api.ws_url, &inv.token, "调解员", Media::audio_video(VideoCodec::Vp8))
            .await
            .expect("the mediator publishes");

    let root = data.path().join("recordings");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = server.child.id() as libc::pid_t;
    loop {
        if ready(data.path(), &root) {
            // SAFETY: signals to our own child process.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            wait_stopped(pid);
            if ready(data.path(), &root) {
                break;
            }
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        assert!(Instant::now() < deadline, "segments never reached storage; log:\n{}", server.log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = SystemTime::now();
    server.kill_9();
    drop(client);
    let (live, lines) = spool_state(data.path()).expect("the spool holds the working manifest");
    let listed_at_kill = live["segments"].as_array().unwrap().len();
    let beyond = lines.iter().filter(|l| l["index"].as_u64() >= Some(listed_at_kill as u64)).count();
    let started_ms = unix_ms(live["started_at"].as_str().unwrap());
    let killed_ms = killed_at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64 - started_ms;

    // The restart finalises it.
    let server = ServerProcess::spawn(data.path(), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = loop {
        if let Some(p) = manifests(&root).into_iter().find(|p| read_json(p)["status"] == "interrupted") {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no interrupted manifest after restart; log:\n{}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dir = path.parent().unwrap().to_path_buf();
    let (ok, out) = verify(&dir);
    assert!(ok, "qiao verify fails on the recovered recording: {out}");
    assert!(out.contains("interrupted"), "{out}");
    let m = read_json(&path);
    assert!(
        m["gaps"].as_array().unwrap().iter().any(|g| g["cause"] == "interrupted"),
        "the interruption is marked: {}",
        m["gaps"]
    );
    // Nothing is lost silently: each track (all live at the kill) is covered up to the session's
    // interruption by its segments, then by a gap of its own for the open segment the kill cut.
    let at = |g: &serde_json::Value, k: &str| unix_ms(g[k].as_str().unwrap()) - started_ms;
    let gaps = m["gaps"].as_array().unwrap();
    let interrupted = gaps.iter().find(|g| g["cause"] == "interrupted" && g["track_id"].is_null()).unwrap();
    for t in m["tracks"].as_array().unwrap() {
        assert!(t.get("ended").is_none(), "track {} was live at the kill: {t}", t["id"]);
        let end = t["end_ms"].as_i64().unwrap();
        if end < at(interrupted, "from") {
            let own = gaps.iter().find(|g| g["track_id"] == t["id"] && g["cause"] == "interrupted");
            let own =
                own.unwrap_or_else(|| panic!("track {} ends at {end} ms with no gap of its own: {gaps:?}", t["id"]));
            assert_eq!((at(own, "from"), at(own, "to")), (end, at(interrupted, "from")), "{own}");
        }
    }
    // Every track is covered up to the kill but for at most its open segment (video segments end
    // at the first keyframe after the target length, so allow one segment plus a keyframe interval).
    let allowance = (SEGMENT_SECS * 1000) as i64 * 2 + 1500;
    for t in m["tracks"].as_array().unwrap() {
        let end = m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["track_id"] == t["id"])
            .map(|s| s["start_ms"].as_i64().unwrap() + s["duration_ms"].as_i64().unwrap())
            .max()
            .unwrap();
        assert!(killed_ms - end <= allowance, "track {} ends at {end} ms, killed at {killed_ms} ms", t["id"]);
    }
    // The index knows too.
    let ses = server.api.get(&format!("/api/v1/sessions/{session}")).await;
    let list = server.api.get(&format!("/api/v1/cases/{}/recordings", ses["case"].as_str().unwrap())).await;
    assert_eq!(list["recordings"][0]["status"], "interrupted");

    // One flipped byte in one segment: verify fails and names that segment.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&dir, copy.path());
    let victim = m["segments"][1]["path"].as_str().unwrap().to_string();
    let file = copy.path().join(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let (ok, out) = verify(copy.path());
    assert!(!ok, "a changed segment must fail verification");
    assert!(out.contains(&victim), "the failure names the segment {victim}: {out}");
    (m["segments"].as_array().unwrap().len() - listed_at_kill, beyond)
}
