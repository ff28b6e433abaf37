//! Janus VideoRoom for the load benchmark's comparison (`--target janus`, benches/room_load.rs).
//!
//! [`JanusServer::start`] runs Debian's `janus` (1.1) as a child process with a configuration
//! generated in a temporary directory: the HTTP transport only, on 127.0.0.1; the VideoRoom plugin
//! only; ICE on the one server address; an RTP port range; no STUN, NAT settings left at their
//! defaults. Its plugin and transport folders are read from the packaged /etc/janus/janus.jcfg.
//!
//! The rest is a small client of the Janus REST API (`POST /janus` creates a session, `POST
//! /janus/{session}` attaches a plugin handle, `POST /janus/{session}/{handle}` sends a plugin
//! message or a trickled candidate, `GET /janus/{session}?maxev=N` long-polls the session's
//! events and keeps it alive) and of the VideoRoom requests (`create`; a publisher's `join` and
//! `publish` with the offer; a subscriber's `join` with `streams` — Janus offers — and `start`
//! with the answer). The media are the same webrtc-rs [`PublishSide`] and [`SubscribeSide`] the
//! Qiao clients use. Candidates are trickled (Janus answers and offers with its own candidates in
//! the SDP: half-trickle).

use crate::common::client::{
    CandidateSink, ClientOptions, Media, OutCandidate, PublishSide, SubscribeSide, TrackInfo, VideoCodec,
};
use crate::common::rtp_check;
use crate::ChildServer;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// The packaged configuration: where Debian put the plugins, transports, event handlers and
/// loggers.
const PACKAGED_CONFIG: &str = "/etc/janus/janus.jcfg";
/// Bound for janus to answer `GET /janus/info` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Janus ends a long poll after 30 s with a keepalive; the HTTP client waits a little longer.
const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(45);
/// The UDP ports Janus's ICE agents use (one or more per handle).
const RTP_PORT_RANGE: &str = "20000-40000";

// ════════════════════════════════ the server ════════════════════════════════

/// `janus` as a child process and the base of its REST API.
pub struct JanusServer {
    /// The janus process: CPU, memory, log, stop.
    pub process: ChildServer,
    /// `http://127.0.0.1:PORT/janus`.
    url: String,
    /// Shared by every session (its timeout outlasts a long poll).
    http: reqwest::Client,
}

/// One `key = "value"` setting of a Janus (libconfig) file.
fn jcfg_setting(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.split('"').nth(1).map(str::to_string)).flatten()
    })
}

/// The shared libraries in `folder` except `keep`, comma-separated, for a `disable` setting.
fn libraries_except(folder: &str, keep: &str) -> Result<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).with_context(|| format!("read {folder}"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".so") && name != keep {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.join(","))
}

/// A TCP port that was free a moment ago (for janus's HTTP transport, which cannot report an
/// ephemeral port).
fn free_tcp_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a probe socket")?;
    Ok(listener.local_addr()?.port())
}

impl JanusServer {
    /// Writes the configuration, starts janus and waits until its API answers. ICE uses
    /// `server_ip` only, which must not be a loopback address: Janus gathers no loopback
    /// candidates.
    pub async fn start(server_ip: IpAddr) -> Result<JanusServer> {
        ensure!(
            !server_ip.is_loopback(),
            "Janus gathers no loopback candidates: run the benchmark with scripts/bench.sh (it runs it in a network \
             namespace with a veth pair) or pass a non-loopback --server-ip"
        );
        let packaged = std::fs::read_to_string(PACKAGED_CONFIG)
            .with_context(|| format!("read {PACKAGED_CONFIG} (is the janus package installed?)"))?;
        let folder =
            |key: &str| jcfg_setting(&packaged, key).with_context(|| format!("{PACKAGED_CONFIG} has no {key}"));
        let (plugins, transports, events, loggers) = (
            folder("plugins_folder")?,
            folder("transports_folder")?,
            folder("events_folder")?,
            folder("loggers_folder")?,
        );
        let dir = tempfile::tempdir().context("temp dir")?;
        let conf = dir.path();
        let port = free_tcp_port()?;
        let write =
            |name: &str, text: String| std::fs::write(conf.join(name), text).with_context(|| format!("write {name}"));
        write(
            "janus.jcfg",
            format!(
                r#"general: {{
    configs_folder = "{conf}"
    plugins_folder = "{plugins}"
    transports_folder = "{transports}"
    events_folder = "{events}"
    loggers_folder = "{loggers}"
    debug_level = 4
    interface = "{server_ip}"
}}
media: {{
    rtp_port_range = "{RTP_PORT_RANGE}"
}}
nat: {{
    ice_enforce_list = "{server_ip}"
}}
plugins: {{
    disable = "{disabled_plugins}"
}}
transports: {{
    disable = "{disabled_transports}"
}}
loggers: {{
    disable = "{disabled_loggers}"
}}
events: {{
    broadcast = false
}}
"#,
                conf = conf.display(),
                disabled_plugins = libraries_except(&plugins, "libjanus_videoroom.so")?,
                disabled_transports = libraries_except(&transports, "libjanus_http.so")?,
                disabled_loggers = libraries_except(&loggers, "")?,
            ),
        )?;
        write(
            "janus.transport.http.jcfg",
            format!(
                r#"general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    ip = "127.0.0.1"
    port = {port}
    https = false
}}
admin: {{
    admin_http = false
    admin_https = false
}}
"#
            ),
        )?;
        // No predefined rooms: the benchmark creates its own.
        write("janus.plugin.videoroom.jcfg", "general: {\n}\n".to_string())?;

        let log_path = conf.join("janus.log");
        let log = std::fs::File::create(&log_path).context("create janus log")?;
        let mut cmd = tokio::process::Command::new("janus");
        cmd.arg("--config")
            .arg(conf.join("janus.jcfg"))
            .arg("--configs-folder")
            .arg(conf)
            .arg("--disable-colors")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().context("janus log")?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd.spawn().context("start janus (apt-get install janus)")?;
        let mut process = ChildServer::new("janus", child, log_path, dir)?;
        let url = format!("http://127.0.0.1:{port}/janus");
        let http = reqwest::Client::builder().timeout(LONG_POLL_TIMEOUT).build()?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            process.check_alive()?;
            let info = http.get(format!("{url}/info")).send().await;
            if matches!(&info, Ok(r) if r.status().is_success()) {
                return Ok(JanusServer { process, url, http });
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("janus did not answer on {url} within {START_TIMEOUT:?}; log:\n{}", process.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new Janus session whose events are long-polled until it is dropped.
    pub async fn session(&self, label: &str) -> Result<Arc<Session>> {
        let v = post(&self.http, &self.url, json!({"janus": "create", "transaction": transaction()})).await?;
        let id = v["data"]["id"].as_u64().with_context(|| format!("create session: {v}"))?;
        let url = format!("{}/{id}", self.url);
        let events = Arc::new(Events::default());
        let long_poll = tokio::spawn(long_poll(self.http.clone(), url.clone(), Arc::clone(&events)));
        Ok(Arc::new(Session { http: self.http.clone(), url, label: label.to_string(), events, long_poll }))
    }

    /// Creates VideoRoom `room` for `publishers` publishers, with a video bit-rate cap of
    /// `bitrate_bps` and no periodic keyframe requests (the publishers send one every second).
    pub async fn create_room(&self, room: u64, publishers: usize, bitrate_bps: u64) -> Result<()> {
        let session = self.session("room creation").await?;
        let handle = session.attach().await?;
        let data = handle
            .sync_request(json!({
                "request": "create",
                "room": room,
                "publishers": publishers,
                "bitrate": bitrate_bps,
                "fir_freq": 0,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "notify_joining": false,
                "permanent": false,
            }))
            .await?;
        ensure!(data["videoroom"] == "created", "create room {room}: {data}");
        session.destroy().await
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value> {
    let resp = http.post(url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    ensure!(status.is_success(), "POST {url} {body} -> {status}: {text}");
    let v: Value = serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))?;
    ensure!(v["janus"] != "error", "POST {url} {body} -> {v}");
    Ok(v)
}

fn transaction() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ════════════════════════════════ sessions and handles ════════════════════════════════

/// The events a session's long poll has delivered.
#[derive(Default)]
struct Events {
    /// Every event, in order.
    list: Mutex<Vec<Value>>,
    /// Wakes the waiters of `Session::wait_event`.
    notify: Notify,
    /// Why the long poll stopped, if it did.
    failed: Mutex<Option<String>>,
}

async fn long_poll(http: reqwest::Client, url: String, events: Arc<Events>) {
    let poll_url = format!("{url}?maxev=20");
    loop {
        let reply = async {
            let resp = http.get(&poll_url).send().await?.error_for_status()?;
            anyhow::Ok(resp.json::<Value>().await?)
        }
        .await;
        match reply {
            Ok(Value::Array(list)) => {
                events.list.lock().unwrap().extend(list.into_iter().filter(|e| e["janus"] != "keepalive"));
                events.notify.notify_waiters();
            }
            Ok(other) => {
                if other["janus"] != "keepalive" {
                    events.list.lock().unwrap().push(other);
                    events.notify.notify_waiters();
                }
            }
            Err(e) => {
                *events.failed.lock().unwrap() = Some(format!("long poll {poll_url}: {e:#}"));
                events.notify.notify_waiters();
                return;
            }
        }
    }
}

/// A Janus session: the unit Janus times out, with the long poll that keeps it alive.
pub struct Session {
    /// The server's client, for this session's requests and its handles'.
    http: reqwest::Client,
    /// `…/janus/{session id}`.
    url: String,
    /// For error messages.
    label: String,
    /// What the long poll has delivered, for `wait_event`.
    events: Arc<Events>,
    /// The long-poll task; aborted when the session is dropped or destroyed.
    long_poll: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.long_poll.abort();
    }
}

impl Session {
    /// Attaches a VideoRoom handle.
    pub async fn attach(self: &Arc<Self>) -> Result<Handle> {
        let v = post(
            &self.http,
            &self.url,
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()}),
        )
        .await?;
        let id = v["data"]["id"].as_u64().with_context(|| format!("{}: attach: {v}", self.label))?;
        Ok(Handle { session: Arc::clone(self), id, url: format!("{}/{id}", self.url) })
    }

    /// Waits for an event matching `pred`, including ones already received.
    async fn wait_event(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.events.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.events.list.lock().unwrap().iter().find(|e| pred(e)) {
                return Ok(v.clone());
            }
            if let Some(why) = self.events.failed.lock().unwrap().clone() {
                bail!("{}: {why} while waiting for {what}", self.label);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let recent: Vec<String> =
                    self.events.list.lock().unwrap().iter().rev().take(10).map(Value::to_string).collect();
                bail!("{}: no {what} within {timeout:?}; latest events: {recent:#?}", self.label);
            }
        }
    }

    /// Ends the session on the server (its handles and their peer connections with it).
    pub async fn destroy(&self) -> Result<()> {
        self.long_poll.abort();
        post(&self.http, &self.url, json!({"janus": "destroy", "transaction": transaction()})).await.map(drop)
    }
}

/// A VideoRoom plugin handle (one peer connection on the Janus side).
pub struct Handle {
    /// Its session: the events, the HTTP client, and kept alive as long as the handle.
    session: Arc<Session>,
    /// Janus's handle id (the `sender` of its events).
    id: u64,
    /// `…/janus/{session}/{handle}`.
    url: String,
}

impl Handle {
    /// A plugin request Janus answers at once (`create`): returns the plugin's data.
    async fn sync_request(&self, body: Value) -> Result<Value> {
        let v = post(
            &self.session.http,
            &self.url,
            json!({"janus": "message", "transaction": transaction(), "body": body}),
        )
        .await?;
        let data = v["plugindata"]["data"].clone();
        ensure!(data.get("error").is_none(), "{}: {body} -> {data}", self.session.label);
        Ok(data)
    }

    /// Sends a plugin request that an event answers (`join`, `publish`, `start`); returns its
    /// transaction, for `reply`.
    async fn send(&self, body: &Value, jsep: Option<Value>) -> Result<String> {
        let tx = transaction();
        let mut msg = json!({"janus": "message", "transaction": tx, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        post(&self.session.http, &self.url, msg).await?;
        Ok(tx)
    }

    /// The plugin event answering the request `send` returned `tx` for (`body`, for messages).
    async fn reply(&self, tx: &str, body: &Value, timeout: Duration) -> Result<Value> {
        let what = format!("the answer to {body}");
        let event =
            self.session.wait_event(&what, timeout, |e| e["sender"] == self.id && e["transaction"] == tx).await?;
        let data = &event["plugindata"]["data"];
        ensure!(data.get("error").is_none(), "{}: {body} -> {data}", self.session.label);
        Ok(event)
    }

    /// `send` and `reply`.
    async fn request(&self, body: Value, timeout: Duration) -> Result<Value> {
        let tx = self.send(&body, None).await?;
        self.reply(&tx, &body, timeout).await
    }

    /// Waits for Janus's `webrtcup` on this handle (ICE and DTLS done on its side).
    async fn wait_webrtcup(&self, timeout: Duration) -> Result<()> {
        self.session
            .wait_event("webrtcup", timeout, |e| e["janus"] == "webrtcup" && e["sender"] == self.id)
            .await
            .map(drop)
    }

    /// A candidate sink that trickles to this handle, in order, from a task of its own.
    fn trickle_sink(&self, errors: Arc<Mutex<Vec<String>>>) -> CandidateSink {
        let (tx, mut rx) = mpsc::unbounded_channel::<OutCandidate>();
        let (http, url, label) = (self.session.http.clone(), self.url.clone(), self.session.label.clone());
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let candidate = match &c.candidate {
                    Some(c) => {
                        json!({"candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index})
                    }
                    None => json!({"completed": true}),
                };
                let msg = json!({"janus": "trickle", "transaction": transaction(), "candidate": candidate});
                if let Err(e) = post(&http, &url, msg).await {
                    errors.lock().unwrap().push(format!("{label}: trickle: {e:#}"));
                }
            }
        });
        Arc::new(move |c| {
            let _ = tx.send(c);
        })
    }
}

/// The `jsep` of an event, checked to be of type `ty`.
fn jsep_sdp(event: &Value, ty: &str) -> Result<String> {
    let jsep = &event["jsep"];
    ensure!(jsep["type"] == ty, "expected a jsep {ty}: {event}");
    Ok(jsep["sdp"].as_str().context("jsep without sdp")?.to_string())
}

// ════════════════════════════════ participants ════════════════════════════════

/// A publisher in a VideoRoom: sends the fixture media like a Qiao client's publish connection.
pub struct JanusPublisher {
    /// Janus's id of the published feed (what subscribers ask for).
    pub feed: u64,
    /// The publish connection and its pacers (frame counter, close).
    pub side: PublishSide,
    /// Keeps the handle's session referenced while the publisher lives.
    _handle: Handle,
}

/// Joins `room` as publisher `name` on `session`, publishes audio and VP8 video, waits until
/// media flows (the client's connection is up and Janus said `webrtcup`) and starts the pacers.
pub async fn publish(
    session: &Arc<Session>,
    room: u64,
    name: &str,
    opts: &ClientOptions,
    errors: Arc<Mutex<Vec<String>>>,
    timeout: Duration,
) -> Result<JanusPublisher> {
    let handle = session.attach().await?;
    let joined = handle
        .request(json!({"request": "join", "ptype": "publisher", "room": room, "display": name}), timeout)
        .await?;
    let data = &joined["plugindata"]["data"];
    ensure!(data["videoroom"] == "joined", "{name}: join as publisher: {joined}");
    let feed = data["id"].as_u64().with_context(|| format!("{name}: joined without id: {joined}"))?;

    let sink = handle.trickle_sink(Arc::clone(&errors));
    let mut side =
        PublishSide::new_with_options(name, name, Media::audio_video(VideoCodec::Vp8), opts, sink, errors).await?;
    let offer = side.create_offer().await?;
    let body = json!({"request": "publish"});
    let tx = handle.send(&body, Some(json!({"type": "offer", "sdp": offer}))).await?;
    // Janus has taken the offer; candidates may follow.
    side.gate.open_with(&offer);
    let event = handle.reply(&tx, &body, timeout).await?;
    ensure!(event["plugindata"]["data"]["configured"] == "ok", "{name}: publish: {event}");
    side.apply_answer(&jsep_sdp(&event, "answer")?).await?;
    side.wait_connected(timeout).await?;
    handle.wait_webrtcup(timeout).await?;
    side.start_streaming().await?;
    Ok(JanusPublisher { feed, side, _handle: handle })
}

/// A subscriber handle: one peer connection receiving several feeds (Janus's multistream
/// subscription, like Qiao's one subscribe connection per participant).
pub struct JanusSubscriber {
    /// The subscribe connection; its recorder holds what arrived, by publisher name.
    pub side: SubscribeSide,
    /// Keeps the handle's session referenced while the subscriber lives.
    _handle: Handle,
}

/// Subscribes on `session` to `feeds` (feed id, publisher name) of `room`: Janus offers, the
/// subscribe side answers, `start`. The recorder files each track under its publisher's name.
pub async fn subscribe(
    session: &Arc<Session>,
    room: u64,
    name: &str,
    feeds: &[(u64, String)],
    opts: &ClientOptions,
    errors: Arc<Mutex<Vec<String>>>,
    timeout: Duration,
) -> Result<JanusSubscriber> {
    let handle = session.attach().await?;
    let sink = handle.trickle_sink(Arc::clone(&errors));
    let side = SubscribeSide::new_with_options(name, opts, sink, errors).await?;
    let streams: Vec<Value> = feeds.iter().map(|(feed, _)| json!({"feed": feed})).collect();
    let attached = handle
        .request(json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}), timeout)
        .await?;
    let data = &attached["plugindata"]["data"];
    ensure!(data["videoroom"] == "attached", "{name}: join as subscriber: {attached}");
    let offer = jsep_sdp(&attached, "offer")?;

    // Which feed each m-line carries: the event's `streams` (mid → feed_id), the offer's msid
    // (mid → track id, which is what the recorder sees).
    let feed_of_mid = |mid: &str| {
        data["streams"].as_array().into_iter().flatten().find(|s| s["mid"] == mid).and_then(|s| s["feed_id"].as_u64())
    };
    for m in rtp_check::parse_sdp_media(&offer) {
        let (Some(mid), Some((_, track_id))) = (&m.mid, &m.msid) else { continue };
        let Some(feed) = feed_of_mid(mid) else { continue };
        let publisher = feeds
            .iter()
            .find(|(f, _)| *f == feed)
            .map(|(_, n)| n.clone())
            .with_context(|| format!("{name}: Janus offered feed {feed}, which was not asked for"))?;
        side.recorder.note_offered(TrackInfo {
            track_id: track_id.clone(),
            participant_id: publisher,
            kind: m.kind.clone(),
            source: String::new(),
            codec: String::new(),
        });
    }

    let answer = side.answer(&offer).await?;
    let body = json!({"request": "start"});
    let tx = handle.send(&body, Some(json!({"type": "answer", "sdp": answer}))).await?;
    side.gate.open_with(&answer);
    handle.reply(&tx, &body, timeout).await?;
    side.wait_connected(timeout).await?;
    Ok(JanusSubscriber { side, _handle: handle })
}
