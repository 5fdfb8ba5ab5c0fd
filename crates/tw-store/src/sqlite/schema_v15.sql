-- v15: an incident's payload is found by the incident's number, not by its id. Keyed by its text
-- id, each payload wrote two b-trees (the table and the unique index on `incident_id`) and checked
-- its foreign key in the incidents' id index, once per new incident on the intake's path. Keyed by
-- an integer made of the number (`year * 2^32 + seq`, fixed for the incident's life, growing
-- within a year and from year to year), the payload is the table's rowid: one b-tree, appended at
-- its end, and nothing to check. Incidents are never deleted, so no payload can lose its incident.
-- A payload whose incident is already gone (possible only if foreign keys were ever off) has no
-- number and is not carried over.
CREATE TABLE incident_payloads_by_number (
    number      INTEGER PRIMARY KEY,
    raw_payload BLOB NOT NULL
);
INSERT INTO incident_payloads_by_number (number, raw_payload)
    SELECT i.year * 4294967296 + i.seq, p.raw_payload FROM incident_payloads p JOIN incidents i ON i.id = p.incident_id ORDER BY 1;
DROP TABLE incident_payloads;
ALTER TABLE incident_payloads_by_number RENAME TO incident_payloads;
