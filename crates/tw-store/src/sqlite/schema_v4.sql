-- v4: the rules of several processes.
-- Each incident names its latest triage job: only that job may write the incident's triage.
ALTER TABLE incidents ADD COLUMN triage_job_id TEXT;
UPDATE incidents SET triage_job_id = (SELECT MAX(j.id) FROM triage_jobs j WHERE j.incident_id = incidents.id);
-- Counters every process can read: `sources_version` changes with every change to a source.
CREATE TABLE store_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_counters (name, value) VALUES ('sources_version', 1);
