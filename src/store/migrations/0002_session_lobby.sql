-- Whether non-host participants wait in a lobby until a host admits them (default: yes).
ALTER TABLE sessions ADD COLUMN lobby INTEGER NOT NULL DEFAULT 1;
