-- Downwatch schema, SQLite. Append-only: never edit a released migration.
-- Timestamps are INTEGER microseconds since the epoch (UTC).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE services (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    slug       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    category   TEXT,
    url        TEXT,
    problems   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE reports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id  INTEGER NOT NULL REFERENCES services (id),
    problem     TEXT NOT NULL,
    country     TEXT,
    city        TEXT,
    client_hash BLOB NOT NULL,
    counted     INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX reports_service_time ON reports (service_id, received_at);

CREATE TABLE report_minutes (
    service_id INTEGER NOT NULL REFERENCES services (id),
    scope      TEXT NOT NULL,
    minute     INTEGER NOT NULL,
    counted    INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    PRIMARY KEY (service_id, scope, minute)
) WITHOUT ROWID;

CREATE TABLE client_salts (
    day  INTEGER PRIMARY KEY,
    salt BLOB NOT NULL
);

CREATE TABLE incidents (
    id                       INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id               INTEGER NOT NULL REFERENCES services (id),
    scope                    TEXT NOT NULL,
    status                   TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
    level_max                TEXT NOT NULL,
    started_at               INTEGER NOT NULL,
    detected_at              INTEGER NOT NULL,
    peak_at                  INTEGER NOT NULL,
    peak_reports_per_min     REAL NOT NULL,
    baseline_per_min_at_peak REAL NOT NULL,
    ended_at                 INTEGER,
    total_reports            INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (service_id, scope) WHERE status = 'open';
CREATE INDEX incidents_service_started ON incidents (service_id, started_at DESC);
