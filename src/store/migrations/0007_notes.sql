-- The clerk's notes (笔录), stamped with the session's timecode (ms since it opened), which is the
-- recording's timeline.
CREATE TABLE notes (
    id            TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions(id),
    author        TEXT NOT NULL REFERENCES participants(id),
    timecode_ms   INTEGER NOT NULL,
    at            TEXT NOT NULL,
    text          TEXT NOT NULL
);
CREATE INDEX notes_session ON notes(session_id, timecode_ms);
