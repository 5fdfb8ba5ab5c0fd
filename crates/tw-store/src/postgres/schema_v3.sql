-- v3: per-source rate limits (SQLite's v6). A token bucket of `rate_limit_burst` verified
-- deliveries refilled at `rate_limit_per_second`; both NULL (every existing source, and the
-- default) is no limit. The buckets themselves live in each process's memory: only the setting is
-- stored. Adding nullable columns without a default rewrites nothing: instant on a large table.
ALTER TABLE sources
    ADD COLUMN rate_limit_per_second DOUBLE PRECISION,
    ADD COLUMN rate_limit_burst BIGINT,
    ADD CONSTRAINT sources_rate_limit_both_or_neither CHECK ((rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL));
