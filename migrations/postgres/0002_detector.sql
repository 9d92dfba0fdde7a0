-- The live detector's state per scope, so a restart or a change of the
-- instance holding the detector lease loses nothing. `state` is the
-- serialised ScopeDetector (JSON); `incident_id` maps its current incident.
CREATE TABLE detector_scopes (
    service_id  BIGINT NOT NULL REFERENCES services (id),
    scope       TEXT NOT NULL,
    last_minute BIGINT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('ok', 'warning', 'outage')),
    expected    DOUBLE PRECISION NOT NULL,
    incident_id BIGINT REFERENCES incidents (id) ON DELETE SET NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (service_id, scope)
);
