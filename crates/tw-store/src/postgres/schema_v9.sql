-- v9: the index on deliveries (source, id) goes, as in SQLite's v12: a source's newest records
-- and its oldest past the age limit are read per class from deliveries_by_source_verified
-- (source, verified, id) and merged, one b-tree less written per delivery.
DROP INDEX IF EXISTS deliveries_by_source;
