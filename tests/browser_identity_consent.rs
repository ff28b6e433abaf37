//! The participant's steps in real browsers (tests/browser/identity_consent.mjs): in a session that
//! needs consent, a party invited with a name and ID number first fails the identity check with a
//! wrong number and is told so, passes with the right one, ticks both consents (online proceeding,
//! recording), joins from the device check on a phone-sized page, sees and hears the mediator with
//! the recording notice in the header, leaves and rates the session 4 stars. The mediator, a host,
//! goes straight through with autojoin. A second party whose page is fed a false "consent given"
//! is refused by the server with 4015 and offered the steps again. Then the server's record is
//! checked: the party's identity check and both consents are stored with their times, its rating
//! is 4, the mediator needed neither step, and the audit log has the failed and the passed check.
//! Screenshots of every step are kept under target/test-artifacts/identity-consent/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser`; the README's test command
//! (scripts/test.sh) installs them. A missing piece fails the test with a message: it is never
//! silently skipped.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_verifies_consents_joins_and_rates_in_the_browser() {
    let browser = common::browser::Browser::new();

    let s = TestServer::start().await;
    let case = s
        .post(
            "/api/v1/cases",
            json!({"case_id": format!("(2026)冀0925民初{}号", &uuid::Uuid::new_v4().simple().to_string()[..6]), "kind": "mediation", "title": "张三诉李四民间借贷纠纷"}),
        )
        .await;
    // No lobby; consent_required is left to its default (true).
    let session =
        s.post(&format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()), json!({"lobby": false})).await;
    assert_eq!(session["consent_required"], true, "consent is required by default: {session}");
    let sid = session["id"].as_str().unwrap().to_string();
    let mediator = s.invite(&sid, "刘调解员", "mediator").await;
    let invited = s
        .post(
            &format!("/api/v1/sessions/{sid}/participants"),
            json!({"display_name": "张三", "role": "party", "identity": {"name": "张三", "id_number": "13092519800101123X"}}),
        )
        .await;
    let party_id = invited["participant"]["id"].as_str().unwrap().to_string();
    let party_url = invited["join_url"].as_str().unwrap().to_string();
    let other = s.invite(&sid, "李四", "party").await;

    let artifacts = browser.artifacts("identity-consent");

    let child = browser
        .node("identity_consent.mjs", &artifacts)
        .args([&mediator.join_url, &party_url, &other.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    let (result, _stderr) = common::browser::finish(child, Duration::from_secs(360)).await;
    let steps = &result["steps"];
    for p in result["pages"].as_array().expect("pages") {
        assert_eq!(p["console_errors"], json!([]), "{p}");
    }

    // The host went straight through, but its page still asked which steps apply.
    assert_eq!(result["ids"]["mediator"], mediator.participant_id.as_str(), "{result:#}");
    assert!(steps["mediator_joins"]["status_requests"].as_u64().unwrap_or(0) >= 1, "{steps:#}");
    assert!(steps["mediator_joins"]["rec_badge"].as_str().is_some_and(|t| t.contains("录音录像中")), "{steps:#}");
    // Identity: the why, the server's mismatch in both languages, then the consent step.
    assert!(steps["identity"]["note"].as_str().is_some_and(|t| t.contains("第七条")), "{steps:#}");
    assert_eq!(steps["identity"]["state"], "prejoin", "nothing joined before the steps: {steps:#}");
    assert_eq!(steps["mismatch"]["step"], "identity", "{steps:#}");
    assert!(steps["mismatch"]["error_zh"].as_str().is_some_and(|t| t.contains("不符")), "{steps:#}");
    assert!(steps["mismatch"]["error_en"].as_str().is_some_and(|t| t.contains("does not match")), "{steps:#}");
    assert_eq!(
        steps["consent"]["submit_enabled"],
        json!({"none": false, "proceeding_only": false, "both": true}),
        "continue only with both boxes ticked: {steps:#}"
    );
    // In the session: media both ways and the recording notice.
    assert_eq!(result["ids"]["party"], party_id.as_str(), "{result:#}");
    assert!(steps["in_session"]["party_frames_of_mediator"].as_u64().unwrap_or(0) > 0, "{steps:#}");
    assert!(steps["in_session"]["mediator_frames_of_party"].as_u64().unwrap_or(0) > 0, "{steps:#}");
    assert!(steps["in_session"]["party_rec_badge"].as_str().is_some_and(|t| t.contains("录音录像中")), "{steps:#}");
    // The rating card: no submit without a star, no recording notice once out.
    assert_eq!(steps["rating"]["before"], json!({"submit_enabled": false, "rec_badge": null}), "{steps:#}");
    assert_eq!(steps["rating"]["chosen"]["submit_enabled"], true, "{steps:#}");
    assert_eq!(steps["rating"]["step"], "rated", "{steps:#}");
    // A refused join says why and offers the steps again, which are then the real ones.
    let refused = &steps["refused_4015"];
    assert_eq!(refused["close_code"], 4015, "{refused:#}");
    assert!(refused["ended_body"].as_str().is_some_and(|t| t.contains("录音录像")), "{refused:#}");
    assert_eq!(refused["step_after_redo"], "consent", "{refused:#}");

    for shot in [
        "mediator-joined",
        "party-identity",
        "party-mismatch",
        "party-mismatch-en",
        "party-consent-one",
        "party-consent",
        "party-prejoin",
        "party-session",
        "mediator-session",
        "party-rating",
        "party-rating-chosen",
        "party-rated",
        "other-refused",
        "other-redo-consent",
    ] {
        let file = artifacts.join(format!("{shot}.png"));
        assert!(file.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", file.display());
    }

    // The server's record, through the admin API.
    let listed = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let find = |id: &str| {
        listed["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {listed:#}"))
    };
    let p = find(&party_id);
    assert!(p["identity_verified_at"].is_string(), "{p:#}");
    assert!(p["consent_proceeding_at"].is_string() && p["consent_recording_at"].is_string(), "{p:#}");
    assert_eq!(p["rating"], 4, "{p:#}");
    assert!(p["joined_at"].is_string(), "{p:#}");
    let m = find(&mediator.participant_id);
    assert!(m["consent_recording_at"].is_null() && m["rating"].is_null(), "a host needs no step: {m:#}");
    assert!(m["joined_at"].is_string(), "{m:#}");
    let o = find(&other.participant_id);
    assert!(o["consent_recording_at"].is_null() && o["joined_at"].is_null(), "the refused party never joined: {o:#}");

    // The audit log: the failed check, then the passed one, both consents, the rating.
    let log = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
    assert!(!log.to_string().contains("1309251980010112"), "an ID number leaked into the audit log");
    let steps_of_party: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == party_id.as_str())
        .map(|e| (e["action"].as_str().unwrap_or("").to_string(), e["detail"].as_str().unwrap_or("").to_string()))
        .collect();
    let at = |action: &str, detail: &str| {
        steps_of_party
            .iter()
            .position(|(a, d)| a == action && d == detail)
            .unwrap_or_else(|| panic!("{action} {detail} not in {steps_of_party:?}"))
    };
    let fail = at("identity.check", "fail");
    let pass = at("identity.check", "pass");
    let consent = at("consent", "proceeding=true recording=true");
    let rating = at("rating", "4");
    assert!(fail < pass && pass < consent && consent < rating, "{steps_of_party:?}");
}
