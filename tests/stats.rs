//! The statistics API gives the figures county centres report: sessions accepted (受理) and
//! concluded (办结) by kind and site in a period, durations, outcomes and satisfaction (满意率).

mod common;

use common::client::TestClient;
use common::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

async fn session(s: &TestServer, case_id: &str, kind: &str, site: &Value) -> String {
    let case = s.post("/api/v1/cases", json!({"case_id": case_id, "kind": kind, "site_id": site["id"]})).await;
    let ses = s
        .post(
            &format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()),
            json!({"lobby": false, "consent_required": false}),
        )
        .await;
    ses["id"].as_str().unwrap().to_string()
}

async fn rate(s: &TestServer, sid: &str, name: &str, score: i64) {
    let inv = s.invite(sid, name, "party").await;
    let c = TestClient::connect(&s.ws_url, &inv.token, name).await.unwrap();
    c.leave(None).await.unwrap();
    // Presence is recorded by a background task; rating needs the join on record.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.get(&format!("/api/v1/sessions/{sid}/participants")).await["participants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == inv.participant_id.as_str() && p["joined_at"].is_null())
    {
        assert!(tokio::time::Instant::now() < deadline, "the join was never recorded");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/join/rating", s.base_url))
        .bearer_auth(&inv.token)
        .json(&json!({"score": score}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_centre_figures_count_accepted_and_concluded_sessions_outcomes_and_satisfaction() {
    let s = TestServer::start().await;
    let town = s.post("/api/v1/sites", json!({"name": "XX镇矛调中心", "kind": "township_center"})).await;
    let office = s.post("/api/v1/sites", json!({"name": "XX县信访局", "kind": "petition_office"})).await;
    let m1 = session(&s, "调-1", "mediation", &town).await;
    let m2 = session(&s, "调-2", "mediation", &town).await;
    let _m3 = session(&s, "调-3", "mediation", &town).await; // accepted, never held
    let r1 = session(&s, "访-1", "reception", &office).await;
    for sid in [&m1, &m2, &r1] {
        s.post(&format!("/api/v1/sessions/{sid}/open"), json!({})).await;
    }
    rate(&s, &m1, "张三", 5).await;
    rate(&s, &m1, "李四", 4).await;
    rate(&s, &m2, "王五", 2).await;
    for (sid, outcome) in [(&m1, "agreement"), (&m2, "no_agreement"), (&r1, "referred")] {
        s.post(&format!("/api/v1/sessions/{sid}/close"), json!({"outcome": outcome})).await;
    }

    let all = s.get("/api/v1/stats").await;
    assert_eq!(all["totals"], json!({"sessions": 4, "opened": 3, "closed": 3}), "{all:#}");
    assert_eq!(all["by_kind"]["mediation"], json!({"sessions": 3, "opened": 2, "closed": 2}));
    assert_eq!(all["by_kind"]["reception"]["closed"], 1);
    let town_row = all["by_site"].as_array().unwrap().iter().find(|r| r["site_id"] == town["id"]).unwrap().clone();
    assert_eq!((town_row["name"].as_str(), town_row["counts"]["sessions"].as_i64()), (Some("XX镇矛调中心"), Some(3)));
    assert_eq!(all["outcomes"], json!({"agreement": 1, "no_agreement": 1, "referred": 1}));
    assert_eq!(all["duration_minutes"]["count"], 3);
    assert!(all["duration_minutes"]["mean"].as_f64().unwrap() >= 0.0);
    assert_eq!(all["satisfaction"]["ratings"], 3);
    let rate = all["satisfaction"]["satisfied_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "2 of 3 ratings are 4 or 5: {rate}");

    let mediation_at_town =
        s.get(&format!("/api/v1/stats?kind=mediation&site_id={}", town["id"].as_str().unwrap())).await;
    assert_eq!(mediation_at_town["totals"]["sessions"], 3);
    let future = s.get("/api/v1/stats?from=2099-01-01T00:00:00Z").await;
    assert_eq!(future["totals"]["sessions"], 0);
    assert_eq!(future["satisfaction"]["satisfied_rate"], Value::Null, "no ratings, no rate");

    let (status, v) = s.request(Method::GET, "/api/v1/stats?from=yesterday", None).await;
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, _) =
        s.request(Method::POST, &format!("/api/v1/sessions/{}/close", _m3), Some(json!({"outcome": "victory"}))).await;
    assert_eq!(status, 400, "outcomes come from a fixed list");
}
