//! Metadata: sites, cases, sessions, participants and their connection history, in SQLite (the
//! embedded default). Knows nothing of media. Every query is a runtime query with bound
//! parameters; the schema lives in `migrations/` and is applied at start.

pub mod audit;
pub mod stats;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

pub use audit::{AuditEntry, AuditRecord};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Conflict,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Serialises audit appends: each reads the chain head and writes the next entry, and two at
    /// once would fork the chain (SQLite would refuse one of them with BUSY).
    audit_lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub parent_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    pub case_id: String,
    pub kind: String,
    pub title: Option<String>,
    pub site_id: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    /// Internal id of the case.
    pub case: String,
    /// External case number.
    pub case_id: String,
    pub kind: String,
    pub title: Option<String>,
    pub site_id: Option<String>,
    pub status: String,
    pub scheduled_at: Option<String>,
    pub opened_at: Option<String>,
    pub closed_at: Option<String>,
    pub created_at: String,
    /// Non-host participants wait in a lobby until admitted.
    pub lobby: bool,
    /// Non-host participants must consent to the online proceeding and to recording before joining.
    pub consent_required: bool,
    /// How the session ended, given at close (e.g. `agreement`).
    pub outcome: Option<String>,
    /// The session this one continues (a reception handed to mediation, an escalation).
    pub linked_from: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Participant {
    pub id: String,
    pub session_id: String,
    pub display_name: String,
    pub role: String,
    pub site_id: Option<String>,
    pub token_expires_at: String,
    pub created_at: String,
    pub joined_at: Option<String>,
    pub left_at: Option<String>,
    pub leave_cause: Option<String>,
    /// The invitation names who must join: an identity check comes first.
    pub identity_required: bool,
    pub identity_verified_at: Option<String>,
    pub consent_proceeding_at: Option<String>,
    pub consent_recording_at: Option<String>,
    /// 1–5, given once after the session.
    pub rating: Option<i64>,
    /// The petitioners' group this participant represents.
    pub group: Option<String>,
    /// Set when the participant was removed, denied or transferred: its link no longer joins.
    pub revoked_cause: Option<String>,
}

pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a SystemTime always formats as RFC 3339")
}

/// Reads an RFC 3339 time as [`rfc3339`] writes it (and as clients send it); `None` if it is not
/// one. The one parser every module uses.
pub fn parse_rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

macro_rules! session_select {
    ($where:literal) => {
        concat!(
            "SELECT s.id, s.case_ref, c.case_id, s.kind, s.title, s.site_id, s.status, s.scheduled_at, s.opened_at, s.closed_at, s.created_at, s.lobby, s.consent_required, s.outcome, s.linked_from ",
            "FROM sessions s JOIN cases c ON c.id = s.case_ref ",
            $where
        )
    };
}

impl Store {
    /// Opens (creating if needed) `qiao.db` in `dir` and applies migrations.
    pub async fn open(dir: &Path) -> Result<Store> {
        let url = format!("sqlite://{}", dir.join("qiao.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        sqlx::migrate!("src/store/migrations").run(&pool).await?;
        Ok(Store { pool, audit_lock: Arc::default() })
    }

    /// The connection pool, for modules that keep their own tables here (the upload queue).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    // ---- sites ----

    pub async fn create_site(&self, name: &str, kind: &str, parent_id: Option<&str>) -> Result<Site> {
        if let Some(p) = parent_id {
            self.site(p).await?;
        }
        let site = Site {
            id: new_id("site"),
            name: name.into(),
            kind: kind.into(),
            parent_id: parent_id.map(Into::into),
            created_at: now_rfc3339(),
        };
        sqlx::query("INSERT INTO sites (id, name, kind, parent_id, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&site.id)
            .bind(&site.name)
            .bind(&site.kind)
            .bind(&site.parent_id)
            .bind(&site.created_at)
            .execute(&self.pool)
            .await?;
        Ok(site)
    }

    pub async fn site(&self, id: &str) -> Result<Site> {
        let row = sqlx::query("SELECT id, name, kind, parent_id, created_at FROM sites WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(site_from(&row))
    }

    pub async fn sites(&self) -> Result<Vec<Site>> {
        let rows = sqlx::query("SELECT id, name, kind, parent_id, created_at FROM sites ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(site_from).collect())
    }

    // ---- cases ----

    pub async fn create_case(
        &self,
        case_id: &str,
        kind: &str,
        title: Option<&str>,
        site_id: Option<&str>,
    ) -> Result<Case> {
        if let Some(s) = site_id {
            self.site(s).await?;
        }
        let case = Case {
            id: new_id("case"),
            case_id: case_id.into(),
            kind: kind.into(),
            title: title.map(Into::into),
            site_id: site_id.map(Into::into),
            created_at: now_rfc3339(),
        };
        let r =
            sqlx::query("INSERT INTO cases (id, case_id, kind, title, site_id, created_at) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(&case.id)
                .bind(&case.case_id)
                .bind(&case.kind)
                .bind(&case.title)
                .bind(&case.site_id)
                .bind(&case.created_at)
                .execute(&self.pool)
                .await;
        match r {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(case),
        }
    }

    pub async fn case(&self, id: &str) -> Result<Case> {
        let row = sqlx::query("SELECT id, case_id, kind, title, site_id, created_at FROM cases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(case_from(&row))
    }

    pub async fn cases(&self, case_id: Option<&str>) -> Result<Vec<Case>> {
        let rows = match case_id {
            Some(c) => sqlx::query("SELECT id, case_id, kind, title, site_id, created_at FROM cases WHERE case_id = ?").bind(c).fetch_all(&self.pool).await?,
            None => sqlx::query("SELECT id, case_id, kind, title, site_id, created_at FROM cases ORDER BY created_at DESC, id LIMIT 100").fetch_all(&self.pool).await?,
        };
        Ok(rows.iter().map(case_from).collect())
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        case_ref: &str,
        title: Option<&str>,
        site_id: Option<&str>,
        scheduled_at: Option<&str>,
        lobby: bool,
        consent_required: bool,
    ) -> Result<Session> {
        let case = self.case(case_ref).await?;
        if let Some(s) = site_id {
            self.site(s).await?;
        }
        let id = new_id("ses");
        sqlx::query("INSERT INTO sessions (id, case_ref, kind, title, site_id, status, scheduled_at, created_at, lobby, consent_required) VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?)")
            .bind(&id).bind(&case.id).bind(&case.kind).bind(title).bind(site_id.or(case.site_id.as_deref())).bind(scheduled_at).bind(now_rfc3339()).bind(lobby).bind(consent_required)
            .execute(&self.pool).await?;
        self.session(&id).await
    }

    pub async fn session(&self, id: &str) -> Result<Session> {
        let row = sqlx::query(session_select!("WHERE s.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(session_from(&row))
    }

    pub async fn sessions_of_case(&self, case_ref: &str) -> Result<Vec<Session>> {
        let rows = sqlx::query(session_select!("WHERE s.case_ref = ? ORDER BY s.created_at, s.id"))
            .bind(case_ref)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(session_from).collect())
    }

    /// scheduled → open. Returns the session; opening an open session is a no-op.
    pub async fn open_session(&self, id: &str) -> Result<Session> {
        let s = self.session(id).await?;
        match s.status.as_str() {
            "closed" => Err(StoreError::Conflict),
            "open" => Ok(s),
            _ => {
                sqlx::query("UPDATE sessions SET status = 'open', opened_at = ? WHERE id = ? AND status = 'scheduled'")
                    .bind(now_rfc3339())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                self.session(id).await
            }
        }
    }

    /// → closed. Closing a closed session is a conflict.
    pub async fn close_session(&self, id: &str) -> Result<Session> {
        let r = sqlx::query("UPDATE sessions SET status = 'closed', closed_at = ? WHERE id = ? AND status != 'closed'")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            self.session(id).await?; // NotFound if missing
            return Err(StoreError::Conflict);
        }
        self.session(id).await
    }

    // ---- participants ----

    pub async fn create_participant(
        &self,
        session_id: &str,
        id: &str,
        display_name: &str,
        role: &str,
        site_id: Option<&str>,
        token_expires_at: &str,
    ) -> Result<Participant> {
        if let Some(s) = site_id {
            self.site(s).await?;
        }
        sqlx::query("INSERT INTO participants (id, session_id, display_name, role, site_id, token_expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(id).bind(session_id).bind(display_name).bind(role).bind(site_id).bind(token_expires_at).bind(now_rfc3339())
            .execute(&self.pool).await?;
        self.participant(id).await
    }

    pub async fn participant(&self, id: &str) -> Result<Participant> {
        let row = sqlx::query("SELECT id, session_id, display_name, role, site_id, token_expires_at, created_at, joined_at, left_at, leave_cause, identity_name IS NOT NULL, identity_verified_at, consent_proceeding_at, consent_recording_at, rating, group_name, revoked_cause FROM participants WHERE id = ?")
            .bind(id).fetch_optional(&self.pool).await?.ok_or(StoreError::NotFound)?;
        Ok(participant_from(&row))
    }

    pub async fn participants(&self, session_id: &str) -> Result<Vec<Participant>> {
        let rows = sqlx::query("SELECT id, session_id, display_name, role, site_id, token_expires_at, created_at, joined_at, left_at, leave_cause, identity_name IS NOT NULL, identity_verified_at, consent_proceeding_at, consent_recording_at, rating, group_name, revoked_cause FROM participants WHERE session_id = ? ORDER BY created_at, id")
            .bind(session_id).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(participant_from).collect())
    }

    /// Revokes a participant's link (removed, denied, transferred).
    pub async fn revoke(&self, participant_id: &str, cause: &str) -> Result<()> {
        sqlx::query("UPDATE participants SET revoked_cause = COALESCE(revoked_cause, ?) WHERE id = ?")
            .bind(cause)
            .bind(participant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes one identity attempt if fewer than `max` have failed; false when locked. Atomic, so
    /// parallel requests cannot get around the limit.
    pub async fn reserve_identity_attempt(&self, participant_id: &str, max: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE participants SET identity_failures = identity_failures + 1 WHERE id = ? AND identity_failures < ?",
        )
        .bind(participant_id)
        .bind(max)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a join, reconnect or leave (with its cause) in the participant's history.
    pub async fn record_presence(
        &self,
        session_id: &str,
        participant_id: &str,
        event: &str,
        cause: Option<&str>,
        at: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO participant_events (session_id, participant_id, at, event, cause) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(session_id)
        .bind(participant_id)
        .bind(at)
        .bind(event)
        .bind(cause)
        .execute(&mut *tx)
        .await?;
        match event {
            "joined" => {
                sqlx::query("UPDATE participants SET joined_at = COALESCE(joined_at, ?), left_at = NULL, leave_cause = NULL WHERE id = ?")
                    .bind(at).bind(participant_id).execute(&mut *tx).await?;
            }
            "left" => {
                sqlx::query("UPDATE participants SET left_at = ?, leave_cause = ? WHERE id = ?")
                    .bind(at)
                    .bind(cause)
                    .bind(participant_id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(())
    }

    /// The presence history of a session: (participant id, at, event, cause).
    pub async fn presence_events(&self, session_id: &str) -> Result<Vec<(String, String, String, Option<String>)>> {
        let rows = sqlx::query(
            "SELECT participant_id, at, event, cause FROM participant_events WHERE session_id = ? ORDER BY id",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect())
    }

    /// Stores a note at `timecode_ms` into the session; returns its id.
    pub async fn add_note(&self, session_id: &str, author: &str, timecode_ms: i64, text: &str) -> Result<String> {
        let id = new_id("note");
        sqlx::query("INSERT INTO notes (id, session_id, author, timecode_ms, at, text) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(session_id)
            .bind(author)
            .bind(timecode_ms)
            .bind(now_rfc3339())
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// A session's notes in timecode order: (id, author, timecode_ms, at, text).
    pub async fn notes(&self, session_id: &str) -> Result<Vec<(String, String, i64, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, author, timecode_ms, at, text FROM notes WHERE session_id = ? ORDER BY timecode_ms, at",
        )
        .bind(session_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// `site_id` and every site below it (county → township → village).
    pub async fn site_subtree(&self, site_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "WITH RECURSIVE tree(id) AS (SELECT id FROM sites WHERE id = ? UNION SELECT s.id FROM sites s JOIN tree t ON s.parent_id = t.id) SELECT id FROM tree",
        )
        .bind(site_id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Sessions that are open now.
    pub async fn open_sessions(&self) -> Result<Vec<Session>> {
        let rows =
            sqlx::query(session_select!("WHERE s.status = 'open' ORDER BY s.opened_at")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(session_from).collect())
    }

    pub async fn set_group(&self, participant_id: &str, group: &str) -> Result<()> {
        sqlx::query("UPDATE participants SET group_name = ? WHERE id = ?")
            .bind(group)
            .bind(participant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many invitations of `group` a session has.
    pub async fn group_size(&self, session_id: &str, group: &str) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM participants WHERE session_id = ? AND group_name = ?")
            .bind(session_id)
            .bind(group)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// A session that continues `from` (same case) with its own kind, e.g. a mediation after a
    /// reception.
    pub async fn create_linked_session(
        &self,
        from: &Session,
        kind: &str,
        title: Option<&str>,
        site_id: Option<&str>,
    ) -> Result<Session> {
        let id = new_id("ses");
        sqlx::query("INSERT INTO sessions (id, case_ref, kind, title, site_id, status, created_at, lobby, consent_required, linked_from) VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?)")
            .bind(&id).bind(&from.case).bind(kind).bind(title).bind(site_id.or(from.site_id.as_deref())).bind(now_rfc3339())
            .bind(from.lobby).bind(from.consent_required).bind(&from.id)
            .execute(&self.pool).await?;
        self.session(&id).await
    }

    /// Sets who must join as this participant: the expected name and a hash of the ID number.
    pub async fn set_identity(&self, participant_id: &str, name: &str, id_hash: &str) -> Result<()> {
        sqlx::query("UPDATE participants SET identity_name = ?, identity_hash = ? WHERE id = ?")
            .bind(name)
            .bind(id_hash)
            .bind(participant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The expected name and ID hash, and how many checks have failed so far.
    pub async fn identity_expectation(&self, participant_id: &str) -> Result<Option<(String, String, i64)>> {
        let row: Option<(Option<String>, Option<String>, i64)> =
            sqlx::query_as("SELECT identity_name, identity_hash, identity_failures FROM participants WHERE id = ?")
                .bind(participant_id)
                .fetch_optional(&self.pool)
                .await?;
        let (name, hash, failures) = row.ok_or(StoreError::NotFound)?;
        Ok(name.zip(hash).map(|(n, h)| (n, h, failures)))
    }

    /// After a reserved attempt: success marks the participant verified and gives the attempt back.
    pub async fn record_identity_result(&self, participant_id: &str, ok: bool) -> Result<()> {
        if ok {
            sqlx::query("UPDATE participants SET identity_verified_at = COALESCE(identity_verified_at, ?), identity_failures = MAX(identity_failures - 1, 0) WHERE id = ?")
                .bind(now_rfc3339()).bind(participant_id).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Records consent; each kind keeps the time it was first given.
    pub async fn record_consent(&self, participant_id: &str, proceeding: bool, recording: bool) -> Result<()> {
        let now = now_rfc3339();
        sqlx::query(
            "UPDATE participants SET consent_proceeding_at = CASE WHEN ? THEN COALESCE(consent_proceeding_at, ?) ELSE consent_proceeding_at END, \
             consent_recording_at = CASE WHEN ? THEN COALESCE(consent_recording_at, ?) ELSE consent_recording_at END WHERE id = ?",
        )
        .bind(proceeding).bind(&now).bind(recording).bind(&now).bind(participant_id)
        .execute(&self.pool).await?;
        Ok(())
    }

    /// Stores the participant's rating; a second rating is a conflict.
    pub async fn record_rating(&self, participant_id: &str, score: i64, comment: Option<&str>) -> Result<()> {
        let r = sqlx::query(
            "UPDATE participants SET rating = ?, rating_comment = ?, rated_at = ? WHERE id = ? AND rating IS NULL",
        )
        .bind(score)
        .bind(comment)
        .bind(now_rfc3339())
        .bind(participant_id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            self.participant(participant_id).await?;
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    /// Appends an entry to the audit log, chained to the one before.
    pub async fn audit(&self, r: AuditRecord) -> Result<AuditEntry> {
        let _serial = self.audit_lock.lock().await;
        // IMMEDIATE takes the write lock before reading the chain head: a deferred transaction
        // would read a snapshot, and if another writer committed meanwhile its INSERT would fail
        // with BUSY_SNAPSHOT instead of waiting.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (seq, prev_hash) = head.map(|(s, h)| (s + 1, h)).unwrap_or((1, audit::GENESIS.to_string()));
        let at = now_rfc3339();
        let hash = audit::entry_hash(
            seq,
            &at,
            r.session_id.as_deref(),
            &r.actor,
            &r.action,
            r.target.as_deref(),
            r.detail.as_deref(),
            &prev_hash,
        );
        sqlx::query("INSERT INTO audit_log (seq, at, session_id, actor, action, target, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(seq).bind(&at).bind(&r.session_id).bind(&r.actor).bind(&r.action).bind(&r.target).bind(&r.detail).bind(&prev_hash).bind(&hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AuditEntry {
            seq,
            at,
            session_id: r.session_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
            prev_hash,
            hash,
        })
    }

    /// Audit entries in sequence order: all of one session, or a contiguous range of the chain.
    pub async fn audit_entries(&self, session_id: Option<&str>, from_seq: i64, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = match session_id {
            Some(sid) => sqlx::query("SELECT seq, at, session_id, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE session_id = ? AND seq >= ? ORDER BY seq LIMIT ?")
                .bind(sid).bind(from_seq).bind(limit).fetch_all(&self.pool).await?,
            None => sqlx::query("SELECT seq, at, session_id, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?")
                .bind(from_seq).bind(limit).fetch_all(&self.pool).await?,
        };
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get(0),
                at: r.get(1),
                session_id: r.get(2),
                actor: r.get(3),
                action: r.get(4),
                target: r.get(5),
                detail: r.get(6),
                prev_hash: r.get(7),
                hash: r.get(8),
            })
            .collect())
    }

    // ---- recordings ----------------------------------------------------------------------------

    pub async fn insert_recording(&self, id: &str, session_id: &str, prefix: &str, started_at: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO recordings (id, session_id, prefix, status, started_at) VALUES (?, ?, ?, 'recording', ?)",
        )
        .bind(id)
        .bind(session_id)
        .bind(prefix)
        .bind(started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how a recording ended (`final` or `interrupted`).
    pub async fn end_recording(
        &self,
        id: &str,
        status: &str,
        ended_at: &str,
        chain_head: &str,
        segments: i64,
    ) -> Result<()> {
        sqlx::query("UPDATE recordings SET status = ?, ended_at = ?, chain_head = ?, segments = ? WHERE id = ?")
            .bind(status)
            .bind(ended_at)
            .bind(chain_head)
            .bind(segments)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_composite(&self, id: &str, state: &str) -> Result<()> {
        sqlx::query("UPDATE recordings SET composite = ? WHERE id = ?")
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn recording(&self, id: &str) -> Result<RecordingRow> {
        let row = sqlx::query(
            "SELECT r.id, r.session_id, s.case_ref, r.prefix, r.status, r.started_at, r.ended_at, r.chain_head, r.segments, r.composite FROM recordings r JOIN sessions s ON s.id = r.session_id WHERE r.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(recording_from(&row))
    }

    /// Every recording of a case (by Qiao's case id), oldest first.
    pub async fn recordings_of_case(&self, case_ref: &str) -> Result<Vec<RecordingRow>> {
        let rows = sqlx::query(
            "SELECT r.id, r.session_id, s.case_ref, r.prefix, r.status, r.started_at, r.ended_at, r.chain_head, r.segments, r.composite FROM recordings r JOIN sessions s ON s.id = r.session_id WHERE s.case_ref = ? ORDER BY r.started_at, r.id",
        )
        .bind(case_ref)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(recording_from).collect())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn site_from(r: &sqlx::sqlite::SqliteRow) -> Site {
    Site { id: r.get(0), name: r.get(1), kind: r.get(2), parent_id: r.get(3), created_at: r.get(4) }
}

fn case_from(r: &sqlx::sqlite::SqliteRow) -> Case {
    Case { id: r.get(0), case_id: r.get(1), kind: r.get(2), title: r.get(3), site_id: r.get(4), created_at: r.get(5) }
}

fn session_from(r: &sqlx::sqlite::SqliteRow) -> Session {
    Session {
        id: r.get(0),
        case: r.get(1),
        case_id: r.get(2),
        kind: r.get(3),
        title: r.get(4),
        site_id: r.get(5),
        status: r.get(6),
        scheduled_at: r.get(7),
        opened_at: r.get(8),
        closed_at: r.get(9),
        created_at: r.get(10),
        lobby: r.get(11),
        consent_required: r.get(12),
        outcome: r.get(13),
        linked_from: r.get(14),
    }
}

fn participant_from(r: &sqlx::sqlite::SqliteRow) -> Participant {
    Participant {
        id: r.get(0),
        session_id: r.get(1),
        display_name: r.get(2),
        role: r.get(3),
        site_id: r.get(4),
        token_expires_at: r.get(5),
        created_at: r.get(6),
        joined_at: r.get(7),
        left_at: r.get(8),
        leave_cause: r.get(9),
        identity_required: r.get(10),
        identity_verified_at: r.get(11),
        consent_proceeding_at: r.get(12),
        consent_recording_at: r.get(13),
        rating: r.get(14),
        group: r.get(15),
        revoked_cause: r.get(16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_back_as_written_and_other_text_is_refused() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        let text = rfc3339(t);
        assert_eq!(parse_rfc3339(&text).map(std::time::SystemTime::from), Some(t), "{text}");
        let offset = parse_rfc3339("2026-11-23T12:00:00+08:00").expect("an offset is RFC 3339");
        assert_eq!(offset, parse_rfc3339("2026-11-23T04:00:00Z").unwrap());
        for bad in ["", "2026-11-23", "2026-11-23 12:00:00", "2026-13-01T00:00:00Z", "明天上午"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_case_id_is_unique_and_utf8_safe() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let c = s.create_case("(2024)冀0925民初1234号", "hearing", None, None).await.unwrap();
        assert_eq!(s.cases(Some("(2024)冀0925民初1234号")).await.unwrap(), vec![c]);
        assert!(matches!(
            s.create_case("(2024)冀0925民初1234号", "hearing", None, None).await,
            Err(StoreError::Conflict)
        ));
    }

    #[tokio::test]
    async fn a_session_goes_scheduled_open_closed_and_closing_twice_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let c = s.create_case("X-1", "mediation", None, None).await.unwrap();
        let ses = s.create_session(&c.id, Some("t"), None, None, true, true).await.unwrap();
        assert_eq!((ses.status.as_str(), ses.kind.as_str(), ses.case_id.as_str()), ("scheduled", "mediation", "X-1"));
        assert_eq!(s.open_session(&ses.id).await.unwrap().status, "open");
        assert_eq!(s.close_session(&ses.id).await.unwrap().status, "closed");
        assert!(matches!(s.close_session(&ses.id).await, Err(StoreError::Conflict)));
        assert!(matches!(s.open_session(&ses.id).await, Err(StoreError::Conflict)));
        assert!(matches!(s.close_session("ses_nope").await, Err(StoreError::NotFound)));
    }

    #[tokio::test]
    async fn presence_history_keeps_every_leave_cause() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let c = s.create_case("X-2", "hearing", None, None).await.unwrap();
        let ses = s.create_session(&c.id, None, None, None, true, true).await.unwrap();
        s.create_participant(&ses.id, "p_1", "张三", "party", None, "2030-01-01T00:00:00Z").await.unwrap();
        s.record_presence(&ses.id, "p_1", "joined", None, "2026-01-01T00:00:00Z").await.unwrap();
        s.record_presence(&ses.id, "p_1", "left", Some("network_lost"), "2026-01-01T00:01:00Z").await.unwrap();
        let p = s.participant("p_1").await.unwrap();
        assert_eq!(p.leave_cause.as_deref(), Some("network_lost"));
        assert_eq!(s.presence_events(&ses.id).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_audit_log_chains_its_entries_and_refuses_changes_and_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        for i in 0..5 {
            s.audit(AuditRecord::new("admin", "test").session("ses_x").detail(format!("{i}"))).await.unwrap();
        }
        let entries = s.audit_entries(None, 1, 100).await.unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(audit::verify_chain(&entries, true), Ok(()));
        let upd = sqlx::query("UPDATE audit_log SET detail = 'x' WHERE seq = 2").execute(&s.pool).await;
        assert!(upd.is_err(), "update refused");
        let del = sqlx::query("DELETE FROM audit_log WHERE seq = 5").execute(&s.pool).await;
        assert!(del.is_err(), "delete refused");
        assert_eq!(s.audit_entries(None, 1, 100).await.unwrap(), entries);
    }

    #[tokio::test]
    async fn concurrent_audit_appends_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.audit(AuditRecord::new("system", format!("a{i}"))).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let entries = s.audit_entries(None, 1, 100).await.unwrap();
        assert_eq!(entries.len(), 20);
        assert_eq!(audit::verify_chain(&entries, true), Ok(()));
    }

    #[tokio::test]
    async fn a_site_with_an_unknown_parent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        assert!(matches!(s.create_site("镇", "township_center", Some("site_nope")).await, Err(StoreError::NotFound)));
        let county = s.create_site("县法院", "county_court", None).await.unwrap();
        let town = s.create_site("镇综治中心", "township_center", Some(&county.id)).await.unwrap();
        assert_eq!(town.parent_id.as_deref(), Some(county.id.as_str()));
    }
}

/// A recording as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordingRow {
    pub id: String,
    pub session_id: String,
    /// Qiao's id of the case.
    pub case: String,
    /// Where the manifest and segments are in the object store.
    pub prefix: String,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub chain_head: Option<String>,
    pub segments: i64,
    pub composite: Option<String>,
}

fn recording_from(r: &sqlx::sqlite::SqliteRow) -> RecordingRow {
    RecordingRow {
        id: r.get(0),
        session_id: r.get(1),
        case: r.get(2),
        prefix: r.get(3),
        status: r.get(4),
        started_at: r.get(5),
        ended_at: r.get(6),
        chain_head: r.get(7),
        segments: r.get(8),
        composite: r.get(9),
    }
}
