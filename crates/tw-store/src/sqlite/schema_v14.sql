-- v14: triage jobs lose their index by incident. Nothing reads jobs by incident (an incident names
-- its latest job in `triage_job_id`), and incidents are never deleted, so the foreign key never
-- looks for an incident's jobs either; the index was one more b-tree written with every
-- auto-triage incident on the intake's path.
DROP INDEX IF EXISTS triage_jobs_by_incident;
