//! The delivery worker's Prometheus metrics (registered by the API's registry).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `delivered`, `retried` (failed, will be tried again) or `given_up`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    pub attempts: Family<OutcomeLabels, Counter>,
    pub worker_failures: Counter,
    /// Subscriptions disabled after deliveries given up in a row.
    pub disabled: Counter,
    /// Deliveries given up, without another attempt, for being pending too long.
    pub expired: Counter,
}

impl WebhookMetrics {
    pub fn attempt(&self, outcome: &'static str) {
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome",
            self.attempts.clone(),
        );
        registry.register(
            "webhook_worker_failures",
            "Webhook delivery rounds that failed on the database (retried next round)",
            self.worker_failures.clone(),
        );
        registry.register(
            "webhooks_disabled",
            "Webhook subscriptions disabled after deliveries given up in a row",
            self.disabled.clone(),
        );
        registry.register(
            "webhook_deliveries_expired",
            "Webhook deliveries given up without another attempt for being pending too long",
            self.expired.clone(),
        );
    }
}
