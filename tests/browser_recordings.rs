//! The staff's recordings page (web-client/recordings.html) plays a session's composite: two
//! headless Chromium pages (fake camera and microphone) hold a short mediation through their join
//! links (tests/browser/three_party.mjs), the session is closed, and once the composite is
//! rendered (polling GET /api/v1/cases/{case}/recordings until `composite` is `done`) a third page
//! opens recordings.html (tests/browser/recordings.mjs): a wrong administrator token is refused;
//! with the right one and the case number (a Chinese 案号) the recording is listed with its
//! integrity value (the close response's `chain_head`) and composite state; the manifest shows as
//! JSON; 播放 plays composite.mp4 through a signed link in a <video> (readyState ≥ 2, a duration,
//! time moving on); the same tab lists the case again by itself from ?case=. The audit log then
//! holds the manifest view, the link and the download. Screenshots are kept under
//! target/test-artifacts/browser-recordings/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser` (scripts/test.sh installs
//! them); a missing piece fails the test with a message.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recordings_page_lists_a_case_and_plays_its_composite() {
    let browser = common::browser::Browser::new();
    let s = TestServer::start().await;

    let number = format!("(2024)冀0925民初{}号", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let case = s.post("/api/v1/cases", json!({"case_id": number, "kind": "mediation", "title": "邻里纠纷"})).await;
    let case_id = case["id"].as_str().expect("case id").to_string();
    let session = s
        .post(
            &format!("/api/v1/cases/{case_id}/sessions"),
            json!({"title": "第一次调解", "lobby": false, "consent_required": false}),
        )
        .await;
    let sid = session["id"].as_str().expect("session id").to_string();
    let mediator = s.invite(&sid, "李调解员", "mediator").await;
    let party = s.invite(&sid, "张三", "party").await;

    // A short mediation: both pages see and hear each other, then the session closes.
    let session_artifacts = browser.artifacts("browser-recordings-session");
    let child = browser
        .node("three_party.mjs", &session_artifacts)
        .env("QIAO_HOLD_MS", "4000") // a few seconds of both in the recording
        .args([&mediator.join_url, &party.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    let (held, _) = common::browser::finish(child, Duration::from_secs(150)).await;
    for p in held["pages"].as_array().expect("pages") {
        assert_eq!(p["remote_videos_decoding"], 1, "{p}");
    }
    let closed = s.post(&format!("/api/v1/sessions/{sid}/close"), json!({})).await;
    let chain_head = closed["recording"]["chain_head"].as_str().unwrap_or_else(|| panic!("{closed:#}")).to_string();
    let rec_id = closed["recording"]["recording_id"].as_str().expect("recording_id").to_string();

    // The composite is rendered in the background after close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let list = s.get(&format!("/api/v1/cases/{case_id}/recordings")).await;
        let r = &list["recordings"][0];
        if r["composite"] == "done" {
            break;
        }
        assert_ne!(r["composite"], "failed", "the composite failed: {list:#}");
        assert!(tokio::time::Instant::now() < deadline, "no composite after 180 s: {list:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let artifacts = browser.artifacts("browser-recordings");
    let child = browser
        .node("recordings.mjs", &artifacts)
        .env("QIAO_ADMIN_TOKEN", &s.admin_token)
        .args([&s.base_url, &number, &case_id])
        .spawn()
        .expect("node runs (install nodejs)");
    let (result, stderr) = common::browser::finish(child, Duration::from_secs(300)).await;
    let steps = &result["steps"];
    assert!(!stderr.contains(&s.admin_token), "the admin token was printed");
    assert!(!result.to_string().contains(&s.admin_token), "the admin token is in the result");

    // A wrong token: refused, nothing listed, nothing kept.
    assert_eq!(steps["wrong_token"]["error"], "unauthorized", "{steps:#}");
    assert_eq!(steps["wrong_token"]["error_shown"]["code"], "unauthorized", "{steps:#}");
    assert_eq!(steps["wrong_token"]["results_shown"], false, "{steps:#}");
    assert_eq!(steps["wrong_token"]["token_kept"], false, "{steps:#}");

    // Listed by case number: the one recording, final, its integrity value, the composite ready.
    let list = &steps["list"];
    let rows = list["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{list:#}");
    assert_eq!(rows[0]["id"], rec_id.as_str(), "{list:#}");
    assert_eq!(rows[0]["status"], "final", "{list:#}");
    assert_eq!(rows[0]["status_text"], "已完成", "{list:#}");
    assert_eq!(rows[0]["chain_head"], chain_head.as_str(), "{list:#}");
    assert_eq!(rows[0]["composite"], "done", "{list:#}");
    assert_eq!(rows[0]["composite_text"], "已生成", "{list:#}");
    assert_eq!(rows[0]["play_enabled"], true, "{list:#}");
    assert_eq!(list["token_field_empty"], true, "{list:#}");
    assert_eq!(list["token_kept"], true, "{list:#}");
    assert_eq!(list["search_names_case"], true, "{list:#}");

    // The manifest as formatted JSON, the same integrity value, the composite among its renditions.
    let manifest = &steps["manifest"];
    assert_eq!(manifest["formatted"], true, "{manifest:#}");
    assert_eq!(manifest["format"], "qiao-recording-manifest/1", "{manifest:#}");
    assert_eq!(manifest["status"], "final", "{manifest:#}");
    assert_eq!(manifest["chain_head"], chain_head.as_str(), "{manifest:#}");
    assert!(manifest["segments"].as_u64().unwrap_or(0) > 0, "{manifest:#}");
    assert!(manifest["renditions"].as_array().is_some_and(|r| r.iter().any(|p| p == "composite.mp4")), "{manifest:#}");

    // The composite plays through a signed link.
    let play = &steps["play"];
    assert_eq!(play["ready"]["signed_link"], true, "{play:#}");
    assert!(play["ready"]["readyState"].as_u64().unwrap_or(0) >= 2, "{play:#}");
    assert!(play["ready"]["duration"].as_f64().unwrap_or(0.0) > 3.0, "the session lasted over 4 s: {play:#}");
    assert!(play["ready"]["videoWidth"].as_u64().unwrap_or(0) > 0, "{play:#}");
    assert!(play["playing"]["currentTime"].as_f64().unwrap_or(0.0) > 0.5, "{play:#}");
    assert_eq!(play["playing"]["error"], serde_json::Value::Null, "{play:#}");
    assert_eq!(play["playing"]["playing"], rec_id.as_str(), "{play:#}");

    // The tab kept the token: ?case= lists by itself.
    assert_eq!(steps["reload"]["rows"], 1, "{steps:#}");
    assert_eq!(steps["reload"]["typed_nothing"], true, "{steps:#}");
    assert_eq!(steps["english"]["heading"], "Recordings", "{steps:#}");
    assert_eq!(steps["english"]["status_text"], "Complete", "{steps:#}");

    for step in ["wrong_token", "list", "manifest", "play", "reload", "english"] {
        let shot = artifacts.join(format!("{step}.png"));
        assert!(shot.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", shot.display());
    }

    // Every access is audited: the manifest view, the link, and the download (by the link).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let audit = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        let has = |action: &str, detail: Option<&str>| {
            entries.iter().any(|e| {
                e["action"] == action && e["target"] == rec_id.as_str() && detail.is_none_or(|d| e["detail"] == d)
            })
        };
        if has("recording.manifest", None)
            && has("recording.link", Some("composite.mp4"))
            && has("recording.download", Some("composite.mp4"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the audit log lacks the accesses: {audit:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
