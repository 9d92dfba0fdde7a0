-- Hour and day rollups, so long ranges read a few thousand rows, and hourly
-- facets (problem, country, city) for breakdowns. Maintained in the ingest
-- transaction like report_minutes; hour and day are epoch seconds floored.
CREATE TABLE report_hours (
    service_id INTEGER NOT NULL REFERENCES services (id),
    scope      TEXT NOT NULL,
    hour       INTEGER NOT NULL,
    counted    INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    PRIMARY KEY (service_id, scope, hour)
);

CREATE TABLE report_days (
    service_id INTEGER NOT NULL REFERENCES services (id),
    scope      TEXT NOT NULL,
    day        INTEGER NOT NULL,
    counted    INTEGER NOT NULL,
    received   INTEGER NOT NULL,
    PRIMARY KEY (service_id, scope, day)
);

-- Counted reports per hour by problem and place ('' when not given).
CREATE TABLE report_facets (
    service_id INTEGER NOT NULL REFERENCES services (id),
    hour       INTEGER NOT NULL,
    problem    TEXT NOT NULL,
    country    TEXT NOT NULL,
    city       TEXT NOT NULL,
    counted    INTEGER NOT NULL,
    PRIMARY KEY (service_id, hour, problem, country, city)
);

INSERT INTO report_hours (service_id, scope, hour, counted, received)
SELECT service_id, scope, minute - minute % 3600, SUM(counted), SUM(received)
FROM report_minutes GROUP BY 1, 2, 3;

INSERT INTO report_days (service_id, scope, day, counted, received)
SELECT service_id, scope, minute - minute % 86400, SUM(counted), SUM(received)
FROM report_minutes GROUP BY 1, 2, 3;

INSERT INTO report_facets (service_id, hour, problem, country, city, counted)
SELECT service_id, (received_at / 3600000000) * 3600, problem,
       COALESCE(country, ''), COALESCE(city, ''), COUNT(*)
FROM reports WHERE counted = 1 GROUP BY 1, 2, 3, 4, 5;
