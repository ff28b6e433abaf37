//! The load tool: R rooms × P publishers × S subscribers against Qiao and, for comparison, Janus
//! VideoRoom, in the same run.
//!
//! Run it with `scripts/bench.sh` (builds the release server, then runs this inside a network
//! namespace of its own, where Janus will gather candidates):
//!
//! ```text
//! scripts/bench.sh [--rooms 2] [--publishers 2] [--subscribers 3] [--seconds 20] [--kbps 1000] [--target both]
//! ```
//!
//! Every publisher sends a pre-encoded VP8 clip (~`--kbps`, a key frame every second) and Opus at
//! real rate (the publishers' clips start staggered over one key-frame interval, as independent
//! cameras' key frames are), and receives the other publishers of its room; every subscriber publishes nothing
//! and receives every publisher of its room. The clients are the integration tests' webrtc-rs
//! peers (tests/common), all in this process; each server (`qiao serve` from `QIAO_BIN` or next
//! to this binary, and `janus`) runs as a child process with a temporary data directory, so its
//! CPU time (`/proc/PID/stat`) and memory (`/proc/PID/status`) are its own. Targets run one after
//! the other with the same clip and the same shape.
//!
//! Order of a target's run: start the server and read its idle memory; publishers join and
//! publish (all rooms at once); once each receives every other publisher of its room, the
//! subscribers join (at once) and the time from each one's join to its first complete VP8 key
//! frame from each publisher is kept; once every receiver gets media from every publisher, a
//! measurement window of `--seconds` starts. Over the window: the server's CPU, its memory at the
//! end and at peak, every down track's packets (loss after NACK repair, from sequence numbers;
//! interarrival jitter; payload rate), the latency of each packet from publisher to receiver
//! (send time keyed by a payload hash, tests/common/latency.rs) and the load tool's own CPU. On a
//! small machine the load generator competes with the server for the same cores; the report
//! shows the publishers' frame rate and the kernel's receive-buffer drops on each side's sockets,
//! and says so in a note when the load generator fell behind.

#[path = "../tests/common/mod.rs"]
mod common;
mod janus;

use anyhow::{bail, ensure, Context, Result};
use common::client::Recorder;
use common::client::{ClientOptions, Media, RecvPacket, TestClient, VideoCodec, PUBLISH_BURST};
use common::fixtures::{self, Fixture};
use common::latency::LatencyProbe;
use common::rtp_check::{self, SeqUnwrapper};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Video published by every publisher (the bit rate is a flag).
const VIDEO_WIDTH: u32 = 640;
const VIDEO_HEIGHT: u32 = 480;
/// Bound for the server to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for each client's join and publish (many clients set up at once on two cores are slower
/// than the tests' single rooms).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for every receiver to get media from every publisher once all have joined.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for a server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

// ════════════════════════════════ command line ════════════════════════════════

/// A server the load runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Qiao,
    Janus,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Qiao => "Qiao",
            Target::Janus => "Janus",
        }
    }
}

/// The server's default `--gop-cache-kb`.
const DEFAULT_GOP_CACHE_KB: usize = 1024;
/// libwebrtc's pacing factor: a Chromium publisher's packets leave at 2.5 times its target rate.
const DEFAULT_PUBLISHER_PACING: f64 = 2.5;

/// The command line (see USAGE).
struct Args {
    /// Rooms, each with its own publishers and subscribers.
    rooms: usize,
    /// Publishers per room.
    publishers: usize,
    /// Subscribe-only participants per room.
    subscribers: usize,
    /// Length of the measurement window.
    seconds: u64,
    /// Video bit rate of the clip every publisher sends.
    kbps: u32,
    /// The servers to run the load against, in order.
    targets: Vec<Target>,
    /// Address of the servers' media sockets (Janus needs one that is not loopback).
    server_ip: IpAddr,
    /// Address the clients' peer connections bind.
    client_ip: IpAddr,
    /// Qiao's GOP cache per video track, KiB (its `--gop-cache-kb`; 1024 by default, as the
    /// server's own default; 0 is off).
    gop_cache_kb: usize,
    /// Publishers pace what they send at this multiple of `kbps`, in bursts of at most 40 ms of
    /// it, as Chromium's pacer does (factor 2.5; 0 is off: a frame's packets leave together).
    publisher_pacing: f64,
    /// Times the targets run, interleaved (Qiao, Janus, Qiao, …): on a shared machine one pair
    /// of runs can differ by a third from the next, and the median of several pairs says more.
    rounds: usize,
}

impl Args {
    fn participants(&self) -> usize {
        self.rooms * (self.publishers + self.subscribers)
    }

    /// The command that repeats this run (the addresses are the script's business).
    fn command(&self) -> String {
        let target = match self.targets.as_slice() {
            [Target::Qiao] => "qiao",
            [Target::Janus] => "janus",
            _ => "both",
        };
        let mut extra = if self.gop_cache_kb != DEFAULT_GOP_CACHE_KB {
            format!(" --gop-cache-kb {}", self.gop_cache_kb)
        } else {
            String::new()
        };
        if self.rounds != 1 {
            extra += &format!(" --rounds {}", self.rounds);
        }
        if self.publisher_pacing != DEFAULT_PUBLISHER_PACING {
            extra += &format!(" --publisher-pacing {}", self.publisher_pacing);
        }
        format!(
            "scripts/bench.sh --rooms {} --publishers {} --subscribers {} --seconds {} --kbps {} --target {target}{extra}",
            self.rooms, self.publishers, self.subscribers, self.seconds, self.kbps
        )
    }
}

const USAGE: &str = "usage: scripts/bench.sh [--rooms 2] [--publishers 2] [--subscribers 3] [--seconds 20] [--kbps 1000] [--target both]

  --rooms R          rooms, each with its own publishers and subscribers; default 2
  --publishers P     publishers per room (each also receives the room's other publishers); default 2
  --subscribers S    subscribe-only participants per room (each receives every publisher); default 3
  --seconds N        measurement window per target; default 20
  --kbps K           video bit rate each publisher sends; default 1000
  --target T         qiao, janus or both; default both
  --gop-cache-kb K   Qiao's GOP cache per video track (its --gop-cache-kb); default 1024, 0 is off
  --rounds N         run the targets N times, interleaved, and print each round's report and
                     the median of the rounds' ratios; default 1
  --publisher-pacing F  publishers pace their packets at F times --kbps, in bursts of at most
                     40 ms of it, as Chromium does (F = 2.5); default 2.5, 0 is off (each frame's
                     packets leave together)
  --server-ip IP     the servers' media address; default 127.0.0.1 (scripts/bench.sh sets 10.77.0.1)
  --client-ip IP     the clients' address; default 127.0.0.1 (scripts/bench.sh sets 10.77.0.2)

A room of P publishers and no subscribers is the old `--participants P`. QIAO_BIN selects the
server binary (default: the release `qiao` next to this benchmark). QIAO_BENCH_SERVER_LOG=PATH
keeps each server's log as PATH.qiao / PATH.janus (RUST_LOG sets what Qiao writes);
QIAO_BENCH_CLIENT_LOG=FILTER sets what the clients' stacks log (default webrtc=error,rtc=error).";

fn parse_args() -> Result<Args> {
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let mut args = Args {
        rooms: 2,
        publishers: 2,
        subscribers: 3,
        seconds: 20,
        kbps: 1000,
        targets: vec![Target::Qiao, Target::Janus],
        server_ip: localhost,
        client_ip: localhost,
        gop_cache_kb: DEFAULT_GOP_CACHE_KB,
        publisher_pacing: DEFAULT_PUBLISHER_PACING,
        rounds: 1,
    };
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
        let v = inline.or_else(|| it.next()).with_context(|| format!("{name} needs a value\n{USAGE}"))?;
        let count = |min: usize| -> Result<usize> {
            let n: usize = v.parse().with_context(|| format!("{name} {v}"))?;
            ensure!(n >= min, "{name} {v}: at least {min}");
            Ok(n)
        };
        match name.as_str() {
            "--rooms" => args.rooms = count(1)?,
            "--publishers" => args.publishers = count(1)?,
            "--subscribers" => args.subscribers = count(0)?,
            "--seconds" => args.seconds = count(1)? as u64,
            "--kbps" => {
                args.kbps = v.parse().with_context(|| format!("--kbps {v}"))?;
                ensure!((100..=20_000).contains(&args.kbps), "--kbps {v}: expected 100..=20000");
            }
            "--target" => {
                args.targets = match v.as_str() {
                    "qiao" => vec![Target::Qiao],
                    "janus" => vec![Target::Janus],
                    "both" => vec![Target::Qiao, Target::Janus],
                    _ => bail!("--target {v}: expected qiao, janus or both"),
                }
            }
            "--gop-cache-kb" => args.gop_cache_kb = count(0)?,
            "--rounds" => args.rounds = count(1)?,
            "--publisher-pacing" => {
                args.publisher_pacing = v.parse().with_context(|| format!("--publisher-pacing {v}"))?;
                ensure!((0.0..=10.0).contains(&args.publisher_pacing), "--publisher-pacing {v}: expected 0..=10");
            }
            "--server-ip" => args.server_ip = v.parse().with_context(|| format!("--server-ip {v}"))?,
            "--client-ip" => args.client_ip = v.parse().with_context(|| format!("--client-ip {v}"))?,
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    ensure!(
        args.publishers >= 2 || args.subscribers >= 1,
        "a room of one publisher needs at least one subscriber, or nobody receives anything"
    );
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

/// utime + stime of the threads of process `pid` whose name starts with `prefix`, in clock ticks.
/// A thread that ends while it is being read is left out.
fn threads_cpu_ticks(pid: u32, prefix: &str) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut ticks = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let tid = entry?.file_name();
        let tid = tid.to_string_lossy();
        let Ok(comm) = std::fs::read_to_string(format!("{dir}/{tid}/comm")) else { continue };
        if comm.trim_end().starts_with(prefix) {
            ticks += process_cpu_ticks(&format!("{pid}/task/{tid}")).unwrap_or(0);
        }
    }
    Ok(ticks)
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
    let mut inodes = HashSet::new();
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

// ════════════════════════════════ server processes ════════════════════════════════

/// A server under test as a child process, so that its CPU time and memory are its own.
pub struct ChildServer {
    /// "qiao" or "janus", for messages.
    name: &'static str,
    /// Held unreaped, so that `pid` stays this process's until `stop`.
    child: tokio::process::Child,
    /// Where its CPU time, memory and sockets are read in /proc.
    pid: u32,
    /// Its stderr (Qiao) or its whole output (Janus).
    log_path: PathBuf,
    /// Holds the log and the server's data or configuration; removed after the server.
    _dir: tempfile::TempDir,
}

impl ChildServer {
    pub fn new(
        name: &'static str,
        child: tokio::process::Child,
        log_path: PathBuf,
        dir: tempfile::TempDir,
    ) -> Result<ChildServer> {
        let pid = child.id().with_context(|| format!("{name} pid"))?;
        Ok(ChildServer { name, child, pid, log_path, _dir: dir })
    }

    fn cpu_ticks(&self) -> Result<u64> {
        process_cpu_ticks(&self.pid.to_string())
    }

    /// CPU of Qiao's recorder threads (`rec-…`, one per recorded session); Janus has none.
    fn recorder_ticks(&self) -> Result<u64> {
        threads_cpu_ticks(self.pid, "rec-")
    }

    fn rss_kib(&self) -> Result<u64> {
        process_mem_kib(self.pid, "VmRSS")
    }

    fn peak_rss_kib(&self) -> Result<u64> {
        process_mem_kib(self.pid, "VmHWM")
    }

    fn udp_drops(&self) -> Result<u64> {
        udp_socket_drops(&self.pid.to_string())
    }

    /// Fails if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); log:\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM (both servers' graceful shutdown) and waits for the exit. We hold the unreaped
    /// child, so the pid cannot have been reused.
    async fn stop(mut self) -> Result<()> {
        self.check_alive()?;
        if let Ok(keep) = std::env::var("QIAO_BENCH_SERVER_LOG") {
            // The log dies with the temporary directory; keep a copy when asked (RUST_LOG sets
            // what the servers write).
            let _ = std::fs::copy(&self.log_path, format!("{keep}.{}", self.name));
        }
        // No libc dependency: kill(1) sends the signal.
        let sent = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        ensure!(sent.success(), "kill -TERM {} failed: {sent}", self.pid);
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(status.success(), "{} exited with {status} after SIGTERM", self.name);
                Ok(())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed)", self.name)
            }
        }
    }
}

/// Qiao's counters over the window: RTP packets in, forwarded and paced per second; forward
/// errors in all.
#[derive(Debug, Clone, Copy)]
struct QiaoRates {
    rtp_in: f64,
    forwarded: f64,
    forward_errors: u64,
    paced: f64,
}

/// Counters of `GET /api/v1/media/stats` that the benchmark diffs over the window.
#[derive(Debug, Clone, Copy, Default)]
struct MediaCounters {
    /// RTP packets received from publishers.
    rtp_in: u64,
    /// RTP packets sent to subscribers.
    rtp_forwarded: u64,
    /// Packets the driver failed to forward.
    forward_errors: u64,
    /// Video packets that waited in a subscriber's pacer (a weak or lossy downlink).
    packets_paced: u64,
    /// The server's own delay per forwarded packet, kernel in to kernel out.
    forward_delay: qiao::media::DelayHistogram,
}

/// `qiao serve` as a child process, plus the few REST calls the benchmark needs. (The tests'
/// `TestServer` helpers belong to the in-process server, which would share this process's CPU
/// accounting; these follow the same docs/api.md calls.)
struct QiaoServer {
    /// The `qiao serve` process: CPU, memory, log, stop.
    process: ChildServer,
    /// `http://127.0.0.1:PORT`, for the REST calls.
    base_url: String,
    /// The signalling WebSocket the clients join on.
    ws_url: String,
    /// Bearer token of the REST calls (given to the server in QIAO_ADMIN_TOKEN).
    admin_token: String,
    /// For the REST calls.
    http: reqwest::Client,
}

impl QiaoServer {
    async fn start(bin: &Path, server_ip: IpAddr, gop_cache_kb: usize) -> Result<QiaoServer> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).context("create server log")?;
        let admin_token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--rtc-udp", &format!("{server_ip}:0")])
            .args(["--gop-cache-kb", &gop_cache_kb.to_string()])
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
        let stdout = child.stdout.take().context("server stdout")?;
        let mut process = ChildServer::new("qiao", child, log_path, dir)?;
        let mut lines = BufReader::new(stdout).lines();
        // "qiao listening on http://127.0.0.1:PORT (media udp …)"
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
                process.check_alive()?;
                bail!("{} did not report its address ({other:?}); log:\n{}", bin.display(), process.log_tail());
            }
        };
        let base_url = rest.split_whitespace().next().unwrap_or_default().to_string();
        ensure!(base_url.starts_with("http://"), "unexpected listening line: {rest}");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(QiaoServer {
            process,
            ws_url: format!("{}/api/v1/signal", base_url.replacen("http://", "ws://", 1)),
            base_url,
            admin_token,
            http: reqwest::Client::new(),
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

    /// A session everyone enters directly: no lobby, no consent step (a benchmark has nobody to
    /// admit anyone).
    async fn create_session(&self) -> Result<String> {
        let case_id = format!("bench-{}", uuid::Uuid::new_v4());
        let case = self
            .request(
                reqwest::Method::POST,
                "/api/v1/cases",
                Some(json!({"case_id": case_id, "kind": "hearing", "title": "load benchmark"})),
            )
            .await?;
        let case = case["id"].as_str().context("case id")?;
        let session = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/cases/{case}/sessions"),
                Some(json!({"title": "load benchmark", "lobby": false, "consent_required": false})),
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
            rtp_in: n("rtp_in")?,
            rtp_forwarded: n("rtp_forwarded")?,
            forward_errors: n("forward_errors")?,
            packets_paced: n("packets_paced")?,
            forward_delay: serde_json::from_value(v["forward_delay"].clone())
                .with_context(|| format!("media stats without forward_delay: {v}"))?,
        })
    }
}

// ════════════════════════════════ the load, whatever the server ════════════════════════════════

/// A receiving peer connection of the load generator.
struct Receiver {
    /// For messages.
    name: String,
    /// Everything its subscribe connection received, by publisher.
    recorder: Arc<Recorder>,
    /// The publishers it must receive, as the recorder names them (`RecvTrack::publisher`).
    sources: Vec<String>,
    /// When a subscriber started to join (for join to first frame); `None` for a publisher's own
    /// receiving side, which joined before the others had published.
    join_started: Option<Instant>,
}

/// What the measurement reads from the load generator, whatever the server.
struct Load {
    /// The video frames each publisher has written so far (its pacer's counter).
    frames_sent: Vec<Arc<AtomicU64>>,
    receivers: Vec<Receiver>,
    /// Seconds from the start until every publisher was sending.
    publishing_secs: f64,
    /// Seconds from the start until every receiver had media from every publisher.
    media_ready_secs: f64,
}

/// Client options shared by every participant of a target's run.
fn client_options(args: &Args, name: String, clip: &Arc<Fixture>, probe: &Arc<LatencyProbe>) -> ClientOptions {
    // Publisher k of a room starts its clip k/P of a key-frame interval late, and room r's
    // publishers a further r/(R·P): independent cameras do not send their key frames in the same
    // instant (started together, ten publishers' key frames made a burst of hundreds of packets
    // every second, and it was most of the added latency's p99).
    let video_start_delay = publisher_index(&name).map_or(Duration::ZERO, |(room, i)| {
        let n = (args.rooms * args.publishers).max(1);
        join_delay(i * args.rooms + room, n)
    });
    ClientOptions {
        name,
        video_start_delay,
        join_timeout: SETUP_TIMEOUT,
        publish_timeout: SETUP_TIMEOUT,
        video_fixture: Some(Arc::clone(clip)),
        udp_addr: Some(format!("{}:0", args.client_ip)),
        latency_probe: Some(Arc::clone(probe)),
        publish_pacing_bps: (args.publisher_pacing > 0.0)
            .then(|| args.publisher_pacing * f64::from(args.kbps) * 1000.0),
        ..Default::default()
    }
}

fn publisher_name(room: usize, i: usize) -> String {
    format!("r{room}-pub{i}")
}

/// The room and index a [`publisher_name`] stands for; `None` for a subscriber's name.
fn publisher_index(name: &str) -> Option<(usize, usize)> {
    let (room, i) = name.strip_prefix('r')?.split_once("-pub")?;
    Some((room.parse().ok()?, i.parse().ok()?))
}

fn subscriber_name(room: usize, i: usize) -> String {
    format!("r{room}-sub{i}")
}

/// How long subscriber `k` of `n` waits before it joins: the joins spread over one key-frame
/// interval of the clip, so that join to first key frame samples every phase of the publishers'
/// GOP (the clip does not answer keyframe requests; see the report's note).
fn join_delay(k: usize, n: usize) -> Duration {
    let gop = Duration::from_secs_f64(f64::from(fixtures::KEYFRAME_INTERVAL) / f64::from(fixtures::VIDEO_FPS));
    gop.mul_f64(k as f64 / n.max(1) as f64)
}

/// Waits until every receiver has a complete VP8 key frame and audio from each of its sources.
async fn wait_receiving(receivers: &[Receiver]) -> Result<()> {
    let pairs = receivers.iter().flat_map(|r| r.sources.iter().map(move |s| (r, s)));
    futures_util::future::try_join_all(pairs.map(|(r, source)| async move {
        let deadline = tokio::time::Instant::now() + MEDIA_TIMEOUT;
        loop {
            let video = r.recorder.with_track(source, "video", |t| t.frame_stats().complete_keyframes >= 1);
            let audio = r.recorder.with_track(source, "audio", |t| !t.packets.is_empty());
            if video == Some(true) && audio == Some(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{}: no key frame and audio from {source} within {MEDIA_TIMEOUT:?}; received:\n{}",
                    r.name,
                    r.recorder.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }))
    .await
    .map(drop)
}

/// Keeps the clients that did set up (so that the caller can close them even on failure) and
/// returns the first error.
fn keep_ok<T>(results: Vec<Result<T>>, into: &mut Vec<T>, what: &str) -> Result<()> {
    let mut first_err = None;
    for r in results {
        match r {
            Ok(c) => into.push(c),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    first_err.map_or(Ok(()), |e| Err(e.context(what.to_string())))
}

// ════════════════════════════════ Qiao ════════════════════════════════

/// Sets up the load on Qiao: one session per room; publishers (the first a judge, the others
/// parties), then observers (who publish nothing and receive everyone).
async fn qiao_load(
    server: &QiaoServer,
    clients: &mut Vec<TestClient>,
    args: &Args,
    clip: &Arc<Fixture>,
    probe: &Arc<LatencyProbe>,
) -> Result<Load> {
    let mut publishers = Vec::new();
    let mut subscribers = Vec::new();
    for room in 0..args.rooms {
        let session = server.create_session().await?;
        for i in 0..args.publishers {
            let name = publisher_name(room, i);
            let role = if i == 0 { "judge" } else { "party" };
            publishers.push((room, name.clone(), server.invite(&session, &name, role).await?));
        }
        for i in 0..args.subscribers {
            let name = subscriber_name(room, i);
            subscribers.push((room, name.clone(), server.invite(&session, &name, "observer").await?));
        }
    }

    // Every publisher joins and publishes at once, like hearings that start on time.
    let t0 = Instant::now();
    let joined = futures_util::future::join_all(publishers.iter().map(|(_, name, token)| async move {
        let c =
            TestClient::connect_with(&server.ws_url, token, client_options(args, name.clone(), clip, probe)).await?;
        c.publish(Media::audio_video(VideoCodec::Vp8)).await?;
        Ok(c)
    }))
    .await;
    keep_ok(joined, clients, "joining and publishing")?;
    let publishing_secs = t0.elapsed().as_secs_f64();
    eprintln!("  {} publishers sending after {publishing_secs:.1} s", clients.len());
    let mut frames_sent = Vec::new();
    for c in clients.iter() {
        frames_sent.push(c.video_samples_counter().await.context("a publisher without video")?);
    }
    // (room, participant id) of every publisher.
    let published: Vec<(usize, String)> =
        publishers.iter().zip(clients.iter()).map(|((room, _, _), c)| (*room, c.participant_id.clone())).collect();
    let ids_in = |room: usize, except: Option<&str>| -> Vec<String> {
        published.iter().filter(|(r, id)| *r == room && Some(id.as_str()) != except).map(|(_, id)| id.clone()).collect()
    };
    let mut receivers: Vec<Receiver> = clients
        .iter()
        .zip(&published)
        .filter(|_| args.publishers >= 2)
        .map(|(c, (room, id))| Receiver {
            name: c.name.clone(),
            recorder: Arc::clone(&c.subscriber().recorder),
            sources: ids_in(*room, Some(id)),
            join_started: None,
        })
        .collect();
    wait_receiving(&receivers).await.context("publishers receiving each other")?;

    // Then the subscribers join a live room, spread over one key-frame interval.
    let n = subscribers.len();
    let joined =
        futures_util::future::join_all(subscribers.iter().enumerate().map(|(k, (room, name, token))| async move {
            tokio::time::sleep(join_delay(k, n)).await;
            let started = Instant::now();
            let c = TestClient::connect_with(&server.ws_url, token, client_options(args, name.clone(), clip, probe))
                .await?;
            Ok((*room, started, c))
        }))
        .await;
    let mut joined_subscribers = Vec::new();
    let kept = keep_ok(joined, &mut joined_subscribers, "subscribers joining");
    for (room, started, c) in joined_subscribers {
        receivers.push(Receiver {
            name: c.name.clone(),
            recorder: Arc::clone(&c.subscriber().recorder),
            sources: ids_in(room, None),
            join_started: Some(started),
        });
        clients.push(c);
    }
    kept?;
    wait_receiving(&receivers).await.context("every receiver getting every publisher")?;
    Ok(Load { frames_sent, receivers, publishing_secs, media_ready_secs: t0.elapsed().as_secs_f64() })
}

// ════════════════════════════════ Janus ════════════════════════════════

/// One participant on Janus: a session with a publisher handle and (if anyone else publishes in
/// its room) a subscriber handle, or a subscriber handle only.
struct JanusParticipant {
    /// Its room (index, see `janus_room`).
    room: usize,
    /// Display name; also the key its tracks are filed under at the receivers.
    name: String,
    /// Holds its handles; destroyed at the end.
    session: Arc<janus::Session>,
    /// What it publishes (publishers only).
    publisher: Option<janus::JanusPublisher>,
    /// What it receives (none for the only publisher of a room without other publishers).
    subscriber: Option<janus::JanusSubscriber>,
    /// Background failures of its media sides and trickle tasks.
    errors: Arc<Mutex<Vec<String>>>,
}

impl JanusParticipant {
    async fn close(&self) -> Result<()> {
        if let Some(p) = &self.publisher {
            p.side.close().await;
        }
        if let Some(s) = &self.subscriber {
            let _ = s.side.pc.close().await;
        }
        self.session.destroy().await
    }
}

/// The Janus room number of room `room`.
fn janus_room(room: usize) -> u64 {
    1000 + room as u64
}

/// Sets up the same load on Janus VideoRoom: one room per room, publishers (who then subscribe to
/// the room's other publishers, as Qiao's participants receive them), then subscribers.
async fn janus_load(
    server: &janus::JanusServer,
    parts: &mut Vec<JanusParticipant>,
    args: &Args,
    clip: &Arc<Fixture>,
    probe: &Arc<LatencyProbe>,
) -> Result<Load> {
    // A cap well above what is sent: Janus passes it to publishers in REMB, which the fixture
    // pacer ignores anyway.
    let bitrate_bps = u64::from(args.kbps) * 4_000;
    for room in 0..args.rooms {
        server.create_room(janus_room(room), args.publishers, bitrate_bps).await?;
    }
    let t0 = Instant::now();
    let joined = futures_util::future::join_all((0..args.rooms).flat_map(|room| {
        (0..args.publishers).map(move |i| async move {
            let name = publisher_name(room, i);
            let session = server.session(&name).await?;
            let errors = Arc::new(Mutex::new(Vec::new()));
            let opts = client_options(args, name.clone(), clip, probe);
            let publisher =
                janus::publish(&session, janus_room(room), &name, &opts, Arc::clone(&errors), SETUP_TIMEOUT).await?;
            Ok(JanusParticipant { room, name, session, publisher: Some(publisher), subscriber: None, errors })
        })
    }))
    .await;
    keep_ok(joined, parts, "joining and publishing")?;
    let publishing_secs = t0.elapsed().as_secs_f64();
    eprintln!("  {} publishers sending after {publishing_secs:.1} s", parts.len());
    let frames_sent = parts
        .iter()
        .map(|p| {
            let video =
                p.publisher.as_ref().and_then(|p| p.side.video.as_ref()).context("a publisher without video")?;
            Ok(Arc::clone(&video.samples_sent))
        })
        .collect::<Result<Vec<_>>>()?;
    // (room, feed id, name) of every publisher.
    let published: Vec<(usize, u64, String)> =
        parts.iter().filter_map(|p| Some((p.room, p.publisher.as_ref()?.feed, p.name.clone()))).collect();
    let feeds_in = |room: usize, except: Option<&str>| -> Vec<(u64, String)> {
        published
            .iter()
            .filter(|(r, _, name)| *r == room && Some(name.as_str()) != except)
            .map(|(_, feed, name)| (*feed, name.clone()))
            .collect()
    };

    // Each publisher receives the room's other publishers.
    if args.publishers >= 2 {
        let subscribed = futures_util::future::join_all(parts.iter().map(|p| {
            let feeds = feeds_in(p.room, Some(&p.name));
            async move {
                let opts = client_options(args, p.name.clone(), clip, probe);
                let errors = Arc::clone(&p.errors);
                janus::subscribe(&p.session, janus_room(p.room), &p.name, &feeds, &opts, errors, SETUP_TIMEOUT).await
            }
        }))
        .await;
        for (p, s) in parts.iter_mut().zip(subscribed) {
            p.subscriber = Some(s.with_context(|| format!("{} subscribing to the other publishers", p.name))?);
        }
    }
    let receiver = |p: &JanusParticipant, join_started: Option<Instant>| -> Option<Receiver> {
        Some(Receiver {
            name: p.name.clone(),
            recorder: Arc::clone(&p.subscriber.as_ref()?.side.recorder),
            sources: feeds_in(p.room, Some(&p.name)).into_iter().map(|(_, n)| n).collect(),
            join_started,
        })
    };
    let mut receivers: Vec<Receiver> = parts.iter().filter_map(|p| receiver(p, None)).collect();
    wait_receiving(&receivers).await.context("publishers receiving each other")?;

    // Then the subscribers join a live room, spread over one key-frame interval.
    let n = args.rooms * args.subscribers;
    let joined = futures_util::future::join_all((0..args.rooms).flat_map(|room| {
        let feeds = feeds_in(room, None);
        (0..args.subscribers).map(move |i| {
            let feeds = feeds.clone();
            async move {
                tokio::time::sleep(join_delay(room * args.subscribers + i, n)).await;
                let name = subscriber_name(room, i);
                let started = Instant::now();
                let session = server.session(&name).await?;
                let errors = Arc::new(Mutex::new(Vec::new()));
                let opts = client_options(args, name.clone(), clip, probe);
                let subscriber = janus::subscribe(
                    &session,
                    janus_room(room),
                    &name,
                    &feeds,
                    &opts,
                    Arc::clone(&errors),
                    SETUP_TIMEOUT,
                )
                .await?;
                Ok((
                    started,
                    JanusParticipant { room, name, session, publisher: None, subscriber: Some(subscriber), errors },
                ))
            }
        })
    }))
    .await;
    let mut joined_subscribers = Vec::new();
    let kept = keep_ok(joined, &mut joined_subscribers, "subscribers joining");
    for (started, p) in joined_subscribers {
        receivers.extend(receiver(&p, Some(started)));
        parts.push(p);
    }
    kept?;
    wait_receiving(&receivers).await.context("every receiver getting every publisher")?;
    Ok(Load { frames_sent, receivers, publishing_secs, media_ready_secs: t0.elapsed().as_secs_f64() })
}

// ════════════════════════════════ measurement ════════════════════════════════

/// Where each receiver's tracks stood at one instant: (receiver, source, kind) → (track id,
/// packets so far).
type TrackMarks = Vec<((usize, usize, &'static str), Option<(String, usize)>)>;

/// Everything read at the start and at the end of the measurement window.
struct Snapshot {
    /// When it was taken (the window is the time between two).
    at: Instant,
    /// The server's CPU time, clock ticks.
    server_ticks: u64,
    /// Of which the recorder threads'.
    recorder_ticks: u64,
    /// The load tool's CPU time, clock ticks.
    self_ticks: u64,
    /// (busy, total) ticks of the machine.
    machine: (u64, u64),
    /// Receive-buffer drops on the server's UDP sockets.
    server_udp_drops: u64,
    /// Receive-buffer drops on the load tool's UDP sockets.
    self_udp_drops: u64,
    /// Qiao's own counters (none for Janus).
    counters: Option<MediaCounters>,
    /// Where every down track stood.
    tracks: TrackMarks,
    /// Video frames each publisher had written.
    frames_sent: Vec<u64>,
}

impl Snapshot {
    async fn take(server: &ChildServer, qiao: Option<&QiaoServer>, load: &Load) -> Result<Snapshot> {
        let counters = match qiao {
            Some(q) => Some(q.media_counters().await?),
            None => None,
        };
        let mut tracks = Vec::new();
        for (r, rx) in load.receivers.iter().enumerate() {
            for (s, source) in rx.sources.iter().enumerate() {
                for kind in ["video", "audio"] {
                    let mark = rx.recorder.with_track(source, kind, |t| (t.track_id.clone(), t.packets.len()));
                    tracks.push(((r, s, kind), mark));
                }
            }
        }
        Ok(Snapshot {
            at: Instant::now(),
            server_ticks: server.cpu_ticks()?,
            recorder_ticks: server.recorder_ticks()?,
            self_ticks: process_cpu_ticks("self")?,
            machine: machine_cpu_ticks()?,
            server_udp_drops: server.udp_drops()?,
            self_udp_drops: udp_socket_drops("self")?,
            counters,
            tracks,
            frames_sent: load.frames_sent.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        })
    }
}

/// One down track over the window.
#[derive(Debug, Default, Clone, Copy)]
struct DownTrack {
    /// Distinct sequence numbers received.
    received: u64,
    /// Sequence numbers skipped and never received in the window (after any retransmission).
    lost: u64,
    /// Packets whose sequence number had already arrived (retransmissions of packets that were
    /// not lost, or duplicated forwarding).
    duplicates: u64,
    /// RTP payload of every packet received, duplicates included.
    payload_bytes: u64,
    /// RFC 3550 interarrival jitter, ms (the running estimate, averaged over the window).
    jitter_ms: f64,
}

impl DownTrack {
    fn loss(&self) -> f64 {
        ratio(self.lost, self.received + self.lost)
    }
}

/// RFC 3550 §6.4.1 interarrival jitter of packets in arrival order (the first copy of each
/// sequence number), in ms: J += (|D| − J)/16 with D the difference of arrival and RTP timestamp
/// spacing of consecutive packets, averaged over the packets.
fn jitter_ms(packets: &[RecvPacket], clock_rate: f64) -> f64 {
    let mut unwrapper = SeqUnwrapper::default();
    let mut seen = HashSet::new();
    let mut prev: Option<(Instant, u32)> = None;
    let (mut j, mut sum, mut n) = (0.0f64, 0.0, 0usize);
    for p in packets {
        if !seen.insert(unwrapper.unwrap(p.seq)) {
            continue;
        }
        if let Some((arrival, timestamp)) = prev {
            let r = p.arrival.duration_since(arrival).as_secs_f64();
            let s = f64::from(p.timestamp.wrapping_sub(timestamp) as i32) / clock_rate;
            j += ((r - s).abs() - j) / 16.0;
            sum += j;
            n += 1;
        }
        prev = Some((p.arrival, p.timestamp));
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64 * 1000.0
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What CPU times are measured in.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Clock ticks per second of /proc CPU times.
    tck: f64,
    /// Cores of the machine (the load tool and the server share them).
    cores: usize,
}

/// Results of one target.
struct TargetResult {
    /// The server these figures are of.
    target: Target,
    /// Seconds the window actually lasted.
    window: f64,
    /// See `Load::publishing_secs`.
    publishing_secs: f64,
    /// See `Load::media_ready_secs`.
    media_ready_secs: f64,
    /// Server CPU over the window, seconds.
    server_cpu_secs: f64,
    /// Of which Qiao's recorder threads used (Janus records nothing).
    recorder_cpu_secs: f64,
    /// Server RSS before anyone joined, KiB.
    server_rss_idle_kib: u64,
    /// Server RSS at the end of the window, KiB.
    server_rss_end_kib: u64,
    /// Server peak RSS (VmHWM) at the end of the window, KiB.
    server_rss_peak_kib: u64,
    /// Receive-buffer drops on the server's sockets over the window.
    server_udp_drops: u64,
    /// Receive-buffer drops on the load tool's sockets over the window.
    self_udp_drops: u64,
    /// Qiao's own counters over the window (none for Janus).
    qiao_counters: Option<QiaoRates>,
    /// Qiao's own delay per forwarded packet over the window (its stats; none for Janus).
    forward_delay: Option<qiao::media::DelayHistogram>,
    /// Every video down track over the window.
    video: Vec<DownTrack>,
    /// Every audio down track over the window.
    audio: Vec<DownTrack>,
    /// Publisher-to-receiver time of every video / audio packet in the window that had a send
    /// stamp, ms.
    latency_video_ms: Vec<f64>,
    latency_audio_ms: Vec<f64>,
    /// Packets in the window without a send stamp (should be none).
    unstamped: u64,
    /// Each subscriber's join to its first complete key frame from each publisher, ms.
    first_frame_ms: Vec<f64>,
    /// Subscriber join to the first video packet of each source: the part of join to first key
    /// frame that is signalling and connection setup, not waiting for or replaying a key frame.
    first_packet_ms: Vec<f64>,
    /// Video frames per second each publisher wrote (30 unless the load tool fell behind).
    publisher_fps: Vec<f64>,
    /// The load tool's CPU, % of one core.
    self_cpu_pct: f64,
    /// CPU used by every process on the machine, in % of one core (from /proc/stat).
    machine_busy_pct: f64,
    /// Background errors of the clients (write failures, server error messages).
    client_problems: Vec<String>,
}

impl TargetResult {
    fn server_cpu_pct(&self) -> f64 {
        self.server_cpu_secs / self.window * 100.0
    }
    /// Packets the receivers got over the window (duplicates included: each was forwarded).
    fn packets_received(&self) -> u64 {
        self.video.iter().chain(&self.audio).map(|t| t.received + t.duplicates).sum()
    }
    fn packets_per_s(&self) -> f64 {
        self.packets_received() as f64 / self.window
    }
    fn cpu_us_per_packet(&self) -> f64 {
        self.server_cpu_secs * 1e6 / self.packets_received().max(1) as f64
    }
    fn packets_per_cpu_s(&self) -> f64 {
        self.packets_received() as f64 / self.server_cpu_secs.max(1e-9)
    }
    /// The same, not counting the recorder threads: the forwarding alone, as Janus does it.
    fn packets_per_cpu_s_unrecorded(&self) -> f64 {
        self.packets_received() as f64 / (self.server_cpu_secs - self.recorder_cpu_secs).max(1e-9)
    }
}

/// The time from a subscriber's join to the arrival of the last packet of the first complete
/// VP8 key frame on `source`'s video track, ms.
fn first_keyframe_ms(rx: &Receiver, started: Instant, source: &str) -> Option<f64> {
    rx.recorder.with_track(source, "video", |t| {
        let frame = t.frames().into_iter().find(|f| f.complete && f.keyframe)?;
        let done = t.packets.iter().filter(|p| p.timestamp == frame.timestamp).map(|p| p.arrival).max()?;
        Some(done.duration_since(started).as_secs_f64() * 1000.0)
    })?
}

/// The time from a subscriber's join to the arrival of its first video packet from `source`, ms.
fn first_packet_ms(rx: &Receiver, started: Instant, source: &str) -> Option<f64> {
    rx.recorder.with_track(source, "video", |t| {
        let first = t.packets.iter().map(|p| p.arrival).min()?;
        Some(first.duration_since(started).as_secs_f64() * 1000.0)
    })?
}

/// A packet slower than this is counted in the slow-packet note (where in the window they arrived).
const SLOW_PACKET_MS: f64 = 20.0;

/// The measurement window over a load that is flowing.
async fn measure(
    target: Target,
    server: &ChildServer,
    qiao: Option<&QiaoServer>,
    load: &Load,
    rss_idle_kib: u64,
    args: &Args,
    host: Host,
) -> Result<TargetResult> {
    let Host { tck, cores } = host;
    eprintln!("  every receiver has media after {:.1} s; measuring for {} s", load.media_ready_secs, args.seconds);
    // The one deliberate timed wait.
    let start = Snapshot::take(server, qiao, load).await?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let end = Snapshot::take(server, qiao, load).await?;
    let window = end.at.duration_since(start.at).as_secs_f64();
    let per_s = |a: u64, b: u64| (b - a) as f64 / window;

    let mut r = TargetResult {
        target,
        window,
        publishing_secs: load.publishing_secs,
        media_ready_secs: load.media_ready_secs,
        server_cpu_secs: (end.server_ticks - start.server_ticks) as f64 / tck,
        recorder_cpu_secs: end.recorder_ticks.saturating_sub(start.recorder_ticks) as f64 / tck,
        server_rss_idle_kib: rss_idle_kib,
        server_rss_end_kib: server.rss_kib()?,
        server_rss_peak_kib: server.peak_rss_kib()?,
        // Sockets live for the whole run, so the counters only grow over the window.
        server_udp_drops: end.server_udp_drops.saturating_sub(start.server_udp_drops),
        self_udp_drops: end.self_udp_drops.saturating_sub(start.self_udp_drops),
        qiao_counters: start.counters.zip(end.counters).map(|(a, b)| QiaoRates {
            rtp_in: per_s(a.rtp_in, b.rtp_in),
            forwarded: per_s(a.rtp_forwarded, b.rtp_forwarded),
            forward_errors: b.forward_errors - a.forward_errors,
            paced: per_s(a.packets_paced, b.packets_paced),
        }),
        forward_delay: start.counters.zip(end.counters).map(|(a, b)| b.forward_delay.since(&a.forward_delay)),
        video: Vec::new(),
        audio: Vec::new(),
        latency_video_ms: Vec::new(),
        latency_audio_ms: Vec::new(),
        unstamped: 0,
        first_frame_ms: Vec::new(),
        first_packet_ms: Vec::new(),
        publisher_fps: start.frames_sent.iter().zip(&end.frames_sent).map(|(a, b)| per_s(*a, *b)).collect(),
        self_cpu_pct: (end.self_ticks - start.self_ticks) as f64 / tck / window * 100.0,
        machine_busy_pct: ratio(end.machine.0 - start.machine.0, end.machine.1 - start.machine.1)
            * cores as f64
            * 100.0,
        client_problems: Vec::new(),
    };

    let mut slow: std::collections::BTreeMap<(&str, u128), usize> = Default::default();
    for (((rx, s, kind), from), (_, to)) in start.tracks.iter().zip(&end.tracks) {
        let receiver = &load.receivers[*rx];
        let source = &receiver.sources[*s];
        let (Some((id, from)), Some((id_end, to))) = (from, to) else {
            bail!("{} has no {kind} track from {source}", receiver.name);
        };
        ensure!(id == id_end, "{}: the {kind} track from {source} was replaced during the window", receiver.name);
        let clock_rate = if *kind == "video" { 90_000.0 } else { 48_000.0 };
        let (track, latencies, unstamped) = receiver
            .recorder
            .with_track(source, kind, |t| {
                let window = &t.packets[*from..*to];
                let seqs: Vec<u16> = window.iter().map(|p| p.seq).collect();
                let report = rtp_check::check_sequence(&seqs);
                // Only packets sent during the window: one a server replays from its GOP cache to
                // a new subscriber was sent before, and its age is not a forwarding delay.
                let stamped = window.iter().filter(|p| p.sent_at.is_some()).count();
                let latencies: Vec<f64> = window
                    .iter()
                    .filter_map(|p| p.sent_at.filter(|s| *s >= start.at).map(|s| (p.arrival, s)))
                    .map(|(arrival, sent)| arrival.duration_since(sent).as_secs_f64() * 1000.0)
                    .collect();
                let unstamped = (window.len() - stamped) as u64;
                // Where in the window the slow packets arrived: a stall of the load tool delays
                // every track at once, a server queue or a retransmission one track.
                for p in window {
                    if let Some(sent) = p.sent_at.filter(|s| *s >= start.at) {
                        let ms = p.arrival.duration_since(sent).as_secs_f64() * 1000.0;
                        if ms > SLOW_PACKET_MS {
                            let at = p.arrival.saturating_duration_since(start.at).as_millis() / 100;
                            *slow.entry((*kind, at)).or_default() += 1;
                        }
                    }
                }
                if report.lost * 100 > report.packets as u64 {
                    // Say where: one long hole and many short ones have different causes.
                    let n = report.gaps.len();
                    eprintln!(
                        "lossy {kind} track at {} from {source}: {} of {} lost; {n} holes (after seq, length): {:?}{}; \
                         {} late, {} duplicates",
                        receiver.name,
                        report.lost,
                        report.packets,
                        &report.gaps[..n.min(12)],
                        if n > 12 { " …" } else { "" },
                        report.reordered.len(),
                        report.duplicates.len(),
                    );
                }
                let track = DownTrack {
                    received: (report.packets - report.duplicates.len()) as u64,
                    lost: report.lost,
                    duplicates: report.duplicates.len() as u64,
                    payload_bytes: window.iter().map(|p| p.payload.len() as u64).sum(),
                    jitter_ms: jitter_ms(window, clock_rate),
                };
                (track, latencies, unstamped)
            })
            .context("track vanished")?;
        r.unstamped += unstamped;
        if *kind == "video" {
            r.video.push(track);
            r.latency_video_ms.extend(latencies);
        } else {
            r.audio.push(track);
            r.latency_audio_ms.extend(latencies);
        }
    }
    if !slow.is_empty() {
        let total: usize = slow.values().sum();
        let mut bins: Vec<_> = slow.iter().collect();
        bins.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> =
            bins.iter().take(8).map(|((kind, at), n)| format!("{kind} {:.1} s: {n}", *at as f64 / 10.0)).collect();
        eprintln!(
            "  {total} packets took over {SLOW_PACKET_MS} ms; busiest 100 ms of arrival (from the window's start): {}",
            top.join(", ")
        );
    }
    for rx in &load.receivers {
        let Some(started) = rx.join_started else { continue };
        for source in &rx.sources {
            let ms = first_keyframe_ms(rx, started, source)
                .with_context(|| format!("{}: no complete key frame from {source}", rx.name))?;
            r.first_frame_ms.push(ms);
            let packet = first_packet_ms(rx, started, source);
            r.first_packet_ms.extend(packet);
            eprintln!("  {} from {source}: first video packet {packet:.0?} ms, first key frame {ms:.0} ms", rx.name);
        }
    }
    Ok(r)
}

/// Starts a server, sets up the load, measures, closes the clients and stops the server (also
/// when something failed).
async fn run_target(target: Target, bin: &Path, args: &Args, clip: &Arc<Fixture>, host: Host) -> Result<TargetResult> {
    let probe = Arc::new(LatencyProbe::default());
    match target {
        Target::Qiao => {
            let server = QiaoServer::start(bin, args.server_ip, args.gop_cache_kb).await?;
            let mut clients = Vec::new();
            let measured = async {
                let idle = server.process.rss_kib()?;
                let load = qiao_load(&server, &mut clients, args, clip, &probe).await?;
                let mut r = measure(target, &server.process, Some(&server), &load, idle, args, host).await?;
                r.client_problems =
                    clients.iter().filter_map(|c| c.assert_healthy().err()).map(|e| format!("{e:#}")).collect();
                Ok::<_, anyhow::Error>(r)
            }
            .await;
            // Clients go first (their peer connections close locally; the server sees them
            // vanish), then the server is stopped cleanly whatever the measurement returned.
            futures_util::future::join_all(clients.iter().map(|c| c.drop_without_leave())).await;
            drop(clients);
            finish(server.process, measured).await
        }
        Target::Janus => {
            let server = janus::JanusServer::start(args.server_ip).await?;
            let mut parts = Vec::new();
            let measured = async {
                let idle = server.process.rss_kib()?;
                let load = janus_load(&server, &mut parts, args, clip, &probe).await?;
                let mut r = measure(target, &server.process, None, &load, idle, args, host).await?;
                r.client_problems = parts.iter().flat_map(|p| p.errors.lock().unwrap().clone()).collect();
                Ok::<_, anyhow::Error>(r)
            }
            .await;
            for r in futures_util::future::join_all(parts.iter().map(JanusParticipant::close)).await {
                if let Err(e) = r {
                    eprintln!("  closing a Janus session: {e:#}");
                }
            }
            drop(parts);
            finish(server.process, measured).await
        }
    }
}

/// Stops the server and returns the measurement, with the server's log when it failed.
async fn finish(mut server: ChildServer, measured: Result<TargetResult>) -> Result<TargetResult> {
    let measured = match measured {
        Ok(r) => server.check_alive().map(|()| r),
        Err(e) => Err(e),
    };
    let log = server.log_tail();
    let name = server.name;
    let stopped = server.stop().await;
    let result = measured.map_err(|e| e.context(format!("{name} log tail:\n{log}")))?;
    stopped?;
    Ok(result)
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

/// The `p`-th percentile (0–100, nearest rank) of `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Loss over all tracks together, and the worst single track, in percent.
fn loss_cell(tracks: &[DownTrack]) -> String {
    let lost: u64 = tracks.iter().map(|t| t.lost).sum();
    let all: u64 = tracks.iter().map(|t| t.received + t.lost).sum();
    format!("{:.2} / {:.2}", ratio(lost, all) * 100.0, max(tracks.iter().map(DownTrack::loss)) * 100.0)
}

fn jitter_cell(tracks: &[DownTrack]) -> String {
    format!("{:.2} / {:.2}", mean(tracks.iter().map(|t| t.jitter_ms)), max(tracks.iter().map(|t| t.jitter_ms)))
}

/// A figure of one target, for the ratio column.
type Figure<'a> = Box<dyn Fn(&TargetResult) -> f64 + 'a>;

/// A report row: a label, one cell per target, and the Qiao / Janus ratio of `value` when both
/// ran and the row has one.
struct Row<'a> {
    /// The first column.
    label: &'a str,
    /// A target's cell.
    cell: Box<dyn Fn(&TargetResult) -> String + 'a>,
    /// The figure whose Qiao / Janus ratio the last column shows.
    value: Option<Figure<'a>>,
}

fn row<'a>(label: &'a str, cell: impl Fn(&TargetResult) -> String + 'a) -> Row<'a> {
    Row { label, cell: Box::new(cell), value: None }
}

fn ratio_row<'a>(label: &'a str, digits: usize, value: impl Fn(&TargetResult) -> f64 + Copy + 'a) -> Row<'a> {
    Row { label, cell: Box::new(move |r| format!("{:.*}", digits, value(r))), value: Some(Box::new(value)) }
}

fn print_report(args: &Args, results: &[TargetResult], clip_kbps: f64, cores: usize) {
    let participants = args.participants();
    let down_tracks_per_kind =
        args.rooms * (args.publishers * (args.publishers - 1) + args.subscribers * args.publishers);
    let kbps = |r: &TargetResult, t: &DownTrack| t.payload_bytes as f64 * 8.0 / r.window / 1000.0;
    let rows = [
        ratio_row("server CPU, % of one core", 1, TargetResult::server_cpu_pct),
        ratio_row("**server CPU per forwarded packet, µs**", 2, TargetResult::cpu_us_per_packet),
        ratio_row("**forwarded packets per server CPU-second**", 0, TargetResult::packets_per_cpu_s),
        ratio_row(
            "the same, not counting Qiao's recorder threads (Janus records nothing)",
            0,
            TargetResult::packets_per_cpu_s_unrecorded,
        ),
        ratio_row("forwarded packets/s (counted at the receivers)", 0, TargetResult::packets_per_s),
        row("video loss at receivers after NACK, % (all / worst track)", |r| loss_cell(&r.video)),
        row("audio loss at receivers, % (all / worst track)", |r| loss_cell(&r.audio)),
        row("interarrival jitter, video, ms (mean / worst track)", |r| jitter_cell(&r.video)),
        row("interarrival jitter, audio, ms (mean / worst track)", |r| jitter_cell(&r.audio)),
        row("**added latency, video, ms (p50 / p99)**", |r| {
            format!("{:.1} / {:.1}", percentile(&r.latency_video_ms, 50.0), percentile(&r.latency_video_ms, 99.0))
        }),
        row("**added latency, audio, ms (p50 / p99)**", |r| {
            format!("{:.1} / {:.1}", percentile(&r.latency_audio_ms, 50.0), percentile(&r.latency_audio_ms, 99.0))
        }),
        row("server's own delay per forwarded packet, kernel in → every copy out, µs (p50 / p99, at most)", |r| {
            let bound = |h: &qiao::media::DelayHistogram, p| match h.percentile_bound_us(p) {
                Some(u64::MAX) => format!("> {}", qiao::media::DELAY_BOUNDS_US[qiao::media::DELAY_BOUNDS_US.len() - 1]),
                Some(b) => b.to_string(),
                None => "—".to_string(),
            };
            match &r.forward_delay {
                Some(h) => format!("{} / {}", bound(h, 50.0), bound(h, 99.0)),
                None => "not measured".to_string(),
            }
        }),
        ratio_row("**server memory per participant, MiB**", 2, move |r| {
            mib(r.server_rss_end_kib.saturating_sub(r.server_rss_idle_kib)) / participants as f64
        }),
        row("server RSS idle → in session (peak), MiB", |r| {
            format!(
                "{:.1} → {:.1} ({:.1})",
                mib(r.server_rss_idle_kib),
                mib(r.server_rss_end_kib),
                mib(r.server_rss_peak_kib)
            )
        }),
        row("**subscriber join to first key frame, ms (p50 / max)**", |r| {
            if r.first_frame_ms.is_empty() {
                "no subscribers".to_string()
            } else {
                format!("{:.0} / {:.0}", percentile(&r.first_frame_ms, 50.0), max(r.first_frame_ms.iter().copied()))
            }
        }),
        row("subscriber join to first video packet, ms (p50 / max)", |r| {
            if r.first_packet_ms.is_empty() {
                "no subscribers".to_string()
            } else {
                format!("{:.0} / {:.0}", percentile(&r.first_packet_ms, 50.0), max(r.first_packet_ms.iter().copied()))
            }
        }),
        row("video received per down track, kbps (mean / min)", |r| {
            format!("{:.0} / {:.0}", mean(r.video.iter().map(|t| kbps(r, t))), min(r.video.iter().map(|t| kbps(r, t))))
        }),
        row("video duplicates at receivers, %", |r| {
            let dups: u64 = r.video.iter().map(|t| t.duplicates).sum();
            let all: u64 = r.video.iter().map(|t| t.received + t.duplicates).sum();
            format!("{:.2}", ratio(dups, all) * 100.0)
        }),
        row("UDP drops: server socket / load tool sockets", |r| {
            format!("{} / {}", r.server_udp_drops, r.self_udp_drops)
        }),
        row("publisher video fps (mean / min)", |r| {
            format!("{:.1} / {:.1}", mean(r.publisher_fps.iter().copied()), min(r.publisher_fps.iter().copied()))
        }),
        row("load tool CPU, % of one core", |r| format!("{:.1}", r.self_cpu_pct)),
        row("setup: publishers sending / all media flowing, s", |r| {
            format!("{:.1} / {:.1}", r.publishing_secs, r.media_ready_secs)
        }),
    ];
    let both = results.len() == 2;
    println!();
    println!(
        "### {} rooms × {} publishers × {} subscribers ({participants} participants, {down_tracks_per_kind} video and \
         {down_tracks_per_kind} audio down tracks), {} s window",
        args.rooms, args.publishers, args.subscribers, args.seconds
    );
    println!();
    let names: Vec<&str> = results.iter().map(|r| r.target.name()).collect();
    let ratio_head = if both { " | Qiao / Janus" } else { "" };
    println!("| | {}{ratio_head} |", names.join(" | "));
    println!("|---|{}{}", "---:|".repeat(results.len()), if both { "---:|" } else { "" });
    for row in &rows {
        let cells: Vec<String> = results.iter().map(|r| (row.cell)(r)).collect();
        let ratio_cell = match (&row.value, both) {
            (Some(v), true) => format!(" | {:.2}", v(&results[0]) / v(&results[1])),
            (None, true) => " | ".to_string(),
            _ => String::new(),
        };
        println!("| {} | {}{ratio_cell} |", row.label, cells.join(" | "));
    }
    println!();
    for r in results {
        if let Some(QiaoRates { rtp_in, forwarded, forward_errors: errors, paced }) = r.qiao_counters {
            println!(
                "Qiao's own counters (`GET /api/v1/media/stats`) over the window: {rtp_in:.0} RTP packets in/s, \
                 {forwarded:.0} forwarded/s (÷ in = {:.2}), {errors} forward errors, {paced:.0} packets/s paced.",
                forwarded / rtp_in.max(1.0)
            );
            println!();
        }
        if let Some(h) = &r.forward_delay {
            // The whole histogram: where the tail starts says more than two bucket bounds.
            let total = h.counts.iter().sum::<u64>().max(1) as f64;
            let shares: Vec<String> = h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let bound = qiao::media::DELAY_BOUNDS_US
                        .get(i)
                        .map_or_else(|| format!("> {}", qiao::media::DELAY_BOUNDS_US[i - 1]), |b| format!("≤ {b}"));
                    format!("{bound}: {:.2} %", *n as f64 * 100.0 / total)
                })
                .collect();
            println!("Qiao's own delay per forwarded packet over the window, µs: {}.", shares.join(", "));
            println!();
        }
    }
    println!(
        "Video: {VIDEO_WIDTH}×{VIDEO_HEIGHT} VP8 at {} fps, clip average {clip_kbps:.0} kbps of RTP payload (target {} \
         kbps, a key frame every {} frames); audio: Opus 48 kbps, 20 ms. Every publisher also receives the other \
         publishers of its room. The servers and the load tool run in one network namespace (the load tool binds \
         {}, the servers' media {}). Forwarded packets are those the receivers got in the window, retransmissions \
         included; loss counts sequence numbers never received in the window (after NACK repair); jitter is the RFC \
         3550 estimator, averaged over the window; added latency is from the publisher's stack \
         letting the packet go (after its pacer) to the receiver's track reader, both in this process, so it includes both webrtc-rs stacks (packets sent \
         during the window only: a packet replayed from a GOP cache was sent earlier). Memory per \
         participant is (RSS at the end − RSS idle) ÷ {participants}. CPU is user + system time from \
         /proc/PID/stat over the window; {cores} cores. Qiao records every session (its CPU includes the \
         recorder); Janus records nothing. The publishers' clips start staggered over one key-frame interval (independent cameras \
         do not send key frames together){pacing}. Subscribers join spread over one key-frame interval; the publishers' clip \
         does not answer keyframe requests, so join to first key frame waits for the clip's next key frame unless \
         the server has one to send (a browser publisher would answer a server's request within about one round \
         trip).",
        fixtures::VIDEO_FPS,
        args.kbps,
        fixtures::KEYFRAME_INTERVAL,
        args.client_ip,
        args.server_ip,
        pacing = if args.publisher_pacing > 0.0 {
            format!(
                ", and each paces its packets at {} times {} kbps in bursts of at most {} ms of it, as Chromium's \
                 pacer does (a key frame leaves over tens of milliseconds, not in one burst)",
                args.publisher_pacing,
                args.kbps,
                PUBLISH_BURST.as_millis()
            )
        } else {
            "; publishers do not pace (each frame's packets leave together)".to_string()
        },
    );
    println!();
    println!("Command: `{}`", args.command());
    for r in results {
        let notes = notes(r);
        if !notes.is_empty() {
            println!();
            println!("Notes for {}:", r.target.name());
            for n in notes {
                println!("- {n}");
            }
        }
    }
}

/// Things a reader must know before trusting a column: which side lost packets, whether the load
/// generator kept real time, errors.
fn notes(r: &TargetResult) -> Vec<String> {
    let mut notes = Vec::new();
    if r.self_udp_drops > 0 {
        notes.push(format!(
            "{} datagrams were dropped at the load tool's sockets (receive buffer full: the clients did not read \
             in time). Loss, duplicates (NACK retransmissions) and extra received kbps in this column then come \
             from the load generator, not from the server.",
            r.self_udp_drops
        ));
    }
    if r.server_udp_drops > 0 {
        notes.push(format!(
            "{} datagrams were dropped at the server's sockets (receive buffer full).",
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
    let others = r.machine_busy_pct - r.server_cpu_pct() - r.self_cpu_pct;
    if others > 25.0 {
        notes.push(format!(
            "other processes used about {others:.0} % of one core during the window (machine-wide /proc/stat): \
             the server and the load generator shared the cores with them; compare with a run on a quiet machine."
        ));
    }
    if let Some(errors) = r.qiao_counters.map(|c| c.forward_errors).filter(|&e| e > 0) {
        notes.push(format!("the server counted {errors} forward errors in the window."));
    }
    if r.unstamped > 0 {
        notes.push(format!(
            "{} received packets had no send stamp (payload not matched to a publisher's): they have no latency.",
            r.unstamped
        ));
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
        bin.is_file() || !args.targets.contains(&Target::Qiao),
        "server binary {} not found: run scripts/bench.sh (it builds it), or set QIAO_BIN",
        bin.display()
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let host = Host { tck: clock_ticks_per_sec(), cores };
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let janus_version = std::process::Command::new("janus")
        .arg("--version")
        .output()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            let first = out.lines().next().unwrap_or_default();
            first.strip_prefix("Janus version: ").unwrap_or(first).to_string()
        })
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

    // Per round: (µs per forwarded packet, packets per CPU-second, the same without the
    // recorder) of each target.
    let mut rounds: Vec<Vec<(f64, f64, f64)>> = Vec::new();
    for round in 1..=args.rounds {
        let mut results = Vec::new();
        for &target in &args.targets {
            eprintln!(
                "{}: {} rooms × {} publishers × {} subscribers{}",
                target.name(),
                args.rooms,
                args.publishers,
                args.subscribers,
                if args.rounds > 1 { format!(" (round {round} of {})", args.rounds) } else { String::new() }
            );
            let r = run_target(target, &bin, &args, &clip, host).await.with_context(|| target.name())?;
            eprintln!(
                "  server CPU {:.1} % of one core, {:.2} µs per forwarded packet; load tool CPU {:.1} %",
                r.server_cpu_pct(),
                r.cpu_us_per_packet(),
                r.self_cpu_pct
            );
            results.push(r);
        }
        if round == 1 {
            println!(
                "Machine: {}, {cores} cores, Linux {}; {version}{}",
                cpu_model(),
                kernel.trim(),
                if args.targets.contains(&Target::Janus) { format!("; Janus {janus_version}") } else { String::new() }
            );
        }
        if args.rounds > 1 {
            println!("\n## Round {round} of {}", args.rounds);
        }
        print_report(&args, &results, clip_kbps, cores);
        rounds.push(
            results
                .iter()
                .map(|r| (r.cpu_us_per_packet(), r.packets_per_cpu_s(), r.packets_per_cpu_s_unrecorded()))
                .collect(),
        );
    }
    if args.rounds > 1 {
        print_rounds(&args, &rounds);
    }
    Ok(())
}

/// The rounds side by side, and the median of each figure (of the ratios too, with both targets).
fn print_rounds(args: &Args, rounds: &[Vec<(f64, f64, f64)>]) {
    let names: Vec<&str> = args.targets.iter().map(|t| t.name()).collect();
    let both = names.len() == 2;
    println!("\n## {} rounds\n", rounds.len());
    let mut head = names.iter().map(|n| format!("{n}: µs per forwarded packet")).collect::<Vec<_>>();
    if both {
        head.push("packets per CPU-second, Qiao ÷ Janus".into());
        head.push("the same, not counting Qiao's recorder threads".into());
    }
    println!("| round | {} |", head.join(" | "));
    println!("|---|{}", "---:|".repeat(head.len()));
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let row = |r: &[(f64, f64, f64)]| -> Vec<f64> {
        let mut cells: Vec<f64> = r.iter().map(|t| t.0).collect();
        if both {
            cells.push(r[0].1 / r[1].1);
            cells.push(r[0].2 / r[1].1);
        }
        cells
    };
    let table: Vec<Vec<f64>> = rounds.iter().map(|r| row(r)).collect();
    for (i, cells) in table.iter().enumerate() {
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:.2}")).collect();
        println!("| {} | {} |", i + 1, cells.join(" | "));
    }
    let medians: Vec<String> =
        (0..head.len()).map(|k| format!("**{:.2}**", median(table.iter().map(|c| c[k]).collect()))).collect();
    println!("| median | {} |", medians.join(" | "));
    println!("\nCommand: `{}`", args.command());
}

fn main() -> std::process::ExitCode {
    // The clients' stack reports media it had to drop (a track queue full, a track not yet
    // registered) only in its log: a loss the receivers never ask to be resent.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            // QIAO_BENCH_CLIENT_LOG: what the clients' stacks log (to find where a join waits).
            std::env::var("QIAO_BENCH_CLIENT_LOG").unwrap_or_else(|_| "webrtc=error,rtc=error".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
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
