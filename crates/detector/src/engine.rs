//! The detector over many scopes: which scopes exist, what they are fed, and
//! the incidents they produce. Synchronous and deterministic, so the live
//! loop (fed from the window store) and the backfill (fed from the database
//! rollups) give the same answers on the same counts.

use downwatch_core::GLOBAL_SCOPE;
use downwatch_core::Level;
use downwatch_core::detector::{
    DetectorError, DetectorParams, FleetProfile, Incident, IncidentEvent, ScopeDetector,
};
use downwatch_store::MinuteCount;
use std::collections::BTreeMap;

/// A country scope is watched from the first minute at which it has had at
/// least this many counted reports in the trailing [`LOOKBACK_MINUTES`];
/// its detector then replays those minutes. Below that, a country's rate is
/// too sparse to say anything its global scope does not already say.
pub const COUNTRY_MIN_REPORTS_PER_HOUR: u32 = 5;

/// Minutes before the first minute to step that a feed must also hold, for
/// the country rule above.
pub const LOOKBACK_MINUTES: i64 = 59;

/// History a scope with no state learns from before it is first stepped
/// live, and before the range of `downwatch detect`.
pub const WARMUP_DAYS: i64 = 14;

/// Per-minute counted reports of one service's scopes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCounts {
    pub service_id: i64,
    /// Minute of index 0 (epoch seconds, a multiple of 60).
    pub start: i64,
    pub len: usize,
    /// Scope → counts, each `len` long. Scopes with no reports may be absent.
    pub scopes: BTreeMap<String, Vec<u32>>,
}

impl ServiceCounts {
    pub fn new(service_id: i64, start: i64, len: usize) -> Self {
        Self {
            service_id,
            start,
            len,
            scopes: BTreeMap::new(),
        }
    }

    /// From rollup rows (other services' rows and minutes out of range are ignored).
    pub fn from_rows(service_id: i64, start: i64, len: usize, rows: &[MinuteCount]) -> Self {
        let mut c = Self::new(service_id, start, len);
        for r in rows.iter().filter(|r| r.service_id == service_id) {
            c.set(
                &r.scope,
                r.minute,
                u32::try_from(r.counted).unwrap_or(u32::MAX),
            );
        }
        c
    }

    /// Last minute held.
    pub fn end(&self) -> i64 {
        self.start + 60 * (self.len as i64 - 1)
    }

    pub fn set(&mut self, scope: &str, minute: i64, count: u32) {
        let Some(i) = self.index(minute) else { return };
        let len = self.len;
        let series = self
            .scopes
            .entry(scope.to_owned())
            .or_insert_with(|| vec![0; len]);
        series[i] = count;
    }

    pub fn get(&self, scope: &str, minute: i64) -> u32 {
        match (self.index(minute), self.scopes.get(scope)) {
            (Some(i), Some(s)) => s[i],
            _ => 0,
        }
    }

    fn index(&self, minute: i64) -> Option<usize> {
        let d = minute - self.start;
        (d >= 0 && d % 60 == 0 && ((d / 60) as usize) < self.len).then_some((d / 60) as usize)
    }
}

/// One scope: its detector and the stored incident its current one maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub detector: ScopeDetector,
    /// Database id of the incident with sequence number `incident_seq`.
    pub incident_id: Option<i64>,
    pub incident_seq: Option<u64>,
    /// Reports expected in the last minute stepped.
    pub expected: f64,
}

impl Slot {
    pub fn new() -> Self {
        Self {
            detector: ScopeDetector::new(),
            incident_id: None,
            incident_seq: None,
            expected: 0.0,
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

/// Something that happened to one scope in one minute: a level change
/// and/or incident transitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    pub service_id: i64,
    pub scope: String,
    pub minute: i64,
    pub count: u32,
    pub expected: f64,
    pub previous_level: Level,
    pub level: Level,
    pub events: Vec<IncidentEvent>,
}

pub type ScopeKey = (i64, String);

pub struct Engine {
    pub params: DetectorParams,
    pub fleet: FleetProfile,
    pub slots: BTreeMap<ScopeKey, Slot>,
    /// How far back a country scope starts learning when it qualifies
    /// (seconds): like a new service, it learns its quiet past first, so its
    /// first outage is judged against that and not by the cold-start rule.
    pub country_warmup: i64,
}

impl Engine {
    pub fn new(params: DetectorParams, fleet: FleetProfile) -> Self {
        Self {
            params,
            fleet,
            slots: BTreeMap::new(),
            country_warmup: WARMUP_DAYS * 86_400,
        }
    }

    /// The earliest minute in `[first, until]` at which a country scope of
    /// `counts` not watched yet qualifies. The caller must then feed
    /// [`advance`](Self::advance) counts from `country_warmup` before it.
    pub fn first_birth(&self, counts: &ServiceCounts, first: i64, until: i64) -> Option<i64> {
        counts
            .scopes
            .keys()
            .filter(|scope| {
                !self
                    .slots
                    .contains_key(&(counts.service_id, (*scope).clone()))
            })
            .filter_map(|scope| birth(counts, scope, first, until))
            .min()
    }

    /// Scopes of one service, in order.
    pub fn scopes_of(&self, service_id: i64) -> impl Iterator<Item = (&ScopeKey, &Slot)> {
        self.slots
            .range((service_id, String::new())..(service_id + 1, String::new()))
    }

    /// The first minute the service still needs (the earliest of its scopes'
    /// next minutes), or `None` for a service never stepped.
    pub fn next_minute(&self, service_id: i64) -> Option<i64> {
        let global = self.slots.get(&(service_id, GLOBAL_SCOPE.to_owned()))?;
        let mut next = global.detector.last_minute().map_or(i64::MAX, |m| m + 60);
        for (_, slot) in self.scopes_of(service_id) {
            if let Some(m) = slot.detector.last_minute() {
                next = next.min(m + 60);
            }
        }
        (next != i64::MAX).then_some(next)
    }

    /// Steps every scope of `counts.service_id` up to and including `until`:
    /// existing scopes from their next minute, a new global scope from
    /// `first`, and country scopes from `country_warmup` before the minute
    /// they qualify. `counts` must hold `[first - LOOKBACK, until]` (and the
    /// warm-up of a [`first_birth`](Self::first_birth)); minutes it does not
    /// hold count as zero.
    /// Returns the scopes it stepped; what happened goes to `out`, in time order.
    pub fn advance(
        &mut self,
        counts: &ServiceCounts,
        first: i64,
        until: i64,
        out: &mut Vec<Happening>,
    ) -> Result<Vec<ScopeKey>, DetectorError> {
        let service_id = counts.service_id;
        let mark = out.len();
        let mut stepped = Vec::new();
        let global_key = (service_id, GLOBAL_SCOPE.to_owned());
        self.slots.entry(global_key).or_default();

        let mut candidates: Vec<String> = self
            .scopes_of(service_id)
            .map(|((_, scope), _)| scope.clone())
            .collect();
        for scope in counts.scopes.keys() {
            if !candidates.contains(scope) {
                candidates.push(scope.clone());
            }
        }
        for scope in candidates {
            let key = (service_id, scope);
            let from = match self.slots.get(&key) {
                Some(slot) => match slot.detector.last_minute() {
                    Some(last) => last + 60,
                    None => first,
                },
                None => match birth(counts, &key.1, first, until) {
                    Some(born) => born - self.country_warmup,
                    None => continue,
                },
            };
            if from > until {
                continue;
            }
            let slot = self.slots.entry(key.clone()).or_default();
            let mut minute = from;
            while minute <= until {
                let count = counts.get(&key.1, minute);
                let step = slot
                    .detector
                    .step(&self.params, &self.fleet, minute, count)?;
                slot.expected = step.expected;
                if step.level != step.previous_level || !step.events.is_empty() {
                    out.push(Happening {
                        service_id,
                        scope: key.1.clone(),
                        minute,
                        count,
                        expected: step.expected,
                        previous_level: step.previous_level,
                        level: step.level,
                        events: step.events,
                    });
                }
                minute += 60;
            }
            stepped.push(key);
        }
        out[mark..].sort_by_key(|h| h.minute);
        Ok(stepped)
    }

    /// The service's level now: the highest of its scopes'.
    pub fn level(&self, service_id: i64) -> Level {
        self.scopes_of(service_id)
            .map(|(_, s)| s.detector.level())
            .max()
            .unwrap_or(Level::Ok)
    }

    /// Recomputes the fleet profile from every global scope.
    pub fn refresh_fleet(&mut self) {
        let globals = self
            .slots
            .iter()
            .filter(|((_, scope), _)| scope == GLOBAL_SCOPE)
            .map(|(_, s)| &s.detector);
        self.fleet = FleetProfile::from_detectors(globals, &self.fleet, &self.params);
    }
}

/// The first minute in `[first, until]` at which a country scope qualifies.
fn birth(counts: &ServiceCounts, scope: &str, first: i64, until: i64) -> Option<i64> {
    let series = counts.scopes.get(scope)?;
    if scope == GLOBAL_SCOPE {
        return None;
    }
    let at = |m: i64| counts.index(m).map_or(0, |i| series[i]);
    let mut sum: u32 = (first - 60 * LOOKBACK_MINUTES..first)
        .step_by(60)
        .map(at)
        .sum();
    let mut minute = first;
    while minute <= until {
        sum += at(minute);
        if sum >= COUNTRY_MIN_REPORTS_PER_HOUR {
            return Some(minute);
        }
        sum -= at(minute - 60 * LOOKBACK_MINUTES);
        minute += 60;
    }
    None
}

/// The last version of each incident among `happenings` of one scope, by
/// sequence number (an incident opened and resolved in one batch is written once).
pub fn final_incidents<'a>(
    events: impl IntoIterator<Item = &'a IncidentEvent>,
) -> BTreeMap<u64, Incident> {
    let mut out = BTreeMap::new();
    for e in events {
        out.insert(e.incident.seq, e.incident.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_040 - 1_700_000_040 % 86_400;

    fn feed(scopes: &[(&str, &[(i64, u32)])], start: i64, len: usize) -> ServiceCounts {
        let mut c = ServiceCounts::new(1, start, len);
        for (scope, points) in scopes {
            for &(m, n) in *points {
                c.set(scope, start + 60 * m, n);
            }
        }
        c
    }

    #[test]
    fn counts_ignore_minutes_out_of_range_and_read_absent_scopes_as_zero() {
        let c = feed(&[("global", &[(0, 3), (9, 4), (10, 5)])], T0, 10);
        assert_eq!(c.get("global", T0), 3);
        assert_eq!(c.get("global", T0 + 540), 4);
        assert_eq!(c.get("global", T0 + 600), 0);
        assert_eq!(c.get("FR", T0), 0);
        assert_eq!(c.end(), T0 + 540);
    }

    #[test]
    fn a_country_is_born_when_its_trailing_hour_reaches_the_threshold() {
        // Two reports an hour before `first`, three at first+10: 5 at minute first+10.
        let start = T0;
        let first = start + 60 * LOOKBACK_MINUTES;
        let c = feed(&[("FR", &[(10, 2), (69, 3)])], start, 200);
        assert_eq!(birth(&c, "FR", first, first + 60 * 100), Some(first + 600));
        // The first two leave the trailing hour before the others arrive.
        let c = feed(&[("FR", &[(0, 2), (69, 3)])], start, 200);
        assert_eq!(birth(&c, "FR", first, first + 60 * 100), None);
        assert_eq!(birth(&c, "global", first, first + 6000), None);
    }

    #[test]
    fn advance_steps_global_from_first_and_continues_where_it_stopped() {
        let mut e = Engine::new(DetectorParams::default(), FleetProfile::flat());
        let first = T0 + 60 * LOOKBACK_MINUTES;
        let c = ServiceCounts::new(1, T0, 200);
        let mut out = Vec::new();
        let stepped = e.advance(&c, first, first + 600, &mut out).unwrap();
        assert_eq!(stepped, vec![(1, "global".to_owned())]);
        assert_eq!(e.next_minute(1), Some(first + 660));
        // Again with an overlapping feed: only the new minutes are stepped.
        let stepped = e.advance(&c, first, first + 720, &mut out).unwrap();
        assert_eq!(stepped.len(), 1);
        assert_eq!(e.next_minute(1), Some(first + 780));
        assert!(out.is_empty(), "nothing happens on zeros: {out:?}");
        assert_eq!(e.next_minute(2), None);
    }

    #[test]
    fn a_burst_opens_one_incident_and_country_scopes_join_when_they_qualify() {
        let mut e = Engine::new(DetectorParams::default(), FleetProfile::flat());
        e.country_warmup = 60 * LOOKBACK_MINUTES;
        let start = T0;
        let first = start + 60 * LOOKBACK_MINUTES;
        let len = 400;
        let mut c = ServiceCounts::new(1, start, len);
        // Half an hour of 400 reports a minute, all from France.
        for m in 100..130 {
            c.set("global", start + 60 * m, 400);
            c.set("FR", start + 60 * m, 400);
        }
        assert_eq!(e.first_birth(&c, first, c.end()), Some(start + 6000));
        let mut out = Vec::new();
        e.advance(&c, first, c.end(), &mut out).unwrap();
        assert_eq!(e.first_birth(&c, first, c.end()), None, "born already");
        let opened: Vec<&Happening> = out
            .iter()
            .filter(|h| {
                h.events
                    .iter()
                    .any(|ev| ev.transition == downwatch_core::detector::Transition::Opened)
            })
            .collect();
        let mut scopes: Vec<&str> = opened.iter().map(|h| h.scope.as_str()).collect();
        scopes.sort_unstable();
        assert_eq!(scopes, ["FR", "global"], "{out:?}");
        assert!(out.windows(2).all(|w| w[0].minute <= w[1].minute));
        for h in &opened {
            let inc = &h.events[0].incident;
            assert_eq!(inc.started_at, start + 6000, "{inc:?}");
        }
        // Both resolved by the end, and the engine is back to ok.
        assert_eq!(e.level(1), Level::Ok);
        for scope in ["FR", "global"] {
            let events = out
                .iter()
                .filter(|h| h.scope == scope)
                .flat_map(|h| &h.events);
            let finals = final_incidents(events);
            assert_eq!(finals.len(), 1, "{scope}: {finals:?}");
            let last = &finals[&0];
            assert_eq!(last.ended_at, Some(start + 60 * 130), "{scope}: {last:?}");
            assert_eq!(last.total_reports, 12_000);
        }
    }

    #[test]
    fn the_fleet_profile_stays_the_prior_while_nobody_has_reports() {
        let mut e = Engine::new(DetectorParams::default(), FleetProfile::flat());
        let c = ServiceCounts::new(1, T0, 200);
        e.advance(&c, T0 + 3540, c.end(), &mut Vec::new()).unwrap();
        e.refresh_fleet();
        assert_eq!(e.fleet, FleetProfile::flat());
    }
}
