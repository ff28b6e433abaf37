-- The audit log: every join, leave (with its cause), admission, control action and administrative
-- action, hash-chained (each entry's hash covers its fields and the previous entry's hash) and
-- append-only (网络安全法 Art. 21 / 等保 2.0: audit records protected from deletion or change).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,   -- 1, 2, 3, … with no gaps
    at          TEXT NOT NULL,
    session_id  TEXT,
    actor       TEXT NOT NULL,         -- a participant id, "admin" or "system"
    action      TEXT NOT NULL,
    target      TEXT,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_log_session ON audit_log(session_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
