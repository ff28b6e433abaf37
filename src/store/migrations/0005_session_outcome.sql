-- How a session ended, given by whoever closes it (for the centres' monthly figures).
ALTER TABLE sessions ADD COLUMN outcome TEXT;
