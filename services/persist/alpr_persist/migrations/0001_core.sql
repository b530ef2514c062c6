-- Tables that are not time series: cameras, watchlist entries and API keys (read and written by the query
-- service, issue 11; persist keeps `cameras` current from the events it stores).

CREATE TABLE cameras (
    camera_id     text PRIMARY KEY,
    site_id       text NOT NULL DEFAULT 'default',
    name          text NOT NULL DEFAULT '',
    latitude      double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude     double precision CHECK (longitude BETWEEN -180 AND 180),
    direction     text,                                   -- configured heading / lane, e.g. 'northbound'
    first_event_at timestamptz,
    last_event_at  timestamptz,                           -- newest first_seen of a stored event
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cameras_site ON cameras (site_id, camera_id);

-- Mirrors schemas.WatchlistEntry; the query service publishes changes to the compacted alpr.watchlist topic.
CREATE TABLE watchlist_entries (
    entry_id      text PRIMARY KEY,
    plate         text NOT NULL CHECK (plate <> ''),
    label         text NOT NULL DEFAULT 'watchlist',
    match         text NOT NULL DEFAULT 'exact' CHECK (match IN ('exact', 'fuzzy')),
    max_distance  smallint NOT NULL DEFAULT 1 CHECK (max_distance BETWEEN 0 AND 3),
    note          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz                             -- soft delete: the tombstone is still published
);
CREATE INDEX watchlist_entries_plate ON watchlist_entries (plate) WHERE deleted_at IS NULL;

-- Only a hash of each key is stored; the key itself is shown once, when it is created.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    name          text NOT NULL DEFAULT '',
    prefix        text NOT NULL DEFAULT '',               -- first characters of the key, to tell keys apart
    key_hash      text NOT NULL UNIQUE,                   -- e.g. 'sha256:<hex>'; never the key
    scopes        text[] NOT NULL DEFAULT ARRAY['read']
                  CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'admin']),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
