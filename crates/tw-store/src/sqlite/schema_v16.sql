-- v16: a queued delivery's payload is looked up among the dead letters by its queue id
-- (`GET /api/deliveries/{id}` and the console's delivery page, for a queued event that has no
-- incident yet: pending, or failed into a dead letter). Without an index that read every dead
-- letter, payloads included, on each request; PostgreSQL has had this index since its first schema.
CREATE INDEX dead_letters_by_queue ON dead_letters (queue_id);
