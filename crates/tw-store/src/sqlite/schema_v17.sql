-- v17: a completed triage run's step trace is kept apart from its incident, by job. On the
-- incident's row (its `triage` column) the trace made every listing page carry it (a completed
-- phishing run is about 3.8 KiB, mostly its trace: 228 KB for a page of 50 triaged incidents,
-- against 39 KB) and every completion grow the row in place, rebalancing its page. The listing
-- shows a run without its trace; an incident's detail reads it from here. Runs completed before
-- keep their trace inline.
CREATE TABLE triage_traces (
    job_id TEXT PRIMARY KEY,
    trace  TEXT NOT NULL
);
