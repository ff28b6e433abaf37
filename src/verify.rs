//! `qiao verify`: offline checks of what Qiao exports: a recorded session's directory (manifest,
//! segments, chain, signature; see `record::manifest`) or an audit-log export (the JSON that
//! `GET /api/v1/audit` returns).

use std::path::Path;

use serde::Deserialize;

use crate::store::audit::{verify_chain, AuditEntry, ChainError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("not a Qiao audit export: {0}")]
    Format(String),
    #[error("审计日志被改动 / audit log altered: {0}")]
    Chain(#[from] ChainError),
}

#[derive(Deserialize)]
struct AuditExport {
    format: String,
    contiguous: bool,
    entries: Vec<AuditEntry>,
}

/// What a successful check found.
#[derive(Debug)]
pub struct Report {
    pub entries: usize,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head: String,
    pub contiguous: bool,
}

pub fn verify_file(path: &Path) -> Result<Report, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| VerifyError::Read(path.display().to_string(), e))?;
    let export: AuditExport = serde_json::from_str(&text).map_err(|e| VerifyError::Format(e.to_string()))?;
    if export.format != "qiao-audit-export/1" {
        return Err(VerifyError::Format(format!("unknown format {:?}", export.format)));
    }
    // A non-contiguous export is one session's entries: every entry must name that session, so
    // a full export with entries cut out cannot pass as one by flipping the flag.
    if !export.contiguous {
        let first = export.entries.first().and_then(|e| e.session_id.clone());
        if first.is_none() || export.entries.iter().any(|e| e.session_id != first) {
            return Err(VerifyError::Format("a per-session export must hold the entries of one session only".into()));
        }
    }
    verify_chain(&export.entries, export.contiguous)?;
    let (first, last) = (&export.entries[0], &export.entries[export.entries.len() - 1]);
    Ok(Report {
        entries: export.entries.len(),
        first_seq: first.seq,
        last_seq: last.seq,
        head: last.hash.clone(),
        contiguous: export.contiguous,
    })
}
