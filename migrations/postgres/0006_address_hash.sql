-- The salted hash of the client's address alone (the per-address cap's key),
-- so de-duplication state can be rebuilt from the database after the window
-- store loses it. NULL for imported reports and for reports stored before.
ALTER TABLE reports ADD COLUMN address_hash BYTEA;

-- The hot ingest tables drop their foreign keys to services: each row's
-- check is a trigger and a lookup (about 15 µs a row here, a quarter of a
-- report's cost in PostgreSQL), and services are never deleted. Only
-- Downwatch writes these rows, with ids from its catalogue.
ALTER TABLE reports DROP CONSTRAINT IF EXISTS reports_service_id_fkey;
ALTER TABLE report_minutes DROP CONSTRAINT IF EXISTS report_minutes_service_id_fkey;
ALTER TABLE report_hours DROP CONSTRAINT IF EXISTS report_hours_service_id_fkey;
ALTER TABLE report_days DROP CONSTRAINT IF EXISTS report_days_service_id_fkey;
ALTER TABLE report_facets DROP CONSTRAINT IF EXISTS report_facets_service_id_fkey;

-- Each ingest session draws a batch's ids from its own cache of the
-- sequence instead of touching the shared sequence for every report (ids
-- stay unique; they may skip what a closed session had cached).
ALTER SEQUENCE reports_id_seq CACHE 1000;
