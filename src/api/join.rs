//! The participant's own steps before and after a session, authenticated by the join token (not
//! the admin token): the identity check (在线诉讼规则 Art. 7, 在线调解规则 Art. 17), consent to the
//! online proceeding and to recording (Art. 4), and the rating afterwards (满意率).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{audit, check_text, ApiError, AppState, JsonBody};
use crate::auth::AuthError;
use crate::store::{AuditRecord, Participant, Session};

/// Wrong answers allowed before the identity check locks for this invitation.
const MAX_IDENTITY_FAILURES: i64 = 5;

/// A hook for who may stand behind an invitation. The default matches the name and ID number the
/// invitation carries; a deployment can plug in an external real-name service (e.g. a 公安
/// identity API) by implementing this and putting it in `AppState`.
pub trait IdentityCheck: Send + Sync {
    fn matches(
        &self,
        participant_id: &str,
        expected_name: &str,
        expected_hash: &str,
        name: &str,
        id_number: &str,
    ) -> bool;
}

/// The default check: the name as invited and the same ID number (compared by keyed hash; the
/// number itself is never stored).
pub struct InvitationMatch {
    pub hasher: std::sync::Arc<crate::auth::IdentityHasher>,
}

impl IdentityCheck for InvitationMatch {
    fn matches(
        &self,
        participant_id: &str,
        expected_name: &str,
        expected_hash: &str,
        name: &str,
        id_number: &str,
    ) -> bool {
        let hash = self.hasher.hash(participant_id, id_number);
        crate::auth::token_eq(&hash, expected_hash) & (name.trim() == expected_name.trim())
    }
}

/// The caller, from `Authorization: Bearer <join token>`.
pub(crate) async fn caller(s: &AppState, headers: &HeaderMap) -> Result<(Participant, Session), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let claims = s.tokens.verify(token).map_err(|e| match e {
        AuthError::Expired | AuthError::Invalid => ApiError::Unauthorized,
    })?;
    let p = s.store.participant(&claims.sub).await.map_err(|_| ApiError::Unauthorized)?;
    if p.session_id != claims.sid {
        return Err(ApiError::Unauthorized);
    }
    let session = s.store.session(&p.session_id).await.map_err(ApiError::from_store("session"))?;
    Ok((p, session))
}

fn consent_needed(p: &Participant, session: &Session) -> bool {
    session.consent_required && crate::core::Role::parse(&p.role).is_some_and(crate::core::roles::consents)
}

/// What the page must do before it can join.
pub async fn status(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let (p, session) = caller(&s, &headers).await?;
    let expectation = s.store.identity_expectation(&p.id).await.map_err(ApiError::internal)?;
    let locked = expectation.is_some_and(|(_, _, failures)| failures >= MAX_IDENTITY_FAILURES)
        && p.identity_verified_at.is_none();
    Ok(Json(json!({
        "identity_locked": locked,
        "participant": {"id": p.id, "display_name": p.display_name, "role": p.role},
        "session": {"id": session.id, "case_id": session.case_id, "kind": session.kind, "title": session.title, "status": session.status},
        "identity_required": p.identity_required,
        "identity_verified": p.identity_verified_at.is_some(),
        "consent_required": consent_needed(&p, &session),
        "consent_given": p.consent_proceeding_at.is_some() && p.consent_recording_at.is_some(),
        "rated": p.rating.is_some(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    name: String,
    id_number: String,
}

pub async fn identity(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<IdentityInput>,
) -> Result<Json<Value>, ApiError> {
    let (p, session) = caller(&s, &headers).await?;
    check_text("name", &b.name, 100)?;
    check_text("id_number", &b.id_number, 32)?;
    let Some((expected_name, expected_hash, failures)) =
        s.store.identity_expectation(&p.id).await.map_err(ApiError::internal)?
    else {
        return Ok(Json(json!({"verified": true, "required": false})));
    };
    if p.identity_verified_at.is_some() {
        return Ok(Json(json!({"verified": true, "required": true})));
    }
    let _ = failures;
    if !s.store.reserve_identity_attempt(&p.id, MAX_IDENTITY_FAILURES).await.map_err(ApiError::internal)? {
        audit(&s, AuditRecord::new(p.id.as_str(), "identity.locked").session(&session.id)).await?;
        return Err(ApiError::TooManyAttempts);
    }
    let ok = s.identity.matches(&p.id, &expected_name, &expected_hash, &b.name, &b.id_number);
    s.store.record_identity_result(&p.id, ok).await.map_err(ApiError::internal)?;
    let outcome = if ok { "pass" } else { "fail" };
    audit(&s, AuditRecord::new(p.id.as_str(), "identity.check").session(&session.id).detail(outcome)).await?;
    if !ok {
        return Err(ApiError::IdentityMismatch);
    }
    Ok(Json(json!({"verified": true, "required": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// Consent to the proceeding being held online.
    proceeding: bool,
    /// Consent to the session being recorded.
    recording: bool,
}

pub async fn consent(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<ConsentInput>,
) -> Result<Json<Value>, ApiError> {
    let (p, session) = caller(&s, &headers).await?;
    s.store.record_consent(&p.id, b.proceeding, b.recording).await.map_err(ApiError::internal)?;
    let detail = format!("proceeding={} recording={}", b.proceeding, b.recording);
    audit(&s, AuditRecord::new(p.id.as_str(), "consent").session(&session.id).detail(detail)).await?;
    let given = b.proceeding && b.recording;
    Ok(Json(json!({"consent_given": given})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingInput {
    score: i64,
    #[serde(default)]
    comment: Option<String>,
}

pub async fn rating(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<RatingInput>,
) -> Result<Json<Value>, ApiError> {
    let (p, session) = caller(&s, &headers).await?;
    if !(1..=5).contains(&b.score) {
        return Err(ApiError::BadRequest("score must be 1–5".into()));
    }
    if let Some(c) = &b.comment {
        check_text("comment", c, 500)?;
    }
    // The join is written by the presence writer a moment after it happens: a rating right
    // after a short session waits for it rather than being refused.
    let took_part = p.joined_at.is_some() || {
        s.media.presence_written().await.map_err(ApiError::internal)?;
        s.store.participant(&p.id).await.map_err(ApiError::internal)?.joined_at.is_some()
    };
    if !took_part {
        return Err(ApiError::Conflict("only a participant who took part may rate"));
    }
    s.store.record_rating(&p.id, b.score, b.comment.as_deref()).await.map_err(|e| match e {
        crate::store::StoreError::Conflict => ApiError::Conflict("already rated"),
        other => ApiError::internal(other),
    })?;
    audit(&s, AuditRecord::new(p.id.as_str(), "rating").session(&session.id).detail(b.score.to_string())).await?;
    Ok(Json(json!({"rated": true})))
}
