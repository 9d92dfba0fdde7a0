//! `downwatch detect --from --to [--service]`: the engine over the stored
//! rollups. Each service learns from the `WARMUP_DAYS` before `from`, then
//! its incidents that started in `[from, to)` replace the stored ones.
//! Running it twice gives the same rows.

use crate::engine::{Engine, LOOKBACK_MINUTES, ServiceCounts, WARMUP_DAYS, final_incidents};
use crate::{incident_record, load_fleet};
use downwatch_core::Service;
use downwatch_core::detector::DetectorParams;
use downwatch_store::{IncidentRecord, Storage};
use std::collections::BTreeMap;

/// Minutes read from the database at a time.
const CHUNK_MINUTES: i64 = 1440;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub services: usize,
    /// Incidents written (started in the range).
    pub incidents: usize,
    /// Stored incidents the run replaced.
    pub replaced: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("database: {0}")]
    Store(#[from] downwatch_store::StoreError),
    #[error("detector: {0}")]
    Detector(#[from] downwatch_core::detector::DetectorError),
}

/// Runs the detector over `[from, to)` (unix seconds) for `services`.
pub async fn detect(
    storage: &dyn Storage,
    params: &DetectorParams,
    services: &[Service],
    from: i64,
    to: i64,
) -> Result<Summary, BackfillError> {
    let fleet = load_fleet(storage).await?;
    let first = from.div_euclid(60) * 60 - WARMUP_DAYS * 86_400;
    // The last minute that ends by `to`.
    let until = to.div_euclid(60) * 60 - 60;
    let mut summary = Summary::default();
    for service in services {
        let mut engine = Engine::new(params.clone(), fleet.clone());
        let mut happenings = Vec::new();
        let mut chunk = first;
        while chunk <= until {
            let chunk_end = (chunk + 60 * (CHUNK_MINUTES - 1)).min(until);
            let start = chunk - 60 * LOOKBACK_MINUTES;
            let rows = storage
                .minute_counts(service.id, start, chunk_end + 60)
                .await?;
            let len = ((chunk_end - start) / 60 + 1) as usize;
            let mut counts = ServiceCounts::from_rows(service.id, start, len, &rows);
            // A country that qualifies learns its past first (as live does).
            if let Some(born) = engine.first_birth(&counts, chunk, chunk_end) {
                let start = born - engine.country_warmup;
                if start < counts.start {
                    let rows = storage
                        .minute_counts(service.id, start, chunk_end + 60)
                        .await?;
                    let len = ((chunk_end - start) / 60 + 1) as usize;
                    counts = ServiceCounts::from_rows(service.id, start, len, &rows);
                }
            }
            engine.advance(&counts, chunk, chunk_end, &mut happenings)?;
            chunk = chunk_end + 60;
        }
        let mut per_scope: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for h in &happenings {
            per_scope
                .entry(h.scope.as_str())
                .or_default()
                .extend(&h.events);
        }
        let mut records: Vec<IncidentRecord> = Vec::new();
        for ((_, scope), slot) in engine.scopes_of(service.id) {
            let mut finals =
                final_incidents(per_scope.get(scope.as_str()).into_iter().flatten().copied());
            if let Some(open) = slot.detector.incident() {
                finals.insert(open.seq, open.clone());
            }
            records.extend(
                finals
                    .values()
                    .filter(|i| i.started_at >= from && i.started_at < to)
                    .map(|i| incident_record(service.id, scope, i)),
            );
        }
        records.sort_by_key(|r| (r.started_at, r.scope.clone()));
        summary.replaced += storage
            .replace_incidents(service.id, from, to, &records)
            .await?;
        summary.incidents += records.len();
        summary.services += 1;
    }
    Ok(summary)
}
