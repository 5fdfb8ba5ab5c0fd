-- v8: console sessions live in the store, so every instance on the database shares them and a
-- restart keeps them.

-- One row per signed-in browser. `id_hash` is the SHA-256 of the session id in the cookie (the id
-- itself is never stored); `key_hash` is the API key's SHA-256 as `api_keys.hash` holds it, for
-- the key check each request makes. A session is alive while `expires_at` (the earlier of its
-- idle and absolute ends) is in the future; expired rows are pruned by the server's retention.
CREATE TABLE console_sessions (
    id_hash      BYTEA PRIMARY KEY,
    key_id       TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    key_hash     BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
-- A key's sessions, least recently used first (the per-key limit closes those).
CREATE INDEX console_sessions_by_key ON console_sessions (key_id, last_seen_at);
-- Expired sessions, for pruning.
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
