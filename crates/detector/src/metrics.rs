//! The detector's Prometheus metrics (registered by the API's registry).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug)]
pub struct DetectorMetrics {
    pub tick_seconds: Histogram,
    pub tick_failures: Counter,
    pub open_incidents: Gauge,
    pub scopes: Gauge,
    pub window_refills: Counter,
}

impl Default for DetectorMetrics {
    fn default() -> Self {
        Self {
            // 100 µs to ~6 s.
            tick_seconds: Histogram::new([
                0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 6.0,
            ]),
            tick_failures: Counter::default(),
            open_incidents: Gauge::default(),
            scopes: Gauge::default(),
            window_refills: Counter::default(),
        }
    }
}

impl DetectorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "detector_tick_seconds",
            "Time of a detector tick that stepped minutes",
            self.tick_seconds.clone(),
        );
        registry.register(
            "detector_tick_failures",
            "Detector ticks that failed (state reloaded next tick)",
            self.tick_failures.clone(),
        );
        registry.register(
            "open_incidents",
            "Incidents open now (as seen by the instance holding the detector lease)",
            self.open_incidents.clone(),
        );
        registry.register(
            "detector_scopes",
            "Scopes (services and service-country pairs) the detector steps",
            self.scopes.clone(),
        );
        registry.register(
            "window_refills",
            "Times the window store was refilled from the database rollups",
            self.window_refills.clone(),
        );
    }
}
