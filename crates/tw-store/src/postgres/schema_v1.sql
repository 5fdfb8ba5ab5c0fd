-- v1: the whole schema at the time PostgreSQL support was added (SQLite's v1-v4).
-- JSON is kept as text, like SQLite's: jsonb cannot hold the \u0000 escapes a sender may send.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Counters every process reads: `sources_version` changes with every change to a source.
CREATE TABLE store_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_counters (name, value) VALUES ('sources_version', 1);

CREATE TABLE sources (
    name                       TEXT PRIMARY KEY,
    secret_enc                 BYTEA NOT NULL,
    previous_secret_enc        BYTEA,
    previous_secret_expires_at TIMESTAMPTZ,
    enabled                    BOOLEAN NOT NULL,
    auto_triage                BOOLEAN NOT NULL,
    playbook                   TEXT,
    format                     TEXT,
    mode                       TEXT NOT NULL,
    severity_mapping           TEXT NOT NULL,
    timestamp_tolerance_secs   BIGINT NOT NULL,
    max_body_bytes             BIGINT NOT NULL,
    managed_by_config          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                 TIMESTAMPTZ NOT NULL,
    updated_at                 TIMESTAMPTZ NOT NULL,
    secret_rotated_at          TIMESTAMPTZ,
    last_delivery_at           TIMESTAMPTZ,
    delivery_count             BIGINT NOT NULL DEFAULT 0,
    error_count                BIGINT NOT NULL DEFAULT 0
);

-- The last incident number handed out per year: numbers are never reused.
CREATE TABLE incident_counters (
    year     INTEGER PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

CREATE TABLE incidents (
    id               UUID PRIMARY KEY,
    year             INTEGER NOT NULL,
    seq              BIGINT NOT NULL,
    source           TEXT NOT NULL,
    format           TEXT NOT NULL,
    title            TEXT NOT NULL,
    description      TEXT,
    severity         TEXT NOT NULL,
    vendor_severity  TEXT,
    status           TEXT NOT NULL DEFAULT 'open',
    event_type       TEXT,
    event_time       TIMESTAMPTZ,
    received_at      TIMESTAMPTZ NOT NULL,
    external_id      TEXT,
    dedupe_key       TEXT NOT NULL,
    entities         TEXT NOT NULL,
    raw_payload      BYTEA NOT NULL,
    delivery_count   BIGINT NOT NULL DEFAULT 1,
    last_delivery_at TIMESTAMPTZ NOT NULL,
    auto_triage      BOOLEAN NOT NULL,
    playbook         TEXT,
    request_id       TEXT,
    triage           TEXT,
    -- The incident's latest triage job: only it may write `triage`.
    triage_job_id    TEXT,
    UNIQUE (year, seq),
    UNIQUE (source, dedupe_key)
);
CREATE INDEX incidents_by_received ON incidents (received_at DESC, year DESC, seq DESC);
CREATE INDEX incidents_by_source ON incidents (source, received_at DESC);

CREATE TABLE queue (
    id              TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    raw_payload     BYTEA NOT NULL,
    request_key     TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    request_id      TEXT,
    status          TEXT NOT NULL,          -- pending | processing | processed | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_until     TIMESTAMPTZ,
    incident_id     UUID,
    incident_number TEXT,
    duplicate       BOOLEAN,
    error           TEXT,
    processed_at    TIMESTAMPTZ
);
CREATE INDEX queue_open ON queue (received_at) WHERE status IN ('pending', 'processing');

CREATE TABLE dead_letters (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    raw_payload BYTEA NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    request_id  TEXT,
    queue_id    TEXT
);
CREATE INDEX dead_letters_by_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_by_queue ON dead_letters (queue_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,
    scope      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE triage_jobs (
    id           TEXT PRIMARY KEY,
    incident_id  UUID NOT NULL REFERENCES incidents (id),
    playbook     TEXT NOT NULL,
    variables    TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL,          -- pending | running | completed | failed
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_after    TIMESTAMPTZ NOT NULL,
    lease_until  TIMESTAMPTZ,
    error        TEXT,
    requested_by TEXT NOT NULL,          -- auto | api
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    completed_at TIMESTAMPTZ
);
CREATE INDEX triage_jobs_ready ON triage_jobs (run_after, id) WHERE status IN ('pending', 'running');
CREATE INDEX triage_jobs_by_incident ON triage_jobs (incident_id);

CREATE TABLE playbooks (
    name       TEXT PRIMARY KEY,
    yaml       TEXT NOT NULL,
    origin     TEXT NOT NULL,            -- api | dir
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    request_id      TEXT NOT NULL,
    source          TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    status          INTEGER NOT NULL,
    code            TEXT,
    incident_id     UUID,
    incident_number TEXT,
    queue_id        TEXT,
    duplicate       BOOLEAN NOT NULL DEFAULT FALSE,
    body            BYTEA,                 -- kept for refused deliveries (truncated)
    body_len        BIGINT,
    latency_ms      DOUBLE PRECISION NOT NULL,
    verified        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX deliveries_by_source ON deliveries (source, id);
CREATE INDEX deliveries_by_request ON deliveries (request_id);
