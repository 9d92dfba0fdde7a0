-- Webhook subscriptions and their outbox. The detector writes one delivery
-- row per matching subscription per incident event in the transaction that
-- writes the incident, so an event is neither lost nor written twice; every
-- instance's delivery worker claims a subscription (a lease) and sends its
-- pending rows in order. Times here are epoch milliseconds of real time
-- (retries are real-world waits even under a simulated clock).
CREATE TABLE webhooks (
    id          BIGSERIAL PRIMARY KEY,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    -- JSON arrays; NULL subscribes to every service, scope or event.
    services    TEXT,
    scopes      TEXT,
    events      TEXT,
    description TEXT,
    created_at  BIGINT NOT NULL,
    -- The oldest pending delivery failed: the next attempt is not before this.
    retry_at    BIGINT,
    lease_owner TEXT,
    lease_until BIGINT
);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    -- incident, event and minute: a detector that replays minutes after a
    -- takeover cannot enqueue the same event twice.
    event_key       TEXT NOT NULL,
    incident_id     BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    last_attempt_at BIGINT,
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, event_key)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, id)
    WHERE state = 'pending';
