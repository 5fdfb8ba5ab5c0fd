-- v7: a stored delivery's request id is the server's own and unique; the sender's X-Request-Id is
-- kept beside it. Refused requests beyond a few a minute are counted into aggregate rows.
ALTER TABLE deliveries ADD COLUMN sender_request_id TEXT;
ALTER TABLE deliveries ADD COLUMN refused_count INTEGER;     -- an aggregate row: requests it stands for
ALTER TABLE deliveries ADD COLUMN last_received_at TEXT;     -- an aggregate row: its last request
-- Rows written before: an id that is not one this server generates (req_ and 32 hex digits), or
-- that two rows share, was the sender's. It moves beside a new, unique id made from the row id
-- (16 or more leading zeros: no generated UUID v7 after 1970 looks like it).
UPDATE deliveries
SET sender_request_id = request_id, request_id = printf('req_%032x', id)
WHERE length(request_id) <> 36
   OR substr(request_id, 1, 4) <> 'req_'
   OR substr(request_id, 5) GLOB '*[^0-9a-f]*'
   -- An old id shaped like the ones made here from row ids (a sender could have sent one) moves
   -- too, so a made id cannot meet a kept one.
   OR substr(request_id, 5, 16) = '0000000000000000'
   OR request_id IN (SELECT request_id FROM deliveries GROUP BY request_id HAVING COUNT(*) > 1);
DROP INDEX deliveries_by_request;
CREATE UNIQUE INDEX deliveries_by_request ON deliveries (request_id);
-- A lookup by a sender's id takes the newest verified delivery first, from the index alone.
CREATE INDEX deliveries_by_sender_request ON deliveries (sender_request_id, verified, id) WHERE sender_request_id IS NOT NULL;
-- Refused requests' records are kept apart from verified ones (their own, smaller retention), so a
-- sender without the secret cannot push real deliveries out. With `verified` before `id`, finding
-- the newest N of one class walks N entries of that class only, from the index alone.
CREATE INDEX deliveries_by_source_verified ON deliveries (source, verified, id);
