//! The web client's consoles for the clerk and the supervisor, in real browsers
//! (tests/browser/supervision.mjs): a hearing at a township centre below a county court, with a
//! judge's, a clerk's and a party's page. When the party's page stops sending (its senders'
//! tracks replaced by null), the judge's roster shows its network as lost (网络中断), and good
//! again once the tracks are back. The clerk writes two notes in its notes panel (记录, then
//! Ctrl+Enter); both are listed with the timecode the server stamped (mm:ss) and the clerk as
//! author, and GET /api/v1/sessions/{id}/notes returns them, in order, with the same timecodes.
//! A supervisor opens supervise.html with the admin token: every live session is listed, and with
//! the county chosen only this one (the other county's is not), with its case number, site,
//! recording state and the three present; the list refreshes by itself. 旁听 creates an observer
//! invitation and opens its page in a new tab; the observer joins without camera or microphone,
//! and the judge's, clerk's and party's pages list it, show its tile and the 监督旁听中 badge. The
//! audit log holds the observer's invitation and join and the supervisor's views of the live list.
//! Screenshots are kept under target/test-artifacts/browser-supervision/.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser` (scripts/test.sh installs
//! them); a missing piece fails the test with a message.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::{json, Value};

/// The web client's timecode format (web-client/notes.js formatTimecode), under an hour.
fn mm_ss(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clerk_keeps_timed_notes_and_a_supervisor_observes_a_live_hearing_visibly() {
    let browser = common::browser::Browser::new();
    let s = TestServer::start().await;

    let county = s.post("/api/v1/sites", json!({"name": "XX县人民法院", "kind": "county_court"})).await;
    let county_id = county["id"].as_str().expect("site id").to_string();
    let town = s
        .post("/api/v1/sites", json!({"name": "XX镇综治中心", "kind": "township_center", "parent_id": county_id}))
        .await;
    let elsewhere = s.post("/api/v1/sites", json!({"name": "YY县人民法院", "kind": "county_court"})).await;

    let number = format!("(2026)冀0925民初{}号", &uuid::Uuid::new_v4().simple().to_string()[..4]);
    let case =
        s.post("/api/v1/cases", json!({"case_id": number, "kind": "hearing", "title": "张某诉李某民间借贷纠纷"})).await;
    let session = s
        .post(
            &format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap()),
            json!({"title": "第一次开庭", "site_id": town["id"], "lobby": false, "consent_required": false}),
        )
        .await;
    let sid = session["id"].as_str().expect("session id").to_string();
    // Another county's session, open: the whole list has it, the county's view must not.
    let other_case = s.post("/api/v1/cases", json!({"case_id": format!("{number}-YY"), "kind": "mediation"})).await;
    let other = s
        .post(
            &format!("/api/v1/cases/{}/sessions", other_case["id"].as_str().unwrap()),
            json!({"title": "邻里纠纷调解", "site_id": elsewhere["id"]}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap().to_string();
    s.post(&format!("/api/v1/sessions/{other_id}/open"), json!({})).await;

    let judge = s.invite(&sid, "王法官", "judge").await;
    let clerk = s.invite(&sid, "李书记员", "clerk").await;
    let party = s.invite(&sid, "张三", "party").await;
    let artifacts = browser.artifacts("browser-supervision");

    let child = browser
        .node("supervision.mjs", &artifacts)
        .env("QIAO_ADMIN_TOKEN", &s.admin_token)
        .args([&s.base_url, &county_id, &sid, &judge.join_url, &clerk.join_url, &party.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    let (result, stderr) = common::browser::finish(child, Duration::from_secs(420)).await;
    assert!(!stderr.contains(&s.admin_token), "the admin token was printed");
    assert!(!result.to_string().contains(&s.admin_token), "the admin token is in the result");
    let steps = &result["steps"];

    // The clerk's two notes, as the page showed them and as the server keeps them.
    let notes_step = &steps["notes"];
    assert_eq!(notes_step["clerk_panel_open"], true, "{notes_step:#}");
    assert_eq!(notes_step["buttons"], json!({"judge": true, "clerk": true, "party": false}), "{notes_step:#}");
    assert_eq!(notes_step["judge_panel"]["opened"], true, "{notes_step:#}");
    assert_eq!(notes_step["empty_refused"], true, "{notes_step:#}");
    let shown = notes_step["shown"].as_array().expect("shown notes");
    let stored = s.get(&format!("/api/v1/sessions/{sid}/notes")).await;
    let stored = stored["notes"].as_array().expect("notes").clone();
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(shown.len(), 2, "{notes_step:#}");
    for (i, (page, kept)) in shown.iter().zip(&stored).enumerate() {
        assert_eq!(kept["author"], clerk.participant_id.as_str(), "note {i}: {kept}");
        assert_eq!(kept["text"], page["text"], "note {i}");
        let tc = kept["timecode_ms"].as_i64().expect("timecode_ms");
        assert_eq!(page["timecode_ms"].as_i64(), Some(tc), "note {i}: the page shows the server's timecode");
        assert_eq!(page["timecode"], mm_ss(tc).as_str(), "note {i}: shown as mm:ss");
        assert_eq!(page["author"], "李书记员", "note {i}");
        assert_eq!(page["state"], "saved", "note {i}");
    }
    assert!(stored[1]["timecode_ms"].as_i64() > stored[0]["timecode_ms"].as_i64(), "{stored:#?}");
    assert_eq!(notes_step["notes"][0]["id"], stored[0]["id"], "the page keeps the server's note ids");

    // The supervisor's view: everything, then the county's only.
    let sup = &steps["supervise"];
    let all: Vec<&str> = sup["all_sites"].as_array().expect("all").iter().filter_map(|x| x["id"].as_str()).collect();
    assert!(all.contains(&sid.as_str()) && all.contains(&other_id.as_str()), "{sup:#}");
    let county_view = sup["county"].as_array().expect("county view");
    assert_eq!(county_view.len(), 1, "{sup:#}");
    assert_eq!(county_view[0]["id"], sid.as_str());
    assert_eq!(county_view[0]["site_name"], "XX镇综治中心");
    assert_eq!(county_view[0]["recording"], "recording", "{sup:#}");
    let mut roles: Vec<&str> =
        county_view[0]["participants"].as_array().unwrap().iter().filter_map(|p| p["role"].as_str()).collect();
    roles.sort();
    assert_eq!(roles, ["clerk", "judge", "party"]);
    for p in county_view[0]["participants"].as_array().unwrap() {
        assert_eq!(p["zone"], "main", "{p}");
        assert_eq!(p["connection"], "connected", "{p}");
    }
    assert!(sup["refreshes"]["after"].as_u64() > sup["refreshes"]["before"].as_u64(), "{sup:#}");
    assert_eq!(sup["dom"]["case_number"], number.as_str(), "{sup:#}");
    assert_eq!(sup["dom"]["kind"], "庭审", "{sup:#}");
    assert_eq!(sup["token_field_cleared"], true, "{sup:#}");
    assert_eq!(sup["site_in_address"], county_id.as_str(), "{sup:#}");

    // The observer: invited from the console, visible to everyone, publishing nothing.
    let obs = &steps["observe"];
    let observer_id = obs["observer_id"].as_str().expect("observer id").to_string();
    assert_eq!(obs["observed"], json!([{"session_id": sid, "participant_id": observer_id}]), "{obs:#}");
    for role in ["judge", "clerk", "party"] {
        let seen = &obs["seen_by"][role];
        assert_eq!(seen["role"], "observer", "{role}: {obs:#}");
        assert_eq!(seen["display_name"], "县纪委监督员 周明", "{role}: {obs:#}");
        assert_eq!(seen["tile"], true, "{role}: {obs:#}");
        assert!(obs["badges"][role]["text"].as_str().is_some_and(|t| t.contains("监督旁听中")), "{role}: {obs:#}");
    }
    assert_eq!(obs["self"]["local_tracks"], 0, "{obs:#}");
    assert!(obs["supervisor_lists"].as_array().unwrap().iter().any(|p| p["role"] == "observer"), "{obs:#}");
    let listed = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let o = listed["participants"].as_array().unwrap().iter().find(|p| p["id"] == observer_id.as_str()).cloned();
    let o = o.unwrap_or_else(|| panic!("the observer is not a participant: {listed:#}"));
    assert_eq!(o["role"], "observer");
    assert_eq!(o["online"], true, "{o}");
    let tracks = s.get(&format!("/api/v1/sessions/{sid}/tracks")).await;
    assert!(
        !tracks["tracks"].as_array().unwrap().iter().any(|t| t["track"]["participant_id"] == observer_id.as_str()),
        "the observer published: {tracks:#}"
    );

    // The record: the invitation and the join of the observer, and the supervisor's views.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
        let entries = log["entries"].as_array().cloned().unwrap_or_default();
        let invited = entries.iter().any(|e| {
            e["action"] == "participant.invite" && e["target"] == observer_id.as_str() && e["detail"] == "observer"
        });
        let joined = entries.iter().any(|e| e["action"] == "joined" && e["actor"] == observer_id.as_str());
        if invited && joined {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the observer's invitation or join is not audited: {log:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.get("/api/v1/audit").await;
    let views: Vec<&Value> = log["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "live.view").collect();
    assert!(views.iter().any(|e| e["detail"] == county_id.as_str()), "no audited view of the county: {views:#?}");

    let english = &steps["english"];
    assert_eq!(english["supervisor_title"], "Live sessions (1)", "{english:#}");
    assert_eq!(english["clerk_add"], "Add note", "{english:#}");

    for shot in [
        "judge-join",
        "clerk-join",
        "party-join",
        "clerk-notes",
        "judge-notes_panel",
        "supervisor-all_sites",
        "supervisor-supervise",
        "observer-prejoin",
        "observer-observe",
        "judge-observe",
        "party-observe",
        "supervisor-observe",
        "supervisor-english",
        "clerk-english",
    ] {
        let file = artifacts.join(format!("{shot}.png"));
        assert!(file.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", file.display());
    }
}
