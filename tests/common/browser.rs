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
