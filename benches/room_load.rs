//! Room load benchmark: the server's CPU and memory in a room where every participant publishes
//! ~1 Mbps VP8 + Opus and receives every other participant, on loopback.
//!
//! Run it with `scripts/bench.sh` (builds the release server first, then runs this):
//!
//! ```text
//! scripts/bench.sh [--participants 3,10] [--seconds 20] [--kbps 1000]
//! ```
//!
//! For each room size a fresh release server (`qiao serve`, from `QIAO_BIN` or next to this
//! binary's profile directory) runs as a separate process on 127.0.0.1 with ephemeral ports and
//! a temporary data directory, so its CPU time (`/proc/PID/stat`) and memory
//! (`/proc/PID/status`) are its own. The participants are the integration tests' real WebRTC
//! clients (tests/common, webrtc-rs), all in this process. Once every participant receives
//! video and audio from every other, a measurement window starts; over it we take the server's
//! CPU, its memory at the end and at peak, the driver's packet counters (`GET
//! /api/v1/media/stats`), each down-track's loss and bitrate, and this process's own CPU — on a
//! small machine the load generator competes with the server for the same cores, and the
//! numbers are only about the server if the clients kept up: the report shows the publishers'
//! frame rate and the kernel's receive-buffer drops on each side's sockets, and says so in a
//! note when the load generator fell behind.

#[path = "../tests/common/mod.rs"]
mod common;

use anyhow::{bail, ensure, Context, Result};
use common::client::{ClientOptions, Media, TestClient, VideoCodec};
use common::fixtures::{self, Fixture};
use common::rtp_check;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Video published by every participant (the bit rate is a flag).
const VIDEO_WIDTH: u32 = 640;
const VIDEO_HEIGHT: u32 = 480;
/// Bound for the server to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for each client's join and publish (ten clients set up at once on two cores are slower
/// than the tests' single rooms).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for every receiver to get media from every publisher once all have published.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

// ════════════════════════════════ command line ════════════════════════════════

struct Args {
    participants: Vec<usize>,
    seconds: u64,
    kbps: u32,
    /// The arguments as given (for the printed command).
    raw: Vec<String>,
}

const USAGE: &str = "usage: scripts/bench.sh [--participants 3,10] [--seconds 20] [--kbps 1000]

  --participants LIST  room sizes to measure, comma-separated (each ≥ 2); default 3,10
  --seconds N          measurement window per room size; default 20
  --kbps N             video bit rate each participant publishes; default 1000

QIAO_BIN selects the server binary (default: the release `qiao` next to this benchmark).";

fn parse_args() -> Result<Args> {
    let mut args = Args { participants: vec![3, 10], seconds: 20, kbps: 1000, raw: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // `cargo bench` appends `--bench` to the arguments of every benchmark binary.
        if arg == "--bench" {
            continue;
        }
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline.clone().or_else(|| it.next()).with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--participants" | "-p" => {
                let v = value()?;
                args.participants = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--participants {v}: expected e.g. 3,10"))?;
                ensure!(
                    !args.participants.is_empty() && args.participants.iter().all(|&p| p >= 2),
                    "--participants {v}: each room needs at least 2 participants"
                );
                args.raw.extend(["--participants".into(), v]);
            }
            "--seconds" | "-s" => {
                let v = value()?;
                args.seconds = v.parse().with_context(|| format!("--seconds {v}"))?;
                ensure!(args.seconds >= 1, "--seconds must be at least 1");
                args.raw.extend(["--seconds".into(), v]);
            }
            "--kbps" => {
                let v = value()?;
                args.kbps = v.parse().with_context(|| format!("--kbps {v}"))?;
                ensure!((100..=20_000).contains(&args.kbps), "--kbps {v}: expected 100..=20000");
                args.raw.extend(["--kbps".into(), v]);
            }
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

// ════════════════════════════════ /proc ════════════════════════════════

/// Clock ticks per second for /proc CPU times (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in clock ticks. `pid` is a number or "self".
fn process_cpu_ticks(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| -> Result<u64> {
        fields.get(n - 3).and_then(|f| f.parse().ok()).with_context(|| format!("{path}: field {n}"))
    };
    Ok(field(14)? + field(15)?)
}

/// A `/proc/PID/status` memory line (e.g. "VmRSS", "VmHWM"), in KiB.
fn process_mem_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{path}: no {key}"))
}

/// (busy, total) clock ticks of the whole machine, all cores (/proc/stat, first line).
fn machine_cpu_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).context("/proc/stat: no cpu line")?;
    // user nice system idle iowait irq softirq steal (guest time is already inside user/nice).
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
    ensure!(v.len() == 8, "/proc/stat: short cpu line {line:?}");
    let total: u64 = v.iter().sum();
    Ok((total - v[3] - v[4], total))
}

/// Datagrams the kernel dropped because a receive buffer was full, summed over the UDP sockets
/// that process `pid` ("self" or a number) holds: the `drops` column of /proc/net/udp{,6} for the
/// socket inodes among the process's file descriptors. Tells server-side from client-side loss.
fn udp_socket_drops(pid: &str) -> Result<u64> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(&fd_dir).with_context(|| format!("read {fd_dir}"))? {
        // Descriptors can close while we look; skip those.
        let Ok(target) = std::fs::read_link(entry?.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        // sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ref pointer drops
        for f in text.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            if f.len() >= 13 && inodes.contains(f[9]) {
                drops += f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(drops)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ════════════════════════════════ the server process ════════════════════════════════

/// Counters of `GET /api/v1/media/stats` that the benchmark diffs over the window.
#[derive(Debug, Clone, Copy, Default)]
struct MediaCounters {
    datagrams_in: u64,
    rtp_in: u64,
    rtp_forwarded: u64,
    forward_errors: u64,
}

/// `qiao serve` as a child process, plus the few REST calls the benchmark needs. (The tests'
/// `TestServer` helpers belong to the in-process server, which would share this process's CPU
/// accounting; these follow the same docs/api.md calls.)
struct ServerProcess {
    child: tokio::process::Child,
    pid: u32,
    base_url: String,
    ws_url: String,
    admin_token: String,
    http: reqwest::Client,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start(bin: &Path) -> Result<ServerProcess> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("create server log")?;
        let admin_token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--rtc-udp", "127.0.0.1:0"])
            .env("QIAO_ADMIN_TOKEN", &admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            // Safety net if the benchmark fails between start and stop; `stop` is the clean path.
            .kill_on_drop(true);
        // Every other setting stays at its default, whatever the caller's environment says.
        for (k, _) in std::env::vars() {
            if k.starts_with("QIAO_") && k != "QIAO_ADMIN_TOKEN" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        let pid = child.id().context("server pid")?;
        let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
        // "qiao listening on http://127.0.0.1:PORT (media udp 127.0.0.1:PORT)"
        let listening = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("qiao listening on ") {
                    return Ok(Some(rest.to_string()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let rest = match listening {
            Ok(Ok(Some(rest))) => rest,
            other => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                bail!(
                    "{} did not report its address ({other:?}, exit {status:?}); log:\n{}",
                    bin.display(),
                    log_tail(&log_path)
                );
            }
        };
        let base_url = rest.split_whitespace().next().unwrap_or_default().to_string();
        ensure!(base_url.starts_with("http://"), "unexpected listening line: {rest}");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess {
            child,
            pid,
            ws_url: format!("{}/api/v1/signal", base_url.replacen("http://", "ws://", 1)),
            base_url,
            admin_token,
            http: reqwest::Client::new(),
            log_path,
            _dir: dir,
        })
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        ensure!(status.is_success(), "{method} {path} -> {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    async fn create_session(&self) -> Result<String> {
        let case_id = format!("bench-{}", uuid::Uuid::new_v4());
        let case = self
            .request(
                reqwest::Method::POST,
                "/api/v1/cases",
                Some(json!({"case_id": case_id, "kind": "hearing", "title": "room load benchmark"})),
            )
            .await?;
        let case = case["id"].as_str().context("case id")?;
        let session = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/cases/{case}/sessions"),
                Some(json!({"title": "room load benchmark"})),
            )
            .await?;
        Ok(session["id"].as_str().context("session id")?.to_string())
    }

    /// Invites a participant; returns the join token.
    async fn invite(&self, session_id: &str, name: &str, role: &str) -> Result<String> {
        let v = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/sessions/{session_id}/participants"),
                Some(json!({"display_name": name, "role": role})),
            )
            .await?;
        Ok(v["token"].as_str().context("token")?.to_string())
    }

    async fn media_counters(&self) -> Result<MediaCounters> {
        let v = self.request(reqwest::Method::GET, "/api/v1/media/stats", None).await?;
        let n = |k: &str| v[k].as_u64().with_context(|| format!("media stats without {k}: {v}"));
        Ok(MediaCounters {
            datagrams_in: n("datagrams_in")?,
            rtp_in: n("rtp_in")?,
            rtp_forwarded: n("rtp_forwarded")?,
            forward_errors: n("forward_errors")?,
        })
    }

    fn cpu_ticks(&self) -> Result<u64> {
        process_cpu_ticks(&self.pid.to_string())
    }

    fn rss_kib(&self) -> Result<u64> {
        process_mem_kib(self.pid, "VmRSS")
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        process_mem_kib(self.pid, "VmHWM")
    }

    /// Fails if the server has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited ({status}); log:\n{}", log_tail(&self.log_path));
        }
        Ok(())
    }

    /// SIGTERM (the server's graceful shutdown path) and waits for the exit. We hold the
    /// unreaped child, so the pid cannot have been reused.
    async fn stop(mut self) -> Result<()> {
        self.check_alive()?;
        // No libc dependency: kill(1) sends the signal.
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        ensure!(sent.success(), "kill -TERM {} failed: {sent}", self.pid);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(status.success(), "the server exited with {status} after SIGTERM");
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)")
            }
        }
    }
}

/// The last lines of the server log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ════════════════════════════════ one room ════════════════════════════════

/// Where each down-track stood at one instant: (receiver, publisher, kind) → (track id, packets).
type TrackMarks = Vec<((usize, usize, &'static str), Option<(String, usize)>)>;

/// Everything read at the start and at the end of the measurement window.
struct Snapshot {
    at: Instant,
    server_ticks: u64,
    self_ticks: u64,
    machine: (u64, u64),
    server_udp_drops: u64,
    self_udp_drops: u64,
    counters: MediaCounters,
    tracks: TrackMarks,
    /// Video samples (frames) each publisher has written.
    frames_sent: Vec<u64>,
}

impl Snapshot {
    async fn take(server: &ServerProcess, clients: &[TestClient]) -> Result<Snapshot> {
        let counters = server.media_counters().await?;
        let mut frames_sent = Vec::with_capacity(clients.len());
        for c in clients {
            frames_sent.push(c.video_samples_sent().await.0);
        }
        let mut tracks = Vec::new();
        for (r, rc) in clients.iter().enumerate() {
            for (p, pc) in clients.iter().enumerate().filter(|(p, _)| *p != r) {
                for kind in ["video", "audio"] {
                    let mark = rc.with_received(&pc.participant_id, kind, |t| (t.track_id.clone(), t.packets.len()));
                    tracks.push(((r, p, kind), mark));
                }
            }
        }
        Ok(Snapshot {
            at: Instant::now(),
            server_ticks: server.cpu_ticks()?,
            self_ticks: process_cpu_ticks("self")?,
            machine: machine_cpu_ticks()?,
            server_udp_drops: udp_socket_drops(&server.pid.to_string())?,
            self_udp_drops: udp_socket_drops("self")?,
            counters,
            tracks,
            frames_sent,
        })
    }
}

/// One down-track over the window.
#[derive(Debug, Default, Clone, Copy)]
struct DownTrack {
    /// Distinct sequence numbers received.
    received: u64,
    /// Sequence numbers skipped and never received in the window.
    lost: u64,
    /// Packets whose sequence number had already arrived (retransmissions of packets that were
    /// not lost, or duplicated forwarding).
    duplicates: u64,
    /// RTP payload of every packet received, duplicates included.
    payload_bytes: u64,
}

impl DownTrack {
    fn loss(&self) -> f64 {
        ratio(self.lost, self.received + self.lost)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Results of one room size.
struct RoomResult {
    participants: usize,
    window: f64,
    joined_secs: f64,
    media_ready_secs: f64,
    server_cpu_pct: f64,
    server_rss_idle_mib: f64,
    server_rss_end_mib: f64,
    server_rss_peak_mib: f64,
    datagrams_in_per_s: f64,
    rtp_in_per_s: f64,
    rtp_forwarded_per_s: f64,
    forward_errors: u64,
    forward_errors_total: u64,
    server_udp_drops: u64,
    self_udp_drops: u64,
    video: Vec<DownTrack>,
    audio: Vec<DownTrack>,
    publisher_fps: Vec<f64>,
    self_cpu_pct: f64,
    /// CPU used by every process on the machine, in % of one core (from /proc/stat).
    machine_busy_pct: f64,
    client_problems: Vec<String>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn run_room(
    bin: &Path,
    args: &Args,
    participants: usize,
    clip: &Arc<Fixture>,
    tck: f64,
    cores: usize,
) -> Result<RoomResult> {
    let mut server = ServerProcess::start(bin).await?;
    let mut clients = Vec::new();
    let measured = measure_room(&mut server, &mut clients, args, participants, clip, tck, cores).await;
    // Clients go first (their peer connections close locally; the server just sees them
    // vanish), then the server is stopped cleanly whatever the measurement returned.
    futures_util::future::join_all(clients.iter().map(|c| c.drop_without_leave())).await;
    drop(clients);
    let log = server.log_path.clone();
    let stopped = server.stop().await;
    let result = measured.map_err(|e| e.context(format!("server log tail:\n{}", log_tail(&log))))?;
    stopped?;
    Ok(result)
}

async fn measure_room(
    server: &mut ServerProcess,
    clients: &mut Vec<TestClient>,
    args: &Args,
    participants: usize,
    clip: &Arc<Fixture>,
    tck: f64,
    cores: usize,
) -> Result<RoomResult> {
    let rss_idle = server.rss_kib()?;
    let session = server.create_session().await?;
    let mut invites = Vec::new();
    for i in 0..participants {
        let name = format!("bench-{i:02}");
        let role = if i == 0 { "judge" } else { "party" };
        invites.push((name.clone(), server.invite(&session, &name, role).await?));
    }

    // Everyone joins and publishes at once, like a hearing that starts on time.
    let t0 = Instant::now();
    let ws_url = server.ws_url.clone();
    let joined = futures_util::future::join_all(invites.into_iter().map(|(name, token)| {
        let ws_url = ws_url.clone();
        let opts = ClientOptions {
            name,
            join_timeout: SETUP_TIMEOUT,
            publish_timeout: SETUP_TIMEOUT,
            video_fixture: Some(Arc::clone(clip)),
            ..Default::default()
        };
        async move {
            let c = TestClient::connect_with(&ws_url, &token, opts).await?;
            c.publish(Media::audio_video(VideoCodec::Vp8)).await?;
            Ok::<_, anyhow::Error>(c)
        }
    }))
    .await;
    // Keep the clients that did join, so the caller can shut them down even on failure.
    let mut first_err = None;
    for r in joined {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    if let Some(e) = first_err {
        return Err(e.context("joining and publishing"));
    }
    let joined_secs = t0.elapsed().as_secs_f64();
    eprintln!("  {participants} joined and publishing after {joined_secs:.1} s");

    // Every receiver gets a complete VP8 key frame and audio from every other participant
    // (the harness's event wait; it re-checks the recorded track as packets arrive).
    let clients_ref: &[TestClient] = clients;
    let pairs = (0..participants).flat_map(|r| (0..participants).filter(move |&p| p != r).map(move |p| (r, p)));
    futures_util::future::try_join_all(pairs.map(|(r, p)| async move {
        let (rc, pc) = (&clients_ref[r], &clients_ref[p]);
        rc.wait_media("a complete VP8 key frame", &pc.participant_id, "video", MEDIA_TIMEOUT, |t| {
            t.frame_stats().complete_keyframes >= 1
        })
        .await?;
        rc.wait_media("audio", &pc.participant_id, "audio", MEDIA_TIMEOUT, |t| !t.packets.is_empty()).await
    }))
    .await
    .context("waiting for every participant to receive every other")?;
    let media_ready_secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "  all {} down-tracks carry media after {media_ready_secs:.1} s; measuring for {} s",
        participants * (participants - 1) * 2,
        args.seconds
    );

    // The measurement window: the one deliberate timed wait.
    let start = Snapshot::take(server, clients).await?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let end = Snapshot::take(server, clients).await?;
    server.check_alive()?;
    let window = end.at.duration_since(start.at).as_secs_f64();

    let mut video = Vec::new();
    let mut audio = Vec::new();
    for (((r, p, kind), from), (_, to)) in start.tracks.iter().zip(&end.tracks) {
        let (rc, pc) = (&clients[*r], &clients[*p]);
        let (Some((id, from)), Some((id_end, to))) = (from, to) else {
            bail!("{} has no {kind} track from {}", rc.name, pc.name);
        };
        ensure!(id == id_end, "{}: the {kind} track from {} was replaced during the window", rc.name, pc.name);
        let d = rc
            .with_received(&pc.participant_id, kind, |t| {
                let window = &t.packets[*from..*to];
                let seqs: Vec<u16> = window.iter().map(|p| p.seq).collect();
                let report = rtp_check::check_sequence(&seqs);
                DownTrack {
                    received: (report.packets - report.duplicates.len()) as u64,
                    lost: report.lost,
                    duplicates: report.duplicates.len() as u64,
                    payload_bytes: window.iter().map(|p| p.payload.len() as u64).sum(),
                }
            })
            .context("track vanished")?;
        if *kind == "video" {
            video.push(d);
        } else {
            audio.push(d);
        }
    }

    let mut client_problems = Vec::new();
    for c in clients.iter() {
        if let Err(e) = c.assert_healthy() {
            client_problems.push(format!("{e:#}"));
        }
    }
    let per_s = |a: u64, b: u64| (b - a) as f64 / window;
    Ok(RoomResult {
        participants,
        window,
        joined_secs,
        media_ready_secs,
        server_cpu_pct: (end.server_ticks - start.server_ticks) as f64 / tck / window * 100.0,
        server_rss_idle_mib: mib(rss_idle),
        server_rss_end_mib: mib(server.rss_kib()?),
        server_rss_peak_mib: mib(server.peak_rss_kib()?),
        datagrams_in_per_s: per_s(start.counters.datagrams_in, end.counters.datagrams_in),
        rtp_in_per_s: per_s(start.counters.rtp_in, end.counters.rtp_in),
        rtp_forwarded_per_s: per_s(start.counters.rtp_forwarded, end.counters.rtp_forwarded),
        forward_errors: end.counters.forward_errors - start.counters.forward_errors,
        forward_errors_total: end.counters.forward_errors,
        // Sockets live for the whole room, so the counters only grow over the window.
        server_udp_drops: end.server_udp_drops.saturating_sub(start.server_udp_drops),
        self_udp_drops: end.self_udp_drops.saturating_sub(start.self_udp_drops),
        video,
        audio,
        publisher_fps: start.frames_sent.iter().zip(&end.frames_sent).map(|(a, b)| per_s(*a, *b)).collect(),
        self_cpu_pct: (end.self_ticks - start.self_ticks) as f64 / tck / window * 100.0,
        machine_busy_pct: ratio(end.machine.0 - start.machine.0, end.machine.1 - start.machine.1)
            * cores as f64
            * 100.0,
        client_problems,
    })
}

// ════════════════════════════════ report ════════════════════════════════

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn min(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn max(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0.0, f64::max)
}

/// Loss over all tracks together, and the worst single track, in percent.
fn loss_cell(tracks: &[DownTrack]) -> String {
    let lost: u64 = tracks.iter().map(|t| t.lost).sum();
    let all: u64 = tracks.iter().map(|t| t.received + t.lost).sum();
    format!("{:.2} / {:.2}", ratio(lost, all) * 100.0, max(tracks.iter().map(|t| t.loss())) * 100.0)
}

fn print_report(args: &Args, results: &[RoomResult], clip_kbps: f64, cores: usize) {
    println!();
    println!("### Server (release `qiao serve`, separate process)");
    println!();
    println!(
        "| participants | server CPU (% of one core) | RSS idle → end (MiB) | peak RSS (MiB) | RTP in/s \
         | RTP forwarded/s (÷ in) | forward errors (window / total) | UDP drops at the server's socket |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {:.1} | {:.1} → {:.1} | {:.1} | {:.0} | {:.0} ({:.2}, ideal {}) | {} / {} | {} |",
            r.participants,
            r.server_cpu_pct,
            r.server_rss_idle_mib,
            r.server_rss_end_mib,
            r.server_rss_peak_mib,
            r.rtp_in_per_s,
            r.rtp_forwarded_per_s,
            if r.rtp_in_per_s > 0.0 { r.rtp_forwarded_per_s / r.rtp_in_per_s } else { 0.0 },
            r.participants - 1,
            r.forward_errors,
            r.forward_errors_total,
            r.server_udp_drops,
        );
    }
    println!();
    println!("### Clients (webrtc-rs load generator, one process)");
    println!();
    println!(
        "| participants | video down-tracks | video received, kbps (mean / min) | video duplicates, % \
         | video loss, % (all / worst track) | audio loss, % (all / worst) | UDP drops at the clients' sockets \
         | publisher video fps (mean / min) | load tool CPU (% of one core) | joined / all media flowing (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let kbps = |t: &DownTrack| t.payload_bytes as f64 * 8.0 / r.window / 1000.0;
        let dups: u64 = r.video.iter().map(|t| t.duplicates).sum();
        let packets: u64 = r.video.iter().map(|t| t.received + t.duplicates).sum();
        println!(
            "| {} | {} | {:.0} / {:.0} | {:.1} | {} | {} | {} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} |",
            r.participants,
            r.video.len(),
            mean(r.video.iter().map(kbps)),
            min(r.video.iter().map(kbps)),
            ratio(dups, packets) * 100.0,
            loss_cell(&r.video),
            loss_cell(&r.audio),
            r.self_udp_drops,
            mean(r.publisher_fps.iter().copied()),
            min(r.publisher_fps.iter().copied()),
            r.self_cpu_pct,
            r.joined_secs,
            r.media_ready_secs,
        );
    }
    println!();
    println!(
        "Window {} s per room. Video: {VIDEO_WIDTH}×{VIDEO_HEIGHT} VP8 at {} fps, clip average {clip_kbps:.0} kbps \
         of RTP payload (target {} kbps, key frame every {} frames); audio: Opus 48 kbps, 20 ms. Loopback, \
         plain HTTP, server defaults otherwise. Received kbps counts the RTP payload of every packet, \
         duplicates included; loss counts sequence numbers never received in the window (after any \
         retransmission). UDP drops are the kernel's receive-buffer drops on each side's sockets over the \
         window. CPU is user + system time from /proc/PID/stat over the window; {cores} cores. Datagrams in/s \
         at the server: {}.",
        args.seconds,
        fixtures::VIDEO_FPS,
        args.kbps,
        fixtures::KEYFRAME_INTERVAL,
        results
            .iter()
            .map(|r| format!("{:.0} ({} participants)", r.datagrams_in_per_s, r.participants))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let shown = if args.raw.is_empty() { String::new() } else { format!(" {}", args.raw.join(" ")) };
    println!();
    println!("Command: `scripts/bench.sh{shown}`");
    for r in results {
        let notes = notes(r);
        if !notes.is_empty() {
            println!();
            println!("Notes for {} participants:", r.participants);
            for n in notes {
                println!("- {n}");
            }
        }
    }
}

/// Things a reader must know before trusting a row: which side lost packets, whether the load
/// generator kept real time, errors.
fn notes(r: &RoomResult) -> Vec<String> {
    let mut notes = Vec::new();
    if r.self_udp_drops > 0 {
        notes.push(format!(
            "{} datagrams were dropped at the load tool's sockets (receive buffer full: the clients did not read \
             in time). Loss, duplicates (NACK retransmissions) and extra received kbps in this row then come \
             from the load generator, not from the server.",
            r.self_udp_drops
        ));
    }
    if r.server_udp_drops > 0 {
        notes.push(format!(
            "{} datagrams were dropped at the server's socket (receive buffer full).",
            r.server_udp_drops
        ));
    }
    let slowest = min(r.publisher_fps.iter().copied());
    if slowest < fixtures::VIDEO_FPS as f64 * 0.98 {
        notes.push(format!(
            "a publisher sent only {slowest:.1} of {} fps: the load generator fell behind real time, so the server \
             was offered less than the nominal load.",
            fixtures::VIDEO_FPS
        ));
    }
    // /proc/stat is sampled per tick and reads somewhat lower than the per-process times, so only
    // a clear excess means other work competed for the cores during the window.
    let others = r.machine_busy_pct - r.server_cpu_pct - r.self_cpu_pct;
    if others > 25.0 {
        notes.push(format!(
            "other processes used about {others:.0} % of one core during the window (machine-wide /proc/stat): \
             the server and the load generator shared the cores with them; compare with a run on a quiet machine."
        ));
    }
    if r.forward_errors > 0 {
        notes.push(format!("the server counted {} forward errors in the window.", r.forward_errors));
    }
    notes.extend(r.client_problems.iter().map(|p| format!("client problem: {p}")));
    notes
}

// ════════════════════════════════ main ════════════════════════════════

/// The server binary: QIAO_BIN, else `qiao` in this benchmark's profile directory
/// (`<target>/release/deps/room_load-… → <target>/release/qiao`), which is where
/// `cargo build --release` put it whatever CARGO_TARGET_DIR is.
fn server_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("QIAO_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let profile_dir = exe.parent().and_then(Path::parent).context("benchmark binary has no profile directory")?;
    Ok(profile_dir.join("qiao"))
}

async fn run(args: Args) -> Result<()> {
    let bin = server_binary()?;
    ensure!(
        bin.is_file(),
        "server binary {} not found: run scripts/bench.sh (it builds it), or set QIAO_BIN",
        bin.display()
    );
    let tck = clock_ticks_per_sec();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("server: {} ({version})", bin.display());
    eprintln!("machine: {}, {cores} cores, Linux {}", cpu_model(), kernel.trim());

    // ffmpeg runs once (cached under target/test-fixtures), off the runtime's workers.
    let kbps = args.kbps;
    let (clip, _) =
        tokio::task::spawn_blocking(move || (fixtures::vp8_cbr(VIDEO_WIDTH, VIDEO_HEIGHT, kbps), fixtures::opus()))
            .await
            .context("fixture generation panicked")?;
    let clip_bytes: usize = clip.frames.iter().map(|f| f.data.len()).sum();
    let clip_kbps = clip_bytes as f64 * 8.0 / clip.total_duration().as_secs_f64() / 1000.0;
    eprintln!("video clip: {} ({clip_kbps:.0} kbps average)", clip.path.display());

    let mut results = Vec::new();
    for &p in &args.participants {
        eprintln!("room with {p} participants:");
        let r =
            run_room(&bin, &args, p, &clip, tck, cores).await.with_context(|| format!("room with {p} participants"))?;
        eprintln!(
            "  server CPU {:.1} % of one core, RSS {:.1} MiB (peak {:.1}); load tool CPU {:.1} %",
            r.server_cpu_pct, r.server_rss_end_mib, r.server_rss_peak_mib, r.self_cpu_pct
        );
        results.push(r);
    }
    println!("Machine: {}, {cores} cores, Linux {}; server {version}", cpu_model(), kernel.trim());
    print_report(&args, &results, clip_kbps, cores);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("room_load: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("room_load failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
