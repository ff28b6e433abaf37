//! A party proves who it is (name and ID number matched against the invitation) and consents to
//! the online proceeding and to recording before it can join; a host needs neither. Afterwards the
//! party rates the session once. Every step is in the audit log, the ID number never is.

mod common;

use common::client::TestClient;
use common::server::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Participant<'a> {
    s: &'a TestServer,
    token: String,
}

impl Participant<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req =
            reqwest::Client::new().request(method, format!("{}{path}", self.s.base_url)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn status(&self) -> Value {
        self.call(reqwest::Method::GET, "/api/v1/join/status", None).await.1
    }
}

async fn join_error(s: &TestServer, token: &str) -> String {
    let err = TestClient::connect(&s.ws_url, token, "p").await.err().expect("join refused");
    format!("{err:#}")
}

#[tokio::test]
async fn a_party_joins_only_after_its_identity_check_and_consent_then_rates_once() {
    let s = TestServer::start().await;
    let case = s.post("/api/v1/cases", json!({"case_id": "(2026)冀0925民初0001号", "kind": "mediation"})).await;
    let sid = s
        .post(&format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()), json!({"lobby": false}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let invited = s
        .post(
            &format!("/api/v1/sessions/{sid}/participants"),
            json!({"display_name": "张三", "role": "party", "identity": {"name": "张三", "id_number": "13092519800101123X"}}),
        )
        .await;
    let party = Participant { s: &s, token: invited["token"].as_str().unwrap().to_string() };
    let pid = invited["participant"]["id"].as_str().unwrap().to_string();
    let st = party.status().await;
    assert_eq!(
        (st["identity_required"].clone(), st["identity_verified"].clone(), st["consent_required"].clone()),
        (json!(true), json!(false), json!(true))
    );

    assert!(join_error(&s, &party.token).await.contains("4014"), "identity first");
    let (code, v) =
        party.post("/api/v1/join/identity", json!({"name": "张三", "id_number": "130925198001011230"})).await;
    assert_eq!((code, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("identity_mismatch")));
    let (code, _) =
        party.post("/api/v1/join/identity", json!({"name": "李四", "id_number": "13092519800101123X"})).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "the name must match too");
    let (code, v) =
        party.post("/api/v1/join/identity", json!({"name": "张三", "id_number": "13092519800101123x"})).await;
    assert_eq!(code, StatusCode::OK, "the ID number's check letter is case-insensitive: {v}");

    assert!(join_error(&s, &party.token).await.contains("4015"), "then consent");
    party.post("/api/v1/join/consent", json!({"proceeding": true, "recording": false})).await;
    assert!(join_error(&s, &party.token).await.contains("4015"), "consent to recording is required too");
    let (code, v) = party.post("/api/v1/join/consent", json!({"proceeding": true, "recording": true})).await;
    assert_eq!((code, v["consent_given"].clone()), (StatusCode::OK, json!(true)));
    let (code, _) = party.post("/api/v1/join/rating", json!({"score": 5})).await;
    assert_eq!(code, StatusCode::CONFLICT, "no rating before taking part");

    let c = TestClient::connect(&s.ws_url, &party.token, "party").await.expect("now the party joins");
    c.leave(None).await.unwrap();
    let (code, _) = party.post("/api/v1/join/rating", json!({"score": 9})).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = party.post("/api/v1/join/rating", json!({"score": 4, "comment": "调解员很耐心"})).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = party.post("/api/v1/join/rating", json!({"score": 1})).await;
    assert_eq!(code, StatusCode::CONFLICT, "once");

    // A host joins without either step.
    let judge = s.invite(&sid, "调解员", "mediator").await;
    TestClient::connect(&s.ws_url, &judge.token, "mediator").await.expect("a host needs no consent step");

    // The audit log has every step and never the ID number.
    let log = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
    let text = log.to_string();
    assert!(!text.contains("13092519800101123"), "the ID number leaked into the audit log");
    let steps: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == pid.as_str())
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["detail"].as_str().unwrap_or("").to_string()))
        .collect();
    for want in [
        ("identity.check", "fail"),
        ("identity.check", "pass"),
        ("consent", "proceeding=true recording=true"),
        ("rating", "4"),
    ] {
        assert!(steps.iter().any(|(a, d)| a == want.0 && d == want.1), "{want:?} not in {steps:?}");
    }
    let stored = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let me = stored["participants"].as_array().unwrap().iter().find(|p| p["id"] == pid.as_str()).unwrap().clone();
    assert!(me["consent_recording_at"].is_string() && me["identity_verified_at"].is_string(), "{me}");
    assert_eq!(me["rating"], 4);
}

#[tokio::test]
async fn the_identity_check_locks_after_five_wrong_answers_and_bad_tokens_get_401() {
    let s = TestServer::start().await;
    let sid = s.create_session("hearing").await;
    let invited = s
        .post(&format!("/api/v1/sessions/{sid}/participants"), json!({"display_name": "王五", "role": "party", "identity": {"name": "王五", "id_number": "110101199003071234"}}))
        .await;
    let party = Participant { s: &s, token: invited["token"].as_str().unwrap().to_string() };
    for _ in 0..5 {
        let (code, _) =
            party.post("/api/v1/join/identity", json!({"name": "王五", "id_number": "000000000000000000"})).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
    }
    let (code, v) =
        party.post("/api/v1/join/identity", json!({"name": "王五", "id_number": "110101199003071234"})).await;
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts")),
        "locked even for the right answer"
    );
    assert_eq!(party.status().await["identity_locked"], true, "the page learns it is locked without trying again");
    let stranger = Participant { s: &s, token: "not-a-token".into() };
    let (code, v) = stranger.call(reqwest::Method::GET, "/api/v1/join/status", None).await;
    assert_eq!((code, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
}
