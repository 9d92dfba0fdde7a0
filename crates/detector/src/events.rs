//! What the detector tells the rest of the system: level changes, incident
//! transitions and per-minute counts, as JSON messages on the window store's
//! pub/sub (in process, or Redis so every instance's stream sees them).

use downwatch_core::Level;
use downwatch_store::IncidentRecord;
use serde::{Deserialize, Serialize};

/// The pub/sub channel of detector events.
pub const CHANNEL: &str = "detector";

pub use downwatch_core::time::rfc3339;

/// An incident as the API shows it (SPEC.md "Incident JSON", without the
/// problem and place breakdowns, which readers add from the reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentView {
    pub id: i64,
    pub service: String,
    pub scope: String,
    pub status: String,
    pub level_max: String,
    pub started_at: String,
    pub detected_at: String,
    pub peak_at: String,
    pub peak_reports_per_min: f64,
    pub baseline_per_min_at_peak: f64,
    pub ended_at: Option<String>,
    pub duration_s: i64,
    pub total_reports: i64,
}

impl IncidentView {
    /// `now` bounds the duration of an open incident.
    pub fn new(id: i64, service: &str, r: &IncidentRecord, now: i64) -> Self {
        Self {
            id,
            service: service.to_owned(),
            scope: r.scope.clone(),
            status: r.status().to_owned(),
            level_max: r.level_max.clone(),
            started_at: rfc3339(r.started_at),
            detected_at: rfc3339(r.detected_at),
            peak_at: rfc3339(r.peak_at),
            peak_reports_per_min: r.peak_reports_per_min,
            baseline_per_min_at_peak: round2(r.baseline_per_min_at_peak),
            ended_at: r.ended_at.map(rfc3339),
            duration_s: r.ended_at.unwrap_or(now).max(r.started_at) - r.started_at,
            total_reports: r.total_reports,
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One service's counts in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCount {
    pub service: String,
    pub reports: u32,
    pub baseline: f64,
    pub level: Level,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A scope of a service changed level.
    Status {
        service: String,
        scope: String,
        level: Level,
        previous_level: Level,
        at: String,
    },
    /// An incident opened, was updated (new peak), resolved or reopened.
    Incident {
        transition: downwatch_core::detector::Transition,
        incident: IncidentView,
    },
    /// Global counts of the services that had reports in a minute.
    Counts {
        minute: String,
        services: Vec<ServiceCount>,
    },
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Status { .. } => "status",
            Event::Incident { .. } => "incident",
            Event::Counts { .. } => "counts",
        }
    }
}
