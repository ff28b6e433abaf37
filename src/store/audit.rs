//! The hash-chained audit log. Each entry's hash is SHA-256 over its own fields and the previous
//! entry's hash, so changing, removing or reordering any entry breaks every hash after it; SQLite
//! triggers refuse UPDATE and DELETE, and `verify_chain` (used by `qiao verify`) checks an export
//! offline.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    pub session_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// What an entry says, before it is chained.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    pub session_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<String>,
}

impl AuditRecord {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> AuditRecord {
        AuditRecord { actor: actor.into(), action: action.into(), ..Default::default() }
    }
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }
    pub fn target(mut self, t: impl Into<String>) -> Self {
        self.target = Some(t.into());
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// The hash of an entry: SHA-256, hex, over the JSON array of its fields and the previous hash
/// (JSON so that no field's content can be mistaken for a separator).
// The arguments are exactly the entry's hashed fields, in hash order.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    seq: i64,
    at: &str,
    session_id: Option<&str>,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: Option<&str>,
    prev_hash: &str,
) -> String {
    let canonical = serde_json::json!([seq, at, session_id, actor, action, target, detail, prev_hash]).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditEntry {
    pub fn computed_hash(&self) -> String {
        entry_hash(
            self.seq,
            &self.at,
            self.session_id.as_deref(),
            &self.actor,
            &self.action,
            self.target.as_deref(),
            self.detail.as_deref(),
            &self.prev_hash,
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("entry {seq}: its hash does not match its contents (changed)")]
    Hash { seq: i64 },
    #[error("entry {seq}: does not follow entry {prev} (removed or reordered entries)")]
    Link { seq: i64, prev: i64 },
    #[error("the export holds no entries")]
    Empty,
}

/// Checks an export. With `contiguous` (a range export), every entry must follow the one before it
/// (sequence +1 and `prev_hash` = the previous hash); otherwise (a per-session export, whose
/// entries are interleaved with other sessions') each entry's own hash is checked and the order.
pub fn verify_chain(entries: &[AuditEntry], contiguous: bool) -> Result<(), ChainError> {
    if entries.is_empty() {
        return Err(ChainError::Empty);
    }
    for (i, e) in entries.iter().enumerate() {
        if e.computed_hash() != e.hash {
            return Err(ChainError::Hash { seq: e.seq });
        }
        if let Some(p) = i.checked_sub(1).map(|j| &entries[j]) {
            let linked = if contiguous { e.seq == p.seq + 1 && e.prev_hash == p.hash } else { e.seq > p.seq };
            if !linked {
                return Err(ChainError::Link { seq: e.seq, prev: p.seq });
            }
        } else if e.seq == 1 && e.prev_hash != GENESIS {
            return Err(ChainError::Link { seq: 1, prev: 0 });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let at = format!("2026-11-21T10:00:{seq:02}Z");
                let hash = entry_hash(seq, &at, Some("ses_1"), "p_1", "joined", None, None, &prev);
                let e = AuditEntry {
                    seq,
                    at,
                    session_id: Some("ses_1".into()),
                    actor: "p_1".into(),
                    action: "joined".into(),
                    target: None,
                    detail: None,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&chain(5), true), Ok(()));
    }

    #[test]
    fn a_changed_field_is_named_by_its_entry() {
        let mut c = chain(5);
        c[2].action = "left".into();
        assert_eq!(verify_chain(&c, true), Err(ChainError::Hash { seq: 3 }));
    }

    #[test]
    fn a_removed_entry_breaks_the_link() {
        let mut c = chain(5);
        c.remove(2);
        assert_eq!(verify_chain(&c, true), Err(ChainError::Link { seq: 4, prev: 2 }));
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_next_link() {
        let mut c = chain(5);
        c[1].detail = Some("forged".into());
        c[1].hash = c[1].computed_hash();
        assert_eq!(verify_chain(&c, true), Err(ChainError::Link { seq: 3, prev: 2 }));
    }

    #[test]
    fn a_filtered_export_checks_each_entry_and_the_order() {
        let c = chain(6);
        let some: Vec<_> = c.iter().filter(|e| e.seq % 2 == 0).cloned().collect();
        assert_eq!(verify_chain(&some, false), Ok(()));
        let mut reversed = some.clone();
        reversed.reverse();
        assert!(matches!(verify_chain(&reversed, false), Err(ChainError::Link { .. })));
    }
}
