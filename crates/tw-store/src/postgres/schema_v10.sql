-- v10: a delivery record keeps the request's headers, as in SQLite's v13.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS headers TEXT;
