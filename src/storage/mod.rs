//! Object storage for recordings (a local directory or an S3-compatible bucket), the local spool
//! that holds segment files until storage has them, and the durable upload queue between the two.
//!
//! ```text
//! recorder ──writes──▶ Spool (local dir) ──enqueue(key, path)──▶ UploadQueue (SQLite rows)
//!                                                                   │ one worker task
//!                                                                   ▼
//!                                                      ObjectStore (Local dir | S3 bucket)
//! ```
//!
//! # Invariants
//!
//! - **A spool file is deleted only after the object store confirmed it.** The queue's job row is
//!   the durable record of "this file must reach storage"; it is deleted only after the upload
//!   returned success, and the spool file only after its row. A crash (even `kill -9`) at any point
//!   leaves either the job (uploaded again at the next start: uploads are idempotent whole-object
//!   PUTs) or, in the instant between the two deletions, a spool file nobody refers to (counted in
//!   the spool's usage, never lost data: the object is in storage).
//! - **Keys never escape their prefix.** Every key and every path read from a manifest is checked by
//!   [`validate_key`]: '/'-separated, no leading '/', no empty, `.` or `..` component, no
//!   backslash or control character. External identifiers (case numbers) become exactly one key
//!   component through [`encode_case_id`]. The S3 store prepends its configured prefix; the local
//!   store joins keys below its root.
//! - **Secrets are never logged.** [`ObjectStore`]'s `Debug` and [`ObjectStore::describe`] name the
//!   backend, bucket, prefix and endpoint only; errors carry the server's message, never the
//!   request's credentials.
//! - The queue deletes only files inside its spool directory.

mod object_store;
mod queue;
mod spool;

use std::path::{Path, PathBuf};

pub use object_store::ObjectStore;
pub use queue::{StorageHealth, UploadQueue};
pub use spool::Spool;

use crate::config::{ConfigError, S3Config};

/// Everything that can go wrong in storage, the spool or the upload queue.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("object {0:?} not found")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("S3: {0}")]
    S3(#[from] s3::error::S3Error),
    #[error("upload queue database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("manifest {key}: {reason}")]
    Manifest { key: String, reason: String },
    #[error("{0} is not inside the spool directory")]
    OutsideSpool(PathBuf),
    #[error("{path} is already queued for upload under {key}")]
    AlreadyQueued { path: PathBuf, key: String },
    #[error("the path {0:?} is not UTF-8")]
    NonUtf8Path(PathBuf),
    #[error("{pending} upload(s) still pending after the timeout")]
    FlushTimeout { pending: u64 },
    #[error("the upload queue's worker has stopped")]
    QueueStopped,
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io { path: path.into(), source }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Checks that `key` is a relative, '/'-separated object key that cannot escape the prefix it is
/// joined to: no leading '/', no empty, `.` or `..` component, no backslash or control character.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason| Err(StorageError::InvalidKey { key: key.into(), reason });
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("leading '/'");
    }
    if key.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return bad("backslash or control character");
    }
    for component in key.split('/') {
        match component {
            "" => return bad("empty component"),
            "." | ".." => return bad("'.' or '..' component"),
            c if c.starts_with(object_store::TEMP_PREFIX) => return bad("reserved temporary name"),
            _ => {}
        }
    }
    Ok(())
}

/// Like [`validate_key`], for a listing prefix: may be empty and may end with '/'.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/').unwrap_or(prefix) {
        "" if prefix.is_empty() => Ok(()),
        trimmed => validate_key(trimmed),
    }
}

/// Makes an external case number such as `(2024)冀0925民初1234号` safe as exactly one key
/// component: `[A-Za-z0-9._-]` are kept (except a leading '.'), every other byte of the UTF-8 text
/// becomes `%XX` (uppercase hex). The encoding is injective, so two case numbers never share a
/// prefix, and [`decode_case_id`] inverts it.
pub fn encode_case_id(case_number: &str) -> String {
    let mut out = String::with_capacity(case_number.len());
    for (i, b) in case_number.bytes().enumerate() {
        if kept_in_case_id(i, b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        // An empty component would be an invalid key. "%EM" is not a byte escape, so no case number
        // encodes to this.
        out.push_str(EMPTY_CASE_ID);
    }
    out
}

const EMPTY_CASE_ID: &str = "%EMPTY";

/// Whether [`encode_case_id`] keeps byte `b` at position `i` as it is.
fn kept_in_case_id(i: usize, b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0)
}

/// The inverse of [`encode_case_id`]; `None` for text it cannot have produced.
pub fn decode_case_id(encoded: &str) -> Option<String> {
    if encoded == EMPTY_CASE_ID {
        return Some(String::new());
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                return None;
            }
            let b = u8::from_str_radix(hex, 16).ok()?;
            if kept_in_case_id(out.len(), b) {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            if !kept_in_case_id(out.len(), bytes[i]) {
                return None;
            }
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where one recording's objects live: `cases/{encoded case number}/sessions/{session}/{recording}`.
/// Session and recording ids are Qiao's own; they are encoded like case numbers anyway, so no id
/// can add a component.
pub fn recording_prefix(case_number: &str, session_id: &str, recording_id: &str) -> String {
    format!(
        "cases/{}/sessions/{}/{}",
        encode_case_id(case_number),
        encode_case_id(session_id),
        encode_case_id(recording_id)
    )
}

/// Downloads the recording stored under `prefix` into `dir`: `{prefix}/manifest.json` and every
/// `segments[].path` and `renditions[].path` it names (relative paths, checked like keys), each
/// written below `dir` at the same relative path. Used by `qiao verify s3://…`.
pub async fn download_recording(store: &ObjectStore, prefix: &str, dir: &Path) -> Result<()> {
    let prefix = prefix.trim_end_matches('/');
    validate_key(prefix)?;
    let manifest_key = format!("{prefix}/manifest.json");
    let manifest = store.get(&manifest_key).await?;
    let value: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| StorageError::Manifest { key: manifest_key.clone(), reason: e.to_string() })?;
    let mut paths = Vec::new();
    for list in ["segments", "renditions"] {
        let Some(items) = value.get(list) else { continue };
        let items = items.as_array().ok_or_else(|| StorageError::Manifest {
            key: manifest_key.clone(),
            reason: format!("`{list}` is not an array"),
        })?;
        for item in items {
            let path = item.get("path").and_then(|p| p.as_str()).ok_or_else(|| StorageError::Manifest {
                key: manifest_key.clone(),
                reason: format!("an entry of `{list}` has no string `path`"),
            })?;
            validate_key(path)?;
            paths.push(path.to_owned());
        }
    }
    write_below(dir, "manifest.json", &manifest).await?;
    for path in paths {
        let bytes = store.get(&format!("{prefix}/{path}")).await?;
        write_below(dir, &path, &bytes).await?;
    }
    Ok(())
}

async fn write_below(dir: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| StorageError::io(parent, e))?;
    }
    tokio::fs::write(&path, bytes).await.map_err(|e| StorageError::io(&path, e))
}

/// Opens the bucket named by `s3://bucket[/prefix]` with the standard AWS environment variables
/// (see [`S3Config::from_url_and_env`]; path-style unless `QIAO_S3_PATH_STYLE` is false). Returns
/// the store (rooted at the bucket) and the prefix inside the bucket.
pub fn store_from_s3_url(url: &str) -> Result<(ObjectStore, String)> {
    let path_style = std::env::var("QIAO_S3_PATH_STYLE")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off"))
        .unwrap_or(true);
    let mut config = S3Config::from_url_and_env(url, path_style)?;
    let prefix = std::mem::take(&mut config.prefix);
    if !prefix.is_empty() {
        validate_key(&prefix)?;
    }
    Ok((ObjectStore::s3(&config)?, prefix))
}

#[cfg(test)]
mod tests;
