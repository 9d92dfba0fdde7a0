-- A subscription whose receiver is gone stops growing the outbox: after
-- deliveries given up in a row (none delivered between them) it is
-- disabled, with the reason, until an admin enables it again; no events
-- are enqueued for it meanwhile. Times are epoch milliseconds of the
-- database's clock, as the outbox's are from now on.
ALTER TABLE webhooks ADD COLUMN disabled_at INTEGER;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
ALTER TABLE webhooks ADD COLUMN given_up_in_a_row INTEGER NOT NULL DEFAULT 0;
