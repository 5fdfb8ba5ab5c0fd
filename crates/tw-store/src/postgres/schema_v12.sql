-- v12: a payload's foreign key to its incident goes (SQLite's v15 dropped it the same way).
-- PostgreSQL checked it with a query of its own for every new incident's payload, inside the
-- batch that holds the ingest lock: 0.25-0.47 ms of a batch of 44 (`EXPLAIN ANALYZE` of the
-- batch's inserts on a warm session), about 7% of the database's CPU per delivery. The
-- payload is written in the same transaction as its incident, by the same statement list, and
-- incidents are never deleted, so no payload can lose its incident.
ALTER TABLE incident_payloads DROP CONSTRAINT IF EXISTS incident_payloads_incident_id_fkey;
