-- v12: the index on deliveries (source, id) goes. A source's newest records and its oldest past
-- the age limit are read per class from deliveries_by_source_verified (source, verified, id) and
-- merged, so the intake writes one b-tree less per delivery.
DROP INDEX IF EXISTS deliveries_by_source;
