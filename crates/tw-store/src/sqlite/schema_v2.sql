-- v2: triage jobs, user playbooks, the latest triage on each incident.
ALTER TABLE incidents ADD COLUMN triage TEXT;

CREATE TABLE triage_jobs (
    id           TEXT PRIMARY KEY,
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    playbook     TEXT NOT NULL,
    variables    TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL,          -- pending | running | completed | failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_after    TEXT NOT NULL,
    lease_until  TEXT,
    error        TEXT,
    requested_by TEXT NOT NULL,          -- auto | api
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    completed_at TEXT
);
CREATE INDEX triage_jobs_ready ON triage_jobs (status, run_after);
CREATE INDEX triage_jobs_by_incident ON triage_jobs (incident_id);

CREATE TABLE playbooks (
    name       TEXT PRIMARY KEY,
    yaml       TEXT NOT NULL,
    origin     TEXT NOT NULL,            -- api | dir
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
