//! A real S3 server for tests: s3s-fs (a small S3 implementation over a directory that checks
//! SigV4 signatures), installed by scripts/test.sh into `$QIAO_CACHE/s3s/bin/s3s-fs`. Each
//! `S3Server` is its own process on 127.0.0.1 with a free port, a fresh data directory, fixed
//! credentials and one bucket. It can be stopped and restarted on the same port and data, to test
//! outages; the process is killed on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qiao::config::S3Config;

const ACCESS_KEY: &str = "qiao-test-access";
const SECRET_KEY: &str = "qiao-test-secret-0123456789";
const BUCKET: &str = "recordings";
const REGION: &str = "us-east-1";

pub struct S3Server {
    /// The running server; `None` while stopped.
    child: Option<Child>,
    /// Kept across restarts so clients reconnect to the same endpoint.
    addr: SocketAddr,
    binary: PathBuf,
    /// Holds `data/` (the server's root, one subdirectory per bucket) and the server's log; removed
    /// on drop, kept across stop/restart.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs with an empty bucket and waits until it accepts connections.
    pub fn start() -> S3Server {
        let cache = std::env::var_os("QIAO_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/qiao"));
        let binary = cache.join("s3s/bin/s3s-fs");
        assert!(
            binary.is_file(),
            "{} is missing: run scripts/test.sh once (it installs s3s-fs 0.14.1 into $QIAO_CACHE/s3s)",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        // s3s-fs maps each bucket to a directory of its root.
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket dir");
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("free port");
            probe.local_addr().expect("local addr")
        };
        let mut server = S3Server { child: None, addr, binary, dir };
        server.spawn();
        server
    }

    /// http://127.0.0.1:PORT
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The configuration Qiao would get for this server, with objects under `prefix`.
    pub fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint()),
            region: REGION.into(),
            path_style: true,
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
        }
    }

    /// Kills the server (an outage); its data stays for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("s3s-fs log file");
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.addr.port().to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("s3s-fs exited with {status} before accepting connections:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("s3s-fs did not accept connections on {} within 15 s:\n{}", self.addr, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's output so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
