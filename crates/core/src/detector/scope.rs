//! The streaming detector of one scope (a service's global rate, or one
//! service-country pair), fed one completed minute at a time.

use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, Expectation, FleetProfile};
use super::params::DetectorParams;
use super::{MAX_WINDOW, RING_MINUTES};
use crate::Level;

/// A step the detector refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectorError {
    #[error("minute {0} is not aligned to 60 seconds")]
    Unaligned(i64),
    #[error("minute {got} is not after the last minute fed ({last})")]
    OutOfOrder { last: i64, got: i64 },
}

/// An incident as the detector sees it: the SPEC fields it can know. Times
/// are unix seconds (UTC); `top_problems` and `top_locations` come from the
/// database, and `id`/`service`/`scope` from the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Per-scope sequence number (0, 1, …): the same incident keeps it through
    /// updates, resolution and reopening; the caller maps it to its own id.
    pub seq: u64,
    /// Start of the first minute bucket of the abnormal rise.
    pub started_at: i64,
    /// End of the minute bucket whose count made the test fire (when the
    /// evidence was complete).
    pub detected_at: i64,
    /// Start of the minute with the largest excess over the baseline.
    pub peak_at: i64,
    pub peak_reports_per_min: u32,
    pub baseline_per_min_at_peak: f64,
    /// End of the last elevated minute; `None` while open.
    pub ended_at: Option<i64>,
    /// Reports from `started_at` to `ended_at` (to now while open).
    pub total_reports: u64,
    /// Always [`Level::Outage`]: incidents are only opened by the strong test.
    pub level_max: Level,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.ended_at.is_none()
    }

    /// Duration in seconds, up to `now` while open.
    pub fn duration_s(&self, now: i64) -> i64 {
        self.ended_at.unwrap_or(now) - self.started_at
    }
}

/// What happened to an incident in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Opened,
    /// A new peak (the only field that changes other than `total_reports`,
    /// which changes every minute and is read from [`ScopeDetector::incident`]).
    Updated,
    Resolved,
    /// A relapse within the grace period: the same `seq`, `ended_at` cleared.
    Reopened,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    pub transition: Transition,
    /// The incident after the transition.
    pub incident: Incident,
}

/// The outcome of feeding one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub minute: i64,
    pub count: u32,
    /// Expected reports in that minute (the baseline to chart).
    pub expected: f64,
    /// Level before and after the step.
    pub previous_level: Level,
    pub level: Level,
    /// Incident transitions, oldest first (several only when a gap was
    /// filled). Empty most of the time, and then it does not allocate.
    pub events: Vec<IncidentEvent>,
}

/// The last `RING_MINUTES` minutes: counts and what was expected of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RingData", into = "RingData")]
struct Ring {
    counts: Vec<u32>,
    expected: Vec<f64>,
    /// Index of the next write.
    head: usize,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct RingData {
    counts: Vec<u32>,
    expected: Vec<f64>,
    head: usize,
    len: usize,
}

impl TryFrom<RingData> for Ring {
    type Error = String;
    fn try_from(d: RingData) -> Result<Self, String> {
        if d.counts.len() != RING_MINUTES
            || d.expected.len() != RING_MINUTES
            || d.head >= RING_MINUTES
            || d.len > RING_MINUTES
        {
            return Err(format!("ring must hold {RING_MINUTES} minutes"));
        }
        Ok(Self {
            counts: d.counts,
            expected: d.expected,
            head: d.head,
            len: d.len,
        })
    }
}

impl From<Ring> for RingData {
    fn from(r: Ring) -> Self {
        Self {
            counts: r.counts,
            expected: r.expected,
            head: r.head,
            len: r.len,
        }
    }
}

impl Ring {
    fn new() -> Self {
        Self {
            counts: vec![0; RING_MINUTES],
            expected: vec![0.0; RING_MINUTES],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, x: u32, mu: f64) {
        self.counts[self.head] = x;
        self.expected[self.head] = mu;
        self.head = (self.head + 1) % RING_MINUTES;
        self.len = (self.len + 1).min(RING_MINUTES);
    }

    /// `(count, expected)` `age` minutes ago (0 = the newest); `age < len`.
    fn get(&self, age: usize) -> (f64, f64) {
        let i = (self.head + RING_MINUTES - 1 - age) % RING_MINUTES;
        (f64::from(self.counts[i]), self.expected[i])
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// Poisson log likelihood ratio of `x` observed against `m` expected, for a
/// rise (0 when `x <= m`). `P(X >= x) <= exp(-llr)` (Chernoff).
pub fn poisson_llr(x: f64, m: f64) -> f64 {
    if x <= m || m <= 0.0 {
        return 0.0;
    }
    x * (x / m).ln() - (x - m)
}

/// Negative-binomial log likelihood ratio of `x` observed against `m`
/// expected when the sum has size `k` (`Var = m + m^2 / k`), for a rise (0
/// when `x <= m`). It tends to [`poisson_llr`] as `k` grows and to the gamma
/// ratio `k (x/m - 1 - ln(x/m))` when `m >> k`: a burst of a very bursty
/// stream is judged by its ratio, not by its count.
pub fn nb_llr(x: f64, m: f64, k: f64) -> f64 {
    if x <= m || m <= 0.0 {
        return 0.0;
    }
    if !(k.is_finite() && k > 0.0) {
        return poisson_llr(x, m);
    }
    let g = x * (x / m).ln() - (x + k) * ((x - m) / (m + k)).ln_1p();
    g.max(0.0)
}

/// Size `k` of a `w`-minute window's sum: negative-binomial noise per minute
/// (`1/r`, so `1/k = (1/r) / w` for independent minutes) plus the uncertainty
/// of the level itself, which every minute shares (`1 / n` for a level
/// learnt from `n` reports).
fn window_size_k(w: f64, e: &Expectation, params: &DetectorParams) -> f64 {
    1.0 / (e.inv_r / w + 1.0 / (e.level_reports + params.level_prior_reports))
}

/// The count a window of `minutes` minutes expecting `mu` reports in total
/// must reach for the opening test to fire (charts draw it as the top of
/// the normal range): the least `x` with `x >= open_min_count`,
/// `x >= open_min_ratio * mu` and a negative-binomial likelihood ratio of at
/// least `open_g`. `e` is the expectation of one of its minutes (dispersion
/// and how well the level is known).
pub fn open_threshold(mu: f64, minutes: f64, e: &Expectation, params: &DetectorParams) -> f64 {
    let mu = mu.max(params.floor_per_min * minutes.max(1.0));
    let k = window_size_k(minutes.max(1.0), e, params);
    let floor = f64::from(params.open_min_count).max(params.open_min_ratio * mu);
    if nb_llr(floor, mu, k) >= params.open_g {
        return floor;
    }
    // The ratio grows with x above mu: bisect on it.
    let (mut lo, mut hi) = (floor, floor.max(mu) * 2.0 + 10.0);
    while nb_llr(hi, mu, k) < params.open_g && hi < 1e12 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if nb_llr(mid, mu, k) >= params.open_g {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi.ceil()
}

/// The strongest evidence of a rise over the windows, as booleans.
#[derive(Debug, Clone, Copy, Default)]
struct Verdict {
    strong: bool,
    weak: bool,
}

/// An incident and its bookkeeping, open or recently resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    incident: Incident,
    /// Expected reports over the incident's span so far.
    sum_expected: f64,
    peak_excess: f64,
    calm_run: u32,
    opened_minute: i64,
    resolved_minute: Option<i64>,
}

/// The detector of one scope. All state is here and serialisable: persist
/// it (e.g. as JSON) after a tick and restore it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeDetector {
    baseline: Baseline,
    ring: Ring,
    last_minute: Option<i64>,
    level: Level,
    /// The windows of the opening test do not look before this minute: after
    /// an incident they must not count its own reports again.
    evidence_from: i64,
    tracked: Option<Tracked>,
    next_seq: u64,
}

impl Default for ScopeDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl ScopeDetector {
    /// A scope with no history.
    pub fn new() -> Self {
        Self {
            baseline: Baseline::default(),
            ring: Ring::new(),
            last_minute: None,
            level: Level::Ok,
            evidence_from: i64::MIN,
            tracked: None,
            next_seq: 0,
        }
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The last minute fed.
    pub fn last_minute(&self) -> Option<i64> {
        self.last_minute
    }

    /// The open incident, if any.
    pub fn incident(&self) -> Option<&Incident> {
        self.tracked
            .as_ref()
            .map(|t| &t.incident)
            .filter(|i| i.is_open())
    }

    /// True while the baseline does not learn (an incident is open and the
    /// scope is past warm-up and the safety valve has not opened).
    pub fn learning_frozen(&self, params: &DetectorParams) -> bool {
        match (&self.tracked, self.last_minute) {
            (Some(t), Some(now)) if t.incident.is_open() => {
                !self.may_learn_while_open(t, now, params)
            }
            _ => false,
        }
    }

    /// Expected reports in the minute starting at `minute` (for charts).
    pub fn expected(&self, params: &DetectorParams, fleet: &FleetProfile, minute: i64) -> f64 {
        self.baseline.expected(minute, fleet, params).mu
    }

    /// Feeds the count of the completed minute starting at `minute` (unix
    /// seconds, a multiple of 60). Minutes must increase; missing minutes
    /// are zero counts (filled, up to `max_gap_minutes`; a longer gap closes
    /// an open incident and restarts the windows, keeping the baseline).
    pub fn step(
        &mut self,
        params: &DetectorParams,
        fleet: &FleetProfile,
        minute: i64,
        count: u32,
    ) -> Result<Step, DetectorError> {
        if minute.rem_euclid(60) != 0 {
            return Err(DetectorError::Unaligned(minute));
        }
        let previous_level = self.level;
        let mut events = Vec::new();
        if let Some(last) = self.last_minute {
            if minute <= last {
                return Err(DetectorError::OutOfOrder { last, got: minute });
            }
            let missing = (minute - last) / 60 - 1;
            if missing > i64::from(params.max_gap_minutes) {
                self.restart(params, last, minute, &mut events);
            } else {
                for k in 1..=missing {
                    self.minute(params, fleet, last + 60 * k, 0, &mut events);
                }
            }
        }
        let expected = self.minute(params, fleet, minute, count, &mut events);
        Ok(Step {
            minute,
            count,
            expected,
            previous_level,
            level: self.level,
            events,
        })
    }

    /// Closes an open incident at the last minute seen (used when the data
    /// stops for longer than `max_gap_minutes`, or by a caller that retires a scope).
    pub fn close_now(&mut self, params: &DetectorParams) -> Option<IncidentEvent> {
        let now = self.last_minute?;
        self.incident()?;
        let mut events = Vec::new();
        self.close(params, now, &mut events);
        self.level = Level::Ok;
        events.pop()
    }

    fn restart(
        &mut self,
        params: &DetectorParams,
        last: i64,
        minute: i64,
        events: &mut Vec<IncidentEvent>,
    ) {
        if self.incident().is_some() {
            self.close(params, last, events);
        }
        self.tracked = None;
        self.ring.clear();
        self.evidence_from = minute;
        self.level = Level::Ok;
    }

    fn may_learn_while_open(&self, t: &Tracked, now: i64, params: &DetectorParams) -> bool {
        self.baseline.minutes_learnt() < u64::from(params.warmup_minutes)
            || now - t.opened_minute >= 60 * i64::from(params.resume_learning_after_minutes)
    }

    /// Scale of the minimum counts during warm-up: from `cold_min_count /
    /// open_min_count` with no history down to 1 after `warmup_minutes`.
    fn warmup_factor(&self, params: &DetectorParams) -> f64 {
        let warm = f64::from(params.warmup_minutes.max(1));
        let frac = (self.baseline.minutes_learnt() as f64 / warm).min(1.0);
        let cold = f64::from(params.cold_min_count) / f64::from(params.open_min_count.max(1));
        cold.max(1.0).powf(1.0 - frac)
    }

    /// One minute: test, incident lifecycle, learning. Returns `mu`.
    fn minute(
        &mut self,
        params: &DetectorParams,
        fleet: &FleetProfile,
        t: i64,
        count: u32,
        events: &mut Vec<IncidentEvent>,
    ) -> f64 {
        let e = self.baseline.expected(t, fleet, params);
        self.ring.push(count, e.mu);
        self.last_minute = Some(t);
        let x = f64::from(count);

        let is_open = self
            .tracked
            .as_ref()
            .is_some_and(|tr| tr.incident.is_open());
        if is_open {
            self.continue_open(params, t, x, &e, events);
        } else {
            let verdict = self.test(params, t, &e);
            let in_grace = self
                .tracked
                .as_ref()
                .and_then(|tr| tr.resolved_minute)
                .is_some_and(|r| t - r <= 60 * i64::from(params.reopen_grace_minutes));
            if !in_grace {
                self.tracked = None;
            }
            if verdict.strong {
                if in_grace {
                    self.reopen(t, events);
                } else {
                    self.open(params, t, events);
                }
                self.level = Level::Outage;
            } else {
                self.level = if verdict.weak {
                    Level::Warning
                } else {
                    Level::Ok
                };
            }
        }

        let learn = match &self.tracked {
            Some(tr) if tr.incident.is_open() => self.may_learn_while_open(tr, t, params),
            _ => true,
        };
        if learn {
            self.baseline.learn(t, x, &e, fleet, params);
        }
        e.mu
    }

    /// Number of ring minutes the opening test may use at minute `t`.
    fn evidence_len(&self, t: i64) -> usize {
        if self.evidence_from == i64::MIN {
            return self.ring.len;
        }
        let since = (t - self.evidence_from).div_euclid(60) + 1;
        (since.max(0) as usize).min(self.ring.len)
    }

    /// The significance test over every window.
    fn test(&self, params: &DetectorParams, t: i64, e: &Expectation) -> Verdict {
        let avail = self.evidence_len(t);
        let scale = self.warmup_factor(params);
        let open_min = f64::from(params.open_min_count) * scale;
        let warn_min = f64::from(params.warn_min_count) * scale;
        let mut v = Verdict::default();
        let max_w = params.windows.iter().copied().max().unwrap_or(1) as usize;
        let span = max_w.min(avail).min(MAX_WINDOW);
        // Prefix sums over the newest minutes; each window reads its own.
        let mut cum_x = [0.0f64; MAX_WINDOW + 1];
        let mut cum_m = [0.0f64; MAX_WINDOW + 1];
        for age in 0..span {
            let (x, m) = self.ring.get(age);
            cum_x[age + 1] = cum_x[age] + x;
            cum_m[age + 1] = cum_m[age] + m;
        }
        for &w in &params.windows {
            let w = (w as usize).min(span);
            if w == 0 {
                continue;
            }
            let (x, m) = (cum_x[w], cum_m[w]);
            if x < warn_min || x < params.warn_min_ratio * m {
                continue;
            }
            let g = nb_llr(x, m, window_size_k(w as f64, e, params));
            if g >= params.warn_g {
                v.weak = true;
            }
            if g >= params.open_g && x >= open_min && x >= params.open_min_ratio * m {
                v.strong = true;
                return v;
            }
        }
        v
    }

    /// Minute of the ring entry `age` minutes before `t`.
    fn minute_at(t: i64, age: usize) -> i64 {
        t - 60 * age as i64
    }

    /// Opens a new incident at minute `t`, back-dating its start.
    fn open(&mut self, params: &DetectorParams, t: i64, events: &mut Vec<IncidentEvent>) {
        let avail = self.evidence_len(t).max(1);
        let start_age = self.onset_age(params, avail);
        let mut total = 0.0;
        let mut sum_m = 0.0;
        let (mut peak_age, mut peak_excess) = (0, f64::NEG_INFINITY);
        for age in 0..=start_age {
            let (x, m) = self.ring.get(age);
            total += x;
            sum_m += m;
            // Ties go to the earliest minute: the peak is when it was first reached.
            if x - m >= peak_excess {
                peak_excess = x - m;
                peak_age = age;
            }
        }
        let (px, pm) = self.ring.get(peak_age);
        let incident = Incident {
            seq: self.next_seq,
            started_at: Self::minute_at(t, start_age),
            detected_at: t + 60,
            peak_at: Self::minute_at(t, peak_age),
            peak_reports_per_min: px as u32,
            baseline_per_min_at_peak: pm,
            ended_at: None,
            total_reports: total as u64,
            level_max: Level::Outage,
        };
        self.next_seq += 1;
        events.push(IncidentEvent {
            transition: Transition::Opened,
            incident: incident.clone(),
        });
        self.tracked = Some(Tracked {
            incident,
            sum_expected: sum_m,
            peak_excess,
            calm_run: 0,
            opened_minute: t,
            resolved_minute: None,
        });
    }

    /// Age (minutes back from now) of the onset of the rise: the change-point
    /// that maximises the likelihood ratio of "baseline, then elevated until
    /// now", extended further back while the part before it is itself a
    /// significant rise (a ramp).
    fn onset_age(&self, params: &DetectorParams, avail: usize) -> usize {
        let (mut x, mut m) = (0.0, 0.0);
        let (mut best, mut best_age) = (f64::NEG_INFINITY, 0);
        for age in 0..avail {
            let (xi, mi) = self.ring.get(age);
            x += xi;
            m += mi;
            let g = poisson_llr(x, m);
            if g > best {
                best = g;
                best_age = age;
            }
        }
        // Ramp: a significant rise just before the onset belongs to it.
        loop {
            let (mut x, mut m) = (0.0, 0.0);
            let (mut best, mut age_found) = (f64::NEG_INFINITY, None);
            for age in best_age + 1..avail {
                let (xi, mi) = self.ring.get(age);
                x += xi;
                m += mi;
                let g = poisson_llr(x, m);
                if g > best
                    && x >= f64::from(params.warn_min_count)
                    && x >= params.warn_min_ratio * m
                {
                    best = g;
                    age_found = Some(age);
                }
            }
            match age_found {
                Some(a) if best >= params.warn_g => best_age = a,
                _ => return best_age,
            }
        }
    }

    fn continue_open(
        &mut self,
        params: &DetectorParams,
        t: i64,
        x: f64,
        e: &Expectation,
        events: &mut Vec<IncidentEvent>,
    ) {
        // Calm test over the calm window (the incident's own minutes count).
        let w = (params.calm_window as usize).min(self.ring.len);
        let (mut cx, mut cm) = (0.0, 0.0);
        for age in 0..w {
            let (xi, mi) = self.ring.get(age);
            cx += xi;
            cm += mi;
        }
        let sd = (cm + cm * cm / window_size_k(w.max(1) as f64, e, params)).sqrt();
        let calm = cx <= (params.calm_ratio * cm).max(cm + params.calm_sd * sd) + params.calm_slack;

        let Some(tr) = self.tracked.as_mut() else {
            return;
        };
        tr.incident.total_reports += x as u64;
        tr.sum_expected += e.mu;
        if x - e.mu > tr.peak_excess {
            tr.peak_excess = x - e.mu;
            tr.incident.peak_at = t;
            tr.incident.peak_reports_per_min = x as u32;
            tr.incident.baseline_per_min_at_peak = e.mu;
            events.push(IncidentEvent {
                transition: Transition::Updated,
                incident: tr.incident.clone(),
            });
        }
        tr.calm_run = if calm { tr.calm_run + 1 } else { 0 };
        if tr.calm_run >= params.calm_minutes {
            self.close(params, t, events);
            self.level = Level::Ok;
        } else {
            self.level = Level::Outage;
        }
    }

    /// Resolves the open incident at minute `now`: `ended_at` is the end of
    /// the last elevated minute, found as a change-point like the onset.
    fn close(&mut self, params: &DetectorParams, now: i64, events: &mut Vec<IncidentEvent>) {
        let Some(tr) = self.tracked.as_mut() else {
            return;
        };
        let start = tr.incident.started_at;
        // Ring minutes inside the incident: ages 0..span.
        let span = (((now - start) / 60 + 1).max(1) as usize).min(self.ring.len);
        let total_x = tr.incident.total_reports as f64;
        let total_m = tr.sum_expected;
        // End age: maximise the likelihood ratio of [start, end] against the
        // totals with the suffix after `end` removed.
        let (mut sx, mut sm) = (0.0, 0.0);
        let (mut best, mut end_age) = (f64::NEG_INFINITY, 0);
        let mut suffix = Vec::with_capacity(span + 1);
        for age in 0..span {
            // Suffix of ages < age, i.e. the minutes after the candidate end.
            suffix.push((sx, sm));
            let g = poisson_llr(total_x - sx, total_m - sm);
            if g > best {
                best = g;
                end_age = age;
            }
            let (xi, mi) = self.ring.get(age);
            sx += xi;
            sm += mi;
        }
        // Tail: a significant elevated stretch after that end belongs to it.
        loop {
            let (mut x, mut m) = (0.0, 0.0);
            let (mut best, mut found) = (f64::NEG_INFINITY, None);
            for age in (0..end_age).rev() {
                let (xi, mi) = self.ring.get(age);
                x += xi;
                m += mi;
                let g = poisson_llr(x, m);
                if g > best && x >= f64::from(params.warn_min_count) && x >= params.calm_ratio * m {
                    best = g;
                    found = Some(age);
                }
            }
            match found {
                Some(a) if best >= params.warn_g => end_age = a,
                _ => break,
            }
        }
        let (after_x, after_m) = suffix.get(end_age).copied().unwrap_or((0.0, 0.0));
        let ended_at = Self::minute_at(now, end_age) + 60;
        tr.incident.total_reports = (total_x - after_x).max(0.0) as u64;
        tr.sum_expected = (total_m - after_m).max(0.0);
        tr.incident.ended_at = Some(ended_at);
        if tr.incident.peak_at >= ended_at {
            // The peak was after the end (only possible for tiny incidents):
            // take the largest excess within the span instead.
            let mut best = f64::NEG_INFINITY;
            for age in end_age..span {
                let (xi, mi) = self.ring.get(age);
                if xi - mi >= best {
                    best = xi - mi;
                    tr.incident.peak_at = Self::minute_at(now, age);
                    tr.incident.peak_reports_per_min = xi as u32;
                    tr.incident.baseline_per_min_at_peak = mi;
                }
            }
            tr.peak_excess = best;
        }
        tr.resolved_minute = Some(now);
        tr.calm_run = 0;
        self.evidence_from = ended_at;
        events.push(IncidentEvent {
            transition: Transition::Resolved,
            incident: tr.incident.clone(),
        });
    }

    /// Reopens the recently resolved incident at minute `t`.
    fn reopen(&mut self, t: i64, events: &mut Vec<IncidentEvent>) {
        let len = self.ring.len;
        let Some(tr) = self.tracked.as_mut() else {
            return;
        };
        let Some(ended) = tr.incident.ended_at else {
            return;
        };
        // The minutes since the end join the incident again.
        let gap = (((t - ended) / 60 + 1).max(0) as usize).min(len);
        for age in (0..gap).rev() {
            let (xi, mi) = self.ring.get(age);
            tr.incident.total_reports += xi as u64;
            tr.sum_expected += mi;
            if xi - mi > tr.peak_excess {
                tr.peak_excess = xi - mi;
                tr.incident.peak_at = Self::minute_at(t, age);
                tr.incident.peak_reports_per_min = xi as u32;
                tr.incident.baseline_per_min_at_peak = mi;
            }
        }
        tr.incident.ended_at = None;
        tr.resolved_minute = None;
        tr.calm_run = 0;
        events.push(IncidentEvent {
            transition: Transition::Reopened,
            incident: tr.incident.clone(),
        });
    }
}
