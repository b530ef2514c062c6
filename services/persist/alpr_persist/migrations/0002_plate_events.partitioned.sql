-- Plate events on plain PostgreSQL: declarative range partitions by first_seen, one per UTC day, created
-- ahead and dropped by the persist service (alpr_persist.partitions). The hourly rollup is a table that
-- persist updates in the same transaction as the events it stores.
--
-- Keep the column list in step with 0002_plate_events.timescale.sql; add columns later with a new
-- migration (ALTER TABLE plate_events ADD COLUMN ... applies to every partition).

CREATE TABLE plate_events (
    event_id          text NOT NULL,
    first_seen        timestamptz NOT NULL,               -- partition key; fixed for an event_id
    last_seen         timestamptz NOT NULL,
    revision          integer NOT NULL,
    camera_id         text NOT NULL,
    site_id           text NOT NULL,
    camera_name       text NOT NULL DEFAULT '',
    plate             text NOT NULL,                      -- normalised (maybe format-corrected) text
    plate_raw         text NOT NULL,                      -- what the OCR read
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
    plate_box         real[],                             -- x1, y1, x2, y2 in frame pixels
    vehicle_box       real[],
    crossed_line      boolean NOT NULL DEFAULT false,
    watchlist         text[] NOT NULL DEFAULT '{}',       -- labels of the watchlist entries it hit
    has_plate_image   boolean NOT NULL DEFAULT false,
    has_vehicle_image boolean NOT NULL DEFAULT false,
    schema_version    smallint NOT NULL,
    emitted_at        timestamptz,                        -- when the edge built this revision
    stored_at         timestamptz NOT NULL DEFAULT now(), -- when this revision was written here
    created_at        timestamptz NOT NULL DEFAULT now(), -- when the first revision was written here
    PRIMARY KEY (event_id, first_seen)
) PARTITION BY RANGE (first_seen);

CREATE INDEX plate_events_plate_time ON plate_events (plate, first_seen DESC);
CREATE INDEX plate_events_camera_time ON plate_events (camera_id, first_seen DESC);
CREATE INDEX plate_events_time ON plate_events (first_seen DESC);
CREATE INDEX plate_events_watchlist ON plate_events USING gin (watchlist) WHERE watchlist <> '{}';

-- JPEG crops, apart from the rows that API listings scan; partitioned the same way, with their own retention.
CREATE TABLE plate_event_images (
    event_id    text NOT NULL,
    first_seen  timestamptz NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('plate', 'vehicle')),
    revision    integer NOT NULL,
    jpeg        bytea NOT NULL,
    PRIMARY KEY (event_id, first_seen, kind)
) PARTITION BY RANGE (first_seen);

-- Events per camera and hour, kept current by persist (new events count once; a new revision only moves
-- the confidence sum and the valid/watchlist counts). The TimescaleDB path makes this a continuous
-- aggregate with the same columns.
CREATE TABLE plate_events_hourly (
    bucket            timestamptz NOT NULL,
    camera_id         text NOT NULL,
    events            bigint NOT NULL DEFAULT 0,
    format_valid      bigint NOT NULL DEFAULT 0,
    watchlist_hits    bigint NOT NULL DEFAULT 0,
    confidence_sum    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, camera_id)
);
