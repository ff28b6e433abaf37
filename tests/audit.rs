//! The audit log records every join, leave (with its cause), admission, control action, refused
//! join and administrative action in one hash chain; its export passes `qiao verify`, and changing
//! any entry makes `qiao verify` fail naming that entry.

mod common;

use std::time::Duration;

use common::client::TestClient;
use common::server::TestServer;
use serde_json::{json, Value};

fn qiao_verify(path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_qiao")).arg("verify").arg(path).output().expect("qiao runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_events_are_chained_in_the_audit_log_and_an_edited_export_fails_verification() {
    let s = TestServer::start().await;
    let sid = s.create_session_with_lobby("hearing").await;
    let judge_inv = s.invite(&sid, "王法官", "judge").await;
    let party_inv = s.invite(&sid, "张三", "party").await;
    let judge = TestClient::connect(&s.ws_url, &judge_inv.token, "judge").await.unwrap();
    let party = TestClient::connect(&s.ws_url, &party_inv.token, "party").await.unwrap();
    let mark = judge.mark();
    judge.send(json!({"v": 1, "type": "control", "action": "admit", "target": party_inv.participant_id})).unwrap();
    judge.wait_for_since(mark, "admit ack", Duration::from_secs(10), |m| m["type"] == "control_ack").await.unwrap();
    party.leave(None).await.unwrap();
    let forged = TestClient::connect(&s.ws_url, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwX2ZvcmdlZCJ9.c2ln", "forger").await;
    let err = format!("{:#}", forged.err().expect("a forged token is refused"));
    assert!(err.contains("4001"), "{err}");

    // Presence is written by a background task: wait (bounded) until the leave is in the log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let export = loop {
        let v = s.get("/api/v1/audit").await;
        let entries = v["entries"].as_array().unwrap();
        let has_leave = entries.iter().any(|e| e["action"] == "left" && e["detail"] == "left");
        let has_refusal = entries.iter().any(|e| e["action"] == "join_refused");
        if has_leave && has_refusal {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "the leave or the refusal never reached the audit log: {v:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let entries = export["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["case.create", "session.create", "participant.invite", "joined", "control", "left", "join_refused"] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let admit = entries.iter().find(|e| e["action"] == "control").unwrap();
    assert_eq!(admit["actor"], judge_inv.participant_id.as_str());
    assert!(admit["detail"].as_str().unwrap().starts_with("admit p_"), "{admit}");
    let refused = entries.iter().find(|e| e["action"] == "join_refused").unwrap();
    assert_eq!(refused["actor"], "p_forged", "the claimed subject is recorded: {refused}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&export).unwrap()).unwrap();
    let ok = qiao_verify(&file);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact"), "{}", String::from_utf8_lossy(&ok.stdout));

    // Someone rewrites why the party left.
    let mut tampered: Value = export.clone();
    let target_seq = {
        let e = tampered["entries"].as_array_mut().unwrap().iter_mut().find(|e| e["action"] == "left").unwrap();
        e["detail"] = json!("network_lost");
        e["seq"].as_i64().unwrap()
    };
    std::fs::write(&file, serde_json::to_vec_pretty(&tampered).unwrap()).unwrap();
    let bad = qiao_verify(&file);
    assert!(!bad.status.success(), "an edited export must fail");
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(msg.contains(&format!("entry {target_seq}")), "names the entry: {msg}");

    // Someone deletes an entry instead.
    let mut cut: Value = export.clone();
    cut["entries"].as_array_mut().unwrap().remove(2);
    std::fs::write(&file, serde_json::to_vec_pretty(&cut).unwrap()).unwrap();
    assert!(!qiao_verify(&file).status.success(), "a removed entry must fail");

    // One session's entries verify on their own too (each hash and the order).
    let one = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
    assert_eq!(one["contiguous"], false);
    std::fs::write(&file, serde_json::to_vec_pretty(&one).unwrap()).unwrap();
    assert!(qiao_verify(&file).status.success());
}
