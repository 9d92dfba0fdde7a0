//! The detector at work: the live loop of `downwatch serve` and the backfill
//! of `downwatch detect`, both driving the pure core
//! (`downwatch_core::detector`) through the same [`engine::Engine`], so they
//! find the same incidents on the same counts. See docs/detection.md.

pub mod backfill;
pub mod breakdown;
pub mod engine;
pub mod events;
pub mod live;
pub mod metrics;
pub mod model;
pub mod notices;
pub mod refill;

use downwatch_core::detector::{FleetProfile, Incident, ScopeDetector};
use downwatch_store::{IncidentRecord, Storage, StoreError};
use serde::{Deserialize, Serialize};

/// Where the fleet-wide daily and weekly shape is kept (the `meta` table).
pub const FLEET_META_KEY: &str = "detector_fleet";

/// What `detector_scopes.state` holds.
#[derive(Deserialize)]
struct StoredSlot {
    detector: ScopeDetector,
    /// Sequence number of the incident `detector_scopes.incident_id` is.
    incident_seq: Option<u64>,
}

#[derive(Serialize)]
struct StoredSlotRef<'a> {
    detector: &'a ScopeDetector,
    incident_seq: Option<u64>,
}

/// The stored form of an incident the core reports.
pub fn incident_record(service_id: i64, scope: &str, i: &Incident) -> IncidentRecord {
    IncidentRecord {
        service_id,
        scope: scope.to_owned(),
        level_max: i.level_max.as_str().to_owned(),
        started_at: i.started_at,
        detected_at: i.detected_at,
        peak_at: i.peak_at,
        peak_reports_per_min: f64::from(i.peak_reports_per_min),
        baseline_per_min_at_peak: i.baseline_per_min_at_peak,
        ended_at: i.ended_at,
        total_reports: i64::try_from(i.total_reports).unwrap_or(i64::MAX),
    }
}

/// The fleet profile the live loop last stored, or a flat one.
pub async fn load_fleet(storage: &dyn Storage) -> Result<FleetProfile, StoreError> {
    Ok(storage
        .get_meta(FLEET_META_KEY)
        .await?
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_else(FleetProfile::flat))
}
