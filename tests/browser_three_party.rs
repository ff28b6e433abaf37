//! Three headless Chromium pages (fake camera and microphone) open three join links of one
//! session in the real web client; each must decode both others' video and receive both others'
//! audio.
//! The cameras go out as simulcast, as the web client sends them; how many layers Chromium sends is
//! its own decision (it starts with the small one, and in one clean-clone CI run sent only that
//! for 8 s), so this test does not count them: the webrtc-rs simulcast tests prove the server side. Screenshots are kept under target/test-artifacts/browser/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser`; the README's test command
//! (scripts/test.sh) installs them. A missing piece fails the test with a message: it is never
//! silently skipped.

mod common;

use std::time::Duration;

use common::server::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_browsers_see_and_hear_each_other_through_join_links() {
    let browser = common::browser::Browser::new();

    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let mut urls = Vec::new();
    for (name, role) in [("王法官", "judge"), ("张三", "party"), ("李四", "party")] {
        urls.push(s.invite(&sid, name, role).await.join_url);
    }
    let artifacts = browser.artifacts("browser");

    let child = browser.node("three_party.mjs", &artifacts).args(&urls).spawn().expect("node runs (install nodejs)");
    let (result, _stderr) = common::browser::finish(child, Duration::from_secs(150)).await;
    let pages = result["pages"].as_array().expect("pages");
    assert_eq!(pages.len(), 3);
    for p in pages {
        assert_eq!(p["remote_videos_decoding"], 2, "{p}");
        assert_eq!(p["remote_audios_receiving"], 2, "{p}");
        assert_eq!(p["state"], "connected", "{p}");
        let shot = artifacts.join(format!("page-{}.png", p["url_index"]));
        assert!(shot.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", shot.display());
    }
    let firsts: Vec<_> = pages.iter().map(|p| p["first_frame_ms"].clone()).collect();
    println!("join-to-first-remote-frame (ms) per page: {firsts:?}");
    std::fs::write(artifacts.join("first_frame_ms.json"), serde_json::to_vec(&firsts).unwrap()).unwrap();

    // Chromium puts its microphone level in every audio packet and the server reads it (active
    // speaker detection).
    let stats = s.media().stats().await.unwrap();
    assert!(stats.audio_levels > 0, "no audio level reached the server: {stats:?}");

    // The server saw all three join and agrees they are online.
    let listed = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let online = listed["participants"].as_array().unwrap().iter().filter(|p| p["online"] == true).count();
    assert_eq!(online, 3, "{listed}");
}
