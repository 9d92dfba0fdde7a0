-- Downwatch schema, PostgreSQL. Append-only: never edit a released migration.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE services (
    id         BIGSERIAL PRIMARY KEY,
    slug       TEXT NOT NULL CONSTRAINT services_slug_key UNIQUE,
    name       TEXT NOT NULL,
    category   TEXT,
    url        TEXT,
    -- comma-separated problem kinds; each matches ^[a-z][a-z0-9-]{0,31}$
    problems   TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reports (
    id          BIGSERIAL PRIMARY KEY,
    service_id  BIGINT NOT NULL REFERENCES services (id),
    problem     TEXT NOT NULL,
    country     TEXT,
    city        TEXT,
    -- salted SHA-256 of the client address (and client id), truncated; never the address
    client_hash BYTEA NOT NULL,
    counted     BOOLEAN NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX reports_service_time ON reports (service_id, received_at);

-- Per-minute counts, maintained in the ingest transaction. scope is 'global'
-- or a country code; minute is epoch seconds floored to the minute.
CREATE TABLE report_minutes (
    service_id BIGINT NOT NULL REFERENCES services (id),
    scope      TEXT NOT NULL,
    minute     BIGINT NOT NULL,
    counted    INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    PRIMARY KEY (service_id, scope, minute)
);

-- One salt per UTC day (epoch day number); old ones are deleted so old
-- hashes can no longer be tied to addresses.
CREATE TABLE client_salts (
    day  BIGINT PRIMARY KEY,
    salt BYTEA NOT NULL
);

CREATE TABLE incidents (
    id                       BIGSERIAL PRIMARY KEY,
    service_id               BIGINT NOT NULL REFERENCES services (id),
    scope                    TEXT NOT NULL,
    status                   TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    level_max                TEXT NOT NULL,
    started_at               TIMESTAMPTZ NOT NULL,
    detected_at              TIMESTAMPTZ NOT NULL,
    peak_at                  TIMESTAMPTZ NOT NULL,
    peak_reports_per_min     DOUBLE PRECISION NOT NULL,
    baseline_per_min_at_peak DOUBLE PRECISION NOT NULL,
    ended_at                 TIMESTAMPTZ,
    total_reports            BIGINT NOT NULL DEFAULT 0
);
-- The database refuses a second open incident for one service and scope.
CREATE UNIQUE INDEX incidents_one_open ON incidents (service_id, scope) WHERE status = 'open';
CREATE INDEX incidents_service_started ON incidents (service_id, started_at DESC);
