//! Recordings of a case: the list, the signed manifest, and downloads — through a short-lived
//! presigned URL when the store is S3, or a link the server signs and checks itself when it is a
//! local directory. Every access is written to the audit log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{audit, AppState, ADMIN};
use crate::store::AuditRecord;

/// How long a download link works.
pub const LINK_TTL: Duration = Duration::from_secs(300);

pub async fn list_for_case(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let case = s.store.case(&id).await.map_err(ApiError::from_store("case"))?;
    let rows = s.store.recordings_of_case(&case.id).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "case": case.id, "case_id": case.case_id, "recordings": rows })))
}

pub async fn manifest(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = s.store.recording(&id).await.map_err(ApiError::from_store("recording"))?;
    let bytes = s.objects.get(&format!("{}/manifest.json", r.prefix)).await.map_err(|e| match e {
        crate::storage::StorageError::NotFound(_) => ApiError::NotFound("manifest"),
        other => ApiError::internal(other),
    })?;
    audit(&s, AuditRecord::new(ADMIN, "recording.manifest").session(&r.session_id).target(&r.id)).await?;
    let v: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct LinkQuery {
    /// A path inside the recording: `composite.mp4`, `manifest.json`, `tracks/t_…/000000.webm`.
    path: String,
}

/// Issues a download link for one file of a recording.
pub async fn link(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Result<Json<Value>, ApiError> {
    let r = s.store.recording(&id).await.map_err(ApiError::from_store("recording"))?;
    crate::storage::validate_key(&q.path)
        .map_err(|_| ApiError::BadRequest("path must be a file of the recording".into()))?;
    issue_link(&s, &r, &q.path, ADMIN).await
}

#[derive(Deserialize)]
pub struct FileQuery {
    exp: u64,
    sig: String,
}

/// Serves a file of a recording from the local store to whoever holds a valid link.
pub async fn file(
    State(s): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if q.exp < now || !crate::auth::token_eq(&q.sig, &sign(&s, &id, &path, q.exp)) {
        return Err(ApiError::BadLink);
    }
    let r = s.store.recording(&id).await.map_err(ApiError::from_store("recording"))?;
    crate::storage::validate_key(&path).map_err(|_| ApiError::NotFound("file"))?;
    let key = format!("{}/{}", r.prefix, path);
    audit(&s, AuditRecord::new("link", "recording.download").session(&r.session_id).target(&r.id).detail(&path))
        .await?;
    if let Some(local) = s.objects.local_path(&key) {
        let f = tokio::fs::File::open(&local).await.map_err(|_| ApiError::NotFound("file"))?;
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let mime = match path.rsplit('.').next() {
            Some("mp4") => "video/mp4",
            Some("webm") => "video/webm",
            Some("json") => "application/json",
            _ => "application/octet-stream",
        };
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, mime.to_string()), (header::CONTENT_LENGTH, len.to_string())],
            body,
        )
            .into_response());
    }
    match s.objects.presign_get(&key, LINK_TTL).await.map_err(ApiError::internal)? {
        Some(url) => Ok(Redirect::temporary(&url).into_response()),
        None => Err(ApiError::NotFound("file")),
    }
}

/// A link to one file of a recording, valid [`LINK_TTL`]: presigned by S3, or signed by this
/// server for the local store. Written to the audit log with `actor`.
async fn issue_link(
    s: &AppState,
    r: &crate::store::RecordingRow,
    path: &str,
    actor: &str,
) -> Result<Json<Value>, ApiError> {
    let key = format!("{}/{}", r.prefix, path);
    let expires = SystemTime::now() + LINK_TTL;
    let url = match s.objects.presign_get(&key, LINK_TTL).await.map_err(ApiError::internal)? {
        Some(url) => url,
        None => {
            let exp = expires.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let sig = sign(s, &r.id, path, exp);
            format!("{}/api/v1/recordings/{}/files/{path}?exp={exp}&sig={sig}", s.public_url, r.id)
        }
    };
    audit(s, AuditRecord::new(actor, "recording.link").session(&r.session_id).target(&r.id).detail(path)).await?;
    Ok(Json(json!({ "url": url, "expires_at": crate::store::rfc3339(expires) })))
}

fn sign(s: &AppState, id: &str, path: &str, exp: u64) -> String {
    s.identity_hasher.mac("recording-download", &format!("{id}\n{path}\n{exp}"))
}

// ---- participants -------------------------------------------------------------------------------

/// Roles that preside over a caucus and may read every zone's recording.
const PRESIDING: [&str; 4] = ["judge", "mediator", "petition_officer", "leader"];

/// Whether `participant` (with `role`) may read `path` of the recording described by `m`:
/// the manifest and the composite (the joint session only) always; a segment of the main zone
/// always; a segment recorded in a caucus or consultation only if the reader presides or was in
/// that zone (published media there); a waiting room's segment only if the reader presides.
pub fn may_read(m: &crate::record::Manifest, participant: &str, role: &str, path: &str) -> bool {
    if path == "manifest.json" || m.renditions.iter().any(|r| r["path"] == path) {
        return true;
    }
    let Some(seg) = m.segments.iter().find(|s| s.path == path) else { return false };
    let zone = seg.zone.as_deref().unwrap_or("main");
    if zone == "main" || PRESIDING.contains(&role) {
        return true;
    }
    if !(zone.starts_with("caucus:") || zone.starts_with("consultation:")) {
        return false;
    }
    let own_tracks: Vec<&str> =
        m.tracks.iter().filter(|t| t["participant_id"] == participant).filter_map(|t| t["id"].as_str()).collect();
    m.segments.iter().any(|s| s.zone.as_deref() == Some(zone) && own_tracks.contains(&s.track_id.as_str()))
}

async fn stored_manifest(s: &AppState, prefix: &str) -> Result<crate::record::Manifest, ApiError> {
    let bytes = s.objects.get(&format!("{prefix}/manifest.json")).await.map_err(|e| match e {
        crate::storage::StorageError::NotFound(_) => ApiError::NotFound("manifest"),
        other => ApiError::internal(other),
    })?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// A participant's recordings (their session's), each with the files they may read.
pub async fn mine(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Result<Json<Value>, ApiError> {
    let (p, session) = super::join::caller(&s, &headers).await?;
    let rows = s.store.recordings_of_case(&session.case).await.map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for r in rows.into_iter().filter(|r| r.session_id == session.id) {
        let files: Vec<String> = match stored_manifest(&s, &r.prefix).await {
            Ok(m) => std::iter::once("manifest.json".to_string())
                .chain(m.renditions.iter().filter_map(|x| x["path"].as_str().map(String::from)))
                .chain(m.segments.iter().map(|x| x.path.clone()))
                .filter(|path| may_read(&m, &p.id, &p.role, path))
                .collect(),
            Err(_) => Vec::new(),
        };
        out.push(json!({ "recording": r, "files": files }));
    }
    Ok(Json(json!({ "recordings": out })))
}

/// A download link for a participant, under the zone rules of [`may_read`]; audited.
pub async fn my_link(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LinkQuery>,
) -> Result<Json<Value>, ApiError> {
    let (p, session) = super::join::caller(&s, &headers).await?;
    let r = s.store.recording(&id).await.map_err(ApiError::from_store("recording"))?;
    if r.session_id != session.id {
        return Err(ApiError::NotFound("recording"));
    }
    let m = stored_manifest(&s, &r.prefix).await?;
    if !may_read(&m, &p.id, &p.role, &q.path) {
        audit(&s, AuditRecord::new(&p.id, "recording.refused").session(&r.session_id).target(&r.id).detail(&q.path))
            .await?;
        return Err(ApiError::RecordingForbidden);
    }
    issue_link(&s, &r, &q.path, &p.id).await
}
