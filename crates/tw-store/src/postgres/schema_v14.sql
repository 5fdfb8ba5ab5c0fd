-- v14: the dedupe key's unique index leads with the key, not the source. The intake's lookup of
-- known alerts is then a statement prepared once whose plan does not depend on the table's
-- statistics: with `(source, dedupe_key)` the planner, on an empty or never-analyzed table, took
-- `incidents_by_source` (which also leads with the source) and filtered the key row by row (a
-- tie between the two indexes, which it broke in favour of the newer one), a plan that once
-- cached reads every incident of the source on every batch; so the lookup was planned afresh on
-- every batch (about 0.3 ms of a batch on the serialized backend). The lookup compares the
-- source in a form no index can use, so this index is the only one that answers it.
-- `ON CONFLICT (source, dedupe_key)` would infer it (column order does not matter there).
--
-- The table is locked first, for the whole migration (about 1.2 s per million incidents): an
-- instance of the previous build that read `incidents` during the build and then wrote to it
-- would otherwise deadlock with the constraint's drop, which needs the table to itself.
LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE;
CREATE UNIQUE INDEX incidents_dedupe_key ON incidents (dedupe_key, source);
ALTER TABLE incidents DROP CONSTRAINT incidents_source_dedupe_key_key;
