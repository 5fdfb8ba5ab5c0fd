-- v7: dead letters can be normalized again (`tw-cli webhook reprocess --dead-letters`).

-- The verified request's key, so that a dead letter that normalizes later dedupes exactly as its
-- delivery would have. NULL for dead letters stored before this version.
ALTER TABLE dead_letters ADD COLUMN request_key TEXT;
-- A source's dead letters in id (arrival) order, one page after another.
CREATE INDEX dead_letters_by_source ON dead_letters (source, id);
