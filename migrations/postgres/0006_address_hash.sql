-- The salted hash of the client's address alone (the per-address cap's key),
-- so de-duplication state can be rebuilt from the database after the window
-- store loses it. NULL for imported reports and for reports stored before.
ALTER TABLE reports ADD COLUMN address_hash BYTEA;
