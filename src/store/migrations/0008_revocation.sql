-- A participant removed, denied or transferred may not join again with the same link.
ALTER TABLE participants ADD COLUMN revoked_cause TEXT;
