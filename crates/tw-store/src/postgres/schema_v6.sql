-- v6: how a source's deliveries are verified (issue 11), which addresses may deliver, and a
-- declarative mapping of the payload.

-- The scheme as its JSON object (`{"scheme":"hmac"}`, `{"scheme":"header-token","header":"x-api-key"}`):
-- every source registered before this version verifies the spec's way.
ALTER TABLE sources ADD COLUMN verification TEXT NOT NULL DEFAULT '{"scheme":"hmac"}';
-- A JSON array of CIDR ranges; NULL: any address.
ALTER TABLE sources ADD COLUMN allowed_ips TEXT;
-- A JSON object of JSON pointers; NULL: the format's own reading.
ALTER TABLE sources ADD COLUMN mapping TEXT;
