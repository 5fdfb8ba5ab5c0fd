-- v5: API key expiry, revocation time and last use; the audit log of administrative changes.

-- `revoked` (v1) stays the flag lookups test; `revoked_at` says when. `last_used_at` is written
-- at most about once a minute per key and process, never once per request.
ALTER TABLE api_keys
    ADD COLUMN expires_at   TIMESTAMPTZ,
    ADD COLUMN revoked_at   TIMESTAMPTZ,
    ADD COLUMN last_used_at TIMESTAMPTZ;
-- Keys revoked before this version: when is unknown; the migration's time stands for it.
UPDATE api_keys SET revoked_at = now() WHERE revoked;

-- One row per administrative change. `seq` orders the log (newest first) and pages it; `before`
-- and `after` are JSON snapshots that never hold a secret (at most its fingerprint). Pruned to
-- the newest AUDIT_KEPT rows.
CREATE TABLE audit_log (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    at               TIMESTAMPTZ NOT NULL,
    actor_kind       TEXT NOT NULL,
    actor_name       TEXT NOT NULL,
    actor_key_prefix TEXT,
    client_ip        TEXT,
    action           TEXT NOT NULL,
    target           TEXT NOT NULL,
    before_json      TEXT,
    after_json       TEXT,
    request_id       TEXT
);
-- Bytewise, as the family filter compares (`action COLLATE "C"`), so that filter uses it.
CREATE INDEX audit_log_action ON audit_log (action COLLATE "C", seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);
