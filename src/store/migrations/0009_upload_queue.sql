-- The durable upload queue (src/storage/queue.rs): one row per object that must still reach the
-- recordings store. A row is deleted only after the store confirmed the upload.
CREATE TABLE upload_jobs (
    id INTEGER PRIMARY KEY,
    -- Object key, relative to the store's prefix; enqueuing it again replaces the pending file.
    key TEXT NOT NULL UNIQUE,
    -- The file in the spool to upload (absolute).
    spool_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- Bumped when the key is enqueued again, so an upload of the older file does not complete it.
    revision INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- Unix time in milliseconds before which the job is not tried (backoff after failures).
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX upload_jobs_due ON upload_jobs (next_attempt_at, id);
