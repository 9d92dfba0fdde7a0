-- The salted hash of the client's address alone (the per-address cap's key),
-- so de-duplication state can be rebuilt from the database after the in-
-- process windows are lost (a restart). NULL for imported reports and for
-- reports stored before.
ALTER TABLE reports ADD COLUMN address_hash BLOB;
