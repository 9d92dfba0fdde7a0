//! The delivery worker, one in every instance. Each round it claims a
//! subscription with pending deliveries (a lease in the database, so no two
//! instances send one subscription's deliveries at once), sends them oldest
//! first, records each attempt, and gives the lease back. A failure (no
//! answer, a timeout, a refused address, or a status other than 2xx) puts
//! the subscription's queue on hold until an exponential back-off has passed,
//! so a receiver sees a subscription's events in order; after the last
//! attempt the delivery is given up and the queue moves on.
//!
//! A process that dies after a receiver answered but before the attempt is
//! recorded leaves the delivery pending, and it is sent again when the lease
//! runs out: at least once, with the same `X-Downwatch-Delivery` id, which
//! receivers can use to drop a repeat. A worker that was too slow and lost
//! its lease to another cannot record anything more (the store fences its
//! writes by the lease's owner): it stops that subscription at once.
//!
//! A receiver that is gone for good does not grow the outbox forever:
//! after [`DeliveryConfig::disable_after`] deliveries in a row are given
//! up, its subscription is disabled (no events are enqueued for it) until
//! an admin enables it again, and pending deliveries older than
//! [`DeliveryConfig::ttl`] are given up without another attempt.

use crate::address::{GuardedResolver, check_literal};
use crate::metrics::WebhookMetrics;
use crate::sign::{HEADER, signature};
use downwatch_store::webhooks::{Attempt, AttemptOutcome, ClaimedWebhook, Delivery, Recorded};
use downwatch_store::{Storage, StoreError};
use reqwest::Url;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The wait after the first failed attempt; doubled after each one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// How long one attempt may take (connecting included).
    pub timeout: Duration,
    pub allow_private: bool,
    /// How often the worker looks for due deliveries.
    pub poll: Duration,
    /// Deliveries sent per claim, at most.
    pub batch: i64,
    /// Delivered and given-up rows are deleted after this.
    pub keep: Duration,
    /// A pending delivery this old is given up without another attempt:
    /// an incident event a day late is news to nobody.
    pub ttl: Duration,
    /// Deliveries given up in a row (none delivered between) that disable
    /// the subscription. With the default attempts and back-off each
    /// give-up is about 85 minutes of failures, so three are over four
    /// hours of a receiver that never answered 2xx: gone, not flaky.
    pub disable_after: u32,
    /// This instance's name in the leases.
    pub instance: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 10,
            timeout: Duration::from_secs(10),
            allow_private: false,
            poll: Duration::from_secs(1),
            batch: 50,
            keep: Duration::from_secs(30 * 86_400),
            ttl: Duration::from_secs(86_400),
            disable_after: 3,
            instance: format!(
                "{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
        }
    }
}

impl DeliveryConfig {
    /// The wait after the `attempts`-th failed attempt.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }

    /// How long a claim holds a subscription: room for a whole batch would
    /// be long, so the worker stops sending when one more attempt could
    /// outlast it.
    fn lease(&self) -> Duration {
        (self.timeout * 3).max(Duration::from_secs(30))
    }
}

/// How often the outbox is tidied (expired deliveries given up, old ones
/// deleted): the TTL is a day, so minutes late is on time.
const TIDY_EVERY: Duration = Duration::from_secs(300);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct Deliverer {
    storage: Arc<dyn Storage>,
    client: reqwest::Client,
    config: DeliveryConfig,
    metrics: WebhookMetrics,
}

impl Deliverer {
    pub fn new(
        storage: Arc<dyn Storage>,
        config: DeliveryConfig,
        metrics: WebhookMetrics,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect could lead anywhere, a proxy would bypass the address check.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private,
            }))
            .user_agent(concat!("Downwatch-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            storage,
            client,
            config,
            metrics,
        })
    }

    /// Delivers what is due every `poll` until the task is aborted. The
    /// outbox is tidied first (so a server that was down for a day does not
    /// start by sending day-old events) and then every few minutes.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.config.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_tidy = Instant::now();
        loop {
            tick.tick().await;
            if Instant::now() >= next_tidy {
                next_tidy = Instant::now() + TIDY_EVERY;
                self.tidy().await;
            }
            if let Err(e) = self.run_once().await {
                self.metrics.worker_failures.inc();
                tracing::warn!(error = ?e, "webhook delivery round failed; retrying");
            }
        }
    }

    /// Gives up the deliveries pending for longer than the TTL, and deletes
    /// the finished ones older than `keep`.
    pub async fn tidy(&self) {
        let why = format!(
            "not delivered within {} h; given up",
            self.config.ttl.as_secs() / 3600
        );
        match self
            .storage
            .expire_deliveries(millis(self.config.ttl), &why)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.expired.inc_by(n);
                tracing::warn!(given_up = n, "webhook deliveries pending too long given up");
            }
            Err(e) => tracing::warn!(error = ?e, "expiring webhook deliveries failed"),
        }
        match self
            .storage
            .prune_deliveries(millis(self.config.keep))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "old webhook deliveries pruned"),
            Err(e) => tracing::warn!(error = ?e, "pruning webhook deliveries failed"),
        }
    }

    /// Sends every delivery due now, subscription by subscription; returns
    /// how many attempts were made.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let mut attempts = 0;
        // Bounded, so a round always ends; what is left waits for the next.
        for _ in 0..1000 {
            let lease = self.config.lease();
            let Some(w) = self
                .storage
                .claim_webhook(&self.config.instance, millis(lease))
                .await?
            else {
                break;
            };
            let sent = self.drain(&w, Instant::now() + lease).await;
            let released = self
                .storage
                .release_webhook(w.id, &self.config.instance)
                .await;
            attempts += sent?;
            released?;
        }
        Ok(attempts)
    }

    /// Sends a claimed subscription's pending deliveries in order until one
    /// fails, the lease could run out, it is lost, or the subscription is
    /// disabled.
    async fn drain(&self, w: &ClaimedWebhook, lease_end: Instant) -> Result<usize, StoreError> {
        let pending = self
            .storage
            .pending_deliveries(w.id, self.config.batch)
            .await?;
        let mut attempts = 0;
        for d in pending {
            if Instant::now() + self.config.timeout + Duration::from_secs(2) > lease_end {
                break;
            }
            let (status, error) = self.send(w, &d).await;
            attempts += 1;
            let n = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
            let outcome = if status.is_some_and(|s| (200..300).contains(&s)) {
                AttemptOutcome::Delivered
            } else if n >= self.config.max_attempts {
                AttemptOutcome::GaveUp
            } else {
                AttemptOutcome::RetryAfter(millis(self.config.backoff_after(n)))
            };
            let recorded = self
                .storage
                .record_attempt(
                    &self.config.instance,
                    &Attempt {
                        delivery_id: d.id,
                        webhook_id: w.id,
                        status,
                        error: error.clone(),
                        outcome,
                        disable_after: i64::from(self.config.disable_after),
                        disable_reason: format!(
                            "{} deliveries in a row were given up; the last one: {}",
                            self.config.disable_after,
                            error.as_deref().unwrap_or("no answer")
                        ),
                    },
                )
                .await?;
            let disabled = match recorded {
                Recorded::Written { disabled } => disabled,
                Recorded::Fenced => {
                    // Another worker holds this subscription now (this one
                    // was too slow), or it was deleted: what it writes stands.
                    tracing::info!(
                        webhook = w.id,
                        delivery = d.id,
                        "webhook lease lost; leaving the subscription to its new holder"
                    );
                    break;
                }
            };
            let label = match outcome {
                AttemptOutcome::Delivered => "delivered",
                AttemptOutcome::RetryAfter(_) => "retried",
                AttemptOutcome::GaveUp => "given_up",
            };
            self.metrics.attempt(label);
            match outcome {
                AttemptOutcome::Delivered => {}
                AttemptOutcome::GaveUp => tracing::warn!(
                    webhook = w.id,
                    delivery = d.id,
                    attempts = n,
                    status,
                    error,
                    "webhook delivery given up"
                ),
                AttemptOutcome::RetryAfter(_) => {
                    tracing::info!(
                        webhook = w.id,
                        delivery = d.id,
                        attempts = n,
                        status,
                        error,
                        "webhook delivery failed; will retry"
                    );
                    break;
                }
            }
            if disabled {
                self.metrics.disabled.inc();
                tracing::warn!(
                    webhook = w.id,
                    given_up_in_a_row = self.config.disable_after,
                    "webhook subscription disabled: its deliveries keep being given up; \
                     enable it again with PATCH /api/v1/webhooks/{{id}}"
                );
                break;
            }
        }
        Ok(attempts)
    }

    /// One attempt: the HTTP status, or why there was none.
    async fn send(&self, w: &ClaimedWebhook, d: &Delivery) -> (Option<i64>, Option<String>) {
        let url = match Url::parse(&w.url) {
            Ok(u) => u,
            Err(e) => return (None, Some(format!("invalid URL: {e}"))),
        };
        if let Err(e) = check_literal(&url, self.config.allow_private) {
            return (None, Some(e.to_string()));
        }
        let body = d.payload.clone().into_bytes();
        let result = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Downwatch-Event", &d.event)
            .header("X-Downwatch-Delivery", d.id.to_string())
            .header(HEADER, signature(w.secret.as_bytes(), &body))
            .body(body)
            .send()
            .await;
        match result {
            Ok(r) => {
                let status = i64::from(r.status().as_u16());
                let error = (!r.status().is_success()).then(|| format!("answered {}", r.status()));
                (Some(status), error)
            }
            Err(e) => (None, Some(describe_send_error(e, &w.url))),
        }
    }
}

/// Why a request got no answer, without its URL: a receiver's URL often
/// carries its credential in the path or query (Slack, Discord), and this
/// text is stored in `last_error`, shown to admins and logged. The host
/// may appear (a refused address names it).
fn describe_send_error(e: reqwest::Error, url: &str) -> String {
    let mut text = describe(&e.without_url());
    // Belt and braces: whatever a cause may quote of the URL goes too.
    if let Ok(u) = Url::parse(url) {
        let host = u.host_str().unwrap_or_default().to_owned();
        let secret_parts = [
            Some(url.to_owned()),
            Some(u.as_str().to_owned()),
            (u.path().len() > 1).then(|| u.path().to_owned()),
            u.query().map(str::to_owned),
        ];
        for (i, part) in secret_parts.into_iter().enumerate() {
            if let Some(part) = part {
                text = text.replace(&part, if i < 2 { &host } else { "[redacted]" });
            }
        }
    }
    text
}

/// An error and its causes on one line ("error sending request: … :
/// 127.0.0.1 resolves to a private address …"), at most 500 characters.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let mut out = parts.join(": ");
    if out.len() > 500 {
        let mut cut = 500;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_from_its_base_up_to_its_cap() {
        let c = DeliveryConfig {
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            ..DeliveryConfig::default()
        };
        let waits: Vec<u64> = (1..=11).map(|n| c.backoff_after(n).as_secs()).collect();
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(c.backoff_after(1000).as_secs(), 3600);
    }

    #[tokio::test]
    async fn a_send_error_is_described_without_the_urls_path_or_query() {
        // Nothing listens on port 1 of the loopback: refused at once.
        let url = "http://127.0.0.1:1/services/T0KEN-IN-PATH/hook?token=QUERY-SECRET";
        let e = reqwest::Client::new()
            .post(url)
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(
            format!("{e}").contains("T0KEN-IN-PATH"),
            "reqwest quotes the URL"
        );
        let text = describe_send_error(e, url);
        assert!(!text.contains("T0KEN-IN-PATH"), "{text}");
        assert!(!text.contains("QUERY-SECRET"), "{text}");
        assert!(text.contains("error sending request"), "{text}");
    }
}
