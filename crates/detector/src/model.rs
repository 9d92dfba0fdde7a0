//! What a scope's saved detector expects of past and coming buckets, for
//! the series, the status and the charts: the baseline (expected reports)
//! and the threshold (the count at which the opening test would fire).

use downwatch_core::detector::{DetectorParams, FleetProfile, ScopeDetector, open_threshold};
use downwatch_store::{ScopeStateRow, Storage, StoreError};

use crate::StoredSlot;

/// The saved detector of one scope, as learnt now.
pub struct ScopeModel {
    detector: ScopeDetector,
    params: DetectorParams,
    fleet: FleetProfile,
}

/// Most `expected` evaluations per request (a daily series over years would
/// otherwise take millions): buckets are sampled evenly inside.
const MAX_SAMPLES: usize = 200_000;

impl ScopeModel {
    /// `None` for a state this version cannot read.
    pub fn from_row(row: &ScopeStateRow, fleet: FleetProfile) -> Option<Self> {
        let stored: StoredSlot = serde_json::from_str(&row.state).ok()?;
        Some(Self {
            detector: stored.detector,
            params: DetectorParams::default(),
            fleet,
        })
    }

    /// Loads the model of a scope, if the detector has seen it.
    pub async fn load(
        storage: &dyn Storage,
        service_id: i64,
        scope: &str,
    ) -> Result<Option<Self>, StoreError> {
        let Some(row) = storage.scope_state(service_id, scope).await? else {
            return Ok(None);
        };
        let fleet = crate::load_fleet(storage).await?;
        Ok(Self::from_row(&row, fleet))
    }

    /// Expected reports in the minute starting at `minute`.
    pub fn expected_minute(&self, minute: i64) -> f64 {
        self.detector.expected(&self.params, &self.fleet, minute)
    }

    /// Baseline and threshold of `n` buckets of `step` seconds from `from`.
    pub fn buckets(&self, from: i64, step: i64, n: usize) -> Vec<(f64, f64)> {
        let minutes = (step / 60).max(1) as usize;
        let per_bucket = (MAX_SAMPLES / n.max(1)).clamp(1, minutes);
        let stride = minutes / per_bucket;
        (0..n)
            .map(|i| {
                let start = from + step * i as i64;
                let mut sum = 0.0;
                for k in 0..per_bucket {
                    sum += self.expected_minute(start + 60 * (k * stride) as i64);
                }
                let baseline = sum / per_bucket as f64 * minutes as f64;
                let e = self
                    .detector
                    .baseline()
                    .expected(start, &self.fleet, &self.params);
                let threshold = open_threshold(baseline, minutes as f64, &e, &self.params);
                (baseline, threshold)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoredSlotRef;

    fn row(detector: &ScopeDetector) -> ScopeStateRow {
        let state = serde_json::to_string(&StoredSlotRef {
            detector,
            incident_seq: None,
        })
        .unwrap();
        ScopeStateRow {
            service_id: 1,
            scope: "global".into(),
            last_minute: 0,
            level: "ok".into(),
            expected: 0.0,
            incident_id: None,
            state,
        }
    }

    #[test]
    fn buckets_sum_the_minutes_and_the_threshold_sits_above_the_baseline() {
        let params = DetectorParams::default();
        let fleet = FleetProfile::flat();
        let mut det = ScopeDetector::new();
        let t0 = 1_700_006_400;
        for m in 0..3 * 1440 {
            det.step(&params, &fleet, t0 + 60 * m, 3).unwrap();
        }
        let model = ScopeModel::from_row(&row(&det), fleet).unwrap();
        let next = t0 + 3 * 86_400;
        let per_minute = model.expected_minute(next);
        assert!((per_minute - 3.0).abs() < 0.5, "{per_minute}");
        let b = model.buckets(next, 900, 4);
        assert_eq!(b.len(), 4);
        for (baseline, threshold) in &b {
            assert!((baseline - 15.0 * per_minute).abs() < 5.0, "{baseline}");
            assert!(threshold > baseline, "{threshold} {baseline}");
        }
        // A daily series over ten years stays bounded in work and finite.
        let long = model.buckets(next, 86_400, 3650);
        assert!(long.iter().all(|(b, t)| b.is_finite() && t.is_finite()));
    }

    #[test]
    fn an_unreadable_state_gives_no_model() {
        let mut r = row(&ScopeDetector::new());
        r.state = "{}".into();
        assert!(ScopeModel::from_row(&r, FleetProfile::flat()).is_none());
    }
}
