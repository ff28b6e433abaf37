//! The real Qiao server, started in-process on 127.0.0.1 with ephemeral HTTP and UDP ports and a
//! temporary data directory, plus REST helpers that follow docs/api.md.

use serde_json::{json, Value};

pub struct TestServer {
    /// http://127.0.0.1:PORT
    pub base_url: String,
    /// ws://127.0.0.1:PORT/api/v1/signal
    pub ws_url: String,
    pub admin_token: String,
    pub media_addr: std::net::SocketAddr,
    pub data_dir: std::path::PathBuf,
    http: reqwest::Client,
    server: Option<qiao::server::Server>,
    _dir: tempfile::TempDir,
}

pub struct Invite {
    pub participant_id: String,
    pub token: String,
    pub join_url: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with a configuration adjusted by `tweak` (e.g. shorter timeouts).
    pub async fn start_with(tweak: impl FnOnce(&mut qiao::config::Config)) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rtc_dtls=error".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = qiao::config::Config::local_ephemeral(dir.path().to_path_buf());
        config.auth.admin_token = Some("test-admin-token-0123456789".into());
        tweak(&mut config);
        let server = qiao::server::start(config).await.expect("server starts");
        let base_url = server.base_url.clone();
        let ws_url = format!("{}/api/v1/signal", base_url.replacen("http://", "ws://", 1));
        TestServer {
            base_url,
            ws_url,
            admin_token: server.admin_token.clone(),
            media_addr: server.media_addr,
            data_dir: dir.path().to_path_buf(),
            http: reqwest::Client::new(),
            server: Some(server),
            _dir: dir,
        }
    }

    pub fn media(&self) -> &qiao::media::MediaHandle {
        &self.server.as_ref().expect("running").media
    }

    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// Stops the server as `shutdown` does, keeping its data directory to look at.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// A request with the admin token; returns status and parsed JSON (Null if none).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base_url, path);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.request(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
        v
    }

    /// The recording's manifest once storage holds its final version. The upload queue stores it
    /// after every segment it lists, a moment after the close returned; until then the API serves
    /// the version stored before (or 404).
    pub async fn final_manifest(&self, rec_id: &str) -> Value {
        let path = format!("/api/v1/recordings/{rec_id}/manifest");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (status, m) = self.request(reqwest::Method::GET, &path, None).await;
            if status == 200 && m["status"] == "final" {
                return m;
            }
            assert!(std::time::Instant::now() < deadline, "no final manifest stored for {rec_id}: {status} {m}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.request(reqwest::Method::GET, path, None).await;
        assert!((200..300).contains(&status), "GET {path} -> {status}: {v}");
        v
    }

    /// A session whose non-host participants wait in the lobby until admitted.
    pub async fn create_session_with_lobby(&self, kind: &str) -> String {
        let case = self
            .post("/api/v1/cases", json!({ "case_id": format!("test-{}", uuid::Uuid::new_v4()), "kind": kind }))
            .await;
        let case_id = case["id"].as_str().expect("case id").to_string();
        let session = self
            .post(&format!("/api/v1/cases/{case_id}/sessions"), json!({"lobby": true, "consent_required": false}))
            .await;
        assert_eq!(session["lobby"], true);
        session["id"].as_str().expect("session id").to_string()
    }

    pub async fn create_session(&self, kind: &str) -> String {
        self.create_session_in_case(&format!("test-{}", uuid::Uuid::new_v4()), kind).await
    }

    /// `create_session` under a case number of the caller's choosing (storage tests keep it short:
    /// it is part of every object key).
    pub async fn create_session_in_case(&self, case_number: &str, kind: &str) -> String {
        let case = self
            .post("/api/v1/cases", json!({ "case_id": case_number, "kind": kind, "title": "integration test" }))
            .await;
        let case_id = case["id"].as_str().expect("case id").to_string();
        // No lobby, no consent step: these tests are about media and signalling, not admission.
        let session = self
            .post(
                &format!("/api/v1/cases/{case_id}/sessions"),
                json!({"title": "integration test session", "lobby": false, "consent_required": false}),
            )
            .await;
        session["id"].as_str().expect("session id").to_string()
    }

    pub async fn invite(&self, session_id: &str, display_name: &str, role: &str) -> Invite {
        let v = self
            .post(
                &format!("/api/v1/sessions/{session_id}/participants"),
                json!({"display_name": display_name, "role": role}),
            )
            .await;
        Invite {
            participant_id: v["participant"]["id"].as_str().expect("participant.id").to_string(),
            token: v["token"].as_str().expect("token").to_string(),
            join_url: v["join_url"].as_str().unwrap_or_default().to_string(),
        }
    }

    pub async fn close_session(&self, session_id: &str) {
        self.post(&format!("/api/v1/sessions/{session_id}/close"), json!({})).await;
    }
}

/// The real `qiao` binary as a child process (for what only a process can show: `kill -9`).
pub struct ServerProcess {
    pub child: std::process::Child,
    /// API helpers against the process (its `data_dir` is the one given to `spawn`).
    pub api: TestServer,
    /// The process's stderr (its log), collected by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `qiao serve` on ephemeral ports over `data_dir` and waits for its "qiao started" line.
    pub fn spawn(data_dir: &std::path::Path, extra: &[&str]) -> ServerProcess {
        Self::spawn_with(&[], std::net::Ipv4Addr::LOCALHOST.into(), data_dir, extra)
    }

    /// Starts `qiao serve` inside the network namespace `netns` (through `ip netns exec`), with
    /// HTTP and media on ephemeral ports of `ip`, an address of that namespace.
    pub fn spawn_in_netns(
        netns: &str,
        ip: std::net::IpAddr,
        data_dir: &std::path::Path,
        extra: &[&str],
    ) -> ServerProcess {
        Self::spawn_with(&["ip", "netns", "exec", netns], ip, data_dir, extra)
    }

    /// `launcher` (e.g. `ip netns exec NS`) runs the binary; HTTP and media listen on `ip`.
    fn spawn_with(
        launcher: &[&str],
        ip: std::net::IpAddr,
        data_dir: &std::path::Path,
        extra: &[&str],
    ) -> ServerProcess {
        use std::io::BufRead;
        let token = "test-admin-token-0123456789";
        let bin = env!("CARGO_BIN_EXE_qiao");
        let mut command = match launcher.split_first() {
            None => std::process::Command::new(bin),
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(bin);
                c
            }
        };
        let any_port = std::net::SocketAddr::new(ip, 0).to_string();
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &any_port, "--rtc-udp", &any_port])
            .args(extra)
            .env("QIAO_ADMIN_TOKEN", token)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                // QIAO_TEST_SERVER_LOG widens the server's log when a test needs looking into.
                std::env::var("QIAO_TEST_SERVER_LOG")
                    .unwrap_or_else(|_| "info,rtc=error,rtc_dtls=error,webrtc=error,rtc_ice=error".into()),
            )
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the qiao binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let plain: String = strip_ansi(&line);
                if plain.contains("qiao started") {
                    let _ = tx.send(plain.clone());
                }
                log2.lock().unwrap().push_str(&plain);
                log2.lock().unwrap().push('\n');
            }
        });
        let started = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("qiao did not start:\n{}", log.lock().unwrap()));
        let field = |name: &str| -> String {
            let i = started.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {started}"));
            started[i + name.len() + 1..].split_whitespace().next().unwrap().to_string()
        };
        let http_addr = field("http_addr");
        let media_addr = field("media").parse().expect("media address");
        let base_url = format!("http://{http_addr}");
        let api = TestServer {
            ws_url: format!("ws://{http_addr}/api/v1/signal"),
            base_url,
            admin_token: token.into(),
            media_addr,
            data_dir: data_dir.to_path_buf(),
            http: reqwest::Client::new(),
            server: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        ServerProcess { child, api, log }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
