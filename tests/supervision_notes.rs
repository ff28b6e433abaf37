//! A supervisor sees the live sessions of its county (and only those) and joins one as an
//! observer whom everyone sees and whose join is audited; the clerk's notes carry the session's
//! timecode, and only roles that keep the record may write them.

mod common;

use std::time::Duration;

use common::client::TestClient;
use common::server::TestServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn session_at(s: &TestServer, case_id: &str, site: &Value) -> String {
    let case = s.post("/api/v1/cases", json!({"case_id": case_id, "kind": "hearing"})).await;
    let ses = s
        .post(
            &format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()),
            json!({"site_id": site["id"], "lobby": false, "consent_required": false}),
        )
        .await;
    ses["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_sees_its_countys_live_sessions_and_observes_visibly_while_the_clerk_keeps_timed_notes() {
    let s = TestServer::start().await;
    let county = s.post("/api/v1/sites", json!({"name": "XX县人民法院", "kind": "county_court"})).await;
    let town = s
        .post("/api/v1/sites", json!({"name": "XX镇综治中心", "kind": "township_center", "parent_id": county["id"]}))
        .await;
    let elsewhere = s.post("/api/v1/sites", json!({"name": "YY县人民法院", "kind": "county_court"})).await;
    let here = session_at(&s, "(2026)冀0925民初0007号", &town).await;
    let there = session_at(&s, "(2026)冀0926民初0001号", &elsewhere).await;

    let judge_inv = s.invite(&here, "王法官", "judge").await;
    let clerk_inv = s.invite(&here, "书记员", "clerk").await;
    let party_inv = s.invite(&here, "张三", "party").await;
    let judge = TestClient::connect(&s.ws_url, &judge_inv.token, "judge").await.unwrap();
    let clerk = TestClient::connect(&s.ws_url, &clerk_inv.token, "clerk").await.unwrap();
    let party = TestClient::connect(&s.ws_url, &party_inv.token, "party").await.unwrap();
    let other = s.invite(&there, "李法官", "judge").await;
    let _other = TestClient::connect(&s.ws_url, &other.token, "other judge").await.unwrap();

    // The clerk's note is stamped with the session's timecode; a party may not write notes.
    let mark = clerk.mark();
    clerk.send(json!({"v": 1, "type": "note", "text": "14:02 原告陈述诉讼请求"})).unwrap();
    let saved = clerk.wait_for_since(mark, "note saved", WAIT, |m| m["type"] == "note_saved").await.unwrap();
    assert!(saved["timecode_ms"].as_i64().unwrap() >= 0);
    let mark = party.mark();
    party.send(json!({"v": 1, "type": "note", "text": "我也想记"})).unwrap();
    let refused = party.wait_for_since(mark, "refused", WAIT, |m| m["type"] == "error").await.unwrap();
    assert_eq!(refused["code"], "not_allowed");
    let notes = s.get(&format!("/api/v1/sessions/{here}/notes")).await;
    assert_eq!(notes["notes"].as_array().unwrap().len(), 1);
    assert_eq!(notes["notes"][0]["author"], clerk_inv.participant_id.as_str());
    assert_eq!(notes["notes"][0]["timecode_ms"], saved["timecode_ms"]);

    // The county supervisor's view: this county's township session, not the other county's.
    let live = s.get(&format!("/api/v1/live?site_id={}", county["id"].as_str().unwrap())).await;
    let ids: Vec<&str> =
        live["sessions"].as_array().unwrap().iter().map(|l| l["session"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![here.as_str()], "{live:#}");
    let people: Vec<&str> =
        live["sessions"][0]["participants"].as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(people.len(), 3, "{people:?}");
    assert_eq!(s.get("/api/v1/live").await["sessions"].as_array().unwrap().len(), 2, "unfiltered: every live session");

    // The supervisor joins as an observer: everyone is told, and the join is audited.
    let obs_inv = s.invite(&here, "纪委监督员", "observer").await;
    let _observer = TestClient::connect(&s.ws_url, &obs_inv.token, "observer").await.unwrap();
    let seen = judge
        .wait_for("observer announced", WAIT, |m| {
            m["type"] == "participant_joined" && m["participant"]["role"] == "observer"
        })
        .await
        .unwrap();
    assert_eq!(seen["participant"]["display_name"], "纪委监督员");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let log = s.get(&format!("/api/v1/audit?session_id={here}")).await;
        if log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == obs_inv.participant_id.as_str() && e["action"] == "joined")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the observer's join was not audited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A supervisor is not admitted by the people it oversees: in a session with a lobby and a consent
/// step, an observer still enters the main room directly (the parties still wait and consent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_bypasses_lobby_and_consent_while_a_party_does_not() {
    let s = TestServer::start().await;
    let case = s.post("/api/v1/cases", json!({ "case_id": "OBS-1", "kind": "hearing" })).await;
    let session = s
        .post(
            &format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()),
            json!({ "lobby": true, "consent_required": true }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let judge = s.invite(&session, "王法官", "judge").await;
    let _judge = TestClient::connect(&s.ws_url, &judge.token, "judge").await.unwrap();
    let obs = s.invite(&session, "纪委监督员", "observer").await;
    let observer =
        TestClient::connect(&s.ws_url, &obs.token, "observer").await.expect("no consent step for an observer");
    let joined = observer.wait_for("joined", WAIT, |m| m["type"] == "joined").await.unwrap();
    assert_eq!(joined["self"]["zone"], "main", "{joined}");
    // A party of the same session must consent first (4015 without it).
    let party = s.invite(&session, "张三", "party").await;
    let refused = TestClient::connect(&s.ws_url, &party.token, "party").await;
    assert!(refused.is_err(), "a party without consent is refused");
}
