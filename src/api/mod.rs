//! The HTTP surface: thin axum handlers over the store and the media handle, the signalling
//! WebSocket, and the web client's files. `app(state)` builds the whole router so tests can call
//! it with `oneshot`.

mod error;
pub mod join;
mod recordings;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use include_dir::{include_dir, Dir};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

pub use error::ApiError;

use crate::auth::{token_eq, Tokens};
use crate::core::Role;
use crate::media::{Command, MediaHandle};
use crate::signal::protocol::MAX_MESSAGE_BYTES;
use crate::signal::{run_connection, SignalContext};
use crate::store::{new_id, parse_rfc3339, rfc3339, AuditRecord, Store};

static WEB_CLIENT: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web-client");

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;
const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);
const SITE_KINDS: [&str; 5] =
    ["county_court", "county_center", "township_center", "village_station", "petition_office"];
const CASE_KINDS: [&str; 3] = ["hearing", "mediation", "reception"];

/// Everything handlers share. Cloned per request (all fields are handles).
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Tokens,
    pub media: MediaHandle,
    /// The administrator's bearer token.
    pub admin_token: Arc<str>,
    /// Base of join links, e.g. `https://qiao.example.gov.cn`.
    pub public_url: Arc<str>,
    /// Default join-token lifetime.
    pub token_ttl: Duration,
    /// Who may stand behind an invitation (the identity step's hook).
    pub identity: Arc<dyn join::IdentityCheck>,
    /// Keyed hashing of ID numbers for identity checks.
    pub identity_hasher: Arc<crate::auth::IdentityHasher>,
    /// The public half of the key that signs recording manifests, base64.
    pub recording_public_key: Arc<str>,
    /// Where recordings are stored (downloads, manifests).
    pub objects: crate::storage::ObjectStore,
}

pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/sites", post(create_site).get(list_sites))
        .route("/sites/{id}", get(get_site))
        .route("/cases", post(create_case).get(list_cases))
        .route("/cases/{id}", get(get_case))
        .route("/cases/{id}/sessions", post(create_session).get(list_sessions))
        .route("/sessions/{id}", get(get_session))
        .route("/sessions/{id}/open", post(open_session))
        .route("/sessions/{id}/close", post(close_session))
        .route("/sessions/{id}/participants", post(invite).get(list_participants))
        .route("/sessions/{id}/participants/{pid}", axum::routing::delete(remove_participant))
        .route("/sessions/{id}/tracks", get(list_tracks))
        .route("/sessions/{id}/convert", post(convert_to_mediation))
        .route("/sessions/{id}/participants/{pid}/transfer", post(transfer_participant))
        .route("/cases/{id}/timeline", get(case_timeline))
        .route("/cases/{id}/recordings", get(recordings::list_for_case))
        .route("/recordings/{id}/manifest", get(recordings::manifest))
        .route("/recordings/{id}/link", get(recordings::link))
        .route("/sessions/{id}/notes", get(list_notes))
        .route("/live", get(live_sessions))
        .route("/media/stats", get(media_stats))
        .route("/audit", get(export_audit))
        .route("/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    let participant = Router::new()
        .route("/recordings/public-key", get(recording_public_key))
        .route("/recordings/{id}/files/{*path}", get(recordings::file))
        .route("/my/recordings", get(recordings::mine))
        .route("/my/recordings/{id}/link", get(recordings::my_link))
        .route("/join/status", get(join::status))
        .route("/join/identity", post(join::identity))
        .route("/join/consent", post(join::consent))
        .route("/join/rating", post(join::rating));
    let api = Router::new().route("/signal", get(signal)).merge(participant).merge(admin).fallback(api_not_found);
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", api)
        .route("/", get(index))
        .route("/join", get(index))
        .fallback(static_file)
        .with_state(state)
}

// ---- plumbing ---------------------------------------------------------------------------------

async fn require_admin(State(s): State<AppState>, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_eq(given, &s.admin_token) {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn api_not_found() -> ApiError {
    ApiError::NotFound("endpoint")
}

/// A store error where "not found" means the request named something that does not exist (a
/// `site_id`, a `parent_id`): that is bad input, not a missing resource.
fn bad_reference(field: &'static str) -> impl Fn(crate::store::StoreError) -> ApiError {
    move |e| match e {
        crate::store::StoreError::NotFound => ApiError::BadRequest(format!("{field} names no site")),
        other => ApiError::internal(other),
    }
}

/// JSON body with our error shape for every failure (axum's own rejections are plain text).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if len.is_some_and(|l| l > MAX_BODY) {
            return Err(ApiError::TooLarge);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|_| ApiError::TooLarge)?;
        if bytes.len() > MAX_BODY {
            return Err(ApiError::TooLarge);
        }
        let bytes = if bytes.is_empty() { Bytes::from_static(b"{}") } else { bytes };
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

pub(crate) fn check_text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    let n = v.chars().count();
    if n == 0 || n > max || v.chars().any(|c| c.is_control()) {
        return Err(ApiError::BadRequest(format!("{field} must be 1–{max} characters without control characters")));
    }
    Ok(())
}

fn check_opt_text(field: &str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    v.as_deref().map_or(Ok(()), |v| check_text(field, v, max))
}

// ---- health and files -------------------------------------------------------------------------

async fn healthz(State(s): State<AppState>) -> Response {
    let db = s.store.ping().await.is_ok();
    let media = s.media.stats().await.is_ok();
    let status = if db && media { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if db && media {"ok"} else {"degraded"}, "version": env!("CARGO_PKG_VERSION"), "database": db, "media": media});
    (status, Json(body)).into_response()
}

async fn index() -> Response {
    serve_file("index.html")
}

async fn static_file(uri: Uri) -> Response {
    serve_file(uri.path().trim_start_matches('/'))
}

fn serve_file(path: &str) -> Response {
    let Some(file) = WEB_CLIENT.get_file(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mime = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], file.contents()).into_response()
}

// ---- signalling -------------------------------------------------------------------------------

async fn signal(State(s): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let ctx = SignalContext { store: s.store.clone(), tokens: s.tokens.clone(), media: s.media.clone() };
    ws.max_message_size(MAX_MESSAGE_BYTES).max_frame_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        let (sink, stream) = socket.split();
        run_connection(sink, stream, ctx).await;
    })
}

// ---- sites ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSite {
    name: String,
    kind: String,
    #[serde(default)]
    parent_id: Option<String>,
}

async fn create_site(State(s): State<AppState>, JsonBody(b): JsonBody<NewSite>) -> Result<Response, ApiError> {
    check_text("name", &b.name, 200)?;
    if !SITE_KINDS.contains(&b.kind.as_str()) {
        return Err(ApiError::BadRequest(format!("kind must be one of {}", SITE_KINDS.join(", "))));
    }
    let site =
        s.store.create_site(&b.name, &b.kind, b.parent_id.as_deref()).await.map_err(bad_reference("parent_id"))?;
    audit(&s, AuditRecord::new(ADMIN, "site.create").target(&site.id).detail(format!("{} {}", site.kind, site.name)))
        .await?;
    Ok((StatusCode::CREATED, Json(site)).into_response())
}

async fn list_sites(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sites = s.store.sites().await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "sites": sites })))
}

async fn get_site(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let site = s.store.site(&id).await.map_err(ApiError::from_store("site"))?;
    Ok(Json(json!(site)))
}

// ---- cases ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCase {
    case_id: String,
    kind: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    site_id: Option<String>,
}

async fn create_case(State(s): State<AppState>, JsonBody(b): JsonBody<NewCase>) -> Result<Response, ApiError> {
    check_text("case_id", &b.case_id, 200)?;
    check_opt_text("title", &b.title, 200)?;
    if !CASE_KINDS.contains(&b.kind.as_str()) {
        return Err(ApiError::BadRequest(format!("kind must be one of {}", CASE_KINDS.join(", "))));
    }
    let case = s.store.create_case(&b.case_id, &b.kind, b.title.as_deref(), b.site_id.as_deref()).await.map_err(
        |e| match e {
            crate::store::StoreError::NotFound => ApiError::BadRequest("site_id names no site".into()),
            crate::store::StoreError::Conflict => ApiError::Conflict("a case with this case_id exists"),
            other => ApiError::internal(other),
        },
    )?;
    audit(
        &s,
        AuditRecord::new(ADMIN, "case.create").target(&case.id).detail(format!("{} {}", case.kind, case.case_id)),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(case)).into_response())
}

#[derive(Deserialize)]
struct CaseQuery {
    case_id: Option<String>,
}

async fn list_cases(State(s): State<AppState>, Query(q): Query<CaseQuery>) -> Result<Json<Value>, ApiError> {
    let cases = s.store.cases(q.case_id.as_deref()).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "cases": cases })))
}

async fn get_case(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let case = s.store.case(&id).await.map_err(ApiError::from_store("case"))?;
    let sessions = s.store.sessions_of_case(&id).await.map_err(ApiError::internal)?;
    let mut v = json!(case);
    v["sessions"] = json!(sessions);
    Ok(Json(v))
}

// ---- sessions ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    scheduled_at: Option<String>,
    /// Non-host participants wait in a lobby until a host admits them; default true.
    #[serde(default)]
    lobby: Option<bool>,
    /// Non-host participants consent to the online proceeding and to recording before joining;
    /// default true.
    #[serde(default)]
    consent_required: Option<bool>,
}

async fn create_session(
    State(s): State<AppState>,
    Path(case): Path<String>,
    JsonBody(b): JsonBody<NewSession>,
) -> Result<Response, ApiError> {
    check_opt_text("title", &b.title, 200)?;
    if let Some(at) = &b.scheduled_at {
        parse_rfc3339(at).ok_or_else(|| ApiError::BadRequest("scheduled_at must be an RFC 3339 time".into()))?;
    }
    s.store.case(&case).await.map_err(ApiError::from_store("case"))?;
    let session = s
        .store
        .create_session(
            &case,
            b.title.as_deref(),
            b.site_id.as_deref(),
            b.scheduled_at.as_deref(),
            b.lobby.unwrap_or(true),
            b.consent_required.unwrap_or(true),
        )
        .await
        .map_err(bad_reference("site_id"))?;
    audit(&s, AuditRecord::new(ADMIN, "session.create").session(&session.id).target(&case)).await?;
    Ok((StatusCode::CREATED, Json(session)).into_response())
}

async fn list_sessions(State(s): State<AppState>, Path(case): Path<String>) -> Result<Json<Value>, ApiError> {
    s.store.case(&case).await.map_err(ApiError::from_store("case"))?;
    let sessions = s.store.sessions_of_case(&case).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "sessions": sessions })))
}

async fn get_session(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = s.store.session(&id).await.map_err(ApiError::from_store("session"))?;
    let participants = participants_with_presence(&s, &id).await?;
    let mut v = json!(session);
    v["participants"] = participants;
    Ok(Json(v))
}

async fn open_session(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let session = s.store.open_session(&id).await.map_err(ApiError::from_store("session"))?;
    audit(&s, AuditRecord::new(ADMIN, "session.open").session(&id)).await?;
    Ok(Json(json!(session)))
}

/// How a session may end, for the centres' figures.
const OUTCOMES: [&str; 6] = ["concluded", "agreement", "no_agreement", "referred", "withdrawn", "adjourned"];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseSession {
    #[serde(default)]
    outcome: Option<String>,
}

async fn close_session(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<CloseSession>,
) -> Result<Json<Value>, ApiError> {
    if let Some(o) = &b.outcome {
        if !OUTCOMES.contains(&o.as_str()) {
            return Err(ApiError::BadRequest(format!("outcome must be one of {}", OUTCOMES.join(", "))));
        }
    }
    // The recording is finished first, so that its integrity value reaches the participants
    // (as a `recording_status` with state `final`) before their connections close.
    let recording = finish_recording(&s, &id).await;
    let closed = s.store.close_session(&id).await;
    // The room must end whatever happens next (even when it was closed before but a room is still
    // live, e.g. after a failure half-way through an earlier close): tell the driver first.
    if matches!(closed, Ok(_) | Err(crate::store::StoreError::Conflict)) {
        s.media.send(Command::CloseSession { session_id: id.clone() }).await.map_err(ApiError::internal)?;
    }
    closed.map_err(|e| match e {
        crate::store::StoreError::NotFound => ApiError::NotFound("session"),
        crate::store::StoreError::Conflict => ApiError::Conflict("session already closed"),
        other => ApiError::internal(other),
    })?;
    if let Some(o) = &b.outcome {
        s.store.set_outcome(&id, o).await.map_err(ApiError::internal)?;
    }
    let mut entry = AuditRecord::new(ADMIN, "session.close").session(&id);
    if let Some(o) = &b.outcome {
        entry = entry.detail(o);
    }
    audit(&s, entry).await?;
    let session = s.store.session(&id).await.map_err(ApiError::internal)?;
    let mut body = json!(session);
    body["recording"] = match recording {
        Some(f) => json!({
            "recording_id": f.recording_id,
            "chain_head": f.chain_head,
            "segments": f.segments,
        }),
        None => Value::Null,
    };
    Ok(Json(body))
}

/// Asks the driver to finish the session's recording and waits for the final manifest. `None`
/// when the session had no recorder (nobody ever joined) or it did not answer in time.
async fn finish_recording(s: &AppState, session_id: &str) -> Option<crate::record::recorder::Finished> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    s.media.send(Command::FinishRecording { session_id: session_id.to_string(), reply }).await.ok()?;
    match tokio::time::timeout(std::time::Duration::from_secs(30), rx).await {
        Ok(Ok(f)) => Some(f),
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::error!(session = session_id, "the recorder did not finish within 30 s");
            None
        }
    }
}

// ---- participants -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewParticipant {
    display_name: String,
    role: String,
    #[serde(default)]
    site_id: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    /// Who must join on this invitation: an identity check (name and ID number) comes first.
    #[serde(default)]
    identity: Option<IdentityInvite>,
    /// The petitioners' group this participant represents (at most five per group).
    #[serde(default)]
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityInvite {
    name: String,
    id_number: String,
}

async fn invite(
    State(s): State<AppState>,
    Path(session_id): Path<String>,
    JsonBody(b): JsonBody<NewParticipant>,
) -> Result<Response, ApiError> {
    check_text("display_name", &b.display_name, 100)?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::BadRequest(format!("role must be one of {}", all.join(", ")))
    })?;
    let ttl = match b.ttl_seconds {
        None => s.token_ttl,
        Some(t) if (60..=MAX_TOKEN_TTL.as_secs()).contains(&t) => Duration::from_secs(t),
        Some(_) => return Err(ApiError::BadRequest(format!("ttl_seconds must be 60–{}", MAX_TOKEN_TTL.as_secs()))),
    };
    if let Some(id) = &b.identity {
        check_text("identity.name", &id.name, 100)?;
        check_text("identity.id_number", &id.id_number, 32)?;
    }
    if let Some(g) = &b.group {
        check_text("group", g, 50)?;
    }
    let session = s.store.session(&session_id).await.map_err(ApiError::from_store("session"))?;
    if let Some(g) = &b.group {
        let n = s.store.group_size(&session_id, g).await.map_err(ApiError::internal)?;
        if n >= crate::core::MAX_REPRESENTATIVES as i64 {
            return Err(ApiError::Conflict("a group sends at most five representatives (信访工作条例 Art. 20)"));
        }
    }
    let invitation = Invitation {
        display_name: &b.display_name,
        role,
        site_id: b.site_id.as_deref(),
        group: b.group.as_deref(),
        identity: b.identity.as_ref().map(|i| (i.name.as_str(), i.id_number.as_str())),
        ttl,
    };
    let v = make_invitation(&s, &session, invitation).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// Who an invitation is for.
struct Invitation<'a> {
    display_name: &'a str,
    role: Role,
    site_id: Option<&'a str>,
    group: Option<&'a str>,
    /// (name, ID number) that must pass the identity check.
    identity: Option<(&'a str, &'a str)>,
    ttl: Duration,
}

/// Creates the participant and its join link; audited. Used by invitations, conversions and
/// transfers alike.
async fn make_invitation(
    s: &AppState,
    session: &crate::store::Session,
    inv: Invitation<'_>,
) -> Result<Value, ApiError> {
    if session.status == "closed" {
        return Err(ApiError::Conflict("session is closed"));
    }
    if let Some(g) = inv.group {
        let n = s.store.group_size(&session.id, g).await.map_err(ApiError::internal)?;
        if n >= crate::core::MAX_REPRESENTATIVES as i64 {
            return Err(ApiError::Conflict("a group sends at most five representatives (信访工作条例 Art. 20)"));
        }
    }
    let pid = new_id("p");
    let (token, expires) = s.tokens.issue(&session.id, &pid, inv.role.as_str(), inv.ttl);
    let expires_at = rfc3339(expires);
    s.store
        .create_participant(&session.id, &pid, inv.display_name, inv.role.as_str(), inv.site_id, &expires_at)
        .await
        .map_err(bad_reference("site_id"))?;
    if let Some((name, number)) = inv.identity {
        let hash = s.identity_hasher.hash(&pid, number);
        s.store.set_identity(&pid, name.trim(), &hash).await.map_err(ApiError::internal)?;
    }
    if let Some(g) = inv.group {
        s.store.set_group(&pid, g).await.map_err(ApiError::internal)?;
    }
    let participant = s.store.participant(&pid).await.map_err(ApiError::internal)?;
    audit(s, AuditRecord::new(ADMIN, "participant.invite").session(&session.id).target(&pid).detail(inv.role.as_str()))
        .await?;
    let join_url = format!("{}/join#token={}", s.public_url, token);
    let join_qr_svg = qr_svg(&join_url);
    Ok(json!({
        "participant": participant, "token": token, "join_url": join_url, "join_qr_svg": join_qr_svg,
        "expires_at": expires_at,
    }))
}

/// The join link as a QR code (SVG), for staff to print or show: a party scans it with a phone.
fn qr_svg(url: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(256, 256).quiet_zone(true).build())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConvertSession {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    site_id: Option<String>,
}

/// 访调对接: a reception handed to mediation. A linked mediation session is created under the same
/// case, and every non-host participant of the reception is invited to it.
async fn convert_to_mediation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ConvertSession>,
) -> Result<Response, ApiError> {
    check_opt_text("title", &b.title, 200)?;
    let from = s.store.session(&id).await.map_err(ApiError::from_store("session"))?;
    if from.kind != "reception" {
        return Err(ApiError::Conflict("only a reception is handed to mediation"));
    }
    let to = s
        .store
        .create_linked_session(&from, "mediation", b.title.as_deref(), b.site_id.as_deref())
        .await
        .map_err(bad_reference("site_id"))?;
    audit(&s, AuditRecord::new(ADMIN, "session.convert").session(&to.id).target(&from.id).detail("mediation")).await?;
    let mut invitations = Vec::new();
    for p in s.store.participants(&from.id).await.map_err(ApiError::internal)? {
        let Some(role) = Role::parse(&p.role).filter(|r| !crate::core::policy(*r).host) else { continue };
        if p.revoked_cause.is_some() {
            continue; // removed, denied or handed elsewhere: not part of this reception any more
        }
        let inv = Invitation {
            display_name: &p.display_name,
            role,
            site_id: p.site_id.as_deref(),
            group: p.group.as_deref(),
            identity: None,
            ttl: s.token_ttl,
        };
        invitations.push(make_invitation(&s, &to, inv).await?);
    }
    Ok((StatusCode::CREATED, Json(json!({ "session": to, "invitations": invitations }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    to_session: String,
}

/// Hands a participant to another session (another office's reception queue, say): a new
/// invitation there, then the participant is told its new link and leaves with cause
/// `transferred`.
async fn transfer_participant(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
    JsonBody(b): JsonBody<Transfer>,
) -> Result<Response, ApiError> {
    let p = s.store.participant(&pid).await.map_err(ApiError::from_store("participant"))?;
    if p.session_id != id {
        return Err(ApiError::NotFound("participant"));
    }
    let to =
        s.store.session(&b.to_session).await.map_err(|_| ApiError::BadRequest("to_session names no session".into()))?;
    let role = Role::parse(&p.role).ok_or_else(|| ApiError::internal("stored role unknown"))?;
    let inv = Invitation {
        display_name: &p.display_name,
        role,
        site_id: p.site_id.as_deref(),
        group: p.group.as_deref(),
        identity: None,
        ttl: s.token_ttl,
    };
    let v = make_invitation(&s, &to, inv).await?;
    s.store.revoke(&pid, "transferred").await.map_err(ApiError::internal)?;
    audit(&s, AuditRecord::new(ADMIN, "participant.transfer").session(&id).target(&pid).detail(to.id.clone())).await?;
    let join_url = v["join_url"].as_str().unwrap_or_default().to_string();
    s.media
        .send(Command::Transfer { session_id: id, participant_id: pid, to_session: to.id.clone(), join_url })
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list_notes(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.store.session(&id).await.map_err(ApiError::from_store("session"))?;
    let notes: Vec<Value> = s
        .store
        .notes(&id)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(id, author, timecode_ms, at, text)| json!({"id": id, "author": author, "timecode_ms": timecode_ms, "at": at, "text": text}))
        .collect();
    Ok(Json(json!({ "notes": notes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveQuery {
    site_id: Option<String>,
}

/// Sessions under way now, with who is in each (zone, role, connection): the supervisor's view of
/// a county (纪委 / 检察 监督). With `site_id`, only sessions held at that site or below it.
async fn live_sessions(State(s): State<AppState>, Query(q): Query<LiveQuery>) -> Result<Json<Value>, ApiError> {
    let allowed = match &q.site_id {
        Some(site) => {
            s.store.site(site).await.map_err(ApiError::from_store("site"))?;
            Some(s.store.site_subtree(site).await.map_err(ApiError::internal)?)
        }
        None => None,
    };
    let live = s.media.live().await.map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for session in s.store.open_sessions().await.map_err(ApiError::internal)? {
        if let Some(sites) = &allowed {
            if !session.site_id.as_ref().is_some_and(|id| sites.contains(id)) {
                continue;
            }
        }
        let people = live.iter().find(|(id, _)| *id == session.id).map(|(_, p)| p.clone()).unwrap_or_default();
        out.push(json!({ "session": session, "participants": people }));
    }
    audit(&s, AuditRecord::new(ADMIN, "live.view").detail(q.site_id.unwrap_or_default())).await?;
    Ok(Json(json!({ "sessions": out })))
}

/// Everything that happened under a case, in time order: its sessions (with their links) and every
/// audited event of them.
async fn case_timeline(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let case = s.store.case(&id).await.map_err(ApiError::from_store("case"))?;
    let sessions = s.store.sessions_of_case(&id).await.map_err(ApiError::internal)?;
    let mut events = Vec::new();
    for ses in &sessions {
        events.extend(s.store.audit_entries(Some(&ses.id), 1, 100_000).await.map_err(ApiError::internal)?);
    }
    events.sort_by_key(|e| e.seq);
    let recordings = s.store.recordings_of_case(&case.id).await.map_err(ApiError::internal)?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| json!({"seq": e.seq, "at": e.at, "session_id": e.session_id, "actor": e.actor, "action": e.action, "target": e.target, "detail": e.detail}))
        .collect();
    Ok(Json(json!({ "case": case, "sessions": sessions, "recordings": recordings, "events": events })))
}

async fn list_participants(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.store.session(&id).await.map_err(ApiError::from_store("session"))?;
    Ok(Json(json!({ "participants": participants_with_presence(&s, &id).await? })))
}

async fn remove_participant(
    State(s): State<AppState>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let p = s.store.participant(&pid).await.map_err(ApiError::from_store("participant"))?;
    if p.session_id != id {
        return Err(ApiError::NotFound("participant"));
    }
    // Revoked in the store, so the link cannot join again even if the participant is offline now.
    s.store.revoke(&pid, "removed").await.map_err(ApiError::internal)?;
    audit(&s, AuditRecord::new(ADMIN, "participant.remove").session(&id).target(&pid)).await?;
    s.media
        .send(Command::RemoveParticipant { session_id: id, participant_id: pid })
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn participants_with_presence(s: &AppState, session_id: &str) -> Result<Value, ApiError> {
    let stored = s.store.participants(session_id).await.map_err(ApiError::internal)?;
    let live = s.media.snapshot(session_id).await.map_err(ApiError::internal)?;
    let list: Vec<Value> = stored
        .into_iter()
        .map(|p| {
            let now = live.iter().find(|l| l.id == p.id);
            let mut v = json!(p);
            v["online"] = json!(now.is_some());
            if let Some(l) = now {
                v["connection"] = json!(l.connection);
                v["audio_muted"] = json!(l.audio_muted);
                v["video_muted"] = json!(l.video_muted);
                v["network"] = json!(l.network);
            }
            v
        })
        .collect();
    Ok(json!(list))
}

async fn list_tracks(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.store.session(&id).await.map_err(ApiError::from_store("session"))?;
    let tracks = s.media.tracks(&id).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "tracks": tracks })))
}

/// The key verifiers check recording manifests against (`qiao verify --public-key`). Public.
async fn recording_public_key(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "algorithm": "ed25519", "public_key": &*s.recording_public_key }))
}

/// The actor name of the administrator in the audit log.
const ADMIN: &str = "admin";

/// Appends to the audit log; an action that cannot be audited is reported as a server fault.
pub(crate) async fn audit(s: &AppState, r: AuditRecord) -> Result<(), ApiError> {
    s.store.audit(r).await.map(|_| ()).map_err(ApiError::internal)
}

#[derive(Deserialize)]
struct AuditQuery {
    session_id: Option<String>,
    from_seq: Option<i64>,
    limit: Option<i64>,
}

/// An export of the audit log that `qiao verify` checks: a contiguous range of the chain, or
/// every entry of one session. Reading it is itself audited.
async fn export_audit(State(s): State<AppState>, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let entries = s
        .store
        .audit_entries(q.session_id.as_deref(), q.from_seq.unwrap_or(1).max(1), limit)
        .await
        .map_err(ApiError::internal)?;
    let mut r = AuditRecord::new(ADMIN, "audit.export");
    if let Some(sid) = &q.session_id {
        r = r.session(sid);
    }
    audit(&s, r).await?;
    Ok(Json(json!({ "format": "qiao-audit-export/1", "contiguous": q.session_id.is_none(), "entries": entries })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
    site_id: Option<String>,
}

/// Sessions accepted (受理) and concluded (办结) by kind and site, durations, outcomes and
/// satisfaction (满意率) for sessions created in [from, to).
async fn stats(State(s): State<AppState>, Query(q): Query<StatsQuery>) -> Result<Json<Value>, ApiError> {
    for (name, v) in [("from", &q.from), ("to", &q.to)] {
        if let Some(v) = v {
            parse_rfc3339(v).ok_or_else(|| ApiError::BadRequest(format!("{name} must be an RFC 3339 time")))?;
        }
    }
    if q.kind.as_deref().is_some_and(|k| !CASE_KINDS.contains(&k)) {
        return Err(ApiError::BadRequest(format!("kind must be one of {}", CASE_KINDS.join(", "))));
    }
    let f = crate::store::stats::StatsFilter { from: q.from, to: q.to, kind: q.kind, site_id: q.site_id };
    let st = s.store.stats(&f).await.map_err(ApiError::internal)?;
    let by_kind: serde_json::Map<String, Value> = st.by_kind.into_iter().map(|(k, c)| (k, json!(c))).collect();
    let by_site: Vec<Value> =
        st.by_site.into_iter().map(|(id, name, c)| json!({"site_id": id, "name": name, "counts": c})).collect();
    let outcomes: serde_json::Map<String, Value> = st.outcomes.into_iter().map(|(o, n)| (o, json!(n))).collect();
    Ok(Json(json!({
        "filter": {"from": f.from, "to": f.to, "kind": f.kind, "site_id": f.site_id},
        "totals": st.totals,
        "by_kind": by_kind,
        "by_site": by_site,
        "duration_minutes": st.duration_minutes,
        "outcomes": outcomes,
        "satisfaction": st.satisfaction,
    })))
}

async fn media_stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let stats = s.media.stats().await.map_err(ApiError::internal)?;
    Ok(Json(json!(stats)))
}
