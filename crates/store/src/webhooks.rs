//! Webhook subscriptions and their outbox (see `migrations/*/0004_webhooks.sql`).
//!
//! The detector hands [`Notice`]s to `Storage::save_detection_with`, which
//! writes one delivery row per matching subscription in the transaction
//! that writes the incidents. Delivery workers (one in every instance)
//! [`claim`](WebhookStore::claim_webhook) a subscription with a lease, send
//! its pending rows oldest first, and record each attempt. Times are epoch
//! milliseconds of real time, read from the database's clock (every
//! instance's worker compares leases and retry times with one clock, not
//! each with its host's).

use crate::Result;
use async_trait::async_trait;

/// The incident events a subscription can receive.
pub const EVENTS: [&str; 4] = [
    "incident.opened",
    "incident.updated",
    "incident.resolved",
    "incident.reopened",
];

/// A subscription to create. `None` lists mean "all".
#[derive(Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: String,
    pub secret: String,
    pub services: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

/// Written in place of a secret by the `Debug` of the types that hold one,
/// so a log line or a panic message never carries it.
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for NewWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewWebhook")
            .field("url", &self.url)
            .field("secret", &REDACTED)
            .field("services", &self.services)
            .field("scopes", &self.scopes)
            .field("events", &self.events)
            .field("description", &self.description)
            .finish()
    }
}

/// A stored subscription with what its deliveries came to (its secret is
/// never read back: only the delivery worker needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub services: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub created_at: i64,
    /// When it was disabled (no events enqueued, nothing sent), and why.
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// When the oldest pending delivery may be tried again, after a failure.
    pub retry_at: Option<i64>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    /// The latest attempt of any of its deliveries.
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct WebhookRow {
    pub id: i64,
    pub url: String,
    pub services: Option<String>,
    pub scopes: Option<String>,
    pub events: Option<String>,
    pub description: Option<String>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    pub retry_at: Option<i64>,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// The columns of a [`WebhookRow`] from `webhooks w`, with its delivery counts
/// and latest attempt (same SQL on both backends).
pub(crate) const WEBHOOK_COLUMNS: &str = "w.id, w.url, w.services, w.scopes, w.events,
    w.description, w.created_at, w.disabled_at, w.disabled_reason, w.retry_at,
    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'pending') AS pending,
    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'delivered') AS delivered,
    (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'failed') AS failed,
    l.last_attempt_at, l.last_status, l.last_error";

/// The latest attempted delivery of each webhook, joined as `l`.
pub(crate) const LAST_ATTEMPT_JOIN: &str = "LEFT JOIN webhook_deliveries l ON l.id = (
    SELECT d.id FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.last_attempt_at IS NOT NULL
    ORDER BY d.last_attempt_at DESC, d.id DESC LIMIT 1)";

/// After a recorded attempt (parameters `1`: the retry wait or NULL, `2`:
/// the delivery's new state, `3`: give-ups in a row that disable, `4`: the
/// reason, `5`: the subscription): its retry time, its count of give-ups
/// in a row (reset by a delivery), and whether it is disabled now. `now` is
/// the backend's clock in milliseconds, `p` its placeholder sign. On the
/// right of `SET`, columns are the row's values before the update.
pub(crate) fn subscription_after_attempt(now: &str, p: char) -> String {
    let gives_up = format!("{p}2 = 'failed' AND given_up_in_a_row + 1 >= {p}3");
    format!(
        "UPDATE webhooks SET retry_at = {now} + {p}1,
         given_up_in_a_row = CASE {p}2 WHEN 'delivered' THEN 0
             WHEN 'failed' THEN given_up_in_a_row + 1 ELSE given_up_in_a_row END,
         disabled_at = CASE WHEN {gives_up} THEN COALESCE(disabled_at, {now}) ELSE disabled_at END,
         disabled_reason = CASE WHEN {gives_up} THEN COALESCE(disabled_reason, {p}4)
             ELSE disabled_reason END
         WHERE id = {p}5
         RETURNING disabled_at IS NOT NULL"
    )
}

/// Gives up the pending deliveries older than the TTL (`ttl`, in ms) with
/// the error `error`.
pub(crate) fn expire_sql(now: &str, error: &str, ttl: &str) -> String {
    format!(
        "UPDATE webhook_deliveries SET state = 'failed', last_error = {error},
         next_attempt_at = NULL
         WHERE state = 'pending' AND created_at < {now} - {ttl}"
    )
}

/// A subscription left with nothing pending waits for no retry.
pub(crate) const CLEAR_IDLE_RETRIES: &str = "UPDATE webhooks SET retry_at = NULL
    WHERE retry_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
        WHERE d.webhook_id = webhooks.id AND d.state = 'pending')";

fn list(json: Option<String>) -> Option<Vec<String>> {
    json.and_then(|j| serde_json::from_str(&j).ok())
}

pub(crate) fn list_json(l: &Option<Vec<String>>) -> Option<String> {
    l.as_ref()
        .map(|v| serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned()))
}

impl From<WebhookRow> for Webhook {
    fn from(r: WebhookRow) -> Self {
        Webhook {
            id: r.id,
            url: r.url,
            services: list(r.services),
            scopes: list(r.scopes),
            events: list(r.events),
            description: r.description,
            created_at: r.created_at,
            disabled_at: r.disabled_at,
            disabled_reason: r.disabled_reason,
            retry_at: r.retry_at,
            pending: r.pending,
            delivered: r.delivered,
            failed: r.failed,
            last_attempt_at: r.last_attempt_at,
            last_status: r.last_status,
            last_error: r.last_error,
        }
    }
}

/// One delivery of an event to a subscription.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event: String,
    pub incident_id: i64,
    pub payload: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
    pub attempts: i64,
    /// The HTTP status of the last attempt; `None` before one, or when no
    /// answer came (refused address, timeout, connection error).
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, webhook_id, event, incident_id, payload, state,
    attempts, last_status, last_error, last_attempt_at, next_attempt_at, delivered_at, created_at";

/// A subscription a worker holds the lease of.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedWebhook {
    pub id: i64,
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for ClaimedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimedWebhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &REDACTED)
            .finish()
    }
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub delivery_id: i64,
    pub webhook_id: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    /// What the delivery is now.
    pub outcome: AttemptOutcome,
    /// A give-up that makes this many deliveries of the subscription given
    /// up in a row (none delivered between them) disables it, with
    /// `disable_reason`.
    pub disable_after: i64,
    pub disable_reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; the subscription's queue waits this many milliseconds.
    RetryAfter(i64),
    /// Failed for the last time: the delivery is given up and the next one goes.
    GaveUp,
}

impl AttemptOutcome {
    /// The delivery's state after it.
    pub(crate) fn state(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAfter(_) => "pending",
            AttemptOutcome::GaveUp => "failed",
        }
    }

    pub(crate) fn wait(self) -> Option<i64> {
        match self {
            AttemptOutcome::RetryAfter(ms) => Some(ms),
            _ => None,
        }
    }
}

/// What came of recording an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written; `disabled` when it disabled the subscription.
    Written { disabled: bool },
    /// Not written: the worker no longer holds the subscription's lease
    /// (another took it over, or it was deleted), or the delivery is no
    /// longer pending. The worker must stop sending that subscription's
    /// deliveries.
    Fenced,
}

/// The most subscriptions a server keeps: each costs a lookup per incident
/// event and a queue to drain.
pub const MAX_WEBHOOKS: i64 = 100;

/// An incident event for the subscriptions that match it, handed to
/// `Storage::save_detection_with`.
pub struct Notice {
    /// The index, in the incidents written with it, of its incident.
    pub write: usize,
    /// One of [`EVENTS`].
    pub event: &'static str,
    /// The service's slug and the incident's scope, matched against subscriptions.
    pub service: String,
    pub scope: String,
    /// The minute it happened (detector time), part of the key that keeps
    /// an event from being enqueued twice.
    pub minute: i64,
    /// The JSON body, given the incident's id (known only once it is written).
    pub body: Box<dyn Fn(i64) -> String + Send + Sync>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("write", &self.write)
            .field("event", &self.event)
            .field("service", &self.service)
            .field("scope", &self.scope)
            .field("minute", &self.minute)
            .finish_non_exhaustive()
    }
}

/// What the outbox needs of a subscription to match notices.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Subscription {
    pub id: i64,
    pub services: Option<String>,
    pub scopes: Option<String>,
    pub events: Option<String>,
}

/// A delivery row to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enqueued {
    pub webhook_id: i64,
    pub event: &'static str,
    pub event_key: String,
    pub incident_id: i64,
    pub payload: String,
}

/// The deliveries that `notices` make for `subs`, given the written
/// incidents' ids. Each body is built once, whatever the number of
/// subscriptions it goes to.
pub(crate) fn plan(subs: &[Subscription], notices: &[Notice], ids: &[i64]) -> Vec<Enqueued> {
    /// A subscription's lists, read once: `None` is "all".
    struct Filter {
        id: i64,
        services: Option<Vec<String>>,
        scopes: Option<Vec<String>>,
        events: Option<Vec<String>>,
    }
    let subs: Vec<Filter> = subs
        .iter()
        .map(|s| Filter {
            id: s.id,
            services: list(s.services.clone()),
            scopes: list(s.scopes.clone()),
            events: list(s.events.clone()),
        })
        .collect();
    let has =
        |l: &Option<Vec<String>>, v: &str| l.as_ref().is_none_or(|l| l.iter().any(|x| x == v));
    let mut out = Vec::new();
    for n in notices {
        let Some(&incident_id) = ids.get(n.write) else {
            continue;
        };
        let mut body = None;
        for sub in &subs {
            if has(&sub.services, &n.service)
                && has(&sub.scopes, &n.scope)
                && has(&sub.events, n.event)
            {
                let payload = body.get_or_insert_with(|| (n.body)(incident_id)).clone();
                out.push(Enqueued {
                    webhook_id: sub.id,
                    event: n.event,
                    event_key: format!("{incident_id}/{}/{}", n.event, n.minute),
                    incident_id,
                    payload,
                });
            }
        }
    }
    out
}

/// Subscriptions and the delivery worker's queue, on both backends.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a subscription (`now`: epoch milliseconds), unless there
    /// are `max` already (`None` then; checked and inserted under one lock,
    /// so concurrent creations cannot pass the cap together).
    async fn create_webhook(
        &self,
        webhook: &NewWebhook,
        now: i64,
        max: i64,
    ) -> Result<Option<Webhook>>;

    /// Every subscription, oldest first, with its delivery counts.
    async fn webhooks(&self) -> Result<Vec<Webhook>>;

    async fn webhook(&self, id: i64) -> Result<Option<Webhook>>;

    /// Deletes a subscription and its deliveries; `false` when no such one.
    async fn delete_webhook(&self, id: i64) -> Result<bool>;

    /// Disables a subscription (`reason` says why): no event is enqueued
    /// for it and its pending deliveries wait (until they expire). `false`
    /// when no such one.
    async fn disable_webhook(&self, id: i64, reason: &str) -> Result<bool>;

    /// Enables a subscription again, with a clean slate (no give-ups
    /// counted, no retry wait). `false` when no such one.
    async fn enable_webhook(&self, id: i64) -> Result<bool>;

    /// A subscription's latest deliveries, newest first.
    async fn webhook_deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>>;

    /// Takes the lease of one enabled subscription with pending deliveries
    /// that is not waiting for a retry and whose lease (if any) ran out,
    /// for `lease` milliseconds of the database's clock. Two workers never
    /// hold one subscription at once.
    async fn claim_webhook(&self, owner: &str, lease: i64) -> Result<Option<ClaimedWebhook>>;

    /// The oldest pending deliveries of a subscription, oldest first.
    async fn pending_deliveries(&self, webhook_id: i64, limit: i64) -> Result<Vec<Delivery>>;

    /// Records an attempt (the delivery's state, when its subscription's
    /// queue may go on, and whether it is now disabled), only if `owner`
    /// still holds the subscription's lease and the delivery is still
    /// pending: a worker whose lease was taken over cannot undo what the
    /// new holder wrote.
    async fn record_attempt(&self, owner: &str, attempt: &Attempt) -> Result<Recorded>;

    /// Gives the lease back (only if `owner` still holds it).
    async fn release_webhook(&self, id: i64, owner: &str) -> Result<()>;

    /// Deletes delivered and given-up deliveries last touched more than
    /// `keep` milliseconds ago; returns how many.
    async fn prune_deliveries(&self, keep: i64) -> Result<u64>;

    /// Gives up, without another attempt, the pending deliveries created
    /// more than `ttl` milliseconds ago (`error` says why); returns how many.
    async fn expire_deliveries(&self, ttl: i64, error: &str) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sub(
        id: i64,
        services: Option<&str>,
        scopes: Option<&str>,
        events: Option<&str>,
    ) -> Subscription {
        Subscription {
            id,
            services: services.map(str::to_owned),
            scopes: scopes.map(str::to_owned),
            events: events.map(str::to_owned),
        }
    }

    fn notice(write: usize, event: &'static str, service: &str, scope: &str) -> Notice {
        Notice {
            write,
            event,
            service: service.to_owned(),
            scope: scope.to_owned(),
            minute: 600,
            body: Box::new(|id| format!("{{\"id\":{id}}}")),
        }
    }

    #[test]
    fn notices_go_to_the_subscriptions_they_match_with_the_incident_id() {
        let subs = [
            sub(1, None, None, None),
            sub(2, Some(r#"["whatsapp"]"#), Some(r#"["FR"]"#), None),
            sub(3, Some(r#"["signal"]"#), None, None),
            sub(
                4,
                None,
                Some(r#"["global"]"#),
                Some(r#"["incident.resolved"]"#),
            ),
        ];
        let notices = [
            notice(0, "incident.opened", "whatsapp", "FR"),
            notice(1, "incident.resolved", "whatsapp", "global"),
        ];
        let out = plan(&subs, &notices, &[41, 42]);
        let got: Vec<(i64, &str, &str)> = out
            .iter()
            .map(|e| (e.webhook_id, e.event, e.payload.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "incident.opened", "{\"id\":41}"),
                (2, "incident.opened", "{\"id\":41}"),
                (1, "incident.resolved", "{\"id\":42}"),
                (4, "incident.resolved", "{\"id\":42}"),
            ]
        );
        assert_eq!(out[0].event_key, "41/incident.opened/600");
        assert_eq!(out[2].incident_id, 42);
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn secrets_are_not_in_debug_output() {
        let new = NewWebhook {
            url: "https://hooks.example/x".to_owned(),
            secret: "s3cr3t-value-0123456789".to_owned(),
            services: None,
            scopes: None,
            events: None,
            description: None,
        };
        let claimed = ClaimedWebhook {
            id: 1,
            url: new.url.clone(),
            secret: new.secret.clone(),
        };
        for text in [
            format!("{new:?}"),
            format!("{claimed:?}"),
            format!("{claimed:#?}"),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(
                text.contains("<redacted>") && text.contains("hooks.example"),
                "{text}"
            );
        }
    }
}
