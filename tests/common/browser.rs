//! What every headless-Chromium test needs: the installed pieces (failing with how to install them,
//! never skipping), a fresh artifacts directory, and the node command that runs a script of
//! tests/browser/ with Debian's Chromium.

use std::path::{Path, PathBuf};
use std::process::Stdio;

pub struct Browser {
    pub root: PathBuf,
    pub script_dir: PathBuf,
    pub chromium: String,
}

impl Browser {
    /// Checks that playwright-core and Chromium are installed (scripts/test.sh installs both).
    pub fn new() -> Browser {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script_dir = root.join("tests/browser");
        assert!(
            script_dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed: run scripts/test.sh (or npm ci --prefix tests/browser)"
        );
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "Chromium not found at {chromium}: run scripts/test.sh (apt-get install chromium)"
        );
        Browser { root, script_dir, chromium }
    }

    /// target/test-artifacts/<name>, emptied: a stale screenshot must not pass for a new one.
    pub fn artifacts(&self, name: &str) -> PathBuf {
        let dir = self.root.join("target/test-artifacts").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `node tests/browser/<script> <artifacts> …` with piped output; add the script's own
    /// arguments, then spawn.
    pub fn node(&self, script: &str, artifacts: &Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("node");
        c.arg(self.script_dir.join(script))
            .arg(artifacts)
            .env("CHROMIUM", &self.chromium)
            .current_dir(&self.script_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

/// The script's `RESULT {json}` line from its stdout, checked to say `ok`; panics with both
/// outputs when there is none or it failed.
pub fn ok_result(stdout: &str, stderr: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line.\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let result: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    assert_eq!(result["ok"], true, "browser result: {result:#}\nstderr:\n{stderr}");
    result
}

/// Waits (bounded) for a script that needs nothing from the test while it runs; returns its ok
/// RESULT and its stderr.
pub async fn finish(child: tokio::process::Child, within: std::time::Duration) -> (serde_json::Value, String) {
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("the browser script finishes within its own watchdog")
        .expect("browser script output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (ok_result(&String::from_utf8_lossy(&out.stdout), &stderr), stderr)
}

/// Runs a script that needs the test to act mid-way: each `PHASE {json}` line it prints is handed
/// to `on_phase` (which holds what the script must never see, e.g. the admin token), in order.
/// Returns the script's stdout (for [`ok_result`]), its stderr, and `on_phase`'s answers.
pub async fn run_with_phases<F, Fut>(
    mut child: tokio::process::Child,
    within: std::time::Duration,
    mut on_phase: F,
) -> (String, String, Vec<serde_json::Value>)
where
    F: FnMut(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let (mut stdout, mut answers) = (String::new(), Vec::new());
    let read = async {
        while let Some(line) = lines.next_line().await.expect("reading the script's stdout") {
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(p) = line.strip_prefix("PHASE ") {
                answers.push(on_phase(serde_json::from_str(p).expect("PHASE is JSON")).await);
            }
        }
    };
    tokio::time::timeout(within, read).await.expect("the browser script finishes within its own watchdog");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
    let stderr = tokio::time::timeout(std::time::Duration::from_secs(10), stderr_task)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_default();
    (stdout, stderr, answers)
}
