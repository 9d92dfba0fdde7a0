-- The live detector's state per scope, so a restart or a change of the
-- instance holding the detector lease loses nothing. `state` is the
-- serialised ScopeDetector (JSON); `incident_id` maps its current incident.
CREATE TABLE detector_scopes (
    service_id  INTEGER NOT NULL REFERENCES services (id),
    scope       TEXT NOT NULL,
    last_minute INTEGER NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('ok', 'warning', 'outage')),
    expected    REAL NOT NULL,
    incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (service_id, scope)
);
