//! A full remote hearing (网上开庭) in real browsers: three headless Chromium pages (fake camera and
//! microphone) open the join links of a judge, a party and a witness in a session with a lobby
//! (tests/browser/hearing.mjs). The party waits in the lobby receiving nothing until the judge
//! admits it from the roster panel; the witness waits in the witness room receiving nothing while
//! judge and party see and hear each other; the judge calls the witness (roster button), who then
//! sees and hears both, and dismisses it again (window.qiao.control), after which the witness
//! receives nothing more; finally the session is closed through the REST API and every page stops
//! with close code 4005. Then the server's record is checked: everyone left with the cause
//! `session_closed`, and the audit log holds the admission, the call and the dismissal by the judge.
//! Screenshots of every step are kept under target/test-artifacts/browser-hearing/.
//!
//! Pausing and resuming the recording belongs to a later recording issue and is not covered here.
//!
//! Needs node, Debian's Chromium and `npm ci --prefix tests/browser`; the README's test command
//! (scripts/test.sh) installs them. A missing piece fails the test with a message: it is never
//! silently skipped.

mod common;

use std::time::Duration;

use common::server::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearing_goes_from_lobby_to_admission_to_a_called_witness_to_close() {
    let browser = common::browser::Browser::new();

    let s = TestServer::start().await;
    let sid = s.create_session_with_lobby("hearing").await;
    let judge = s.invite(&sid, "王法官", "judge").await;
    let party = s.invite(&sid, "张三", "party").await;
    let witness = s.invite(&sid, "赵证人", "witness").await;
    let artifacts = browser.artifacts("browser-hearing");

    let mut child = browser
        .node("hearing.mjs", &artifacts)
        .args([&judge.join_url, &party.join_url, &witness.join_url])
        .spawn()
        .expect("node runs (install nodejs)");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // The script prints `PHASE {"phase":"close_session"}` when the hearing is over; the session is
    // closed here, with the admin token, which the script never sees.
    let mut closed = false;
    let mut stdout = String::new();
    // Collects stdout (the RESULT line is read from it afterwards) and answers PHASE lines.
    let read = async {
        while let Some(line) = lines.next_line().await.expect("reading the script's stdout") {
            stdout.push_str(&line);
            stdout.push('\n');
            if let Some(p) = line.strip_prefix("PHASE ") {
                let phase: Value = serde_json::from_str(p).expect("PHASE is JSON");
                assert_eq!(phase["phase"], "close_session", "unknown phase {phase}");
                s.close_session(&sid).await;
                closed = true;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(360), read)
        .await
        .expect("the browser script finishes within its own watchdog");
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let stderr = tokio::time::timeout(Duration::from_secs(10), stderr_task)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_default();
    let result = common::browser::ok_result(&stdout, &stderr);
    assert!(closed, "the script never asked for the session to be closed");

    let steps = &result["steps"];
    // The lobby and the witness room received nothing at all, while judge and party kept going.
    assert_eq!(steps["party_in_lobby"]["zone"], "lobby", "{steps:#}");
    assert_eq!(steps["party_in_lobby"]["waiting_card"], true, "{steps:#}");
    assert_eq!(
        steps["party_in_lobby"]["party_raw"],
        serde_json::json!({"video_frames": 0, "video_packets": 0, "audio_packets": 0}),
        "{steps:#}"
    );
    assert!(steps["party_in_lobby"]["judge_roster_badge"].is_string(), "the judge is shown someone waiting: {steps:#}");
    assert_eq!(steps["admit"]["party_zone"], "main", "{steps:#}");
    assert!(steps["admit"]["party_frames_of_judge"].as_u64().unwrap_or(0) > 0, "{steps:#}");
    assert!(steps["admit"]["judge_frames_of_party"].as_u64().unwrap_or(0) > 0, "{steps:#}");
    let waiting = &steps["witness_waiting"];
    assert_eq!(waiting["zone"], "witness_waiting", "{waiting:#}");
    assert_eq!(waiting["waiting_card"], true, "{waiting:#}");
    assert_eq!(
        waiting["witness_raw"],
        serde_json::json!({"video_frames": 0, "video_packets": 0, "audio_packets": 0}),
        "{waiting:#}"
    );
    assert_eq!(waiting["party_call_attempt"]["rejected"], "not_allowed", "{waiting:#}");
    let flows = waiting["window"]["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 2, "{waiting:#}");
    for f in flows {
        assert!(f["frames"].as_u64().unwrap_or(0) > 0 && f["audio_packets"].as_u64().unwrap_or(0) > 0, "{f}");
    }
    assert_eq!(steps["call_witness"]["witness_zone"], "main", "{steps:#}");
    assert_eq!(steps["call_witness"]["witness_tiles"], 2, "{steps:#}");
    let dismiss = &steps["dismiss_witness"];
    assert_eq!(dismiss["witness_zone"], "witness_waiting", "{dismiss:#}");
    assert!(dismiss["witness_frames_of_judge_before"].as_u64().unwrap_or(0) > 0, "{dismiss:#}");
    let gained = &dismiss["gained_in_window"];
    for k in ["frames_of_judge", "frames_of_party", "audio_packets_of_judge", "audio_packets_of_party"] {
        assert_eq!(gained[k], 0, "{k}: {dismiss:#}");
    }
    assert_eq!(
        gained["raw"],
        serde_json::json!({"video_frames": 0, "video_packets": 0, "audio_packets": 0}),
        "{dismiss:#}"
    );
    for role in ["judge", "party", "witness"] {
        assert_eq!(steps["close"]["close_codes"][role], 4005, "{steps:#}");
    }
    for step in
        ["judge_joins", "party_in_lobby", "admit", "witness_waiting", "call_witness", "dismiss_witness", "close"]
    {
        for role in ["judge", "party", "witness"] {
            if (step == "judge_joins" && role != "judge")
                || (step == "party_in_lobby" && role == "witness")
                || (step == "admit" && role == "witness")
            {
                continue; // that page has not opened its link yet
            }
            let shot = artifacts.join(format!("{role}-{step}.png"));
            assert!(shot.metadata().map(|m| m.len() > 0).unwrap_or(false), "screenshot {} kept", shot.display());
        }
    }

    let timings = serde_json::json!({
        "admit_to_media_ms": steps["admit"]["admit_to_media_ms"],
        "call_to_media_ms": steps["call_witness"]["call_to_media_ms"],
        "dismiss_ack_ms": dismiss["ack_ms"],
        "dismiss_to_no_media_ms": dismiss["stop_ms"],
        "close_to_4005_ms": steps["close"]["phase_to_closed_ms"],
    });
    println!("hearing timings: {timings}");
    std::fs::write(artifacts.join("timings.json"), serde_json::to_vec_pretty(&timings).unwrap()).unwrap();

    // The server's record: the session is closed and everyone left because of that.
    let session = s.get(&format!("/api/v1/sessions/{sid}")).await;
    assert_eq!(session["status"], "closed", "{session:#}");
    let listed = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    let list = listed["participants"].as_array().expect("participants");
    assert_eq!(list.len(), 3, "{listed:#}");
    for p in list {
        assert_eq!(p["online"], false, "{p}");
        assert_eq!(p["leave_cause"], "session_closed", "{p}");
    }

    // The audit log has the judge's admission, call and dismissal (written by a background task:
    // bounded wait) and the administrative close.
    let wanted = [
        format!("admit {}", party.participant_id),
        format!("call_witness {}", witness.participant_id),
        format!("dismiss_witness {}", witness.participant_id),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let v = s.get(&format!("/api/v1/audit?session_id={sid}")).await;
        let entries = v["entries"].as_array().cloned().unwrap_or_default();
        let by_judge = |detail: &str| {
            entries.iter().any(|e| {
                e["action"] == "control" && e["actor"] == judge.participant_id.as_str() && e["detail"] == detail
            })
        };
        if wanted.iter().all(|d| by_judge(d)) && entries.iter().any(|e| e["action"] == "session.close") {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "the audit log lacks the judge's controls or the close: {v:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The party's refused attempt to call the witness left no control entry.
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        !entries.iter().any(|e| e["action"] == "control" && e["actor"] == party.participant_id.as_str()),
        "{audit:#}"
    );
}
