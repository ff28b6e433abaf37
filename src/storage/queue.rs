//! The durable upload queue: one SQLite row per object that must reach the object store, one
//! worker task that uploads them oldest first and retries with backoff.
//!
//! A row is the promise "this spool file goes to storage under this key". It is inserted before
//! `enqueue` returns and deleted only after the store confirmed the upload; the spool file is
//! deleted after its row. Enqueuing a key again (an updated manifest) replaces the pending row's
//! file and bumps its `revision`; an upload of an older revision then deletes nothing, and the new
//! file is uploaded next. The worker sleeps on a [`Notify`] when nothing is due and on the backoff
//! timer when something is; it never polls the database while idle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use sqlx::{Row, SqlitePool};
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;

use super::spool::alarm;
use super::{validate_key, ObjectStore, Result, Spool, StorageError};
use crate::store::Store;

/// SQL condition on a job row `j`: it is a manifest and another job under its directory is
/// pending (see [`Shared::next`]). `manifest.json` is 13 bytes: the directory is the key less them.
/// A macro, not a constant: the queries that use it must be `'static` (`concat!`).
macro_rules! manifest_waits {
    () => {
        "substr(j.key, -14) = '/manifest.json' AND EXISTS (SELECT 1 FROM upload_jobs o \
         WHERE o.id <> j.id AND substr(o.key, 1, length(j.key) - 13) = substr(j.key, 1, length(j.key) - 13))"
    };
}

/// First retry delay after a failed upload; doubles per failure.
const BACKOFF_START: Duration = Duration::from_millis(500);
/// Retry delays never exceed this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the queue and spool look like now; published on a watch channel at every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageHealth {
    /// Objects waiting for upload (including those being retried).
    pub pending_jobs: u64,
    /// Bytes in the spool: segments not yet in storage, and anything else left there.
    pub spool_bytes: u64,
    /// The configured spool limit, so readers can show usage as a fraction.
    pub spool_limit: u64,
    /// When the current streak of failed uploads began; `None` while uploads succeed.
    pub failing_since: Option<SystemTime>,
    /// The latest upload error of the current failure streak, for operators.
    pub last_error: Option<String>,
    /// Spool usage is at or above 80% of the limit: recordings will soon be refused.
    pub alarm: bool,
}

/// Handle to the upload queue. Cloning shares the queue; dropping the last handle stops the worker
/// (at any point: the rows make that as safe as a crash).
#[derive(Clone)]
pub struct UploadQueue {
    /// State shared with the worker task.
    shared: Arc<Shared>,
    /// Held only by handles, never by the worker, so its drop marks the last handle gone.
    _worker: Arc<WorkerGuard>,
}

struct Shared {
    /// The metadata database that holds `upload_jobs`.
    pool: SqlitePool,
    /// Where uploads go.
    objects: ObjectStore,
    /// Where the files come from; its usage counter is kept here.
    spool: Spool,
    /// Wakes the idle worker when a job is enqueued (a permit is kept if it is busy).
    wake: Notify,
    /// The latest health; every change is sent, so waiters need no polling.
    health: watch::Sender<StorageHealth>,
    /// Serialises "count the jobs, then publish", so a stale count is never published after a
    /// newer one.
    refresh_lock: Mutex<()>,
}

struct WorkerGuard(JoinHandle<()>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One row of `upload_jobs`, as the worker needs it.
struct Job {
    id: i64,
    key: String,
    spool_path: PathBuf,
    revision: i64,
    attempts: i64,
}

impl UploadQueue {
    /// Starts the worker (on the current Tokio runtime). Jobs left pending by a previous run,
    /// however it ended, are uploaded first.
    pub fn start(store: Store, objects: ObjectStore, spool: Spool) -> UploadQueue {
        let health =
            StorageHealth { spool_bytes: spool.used_bytes(), spool_limit: spool.limit_bytes(), ..Default::default() };
        let shared = Arc::new(Shared {
            pool: store.pool().clone(),
            objects,
            spool,
            wake: Notify::new(),
            health: watch::Sender::new(health),
            refresh_lock: Mutex::new(()),
        });
        tracing::info!(store = %shared.objects.describe(), spool = %shared.spool.dir().display(), "upload queue started");
        let worker = tokio::spawn(run(shared.clone()));
        UploadQueue { shared, _worker: Arc::new(WorkerGuard(worker)) }
    }

    /// Queues the spool file `spool_path` for upload under `key`, durably, and wakes the worker.
    /// Enqueuing a pending key again replaces its file (the previous file, if it is another one, is
    /// deleted: it is superseded). From here on the queue owns the file: write updates to a new
    /// file rather than rewriting an enqueued one.
    pub async fn enqueue(&self, key: &str, spool_path: &Path) -> Result<()> {
        validate_key(key)?;
        let shared = &self.shared;
        let path = shared.spool.resolve(spool_path)?;
        let path_text = path.to_str().ok_or_else(|| StorageError::NonUtf8Path(path.clone()))?.to_owned();
        let size = tokio::fs::metadata(&path).await.map_err(|e| StorageError::io(&path, e))?.len();

        // IMMEDIATE: take the write lock before reading the old row, so the read and the upsert are
        // one step even with the worker writing.
        let mut tx = shared.pool.begin_with("BEGIN IMMEDIATE").await?;
        let old = sqlx::query("SELECT spool_path, size FROM upload_jobs WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| (row.get::<String, _>(0), row.get::<i64, _>(1)));
        // Uploading deletes the file: two keys must not share one.
        let other: Option<String> = sqlx::query_scalar("SELECT key FROM upload_jobs WHERE spool_path = ? AND key <> ?")
            .bind(&path_text)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(other) = other {
            return Err(StorageError::AlreadyQueued { path, key: other });
        }
        sqlx::query(
            "INSERT INTO upload_jobs (key, spool_path, size, revision, attempts, next_attempt_at, last_error, created_at) \
             VALUES (?, ?, ?, 0, 0, ?, NULL, ?) \
             ON CONFLICT(key) DO UPDATE SET spool_path = excluded.spool_path, size = excluded.size, \
             revision = revision + 1, attempts = 0, next_attempt_at = excluded.next_attempt_at, last_error = NULL",
        )
        .bind(key)
        .bind(&path_text)
        .bind(size as i64)
        .bind(now_ms())
        .bind(crate::store::now_rfc3339())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        match old {
            Some((old_path, old_size)) if old_path == path_text => {
                // The same file enqueued again (possibly rewritten): count its current size once.
                shared.spool.sub(old_size as u64);
                shared.spool.add(size);
            }
            Some((old_path, _)) => {
                shared.spool.add(size);
                if let Err(e) = shared.spool.remove(Path::new(&old_path)).await {
                    tracing::warn!(key, error = %e, "could not delete a superseded spool file");
                }
            }
            None => shared.spool.add(size),
        }
        shared.wake.notify_one();
        shared.refresh().await?;
        Ok(())
    }

    /// Waits until no job is pending (every enqueued file is in the store), or fails with
    /// [`StorageError::FlushTimeout`] after `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.shared.health.subscribe();
        loop {
            rx.borrow_and_update();
            // The database is the truth; every change to it is followed by a health send.
            let pending = self.shared.pending().await?;
            if pending == 0 {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Err(StorageError::FlushTimeout { pending }),
                Ok(Err(_)) => return Err(StorageError::QueueStopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// The queue's and spool's health; the receiver sees every change. Right after `start` the
    /// job count is 0 until the worker has counted the jobs a previous run left (its first step);
    /// `flush` does not depend on it.
    pub fn health(&self) -> watch::Receiver<StorageHealth> {
        self.shared.health.subscribe()
    }

    /// The spool this queue uploads from.
    pub fn spool(&self) -> &Spool {
        &self.shared.spool
    }

    /// The store this queue uploads to.
    pub fn object_store(&self) -> &ObjectStore {
        &self.shared.objects
    }
}

impl Shared {
    async fn pending(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upload_jobs").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    /// Publishes the current job count and spool usage (and logs the alarm turning on or off).
    async fn refresh(&self) -> Result<()> {
        let _serial = self.refresh_lock.lock().await;
        let pending = self.pending().await?;
        let (used, limit) = (self.spool.used_bytes(), self.spool.limit_bytes());
        // Always sent, even unchanged: `flush` re-reads the database on every send.
        self.health.send_modify(|h| {
            h.pending_jobs = pending;
            h.spool_bytes = used;
            h.spool_limit = limit;
            let on = alarm(used, limit);
            if on && !h.alarm {
                tracing::error!(
                    spool = %self.spool.dir().display(),
                    used_bytes = used,
                    limit_bytes = limit,
                    pending_jobs = pending,
                    "spool is at or above 80% of its limit: uploads are not keeping up"
                );
            } else if !on && h.alarm {
                tracing::info!(used_bytes = used, limit_bytes = limit, "spool usage is back below 80% of its limit");
            }
            h.alarm = on;
        });
        Ok(())
    }

    /// The oldest due job, or when the next one falls due (`None`: nothing pending). A manifest
    /// (`…/manifest.json`) waits while any other object under its directory is pending: it lists
    /// them, and a manifest in storage before its segments names objects a reader cannot fetch
    /// (an updated manifest is due at once, while a segment that failed in an outage waits out
    /// its backoff).
    async fn next(&self, now: i64) -> Result<std::result::Result<Job, Option<i64>>> {
        let row = sqlx::query(concat!(
            "SELECT id, key, spool_path, revision, attempts FROM upload_jobs j \
             WHERE next_attempt_at <= ? AND NOT (",
            manifest_waits!(),
            ") ORDER BY id LIMIT 1"
        ))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Ok(Job {
                id: row.get(0),
                key: row.get(1),
                spool_path: PathBuf::from(row.get::<String, _>(2)),
                revision: row.get(3),
                attempts: row.get(4),
            }));
        }
        let next: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT MIN(next_attempt_at) FROM upload_jobs j WHERE NOT (",
            manifest_waits!(),
            ")"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(Err(next))
    }

    /// The store answered again after failures: every job waiting out its backoff is due now.
    async fn retry_all_now(&self) -> Result<()> {
        let now = now_ms();
        sqlx::query("UPDATE upload_jobs SET next_attempt_at = ? WHERE next_attempt_at > ?")
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the job if it is still at the revision that was uploaded; true if it was.
    async fn complete(&self, job: &Job) -> Result<bool> {
        let done = sqlx::query("DELETE FROM upload_jobs WHERE id = ? AND revision = ?")
            .bind(job.id)
            .bind(job.revision)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The failures since the last successful upload.
#[derive(Default)]
struct Streak {
    /// Consecutive failed attempts; sets the worker's pause.
    failures: u32,
}

async fn run(shared: Arc<Shared>) {
    let mut streak = Streak::default();
    if let Err(e) = shared.refresh().await {
        tracing::warn!(error = %e, "upload queue: could not read pending jobs");
    }
    loop {
        match step(&shared, &mut streak).await {
            Ok(Step::Continue) => {}
            Ok(Step::Idle(next_due)) => match next_due {
                None => shared.wake.notified().await,
                Some(due) => {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64);
                    tokio::select! {
                        _ = shared.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            },
            Ok(Step::Failed(error)) => {
                streak.failures += 1;
                on_failure(&shared, &streak, error);
                // Back off as a whole, not just this job: when the store is down, one request per
                // pause probes it. A wake-up during the pause is kept for afterwards.
                tokio::time::sleep(backoff(streak.failures, jitter())).await;
            }
            Err(e) => {
                // The database failed: the same streak and pause as a failed upload.
                streak.failures += 1;
                on_failure(&shared, &streak, describe_error(&e));
                tokio::time::sleep(backoff(streak.failures, jitter())).await;
            }
        }
    }
}

enum Step {
    /// A job was handled (uploaded, superseded or dropped); look for the next.
    Continue,
    /// Nothing is due; the earliest due time, if any job is pending.
    Idle(Option<i64>),
    /// The upload failed with this error; the job was rescheduled.
    Failed(String),
}

async fn step(shared: &Shared, streak: &mut Streak) -> Result<Step> {
    let job = match shared.next(now_ms()).await? {
        Ok(job) => job,
        Err(next_due) => return Ok(Step::Idle(next_due)),
    };
    match shared.objects.put_file(&job.key, &job.spool_path).await {
        Err(StorageError::Io { path, source })
            if path == job.spool_path && source.kind() == std::io::ErrorKind::NotFound =>
        {
            // Either superseded while we looked (the row's revision moved on, the old file was
            // deleted) or lost: nothing can bring the file back, so a lost one is reported and its
            // job dropped rather than retried forever.
            if shared.complete(&job).await? {
                tracing::error!(
                    key = %job.key,
                    spool_path = %job.spool_path.display(),
                    "the spool file of a pending upload is gone; the object cannot be uploaded and its job is dropped"
                );
                shared.refresh().await?;
            }
            Ok(Step::Continue)
        }
        Ok(()) => {
            if shared.complete(&job).await? {
                if let Err(e) = shared.spool.remove(&job.spool_path).await {
                    // Uploaded and no longer queued: only the disk space is at stake.
                    tracing::warn!(key = %job.key, error = %e, "could not delete an uploaded spool file");
                }
            }
            if streak.failures > 0 {
                tracing::info!(
                    store = %shared.objects.describe(),
                    failed_attempts = streak.failures,
                    "uploads recovered"
                );
                *streak = Streak::default();
                shared.health.send_modify(|h| {
                    h.failing_since = None;
                    h.last_error = None;
                });
                shared.retry_all_now().await?;
            }
            tracing::debug!(key = %job.key, "uploaded");
            shared.refresh().await?;
            Ok(Step::Continue)
        }
        Err(e) => fail(shared, &job, describe_error(&e)).await,
    }
}

/// Records a failed attempt on the job and schedules its retry.
async fn fail(shared: &Shared, job: &Job, error: String) -> Result<Step> {
    let attempts = job.attempts + 1;
    let retry_at = now_ms() + backoff(attempts.clamp(1, 64) as u32, jitter()).as_millis() as i64;
    sqlx::query(
        "UPDATE upload_jobs SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND revision = ?",
    )
    .bind(attempts)
    .bind(retry_at)
    .bind(&error)
    .bind(job.id)
    .bind(job.revision)
    .execute(&shared.pool)
    .await?;
    // Per attempt only at debug level; the warning is once per streak (`on_failure`).
    tracing::debug!(key = %job.key, attempts, error = %error, "upload failed");
    Ok(Step::Failed(format!("{}: {error}", job.key)))
}

/// Logs the first failure of a streak (only that one) and publishes every failure in the health.
fn on_failure(shared: &Shared, streak: &Streak, error: String) {
    if streak.failures == 1 {
        tracing::warn!(
            store = %shared.objects.describe(),
            error = %error,
            "uploads are failing; retrying with backoff (logged again when they recover)"
        );
    }
    shared.health.send_modify(|h| {
        h.failing_since.get_or_insert_with(SystemTime::now);
        h.last_error = Some(error);
    });
}

/// The error and its causes on one line ("error sending request: … : Connection refused"), each
/// cause once (wrappers often repeat their source's text).
fn describe_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The delay before retry number `attempt` (1-based): 500 ms doubling to at most 30 s, times
/// `jitter` (clamped to 0.5..=1, so the cap holds) to spread retries of many jobs or nodes.
pub(crate) fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let base = BACKOFF_START.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

fn jitter() -> f64 {
    rand::thread_rng().gen_range(0.85..=1.0)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
