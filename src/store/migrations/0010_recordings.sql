-- One row per recording (a recorder run of a session; a crash and restart makes a second one).
-- The manifest in the object store is the record; this row is the index the API lists by case.
CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    -- Object-store key prefix: cases/{encoded case number}/sessions/{session}/{recording}.
    prefix TEXT NOT NULL,
    -- recording, final or interrupted (as in the manifest).
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    -- The integrity value shown to the participants at close.
    chain_head TEXT,
    segments INTEGER NOT NULL DEFAULT 0,
    -- pending, rendering, done or failed: the composite rendition made after close.
    composite TEXT
);
CREATE INDEX recordings_session ON recordings (session_id);
