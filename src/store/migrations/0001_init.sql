-- Sites, cases, sessions, participants and their connection history.
CREATE TABLE sites (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    parent_id   TEXT REFERENCES sites(id),
    created_at  TEXT NOT NULL
);

CREATE TABLE cases (
    id          TEXT PRIMARY KEY,
    case_id     TEXT NOT NULL UNIQUE,  -- external case number (案号 / 信访件编号)
    kind        TEXT NOT NULL,
    title       TEXT,
    site_id     TEXT REFERENCES sites(id),
    created_at  TEXT NOT NULL
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    case_ref      TEXT NOT NULL REFERENCES cases(id),
    kind          TEXT NOT NULL,
    title         TEXT,
    site_id       TEXT REFERENCES sites(id),
    status        TEXT NOT NULL,          -- scheduled | open | closed
    scheduled_at  TEXT,
    opened_at     TEXT,
    closed_at     TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX sessions_case ON sessions(case_ref);

CREATE TABLE participants (
    id                TEXT PRIMARY KEY,
    session_id        TEXT NOT NULL REFERENCES sessions(id),
    display_name      TEXT NOT NULL,
    role              TEXT NOT NULL,
    site_id           TEXT REFERENCES sites(id),
    token_expires_at  TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    joined_at         TEXT,               -- first join
    left_at           TEXT,               -- last leave
    leave_cause       TEXT                -- cause of the last leave
);
CREATE INDEX participants_session ON participants(session_id);

-- Every join, reconnect and leave, with its cause: the court rules care why someone dropped.
CREATE TABLE participant_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT NOT NULL,
    participant_id  TEXT NOT NULL,
    at              TEXT NOT NULL,
    event           TEXT NOT NULL,        -- joined | reconnected | left
    cause           TEXT
);
CREATE INDEX participant_events_session ON participant_events(session_id);
