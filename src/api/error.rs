//! The API's one error type. Clients get a code and a bilingual message; internal details go to
//! the log only.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; the message names the field (safe to show).
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    /// What was not found, e.g. "session".
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("request body too large")]
    TooLarge,
    #[error("identity does not match the invitation")]
    IdentityMismatch,
    #[error("too many attempts")]
    TooManyAttempts,
    /// A download link that is invalid or expired.
    #[error("link invalid or expired")]
    BadLink,
    /// A participant asked for a part of a recording their zone rules keep from them.
    #[error("recording part not readable by this participant")]
    RecordingForbidden,
    /// A server fault; the text is logged, never returned.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }

    /// Maps a store error, naming what was looked up.
    pub fn from_store(what: &'static str) -> impl Fn(StoreError) -> ApiError {
        move |e| match e {
            StoreError::NotFound => ApiError::NotFound(what),
            StoreError::Conflict => ApiError::Conflict(what),
            other => ApiError::internal(other),
        }
    }
}

fn zh(what: &str) -> &'static str {
    match what {
        "site" => "站点",
        "case" => "案件",
        "session" => "会话",
        "participant" => "参与人",
        "recording" => "录像",
        "file" => "文件",
        _ => "对象",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", format!("请求无效 / bad request: {m}")),
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "未授权 / missing, invalid or expired token".into())
            }
            ApiError::NotFound(w) => (StatusCode::NOT_FOUND, "not_found", format!("{}不存在 / {w} not found", zh(w))),
            ApiError::Conflict(w) => (StatusCode::CONFLICT, "conflict", format!("状态冲突 / conflict: {w}")),
            ApiError::TooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large", "请求过大 / request body too large".into())
            }
            ApiError::RecordingForbidden => (
                StatusCode::FORBIDDEN,
                "not_allowed",
                "您无权查看该部分录像（背对背调解录像仅调解员和该方当事人可查看）/ this part of the recording is not yours to see (a caucus is readable only by the mediator and that party)".into(),
            ),
            ApiError::BadLink => (
                StatusCode::FORBIDDEN,
                "bad_link",
                "下载链接无效或已过期 / the download link is invalid or expired".into(),
            ),
            ApiError::IdentityMismatch => (
                StatusCode::FORBIDDEN,
                "identity_mismatch",
                "身份信息与邀请不符 / name or ID number does not match the invitation".into(),
            ),
            ApiError::TooManyAttempts => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "尝试次数过多，请联系工作人员 / too many attempts: contact the staff".into(),
            ),
            ApiError::Internal(detail) => {
                error!(%detail, "internal error serving an API request");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "服务器内部错误 / internal server error".into())
            }
        };
        (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
    }
}
