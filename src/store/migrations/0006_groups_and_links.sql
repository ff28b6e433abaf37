-- Petition groups (at most five representatives, 信访工作条例 Art. 20) and linked sessions
-- (a reception handed to mediation, 访调对接; escalation village → township → county).
ALTER TABLE participants ADD COLUMN group_name TEXT;
ALTER TABLE sessions ADD COLUMN linked_from TEXT REFERENCES sessions(id);
