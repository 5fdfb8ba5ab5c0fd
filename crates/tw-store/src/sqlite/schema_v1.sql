-- v1: sources, incidents, queue, dead letters, API keys.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE sources (
    name                       TEXT PRIMARY KEY,
    secret_enc                 BLOB NOT NULL,
    previous_secret_enc        BLOB,
    previous_secret_expires_at TEXT,
    enabled                    INTEGER NOT NULL,
    auto_triage                INTEGER NOT NULL,
    playbook                   TEXT,
    format                     TEXT,
    mode                       TEXT NOT NULL,
    severity_mapping           TEXT NOT NULL,
    timestamp_tolerance_secs   INTEGER NOT NULL,
    max_body_bytes             INTEGER NOT NULL,
    managed_by_config          INTEGER NOT NULL DEFAULT 0,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    secret_rotated_at          TEXT,
    last_delivery_at           TEXT,
    delivery_count             INTEGER NOT NULL DEFAULT 0,
    error_count                INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The last incident number handed out per year: numbers are never reused.
CREATE TABLE incident_counters (
    year     INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL
);

CREATE TABLE incidents (
    id               TEXT PRIMARY KEY,
    year             INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    source           TEXT NOT NULL,
    format           TEXT NOT NULL,
    title            TEXT NOT NULL,
    description      TEXT,
    severity         TEXT NOT NULL,
    vendor_severity  TEXT,
    status           TEXT NOT NULL DEFAULT 'open',
    event_type       TEXT,
    event_time       TEXT,
    received_at      TEXT NOT NULL,
    external_id      TEXT,
    dedupe_key       TEXT NOT NULL,
    entities         TEXT NOT NULL,
    raw_payload      BLOB NOT NULL,
    delivery_count   INTEGER NOT NULL DEFAULT 1,
    last_delivery_at TEXT NOT NULL,
    auto_triage      INTEGER NOT NULL,
    playbook         TEXT,
    request_id       TEXT,
    UNIQUE (year, seq),
    UNIQUE (source, dedupe_key)
);
CREATE INDEX incidents_by_received ON incidents (received_at);
CREATE INDEX incidents_by_source ON incidents (source, received_at);

CREATE TABLE queue (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    raw_payload     BLOB NOT NULL,
    request_key     TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    request_id      TEXT,
    status          TEXT NOT NULL,          -- pending | processing | processed | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     TEXT,
    incident_id     TEXT,
    incident_number TEXT,
    duplicate       INTEGER,
    error           TEXT,
    processed_at    TEXT
);
CREATE INDEX queue_by_status ON queue (status, received_at);

CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw_payload BLOB NOT NULL,
    received_at TEXT NOT NULL,
    request_id  TEXT,
    queue_id    TEXT
);
CREATE INDEX dead_letters_by_received ON dead_letters (received_at);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    scope      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
