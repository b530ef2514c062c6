-- Fuzzy plate search (query service): a trigram index on the plate text. pg_trgm ships with PostgreSQL's
-- contrib (Debian: postgresql-contrib) but not with every build: the embedded pgserver (PostgreSQL 16) has
-- none. Without it this migration only leaves a notice and `alpr db status` reports the index as missing;
-- fuzzy search then has to fall back to a scan. Once pg_trgm is installed, `alpr db migrate` (which
-- re-checks this every time) creates the index.
--
-- gin_pending_list_limit 32 MB (default 4 MB): new entries collect in the pending list and are merged in
-- larger, cheaper batches. Measured with 200k events: the upsert ran at 10.9k events/s with the default and
-- 18.5k with 32 MB (19.6k with no trigram index at all). Searches also scan the pending list (at most
-- 32 MB) until autovacuum or the next merge empties it.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX IF NOT EXISTS plate_events_plate_trgm ON plate_events USING gin (plate gin_trgm_ops)
            WITH (gin_pending_list_limit = 32768);
    ELSE
        RAISE NOTICE 'pg_trgm is not available: plate_events_plate_trgm (fuzzy plate search) not created';
    END IF;
END
$$;
