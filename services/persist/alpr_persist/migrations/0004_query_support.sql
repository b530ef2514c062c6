-- Query service (issue 11) support, the same on both layouts.
--
-- 1. Watchlist publishing: a change is first stored, then published to the compacted alpr.watchlist topic.
--    `published_at` records which version (its `updated_at`) the broker acknowledged, so changes made while
--    the broker was down (or with publishing off) are found and sent later. The partial index keeps that
--    look-up cheap however many entries exist.
ALTER TABLE watchlist_entries ADD COLUMN published_at timestamptz;
CREATE INDEX watchlist_entries_unpublished ON watchlist_entries (updated_at)
    WHERE published_at IS DISTINCT FROM updated_at;

-- 2. Fuzzy plate search without pg_trgm (the embedded pgserver has none): the same trigram similarity as
--    pg_trgm's similarity() (words of letters and digits, lower-cased, padded with two spaces in front and
--    one behind; |shared trigrams| / |all distinct trigrams|), in plain SQL. The query service scores a
--    bounded set of candidates with it; with pg_trgm it uses the extension and its index instead.
CREATE FUNCTION alpr_trigrams(value text) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT substr(w.padded, i, 3)), '{}')
    FROM (
        SELECT '  ' || word || ' ' AS padded
        FROM regexp_split_to_table(lower(value), '[^[:alnum:]]+') AS word
        WHERE word <> ''
    ) AS w,
    generate_series(1, length(w.padded) - 2) AS i
$$;

CREATE FUNCTION alpr_similarity(a text, b text) RETURNS real
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN total = 0 THEN 0::real ELSE (shared::real / total::real) END
    FROM (
        SELECT
            (SELECT count(*) FROM unnest(ta) t WHERE t = ANY (tb)) AS shared,
            cardinality(ta) + cardinality(tb) - (SELECT count(*) FROM unnest(ta) t WHERE t = ANY (tb)) AS total
        FROM (SELECT alpr_trigrams(a) AS ta, alpr_trigrams(b) AS tb) AS s
    ) AS c
$$;
