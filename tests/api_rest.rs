//! The REST API against the real server: the happy path an administrator follows, and every kind
//! of bad input getting a 4xx with the documented error shape.

mod common;

use common::server::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error.code>")
}

#[tokio::test]
async fn an_administrator_registers_sites_opens_a_case_schedules_a_session_and_invites() {
    let s = TestServer::start().await;
    let county = s.post("/api/v1/sites", json!({"name": "XX县人民法院", "kind": "county_court"})).await;
    let town = s
        .post("/api/v1/sites", json!({"name": "XX镇综治中心", "kind": "township_center", "parent_id": county["id"]}))
        .await;
    let village = s
        .post("/api/v1/sites", json!({"name": "XX村调解室", "kind": "village_station", "parent_id": town["id"]}))
        .await;
    assert_eq!(village["parent_id"], town["id"]);
    assert_eq!(s.get("/api/v1/sites").await["sites"].as_array().unwrap().len(), 3);

    let case = s.post("/api/v1/cases", json!({"case_id": "(2024)冀0925民初1234号", "kind": "hearing", "title": "民间借贷纠纷", "site_id": county["id"]})).await;
    let found = s.get("/api/v1/cases?case_id=%282024%29%E5%86%800925%E6%B0%91%E5%88%9D1234%E5%8F%B7").await;
    assert_eq!(found["cases"][0]["id"], case["id"], "a case is found by its external ID");

    let path = format!("/api/v1/cases/{}/sessions", case["id"].as_str().unwrap());
    let session = s
        .post(&path, json!({"title": "第一次开庭", "site_id": town["id"], "scheduled_at": "2026-12-01T09:00:00Z"}))
        .await;
    assert_eq!(session["status"], "scheduled");
    assert_eq!(session["kind"], "hearing");
    assert_eq!(session["case_id"], "(2024)冀0925民初1234号");

    let sid = session["id"].as_str().unwrap();
    let invite = s
        .post(
            &format!("/api/v1/sessions/{sid}/participants"),
            json!({"display_name": "王法官", "role": "judge", "site_id": county["id"]}),
        )
        .await;
    let url = invite["join_url"].as_str().unwrap();
    assert!(url.starts_with(&s.base_url) && url.contains("/join#token="), "{url}");
    let svg = invite["join_qr_svg"].as_str().expect("a QR code of the join link");
    assert_eq!(decode_qr_svg(svg), url, "the QR code carries the join link");
    assert!(invite["expires_at"].as_str().is_some());
    let listed = s.get(&format!("/api/v1/sessions/{sid}/participants")).await;
    assert_eq!(listed["participants"][0]["display_name"], "王法官");
    assert_eq!(listed["participants"][0]["online"], false);

    let case_view = s.get(&format!("/api/v1/cases/{}", case["id"].as_str().unwrap())).await;
    assert_eq!(case_view["sessions"].as_array().unwrap().len(), 1);

    assert_eq!(s.post(&format!("/api/v1/sessions/{sid}/open"), json!({})).await["status"], "open");
    assert_eq!(s.post(&format!("/api/v1/sessions/{sid}/close"), json!({})).await["status"], "closed");
    let (status, body) = s.request(Method::POST, &format!("/api/v1/sessions/{sid}/close"), None).await;
    assert_eq!((status, error_code(&body)), (409, "conflict"), "closing twice");
    let (status, body) = s
        .request(
            Method::POST,
            &format!("/api/v1/sessions/{sid}/participants"),
            Some(json!({"display_name": "迟到者", "role": "party"})),
        )
        .await;
    assert_eq!((status, error_code(&body)), (409, "conflict"), "inviting to a closed session");
}

#[tokio::test]
async fn health_is_public_and_reports_ok() {
    let s = TestServer::start().await;
    let v: Value = reqwest::get(format!("{}/healthz", s.base_url)).await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn the_web_client_is_served_at_the_root_and_the_join_link() {
    let s = TestServer::start().await;
    for path in ["/", "/join"] {
        let r = reqwest::get(format!("{}{path}", s.base_url)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(r.text().await.unwrap().contains("<html"));
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_with_the_documented_error_shape_and_no_internals() {
    let s = TestServer::start().await;
    let raw = reqwest::Client::new();
    // (method, path, body, expected status, expected code)
    let cases: Vec<(Method, &str, Option<&str>, u16, &str)> = vec![
        (Method::POST, "/api/v1/sites", Some("{not json"), 400, "bad_request"),
        (Method::POST, "/api/v1/sites", Some(r#"{"name":"x"}"#), 400, "bad_request"),
        (Method::POST, "/api/v1/sites", Some(r#"{"name":"x","kind":"castle"}"#), 400, "bad_request"),
        (Method::POST, "/api/v1/sites", Some(r#"{"name":"","kind":"county_court"}"#), 400, "bad_request"),
        (
            Method::POST,
            "/api/v1/sites",
            Some(r#"{"name":"x","kind":"county_court","parent_id":"site_nope"}"#),
            400,
            "bad_request",
        ),
        (Method::POST, "/api/v1/sites", Some(r#"{"name":"x","kind":"county_court","surprise":1}"#), 400, "bad_request"),
        (Method::POST, "/api/v1/cases", Some(r#"{"case_id":"A","kind":"trial"}"#), 400, "bad_request"),
        (Method::POST, "/api/v1/cases", Some(r#"{"case_id":"bad\u0007id","kind":"hearing"}"#), 400, "bad_request"),
        (Method::GET, "/api/v1/sites/site_nope", None, 404, "not_found"),
        (Method::GET, "/api/v1/cases/case_nope", None, 404, "not_found"),
        (Method::GET, "/api/v1/sessions/ses_nope", None, 404, "not_found"),
        (Method::POST, "/api/v1/sessions/ses_nope/close", None, 404, "not_found"),
        (
            Method::POST,
            "/api/v1/sessions/ses_nope/participants",
            Some(r#"{"display_name":"x","role":"party"}"#),
            404,
            "not_found",
        ),
        (Method::POST, "/api/v1/cases/case_nope/sessions", Some("{}"), 404, "not_found"),
        (Method::GET, "/api/v1/no/such/endpoint", None, 404, "not_found"),
    ];
    for (method, path, body, want_status, want_code) in cases {
        let mut req = raw.request(method.clone(), format!("{}{path}", s.base_url)).bearer_auth(&s.admin_token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((status, error_code(&v)), (want_status, want_code), "{method} {path} {body:?} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(!msg.contains("sqlx") && !msg.contains("panicked"), "internal detail leaked: {msg}");
    }
}

#[tokio::test]
async fn invitations_check_role_and_token_lifetime() {
    let s = TestServer::start().await;
    let sid = s.create_session("mediation").await;
    let path = format!("/api/v1/sessions/{sid}/participants");
    for body in [
        json!({"display_name": "x", "role": "king"}),
        json!({"display_name": "x", "role": "party", "ttl_seconds": 1}),
        json!({"display_name": "x", "role": "party", "ttl_seconds": 999999999}),
        json!({"role": "party"}),
    ] {
        let (status, v) = s.request(Method::POST, &path, Some(body.clone())).await;
        assert_eq!((status, error_code(&v)), (400, "bad_request"), "{body}");
    }
}

#[tokio::test]
async fn a_duplicate_case_id_is_a_conflict() {
    let s = TestServer::start().await;
    let body = json!({"case_id": "信访件-2026-0001", "kind": "reception"});
    s.post("/api/v1/cases", body.clone()).await;
    let (status, v) = s.request(Method::POST, "/api/v1/cases", Some(body)).await;
    assert_eq!((status, error_code(&v)), (409, "conflict"));
}

#[tokio::test]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let s = TestServer::start().await;
    let c = reqwest::Client::new();
    let none = c.get(format!("{}/api/v1/sites", s.base_url)).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong =
        c.get(format!("{}/api/v1/sites", s.base_url)).bearer_auth("test-admin-token-0123456788").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let v: Value = wrong.json().await.unwrap();
    assert_eq!(error_code(&v), "unauthorized");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let s = TestServer::start().await;
    let big = format!(r#"{{"name":"{}","kind":"county_court"}}"#, "x".repeat(100 * 1024));
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/sites", s.base_url))
        .bearer_auth(&s.admin_token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), "too_large");
}

/// Rasterises the SVG the server draws (one `M{x} {y}h{w}v{h}…` rectangle per dark run) and
/// decodes it as a phone camera would.
fn decode_qr_svg(svg: &str) -> String {
    let attr = |name: &str| -> usize {
        let i = svg.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        svg[i..].split('"').next().unwrap().parse().unwrap()
    };
    let (w, h) = (attr("width"), attr("height"));
    let mut dark = vec![false; w * h];
    let d = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        let nums: Vec<usize> =
            rect.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).map(|n| n.parse().unwrap()).collect();
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for yy in y..y + rh {
            for xx in x..x + rw {
                dark[yy * w + xx] = true;
            }
        }
    }
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| if dark[y * w + x] { 0 } else { 255 });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("the QR code decodes").1
}
