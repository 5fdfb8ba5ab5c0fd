-- v13: a delivery record keeps the request's headers (`name: value` lines, credentials redacted,
-- at most 4 KiB; names only for a request whose signature did not verify), for the console's
-- delivery page and GET /api/deliveries/{request_id}.
ALTER TABLE deliveries ADD COLUMN headers TEXT;
