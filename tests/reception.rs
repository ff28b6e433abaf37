//! Three-level video reception (县–乡–村 三级视频接访): petitioners queue in the lobby and the
//! officer calls the next; a group sends at most five representatives; a petitioner can be
//! transferred to another office's reception; a reception is handed to mediation (访调对接) as a
//! linked session under the same case; the case timeline lists it all.

mod common;

use std::time::Duration;

use common::client::TestClient;
use common::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn reception(s: &TestServer, case: &str, site: &Value) -> String {
    let ses = s
        .post(
            &format!("/api/v1/cases/{case}/sessions"),
            json!({"site_id": site["id"], "lobby": true, "consent_required": false}),
        )
        .await;
    ses["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_queues_calls_next_limits_groups_transfers_and_hands_over_to_mediation() {
    let s = TestServer::start().await;
    let county = s.post("/api/v1/sites", json!({"name": "XX县信访局", "kind": "petition_office"})).await;
    let town = s
        .post("/api/v1/sites", json!({"name": "XX镇信访办", "kind": "petition_office", "parent_id": county["id"]}))
        .await;
    s.post("/api/v1/sites", json!({"name": "XX村便民服务站", "kind": "village_station", "parent_id": town["id"]}))
        .await;
    let case = s
        .post("/api/v1/cases", json!({"case_id": "信访件-2026-0042", "kind": "reception", "site_id": county["id"]}))
        .await;
    let case_ref = case["id"].as_str().unwrap().to_string();
    let sid = reception(&s, &case_ref, &county).await;
    let town_sid = reception(&s, &case_ref, &town).await;

    let officer_inv = s.invite(&sid, "接访员", "petition_officer").await;
    let officer = TestClient::connect(&s.ws_url, &officer_inv.token, "officer").await.unwrap();
    let mut petitioners = Vec::new();
    for name in ["甲", "乙", "丙"] {
        let inv = s.invite(&sid, name, "party").await;
        let c = TestClient::connect(&s.ws_url, &inv.token, name).await.unwrap();
        assert_eq!(c.joined["self"]["zone"], "lobby");
        petitioners.push((inv, c));
    }
    assert_eq!(petitioners[2].1.joined["self"]["queue_position"], 3, "third in the queue");

    // Call next: the one who waited longest.
    let mark = officer.mark();
    officer.send(json!({"v": 1, "type": "control", "action": "call_next"})).unwrap();
    let ack = officer.wait_for_since(mark, "call_next ack", WAIT, |m| m["type"] == "control_ack").await.unwrap();
    assert_eq!(ack["target"], petitioners[0].0.participant_id.as_str());
    let (second_inv, second) = &petitioners[1];
    second
        .wait_for("moved up", WAIT, |m| {
            m["type"] == "participant_updated"
                && m["participant"]["id"] == second_inv.participant_id.as_str()
                && m["participant"]["queue_position"] == 1
        })
        .await
        .unwrap();

    // A group sends at most five representatives.
    for i in 0..5 {
        let v = s
            .post(
                &format!("/api/v1/sessions/{sid}/participants"),
                json!({"display_name": format!("代表{i}"), "role": "party", "group": "某小区业主"}),
            )
            .await;
        assert_eq!(v["participant"]["group"], "某小区业主");
    }
    let (status, v) = s
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{sid}/participants"),
            Some(json!({"display_name": "代表5", "role": "party", "group": "某小区业主"})),
        )
        .await;
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("conflict")), "{v}");

    // Transfer the second petitioner to the township office.
    let moved = s
        .post(
            &format!("/api/v1/sessions/{sid}/participants/{}/transfer", second_inv.participant_id),
            json!({"to_session": town_sid}),
        )
        .await;
    let told = second.wait_for("transferred", WAIT, |m| m["type"] == "transferred").await.unwrap();
    assert_eq!(told["join_url"], moved["join_url"]);
    assert_eq!(told["session_id"], town_sid.as_str());
    assert_eq!(second.wait_closed(WAIT).await.unwrap().code, Some(4016));
    let left = officer
        .wait_for("transfer seen", WAIT, |m| {
            m["type"] == "participant_left" && m["participant_id"] == second_inv.participant_id.as_str()
        })
        .await
        .unwrap();
    assert_eq!(left["cause"], "transferred");
    let there = TestClient::connect(&s.ws_url, moved["token"].as_str().unwrap(), "乙 at the township").await.unwrap();
    assert_eq!(there.joined["session"]["id"], town_sid.as_str());

    // Hand the reception over to mediation: a linked session, the petitioners invited to it.
    let conv = s.post(&format!("/api/v1/sessions/{sid}/convert"), json!({"title": "访调对接：物业纠纷"})).await;
    let med = &conv["session"];
    assert_eq!(
        (med["kind"].as_str(), med["linked_from"].as_str(), med["case"].as_str()),
        (Some("mediation"), Some(sid.as_str()), Some(case_ref.as_str()))
    );
    let invited: Vec<&str> = conv["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["participant"]["display_name"].as_str().unwrap())
        .collect();
    assert!(
        invited.contains(&"甲") && !invited.contains(&"接访员"),
        "parties follow, the officer does not: {invited:?}"
    );
    let (status, _) = s
        .request(Method::POST, &format!("/api/v1/sessions/{}/convert", med["id"].as_str().unwrap()), Some(json!({})))
        .await;
    assert_eq!(status, 409, "only a reception is handed to mediation");

    // The case timeline has all three sessions and what happened.
    let tl = s.get(&format!("/api/v1/cases/{case_ref}/timeline")).await;
    assert_eq!(tl["sessions"].as_array().unwrap().len(), 3);
    let actions: Vec<&str> = tl["events"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["session.create", "control", "participant.transfer", "session.convert"] {
        assert!(actions.contains(&want), "{want} not in the timeline: {actions:?}");
    }
    let seqs: Vec<i64> = tl["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
}
