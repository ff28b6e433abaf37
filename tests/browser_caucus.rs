//! A mediation with a private caucus (背对背调解) in real browsers: three headless Chromium pages
//! (fake camera and microphone) open the join links of a mediator and two parties in a session
//! without a lobby (tests/browser/caucus.mjs). Once everyone sees and hears everyone, the mediator
//! takes party A and itself into caucus:1 (A with the roster's move select, itself with
//! window.qiao.control): A's page shows the caucus banner, party B's page has no tile of either, and
//! B decodes no frame and receives no audio packet of them over a 2 s window while A keeps decoding
//! the mediator; B may not follow them in. Then both return to main and B sees and hears them
//! again. The audit log must hold the mediator's four moves. Screenshots of every step are kept
//! under target/test-artifacts/browser-caucus/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser`; the README's test command
//! (scripts/test.sh) installs them. A missing piece fails the test with a message: it is never
//! silently skipped.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_caucus_hides_the_mediator_and_one_party_from_the_other_until_they_return() {
    let browser = common::browser::Browser::new();

    let s = TestServer::start().await;
    let sid = s.create_session("mediation").await;
    let mediator = s.invite(&sid, "刘调解员", "mediator").await;
    let a = s.invite(&sid, "张三", "party").await;
    let b = s.invite(&sid, "李四", "party").await;
    let artifacts = browser.artifacts("browser-caucus");

    let child = browser
        .node("caucus.mjs", &artifacts)
        .args([&mediator.join_url, &a.join_url, &b.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    let (result, _stderr) = common::browser::finish(child, Duration::from_secs(240)).await;

    let steps = &result["steps"];
    let caucus = &steps["to_caucus"];
    assert_eq!(caucus["zones"], json!({"mediator": "caucus:1", "a": "caucus:1", "b": "main"}), "{caucus:#}");
    assert_eq!(caucus["zones_seen_by_b"], json!({"mediator": "caucus:1", "a": "caucus:1"}), "{caucus:#}");
    assert_eq!(caucus["banners"], json!({"mediator": "caucus", "a": "caucus", "b": null}), "{caucus:#}");
    assert_eq!(caucus["b_tiles"], json!([]), "{caucus:#}");
    // B is told the others are in a private room, not that it waits for people to join.
    assert_eq!(caucus["b_stage_note"], "stage.others_private", "{caucus:#}");
    let window = &caucus["window"];
    assert!(window["ms"].as_u64().unwrap_or(0) >= 2000, "{window}");
    for k in ["frames_of_mediator", "frames_of_a", "audio_packets_of_mediator", "audio_packets_of_a"] {
        assert_eq!(window["b_gained"][k], 0, "{k}: {window:#}");
    }
    assert_eq!(
        window["b_gained"]["raw"],
        json!({"video_frames": 0, "video_packets": 0, "audio_packets": 0}),
        "{window:#}"
    );
    for k in
        ["a_frames_of_mediator", "a_audio_packets_of_mediator", "mediator_frames_of_a", "mediator_audio_packets_of_a"]
    {
        assert!(window["caucus_gained"][k].as_u64().unwrap_or(0) > 0, "{k}: {window:#}");
    }
    assert_eq!(caucus["b_move_attempt"]["rejected"], "not_allowed", "{caucus:#}");
    let back = &steps["back_to_main"];
    assert_eq!(back["zones"], json!({"mediator": "main", "a": "main", "b": "main"}), "{back:#}");
    assert_eq!(back["b_tiles"], 2, "{back:#}");
    // B decodes them again: more frames than it had when they left.
    for who in ["mediator", "a"] {
        let k = format!("b_frames_of_{who}_total");
        assert!(back[&k].as_u64().unwrap_or(0) > 0, "{k}: {back:#}");
    }
    for step in ["all_in_main", "to_caucus", "back_to_main"] {
        for role in ["mediator", "a", "b"] {
            let shot = artifacts.join(format!("{role}-{step}.png"));
            assert!(shot.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", shot.display());
        }
    }

    let timings = json!({
        "move_to_in_caucus_ms": caucus["move_to_in_caucus_ms"],
        "move_to_b_quiet_ms": caucus["move_to_b_quiet_ms"],
        "back_to_media_ms": back["move_to_media_ms"],
    });
    println!("caucus timings: {timings}");
    std::fs::write(artifacts.join("timings.json"), serde_json::to_vec_pretty(&timings).unwrap()).unwrap();

    // The audit log records the mediator's moves, in order (written by a background task: bounded
    // wait), and no control by B, whose attempt was refused.
    let wanted = [
        format!("move {} caucus:1", a.participant_id),
        format!("move {} caucus:1", mediator.participant_id),
        format!("move {} main", mediator.participant_id),
        format!("move {} main", a.participant_id),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
        let moves: Vec<String> = v["entries"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["action"] == "control" && e["actor"] == mediator.participant_id.as_str())
                    .filter_map(|e| e["detail"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if moves.len() >= wanted.len() {
            assert_eq!(moves, wanted, "{v:#}");
            let by_b = v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "control" && e["actor"] == b.participant_id.as_str());
            assert!(!by_b, "{v:#}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the audit log lacks the mediator's moves: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
