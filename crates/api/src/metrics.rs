//! Prometheus metrics, one registry per application (so tests can run
//! several apps in one process without sharing counters).

use downwatch_detector::metrics::DetectorMetrics;
use downwatch_ingest::IngestMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern (`/api/v1/services/{slug}`), never the raw path, so
    /// label cardinality stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub reports_received: Counter,
    pub reports_rejected: Family<ReasonLabels, Counter>,
    pub ingest_queue_depth: Gauge,
    pub ingest: IngestMetrics,
    pub detector: DetectorMetrics,
    pub webhooks: downwatch_webhooks::WebhookMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("downwatch");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let reports_received = Counter::default();
        registry.register(
            "reports_received",
            "Report submissions received (before validation)",
            reports_received.clone(),
        );
        let reports_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "reports_rejected",
            "Report submissions refused, by reason",
            reports_rejected.clone(),
        );
        let ingest_queue_depth = Gauge::default();
        registry.register(
            "ingest_queue_depth",
            "Reports waiting for the batcher",
            ingest_queue_depth.clone(),
        );
        let ingest = IngestMetrics::default();
        registry.register(
            "reports_stored",
            "Reports committed to the database",
            ingest.stored.clone(),
        );
        registry.register(
            "reports_counted",
            "Stored reports that count towards detection (first per client per window)",
            ingest.counted.clone(),
        );
        registry.register(
            "ingest_store_failures",
            "Batches the database did not store",
            ingest.store_failures.clone(),
        );
        registry.register(
            "window_store_failures",
            "Window store calls that failed during ingest",
            ingest.window_failures.clone(),
        );
        registry.register(
            "window_store_skipped",
            "Ingest batches that did not call the window store because it failed within the last second",
            ingest.window_skipped.clone(),
        );
        registry.register(
            "ingest_batch_size",
            "Reports per committed batch",
            ingest.batch_size.clone(),
        );
        registry.register(
            "ingest_flush_seconds",
            "Time to de-duplicate, commit and count one batch",
            ingest.flush_seconds.clone(),
        );
        let detector = DetectorMetrics::default();
        detector.register(&mut registry);
        let webhooks = downwatch_webhooks::WebhookMetrics::default();
        webhooks.register(&mut registry);
        Self {
            registry,
            requests,
            reports_received,
            reports_rejected,
            ingest_queue_depth,
            ingest,
            detector,
            webhooks,
        }
    }

    pub fn rejected(&self, reason: &'static str) {
        self.reports_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
