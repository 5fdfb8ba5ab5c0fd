-- v2: listing and reading incidents costs the same at a million incidents as at a hundred
-- (SQLite's v5).
--
-- Instances of the previous build write raw_payload into incidents: stop them before this runs
-- (their intake would fail until they are upgraded). The table is locked first, so that no row an
-- old instance inserts can slip between the copy of the payloads and the drop of their column.
LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE;

-- Raw payloads leave the incidents rows, so that a listing reads narrow rows. DROP COLUMN only
-- hides the column: rows written before this migration keep their bytes on disk until they are
-- rewritten (`VACUUM FULL incidents` reclaims the space at once, under an exclusive lock).
CREATE TABLE incident_payloads (
    incident_id UUID PRIMARY KEY REFERENCES incidents (id),
    raw_payload BYTEA NOT NULL
);
INSERT INTO incident_payloads (incident_id, raw_payload) SELECT id, raw_payload FROM incidents;
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

-- How many incidents there are per source, status and severity, kept exact by the triggers
-- below: the total of any filter is a sum over a few rows, never a scan of incidents.
CREATE TABLE incident_counts (
    source   TEXT NOT NULL,
    status   TEXT NOT NULL,
    severity TEXT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (source, status, severity)
);
INSERT INTO incident_counts (source, status, severity, n)
    SELECT source, status, severity, COUNT(*) FROM incidents GROUP BY source, status, severity;

-- Every change is an upsert that adds to the counts (never a read-then-write), so instances
-- writing at once add up exactly. Each statement locks its count rows in key order, so two
-- transactions never wait for each other's rows in a circle.

-- Inserts and deletes: once per statement, a whole intake batch in one upsert.
CREATE FUNCTION incident_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO incident_counts (source, status, severity, n)
            SELECT source, status, severity, COUNT(*) FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (source, status, severity) DO UPDATE SET n = incident_counts.n + EXCLUDED.n;
    ELSE
        INSERT INTO incident_counts (source, status, severity, n)
            SELECT source, status, severity, -COUNT(*) FROM old_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            ON CONFLICT (source, status, severity) DO UPDATE SET n = incident_counts.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER incident_counts_insert AFTER INSERT ON incidents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_counts_add();
CREATE TRIGGER incident_counts_delete AFTER DELETE ON incidents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION incident_counts_add();

-- Updates: per row, and only when a counted column really changed (triage completing moves
-- open -> triaged, a playbook may change the severity); the WHEN clause skips the rest without
-- calling the function.
CREATE FUNCTION incident_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO incident_counts (source, status, severity, n)
        SELECT * FROM (VALUES (OLD.source, OLD.status, OLD.severity, -1::BIGINT),
                              (NEW.source, NEW.status, NEW.severity, 1::BIGINT)) AS d (source, status, severity, n)
        ORDER BY 1, 2, 3
        ON CONFLICT (source, status, severity) DO UPDATE SET n = incident_counts.n + EXCLUDED.n;
    RETURN NULL;
END
$$;
CREATE TRIGGER incident_counts_update AFTER UPDATE OF source, status, severity ON incidents
    FOR EACH ROW
    WHEN (OLD.source IS DISTINCT FROM NEW.source OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.severity IS DISTINCT FROM NEW.severity)
    EXECUTE FUNCTION incident_counts_move();
