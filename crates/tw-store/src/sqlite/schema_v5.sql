-- v5: listing and reading incidents costs the same at a million incidents as at a hundred.

-- Raw payloads leave the incidents rows, so that a listing reads narrow rows. An ordinary (rowid)
-- table, not WITHOUT ROWID: measured with 200,000 payloads of 2 kB, WITHOUT ROWID inserted 40%
-- slower, read 2.5x slower and took 12% more space (its b-tree keeps only about 1 kB of a row in
-- the page before spilling to overflow pages); it was only about 10% better at 500 bytes.
CREATE TABLE incident_payloads (
    incident_id TEXT PRIMARY KEY REFERENCES incidents (id),
    raw_payload BLOB NOT NULL
);
INSERT INTO incident_payloads (incident_id, raw_payload) SELECT id, raw_payload FROM incidents ORDER BY id;
ALTER TABLE incidents DROP COLUMN raw_payload;

-- Listings go newest first by incident number (year, seq; UNIQUE already indexes it), one index
-- per filter with that order after it. The other filter columns trail in each, so that a
-- combination of filters is checked in the index before any row is read (at a million incidents,
-- source + status matching 0.01% of them: 12 ms a page without, 2 ms with). Severity has its own
-- (without it, a rare severity walked the whole number order: 7-12 ms a page at a million, ~30 ms
-- at 0.1%, and a full scan for a severity with no incident past the cursor). Nothing reads
-- incidents in received_at order any more.
DROP INDEX incidents_by_received;
DROP INDEX incidents_by_source;
CREATE INDEX incidents_by_source ON incidents (source, year, seq, status, severity);
CREATE INDEX incidents_by_status ON incidents (status, year, seq, source, severity);
CREATE INDEX incidents_by_severity ON incidents (severity, year, seq, source, status);

-- How many incidents there are per source, status and severity, kept exact: the total of any
-- filter is a sum over a few rows, never a scan of incidents. New incidents are counted by the
-- intake's writer once per batch (see `Tallies` in writer.rs: a trigger's upsert per incident was
-- statement-journaled and cost the intake about a quarter of its throughput); changes and
-- deletions by the triggers below.
CREATE TABLE incident_counts (
    source   TEXT NOT NULL,
    status   TEXT NOT NULL,
    severity TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (source, status, severity)
) WITHOUT ROWID;
INSERT INTO incident_counts (source, status, severity, n)
    SELECT source, status, severity, COUNT(*) FROM incidents GROUP BY source, status, severity;

-- Changes and deletions add -1 (and +1) with an upsert, never a plain UPDATE of the old row: the
-- row of a count the writer has not flushed yet may not exist, and the sum must come out right
-- whatever the order.
CREATE TRIGGER incident_counts_update AFTER UPDATE OF source, status, severity ON incidents
    WHEN OLD.source IS NOT NEW.source OR OLD.status IS NOT NEW.status OR OLD.severity IS NOT NEW.severity
BEGIN
    INSERT INTO incident_counts (source, status, severity, n) VALUES (OLD.source, OLD.status, OLD.severity, -1)
        ON CONFLICT (source, status, severity) DO UPDATE SET n = n - 1;
    INSERT INTO incident_counts (source, status, severity, n) VALUES (NEW.source, NEW.status, NEW.severity, 1)
        ON CONFLICT (source, status, severity) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER incident_counts_delete AFTER DELETE ON incidents BEGIN
    INSERT INTO incident_counts (source, status, severity, n) VALUES (OLD.source, OLD.status, OLD.severity, -1)
        ON CONFLICT (source, status, severity) DO UPDATE SET n = n - 1;
END;
