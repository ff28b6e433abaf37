//! A three-level petition reception (三级联动接访) in real browsers (tests/browser/reception.mjs):
//! sites county petition office → township petition office → village station; one reception case
//! with a county reception (lobby, no consent step) and a township reception. The county and the
//! township officers both host the county session; two petitioners queue in its lobby and see their
//! places; the county officer calls the next (叫号) from the queue panel and petitioner 1 comes in
//! and sees both officers; petitioner 2 is handed to the township reception through the REST API
//! (on the script's PHASE line) and its page follows the new link into the township lobby; the
//! village station is admitted from its queue row. Then the county reception is handed to mediation
//! (访调对接, POST …/convert) and the case timeline lists the sessions and the events.
//! Screenshots under target/test-artifacts/browser-reception/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser`; the README's test command
//! (scripts/test.sh) installs them. A missing piece fails the test with a message: it is never
//! silently skipped.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::{json, Value};

struct Invited {
    id: String,
    join_url: String,
}

async fn invite(s: &TestServer, session: &str, body: Value) -> Invited {
    let v = s.post(&format!("/api/v1/sessions/{session}/participants"), body).await;
    Invited {
        id: v["participant"]["id"].as_str().expect("participant.id").to_string(),
        join_url: v["join_url"].as_str().expect("join_url").to_string(),
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_reception_queues_petitioners_calls_the_next_and_hands_over_to_mediation() {
    let browser = common::browser::Browser::new();

    let s = TestServer::start().await;
    // County → township → village.
    let county_site = id_of(&s.post("/api/v1/sites", json!({"name": "某县信访局", "kind": "petition_office"})).await);
    let township_site = id_of(
        &s.post("/api/v1/sites", json!({"name": "某镇信访办", "kind": "petition_office", "parent_id": county_site}))
            .await,
    );
    let village_site = id_of(
        &s.post(
            "/api/v1/sites",
            json!({"name": "某村便民服务站", "kind": "village_station", "parent_id": township_site}),
        )
        .await,
    );
    let case = id_of(
        &s.post(
            "/api/v1/cases",
            json!({"case_id": format!("信访-{}", uuid::Uuid::new_v4()), "kind": "reception", "title": "某小区物业纠纷信访", "site_id": county_site}),
        )
        .await,
    );
    let county = id_of(
        &s.post(
            &format!("/api/v1/cases/{case}/sessions"),
            json!({"title": "县信访局视频接访", "site_id": county_site, "lobby": true, "consent_required": false}),
        )
        .await,
    );
    let township = id_of(
        &s.post(
            &format!("/api/v1/cases/{case}/sessions"),
            json!({"title": "镇信访办视频接访", "site_id": township_site, "lobby": true, "consent_required": false}),
        )
        .await,
    );

    // The three levels in the county session: the county and township officers host it; the
    // village station and the petitioners wait in its lobby.
    let officer = invite(
        &s,
        &county,
        json!({"display_name": "县信访局刘科长", "role": "petition_officer", "site_id": county_site}),
    )
    .await;
    let township_officer = invite(
        &s,
        &county,
        json!({"display_name": "镇信访办陈主任", "role": "petition_officer", "site_id": township_site}),
    )
    .await;
    let village =
        invite(&s, &county, json!({"display_name": "某村便民服务站王村长", "role": "party", "site_id": village_site}))
            .await;
    let pet1 = invite(&s, &county, json!({"display_name": "赵大妈", "role": "party"})).await;
    let pet2 = invite(&s, &county, json!({"display_name": "孙先生", "role": "party", "group": "某小区业主"})).await;

    let artifacts = browser.artifacts("browser-reception");

    let child = browser
        .node("reception.mjs", &artifacts)
        .args([&officer.join_url, &township_officer.join_url, &village.join_url, &pet1.join_url, &pet2.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    // `PHASE {"phase":"transfer","participant_id":…}`: petitioner 2 goes to the township reception,
    // with the admin token, which the script never sees.
    let (stdout, stderr, answers) = common::browser::run_with_phases(child, Duration::from_secs(420), |phase| {
        let (s, county, township, pet2) = (&s, &county, &township, &pet2);
        async move {
            assert_eq!(phase["phase"], "transfer", "unknown phase {phase}");
            assert_eq!(phase["participant_id"], pet2.id.as_str(), "the script transfers petitioner 2");
            let (status, v) = s
                .request(
                    reqwest::Method::POST,
                    &format!("/api/v1/sessions/{county}/participants/{}/transfer", pet2.id),
                    Some(json!({"to_session": township})),
                )
                .await;
            assert_eq!(status, 201, "transfer: {v}");
            v
        }
    })
    .await;
    let transfer = answers.into_iter().next();
    let result = common::browser::ok_result(&stdout, &stderr);
    let transfer = transfer.expect("the script never asked for the transfer");

    let steps = &result["steps"];
    // The queue as the petitioners and the officer saw it.
    let queue = &steps["queue"];
    assert_eq!(queue["petitioner1_place"]["position"], 1, "{queue:#}");
    assert_eq!(queue["petitioner2_place"]["position"], 2, "{queue:#}");
    assert_eq!(queue["petitioner2_place"]["text"], "您前面还有 1 人", "{queue:#}");
    assert_eq!(queue["petitioner1_place"]["text"], "下一位就是您，请做好准备", "{queue:#}");
    assert_eq!(
        queue["queue_rows"],
        json!([{"id": pet1.id, "position": 1, "group": null}, {"id": pet2.id, "position": 2, "group": "群体：某小区业主"}]),
        "{queue:#}"
    );
    // 叫号 admitted the first; the second moved up.
    let call = &steps["call_next"];
    assert_eq!(call["petitioner1_zone"], "main", "{call:#}");
    assert!(call["petitioner1_frames_of_county"].as_u64().unwrap_or(0) > 0, "{call:#}");
    assert!(call["petitioner1_frames_of_township"].as_u64().unwrap_or(0) > 0, "{call:#}");
    assert_eq!(call["petitioner2_place"]["position"], 1, "{call:#}");
    // The transfer: the card, close 4016, then the township lobby under the new invitation.
    let tr = &steps["transfer"];
    assert_eq!(tr["card"]["title"], "您已被转至其他接访窗口", "{tr:#}");
    assert_eq!(tr["close_code_before_leaving"], 4016, "{tr:#}");
    assert_eq!(tr["from_session"], county.as_str(), "{tr:#}");
    assert_eq!(tr["to_session"], township.as_str(), "{tr:#}");
    assert_eq!(tr["new_participant_id"], transfer["participant"]["id"], "{tr:#} / {transfer:#}");
    assert_eq!(tr["petitioner2_place"]["position"], 1, "{tr:#}");
    assert_eq!(steps["village_admit"]["village_zone"], "main", "{steps:#}");
    for shot in [
        "officer-queue-panel.png",
        "county_officer-queue.png",
        "petitioner2-queue.png",
        "petitioner2-transferred-card.png",
        "petitioner2-transfer.png",
    ] {
        let f = artifacts.join(shot);
        assert!(f.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", f.display());
    }
    println!(
        "reception timings: {}",
        json!({
            "call_to_media_ms": call["call_to_media_ms"],
            "transfer_phase_to_new_lobby_ms": tr["phase_to_new_lobby_ms"],
        })
    );

    // The server's record of the county reception: petitioner 2 left because it was transferred.
    let listed = s.get(&format!("/api/v1/sessions/{county}/participants")).await;
    let p2 = listed["participants"].as_array().unwrap().iter().find(|p| p["id"] == pet2.id.as_str()).cloned();
    assert_eq!(p2.as_ref().map(|p| p["leave_cause"].clone()), Some(json!("transferred")), "{listed:#}");
    let in_township = s.get(&format!("/api/v1/sessions/{township}/participants")).await;
    let moved = in_township["participants"].as_array().unwrap().iter().find(|p| p["display_name"] == "孙先生").cloned();
    let moved = moved.unwrap_or_else(|| panic!("petitioner 2 invited to the township: {in_township:#}"));
    assert_eq!(moved["group"], "某小区业主", "the group goes along: {moved:#}");

    // 访调对接: the county reception handed to mediation.
    let (status, conv) = s
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/sessions/{county}/convert"),
            Some(json!({"title": "访调对接：某小区物业纠纷", "site_id": county_site})),
        )
        .await;
    assert_eq!(status, 201, "convert: {conv:#}");
    let mediation = conv["session"]["id"].as_str().expect("mediation session id").to_string();
    assert_eq!(conv["session"]["kind"], "mediation", "{conv:#}");
    assert_eq!(conv["session"]["linked_from"], county.as_str(), "{conv:#}");
    let invited: Vec<String> = conv["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .map(|i| {
            assert!(i["join_url"].as_str().is_some_and(|u| u.contains("token=")), "{i}");
            assert_eq!(i["participant"]["role"], "party", "only non-hosts are invited: {i}");
            i["participant"]["display_name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    println!("mediation invitations: {invited:?}");
    for name in ["某村便民服务站王村长", "赵大妈"] {
        assert!(invited.iter().any(|n| n == name), "{name} invited to the mediation: {conv:#}");
    }
    for name in ["县信访局刘科长", "镇信访办陈主任"] {
        assert!(!invited.iter().any(|n| n == name), "host {name} is not invited: {conv:#}");
    }

    // The case timeline: the three sessions and the events (audit entries are written by a
    // background task: bounded wait).
    let call_next = format!("call_next {}", pet1.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let timeline = loop {
        let v = s.get(&format!("/api/v1/cases/{case}/timeline")).await;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let has = |action: &str, detail: Option<&str>| {
            events.iter().any(|e| e["action"] == action && detail.is_none_or(|d| e["detail"] == d))
        };
        if has("control", Some(&call_next)) && has("participant.transfer", None) && has("session.convert", None) {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "the timeline lacks call_next, transfer or convert: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sessions: Vec<&str> =
        timeline["sessions"].as_array().expect("sessions").iter().filter_map(|x| x["id"].as_str()).collect();
    for sid in [&county, &township, &mediation] {
        assert!(sessions.contains(&sid.as_str()), "{sid} in the timeline: {timeline:#}");
    }
    let events = timeline["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events in order: {seqs:?}");
    let by_officer = events.iter().find(|e| e["detail"] == call_next.as_str()).unwrap();
    assert_eq!(by_officer["actor"], officer.id.as_str(), "the county officer called the next: {by_officer}");
    let tr_event = events.iter().find(|e| e["action"] == "participant.transfer").unwrap();
    assert_eq!(tr_event["target"], pet2.id.as_str(), "{tr_event}");
    assert_eq!(tr_event["session_id"], county.as_str(), "{tr_event}");
    let conv_event = events.iter().find(|e| e["action"] == "session.convert").unwrap();
    assert_eq!(conv_event["session_id"], mediation.as_str(), "{conv_event}");
    assert_eq!(conv_event["target"], county.as_str(), "{conv_event}");
}
