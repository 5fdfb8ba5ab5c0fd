-- v6: per-source rate limits. A token bucket of `rate_limit_burst` verified deliveries refilled at
-- `rate_limit_per_second`; both NULL (every existing source, and the default) is no limit. The
-- buckets themselves live in each process's memory: only the setting is stored.
ALTER TABLE sources ADD COLUMN rate_limit_per_second REAL;
ALTER TABLE sources ADD COLUMN rate_limit_burst INTEGER;
