-- v3: one row per delivery to a registered source, for `tw-cli webhook events`.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id      TEXT NOT NULL,
    source          TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    status          INTEGER NOT NULL,
    code            TEXT,
    incident_id     TEXT,
    incident_number TEXT,
    queue_id        TEXT,
    duplicate       INTEGER NOT NULL DEFAULT 0,
    body            BLOB,                  -- kept for refused deliveries (truncated)
    body_len        INTEGER,
    latency_ms      REAL NOT NULL,
    verified        INTEGER NOT NULL DEFAULT 0     -- the signature verified
);
CREATE INDEX deliveries_by_source ON deliveries (source, id);
CREATE INDEX deliveries_by_request ON deliveries (request_id);
