//! Batch detection over a bare series (`downwatch detect-series`).

use super::baseline::FleetProfile;
use super::params::DetectorParams;
use super::scope::{Incident, ScopeDetector};

/// Turns `(unix seconds, count)` points of `step_secs`-long buckets into
/// per-minute counts `(minute, count)`, in time order.
///
/// - Points are sorted; each is the bucket starting at its timestamp.
/// - Steps under a minute (and unaligned points) are summed into their minute.
/// - Steps of several minutes are spread evenly over their minutes, keeping
///   the bucket's integer total exact (cumulative rounding), so totals and
///   incident sizes are preserved and the baseline stays per-minute. Timing
///   (start, detection, end) is then only known to the step.
/// - Counts that are negative, non-finite or fractional are clamped/rounded.
/// - Minutes with no point are left out: the detector counts them as zero.
pub fn to_minutes(points: &[(i64, f64)], step_secs: i64) -> Vec<(i64, u32)> {
    let step = step_secs.max(1);
    let per_bucket = (step / 60).max(1);
    let mut sorted: Vec<(i64, f64)> = points
        .iter()
        .map(|&(t, c)| (t, if c.is_finite() { c.max(0.0) } else { 0.0 }))
        .collect();
    sorted.sort_by_key(|p| p.0);
    let mut raw: Vec<(i64, u32)> = Vec::with_capacity(sorted.len() * per_bucket as usize);
    let to_u32 = |c: f64| c.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    for (t, c) in sorted {
        let first = t.div_euclid(60) * 60;
        if per_bucket == 1 {
            raw.push((first, to_u32(c)));
            continue;
        }
        let total = c.round();
        let mut given = 0.0;
        for k in 0..per_bucket {
            let target = (total * (k + 1) as f64 / per_bucket as f64).round();
            raw.push((first + 60 * k, to_u32(target - given)));
            given = target;
        }
    }
    // Overlapping buckets (points closer than the step) add up.
    raw.sort_by_key(|p| p.0);
    let mut out: Vec<(i64, u32)> = Vec::with_capacity(raw.len());
    for (minute, c) in raw {
        match out.last_mut() {
            Some(last) if last.0 == minute => last.1 = last.1.saturating_add(c),
            _ => out.push((minute, c)),
        }
    }
    out
}

/// Runs one fresh detector over a bare series and returns every incident it
/// found, in order (the last one may still be open: `ended_at == None`).
///
/// The series starts cold: during the first `warmup_minutes` only large
/// bursts open incidents (see [`DetectorParams::warmup_minutes`]). The fleet
/// profile is flat: the series' own shape is learnt as it goes.
pub fn detect_series(
    points: &[(i64, f64)],
    step_secs: i64,
    params: &DetectorParams,
) -> Vec<Incident> {
    detect_series_with(points, step_secs, params, &FleetProfile::flat())
}

/// [`detect_series`] with a fleet profile to borrow the daily shape from.
pub fn detect_series_with(
    points: &[(i64, f64)],
    step_secs: i64,
    params: &DetectorParams,
    fleet: &FleetProfile,
) -> Vec<Incident> {
    let mut det = ScopeDetector::new();
    let mut incidents: Vec<Incident> = Vec::new();
    for (minute, count) in to_minutes(points, step_secs) {
        let Ok(step) = det.step(params, fleet, minute, count) else {
            continue; // to_minutes yields aligned, increasing minutes
        };
        for ev in step.events {
            match incidents.iter_mut().find(|i| i.seq == ev.incident.seq) {
                Some(existing) => *existing = ev.incident,
                None => incidents.push(ev.incident),
            }
        }
    }
    if let Some(open) = det.incident() {
        // Reports counted since the last event.
        if let Some(existing) = incidents.iter_mut().find(|i| i.seq == open.seq) {
            *existing = open.clone();
        }
    }
    incidents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_steps_are_spread_with_exact_totals() {
        let m = to_minutes(&[(600, 7.0), (300, 3.0)], 300);
        assert_eq!(m.len(), 10);
        assert_eq!(m[0], (300, 1));
        assert_eq!(m.iter().map(|p| p.1).sum::<u32>(), 10);
        assert_eq!(m[5..].iter().map(|p| p.1).sum::<u32>(), 7);
        assert!(m.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn fine_steps_and_duplicates_are_summed_into_minutes() {
        let m = to_minutes(
            &[(0, 1.0), (10, 2.0), (59, 3.0), (60, f64::NAN), (61, -4.0)],
            10,
        );
        assert_eq!(m, vec![(0, 6), (60, 0)]);
    }
}
