-- v13: a completed triage run's step trace is kept apart from its incident, by job (SQLite's
-- v17 does the same): on the incident's row it made every listing page carry it (a completed
-- phishing run is about 3.8 KiB, mostly its trace) and every completion rewrite a row grown by
-- it. The listing shows a run without its trace; an incident's detail reads it from here. Runs
-- completed before keep their trace inline.
CREATE TABLE IF NOT EXISTS triage_traces (
    job_id TEXT PRIMARY KEY,
    trace  TEXT NOT NULL
);
