-- Identity check (在线诉讼规则 Art. 7), consent (Art. 4; 在线调解规则 Art. 4) and the party's rating.
ALTER TABLE sessions ADD COLUMN consent_required INTEGER NOT NULL DEFAULT 1;
ALTER TABLE participants ADD COLUMN identity_name TEXT;        -- the name the invitation expects
ALTER TABLE participants ADD COLUMN identity_hash TEXT;        -- SHA-256 of participant id + ID number; never the number
ALTER TABLE participants ADD COLUMN identity_verified_at TEXT;
ALTER TABLE participants ADD COLUMN identity_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN consent_proceeding_at TEXT;
ALTER TABLE participants ADD COLUMN consent_recording_at TEXT;
ALTER TABLE participants ADD COLUMN rating INTEGER;
ALTER TABLE participants ADD COLUMN rating_comment TEXT;
ALTER TABLE participants ADD COLUMN rated_at TEXT;
