-- Plate events on TimescaleDB: a hypertable with one-day chunks, compression, and an hourly continuous
-- aggregate per camera. Retention and compression policies are set from the `persist:` settings by
-- alpr_persist.timeseries.apply_timescale_policies after this migration (and on every `alpr db migrate`).
--
-- UNTESTED against a TimescaleDB server: no build of it installs on the development machines. The unit tests
-- only check that this file parses as PostgreSQL (pglast). Written for TimescaleDB >= 2.13.
-- Keep the column list in step with 0002_plate_events.partitioned.sql.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE plate_events (
    event_id          text NOT NULL,
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    revision          integer NOT NULL,
    camera_id         text NOT NULL,
    site_id           text NOT NULL,
    camera_name       text NOT NULL DEFAULT '',
    plate             text NOT NULL,
    plate_raw         text NOT NULL,
    region            text NOT NULL DEFAULT '',
    format_valid      boolean NOT NULL DEFAULT false,
    corrected         boolean NOT NULL DEFAULT false,
    confidence        real NOT NULL,
    track_id          bigint NOT NULL,
    tracks            integer NOT NULL DEFAULT 1,
    reads             integer NOT NULL DEFAULT 1,
    final             boolean NOT NULL DEFAULT false,
    best_shot_at      timestamptz,
    direction         text,
    camera_direction  text,
    vehicle_class     text,
    latitude          double precision,
    longitude         double precision,
    plate_box         real[],
    vehicle_box       real[],
    crossed_line      boolean NOT NULL DEFAULT false,
    watchlist         text[] NOT NULL DEFAULT '{}',
    has_plate_image   boolean NOT NULL DEFAULT false,
    has_vehicle_image boolean NOT NULL DEFAULT false,
    schema_version    smallint NOT NULL,
    emitted_at        timestamptz,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, first_seen)
);
SELECT create_hypertable('plate_events', by_range('first_seen', INTERVAL '1 day'));

CREATE INDEX plate_events_plate_time ON plate_events (plate, first_seen DESC);
CREATE INDEX plate_events_camera_time ON plate_events (camera_id, first_seen DESC);
CREATE INDEX plate_events_watchlist ON plate_events USING gin (watchlist) WHERE watchlist <> '{}';

-- Revisions of an event arrive within minutes; older chunks compress per camera, newest first.
ALTER TABLE plate_events SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'camera_id',
    timescaledb.compress_orderby = 'first_seen DESC, event_id'
);

CREATE TABLE plate_event_images (
    event_id    text NOT NULL,
    first_seen  timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('plate', 'vehicle')),
    revision    integer NOT NULL,
    jpeg        bytea NOT NULL,
    PRIMARY KEY (event_id, first_seen, kind)
);
SELECT create_hypertable('plate_event_images', by_range('first_seen', INTERVAL '1 day'));

-- Same name and columns as the plain path's rollup table, so the query service reads either.
CREATE MATERIALIZED VIEW plate_events_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(INTERVAL '1 hour', first_seen) AS bucket,
    camera_id,
    count(*) AS events,
    count(*) FILTER (WHERE format_valid) AS format_valid,
    count(*) FILTER (WHERE watchlist <> '{}') AS watchlist_hits,
    sum(confidence)::double precision AS confidence_sum
FROM plate_events
GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy(
    'plate_events_hourly',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes'
);
