//! The seasonal baseline: expected reports per minute for one scope.
//!
//! `mu = max(floor, L * H[hour] * D[weekday])`. `L` is an exponential average
//! of deseasonalised counts; `H` and `D` are the scope's own hour-of-day and
//! day-of-week shapes, each shrunk towards the fleet's shape by the reports
//! behind it (`w = n / (n + k)`). All times are UTC.

use serde::{Deserialize, Serialize};

use super::params::DetectorParams;

/// Seconds in a day.
const DAY: i64 = 86_400;
/// Own shape values are clamped to this range: one dead hour must not make
/// the expectation zero, one busy hour must not make it unbounded.
const SHAPE_MIN: f64 = 0.02;
const SHAPE_MAX: f64 = 50.0;

/// Hour of day (0..24, UTC) of a unix time.
pub fn hour_of(t: i64) -> usize {
    (t.rem_euclid(DAY) / 3600) as usize
}

/// Day of week (0 = Monday .. 6 = Sunday, UTC) of a unix time.
pub fn weekday_of(t: i64) -> usize {
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    (t.div_euclid(DAY) + 3).rem_euclid(7) as usize
}

/// The fleet-wide daily and weekly shape that sparse scopes borrow: the mean
/// of the own shapes of well-measured scopes, as multipliers with mean one.
/// The caller maintains it (see [`FleetProfile::from_detectors`]), persists
/// it next to the scope states and passes it to every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FleetProfileData", into = "FleetProfileData")]
pub struct FleetProfile {
    hour: [f64; 24],
    dow: [f64; 7],
    confidence: f64,
}

#[derive(Serialize, Deserialize)]
struct FleetProfileData {
    hour: [f64; 24],
    dow: [f64; 7],
    #[serde(default = "one")]
    confidence: f64,
}

fn one() -> f64 {
    1.0
}

impl From<FleetProfileData> for FleetProfile {
    fn from(d: FleetProfileData) -> Self {
        Self::new(d.hour, d.dow).with_confidence(d.confidence)
    }
}

impl From<FleetProfile> for FleetProfileData {
    fn from(f: FleetProfile) -> Self {
        Self {
            hour: f.hour,
            dow: f.dow,
            confidence: f.confidence,
        }
    }
}

impl Default for FleetProfile {
    fn default() -> Self {
        Self::flat()
    }
}

/// Replaces non-finite values, clamps, and rescales to mean 1.
fn sanitise<const N: usize>(mut v: [f64; N]) -> [f64; N] {
    for x in &mut v {
        if !x.is_finite() || *x <= 0.0 {
            *x = 1.0;
        }
    }
    let mean = v.iter().sum::<f64>() / N as f64;
    for x in &mut v {
        *x = (*x / mean).clamp(SHAPE_MIN, SHAPE_MAX);
    }
    v
}

impl FleetProfile {
    /// No knowledge of the shape (a fresh install): flat, with confidence
    /// [`FleetProfile::FLAT_CONFIDENCE`], so scopes trust their own few
    /// reports sooner than they would trust a learnt fleet shape.
    pub fn flat() -> Self {
        Self {
            hour: [1.0; 24],
            dow: [1.0; 7],
            confidence: Self::FLAT_CONFIDENCE,
        }
    }

    /// Confidence of a flat, unlearnt profile: the shrinkage constants are
    /// multiplied by it (a flat shape can be off by ±70%, a learnt one by
    /// ~10%; `k` scales with the inverse square of that error).
    pub const FLAT_CONFIDENCE: f64 = 0.05;

    /// A learnt profile from multipliers (confidence 1); they are rescaled
    /// to mean 1, and non-positive or non-finite values are replaced by 1.
    pub fn new(hour: [f64; 24], dow: [f64; 7]) -> Self {
        Self {
            hour: sanitise(hour),
            dow: sanitise(dow),
            confidence: 1.0,
        }
    }

    /// The same shape with another confidence (clamped to 0.01..=1).
    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = if confidence.is_finite() {
            confidence.clamp(0.01, 1.0)
        } else {
            1.0
        };
        self
    }

    pub fn confidence(&self) -> f64 {
        self.confidence
    }

    /// The shrinkage constant `k` for this profile.
    fn shrink_k(&self, k: f64) -> f64 {
        k * self.confidence
    }

    pub fn hour(&self) -> &[f64; 24] {
        &self.hour
    }

    pub fn dow(&self) -> &[f64; 7] {
        &self.dow
    }

    /// The fleet shape learnt from many scopes (typically every `global`
    /// scope): each scope's own hour and weekday shape, weighted slot by slot
    /// by the reports behind it (`n / (n + k)`, so a few large services do not
    /// outweigh the rest). Slots nobody has measured keep `prior`'s value.
    /// Recompute it now and then (hourly is plenty) and persist it.
    pub fn from_detectors<'a>(
        scopes: impl IntoIterator<Item = &'a super::ScopeDetector>,
        prior: &FleetProfile,
        params: &DetectorParams,
    ) -> Self {
        let mut hour_num = [0.0; 24];
        let mut hour_den = [0.0; 24];
        let mut dow_num = [0.0; 7];
        let mut dow_den = [0.0; 7];
        for scope in scopes {
            let b = scope.baseline();
            let kh = params.shrink_hour_reports / 24.0;
            for h in 0..24 {
                if let Some(own) = b.own_hour(h, prior) {
                    let w = b.hour_sum[h] / (b.hour_sum[h] + kh);
                    hour_num[h] += w * own;
                    hour_den[h] += w;
                }
            }
            let kd = params.shrink_dow_reports / 7.0;
            for d in 0..7 {
                if let Some(own) = b.own_dow(d, prior) {
                    let w = b.dow_sum[d] / (b.dow_sum[d] + kd);
                    dow_num[d] += w * own;
                    dow_den[d] += w;
                }
            }
        }
        let mut hour = prior.hour;
        for h in 0..24 {
            if hour_den[h] > 1e-9 {
                hour[h] = hour_num[h] / hour_den[h];
            }
        }
        let mut dow = prior.dow;
        for d in 0..7 {
            if dow_den[d] > 1e-9 {
                dow[d] = dow_num[d] / dow_den[d];
            }
        }
        // Nobody measured anything (a fresh install, services with no
        // reports): keep the prior and its confidence, not a "learnt" copy.
        if hour_den.iter().chain(&dow_den).all(|&d| d <= 1e-9) {
            return prior.clone();
        }
        Self::new(hour, dow)
    }
}

/// What the baseline expects of one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected reports in the minute (floored).
    pub mu: f64,
    /// Negative-binomial `1/r`: `Var = mu + mu^2 / r`.
    pub inv_r: f64,
    /// Reports standing behind the level estimate (its uncertainty).
    pub level_reports: f64,
    hour_factor: f64,
    dow_factor: f64,
}

impl Expectation {
    /// Standard deviation of one minute's count.
    pub fn sd(&self) -> f64 {
        (self.mu + self.mu * self.mu * self.inv_r).sqrt()
    }
}

/// One scope's learnt baseline. Serialisable; learning is O(1) per minute
/// (the profile sums are decayed once a day).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Deseasonalised reports per minute (the long-run estimate).
    level: f64,
    /// Minutes learnt so far (the warm-up clock).
    minutes: u64,
    /// Decayed sums of learnt (clipped, weekday-corrected) reports per hour slot…
    hour_sum: [f64; 24],
    /// …and of the minutes they were learnt over.
    hour_exp: [f64; 24],
    dow_sum: [f64; 7],
    dow_exp: [f64; 7],
    /// Exponential averages of `(x - mu)^2 - x` and of `mu^2`: their ratio
    /// estimates `1/r` (method of moments, stable even when counts are sparse).
    disp_num: f64,
    disp_den: f64,
    /// Day index (unix days) of the last daily decay.
    last_day: Option<i64>,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            level: 0.0,
            minutes: 0,
            hour_sum: [0.0; 24],
            hour_exp: [0.0; 24],
            dow_sum: [0.0; 7],
            dow_exp: [0.0; 7],
            disp_num: 0.0,
            disp_den: 0.0,
            last_day: None,
        }
    }
}

impl Baseline {
    /// Minutes learnt so far.
    pub fn minutes_learnt(&self) -> u64 {
        self.minutes
    }

    /// The deseasonalised level, reports per minute.
    pub fn level(&self) -> f64 {
        self.level
    }

    /// Reports behind the own hour profile (decayed).
    pub fn profile_reports(&self) -> f64 {
        self.hour_sum.iter().sum()
    }

    /// Reports per unit of fleet shape over the hour slots seen so far: own
    /// rates divided by it give an own shape relative to the fleet, so the
    /// first hours of history simply reproduce the fleet's shape.
    fn hour_scale(&self, fleet: &FleetProfile) -> f64 {
        let mut sum = 0.0;
        let mut exp_shape = 0.0;
        for i in 0..24 {
            if self.hour_exp[i] > 0.0 {
                sum += self.hour_sum[i];
                exp_shape += self.hour_exp[i] * fleet.hour[i];
            }
        }
        sum / exp_shape
    }

    fn dow_scale(&self, fleet: &FleetProfile) -> f64 {
        let mut sum = 0.0;
        let mut exp_shape = 0.0;
        for i in 0..7 {
            if self.dow_exp[i] > 0.0 {
                sum += self.dow_sum[i];
                exp_shape += self.dow_exp[i] * fleet.dow[i];
            }
        }
        sum / exp_shape
    }

    /// Own shape of hour slot `h` (None before it holds a report).
    fn own_hour(&self, h: usize, fleet: &FleetProfile) -> Option<f64> {
        self.own_hour_scaled(h, self.hour_scale(fleet))
    }

    fn own_hour_scaled(&self, h: usize, scale: f64) -> Option<f64> {
        if self.hour_exp[h] <= 0.0 || self.hour_sum[h] <= 0.0 || scale.is_nan() || scale <= 0.0 {
            return None;
        }
        Some(((self.hour_sum[h] / self.hour_exp[h]) / scale).clamp(SHAPE_MIN, SHAPE_MAX))
    }

    fn own_dow(&self, d: usize, fleet: &FleetProfile) -> Option<f64> {
        let scale = self.dow_scale(fleet);
        if self.dow_exp[d] <= 0.0 || self.dow_sum[d] <= 0.0 || scale.is_nan() || scale <= 0.0 {
            return None;
        }
        Some(((self.dow_sum[d] / self.dow_exp[d]) / scale).clamp(SHAPE_MIN, SHAPE_MAX))
    }

    /// Factor of a seen hour slot `h`: own shape shrunk towards the fleet's
    /// by the reports behind this slot. A seen slot with no report yet (a
    /// quiet hour of a sparse scope) defers to the fleet.
    fn seen_slot_factor(
        &self,
        h: usize,
        scale: f64,
        fleet: &FleetProfile,
        params: &DetectorParams,
    ) -> f64 {
        match self.own_hour_scaled(h, scale) {
            None => fleet.hour[h],
            Some(own) => {
                let n = self.hour_sum[h];
                let w = n / (n + fleet.shrink_k(params.shrink_hour_reports) / 24.0);
                w * own + (1.0 - w) * fleet.hour[h]
            }
        }
    }

    /// Factor of hour slot `h`. A slot never seen (the first day) carries
    /// the latest seen slot's deviation from the fleet forward: with a flat
    /// fleet the expectation then stays continuous instead of dropping to
    /// the day's mean at each new hour.
    fn slot_factor(
        &self,
        h: usize,
        scale: f64,
        fleet: &FleetProfile,
        params: &DetectorParams,
    ) -> f64 {
        if self.hour_exp[h] > 0.0 {
            return self.seen_slot_factor(h, scale, fleet, params);
        }
        for back in 1..24 {
            let p = (h + 24 - back) % 24;
            if self.hour_exp[p] > 0.0 {
                return fleet.hour[h] * self.seen_slot_factor(p, scale, fleet, params)
                    / fleet.hour[p];
            }
        }
        fleet.hour[h]
    }

    /// Hour factor at time `t`: slot values sit at the middle of their hour
    /// and are interpolated linearly in between, because a step per hour
    /// misses a steep daily rhythm by up to ~15% at the edges of the hour.
    fn hour_factor(&self, t: i64, fleet: &FleetProfile, params: &DetectorParams) -> f64 {
        let pos = t.rem_euclid(DAY) as f64 / 3600.0 - 0.5;
        let base = pos.floor();
        let frac = pos - base;
        let h0 = (base as i64).rem_euclid(24) as usize;
        let h1 = (h0 + 1) % 24;
        let scale = self.hour_scale(fleet);
        (1.0 - frac) * self.slot_factor(h0, scale, fleet, params)
            + frac * self.slot_factor(h1, scale, fleet, params)
    }

    fn seen_dow_factor(&self, d: usize, fleet: &FleetProfile, params: &DetectorParams) -> f64 {
        match self.own_dow(d, fleet) {
            None => fleet.dow[d],
            Some(own) => {
                let n = self.dow_sum[d];
                let w = n / (n + fleet.shrink_k(params.shrink_dow_reports) / 7.0);
                w * own + (1.0 - w) * fleet.dow[d]
            }
        }
    }

    /// Weekday factor; an unseen weekday (the first week) carries the latest
    /// seen day's deviation from the fleet forward, like the hours.
    fn dow_factor(&self, d: usize, fleet: &FleetProfile, params: &DetectorParams) -> f64 {
        if self.dow_exp[d] > 0.0 {
            return self.seen_dow_factor(d, fleet, params);
        }
        for back in 1..7 {
            let p = (d + 7 - back) % 7;
            if self.dow_exp[p] > 0.0 {
                return fleet.dow[d] * self.seen_dow_factor(p, fleet, params) / fleet.dow[p];
            }
        }
        fleet.dow[d]
    }

    /// `1/r`, bounded; the maximum while nothing is known (cautious).
    pub fn inv_r(&self, params: &DetectorParams) -> f64 {
        if self.disp_den > 0.0 {
            (self.disp_num / self.disp_den).clamp(params.inv_r_min, params.inv_r_max)
        } else {
            params.inv_r_max
        }
    }

    /// What is expected of the minute starting at `t`.
    pub fn expected(&self, t: i64, fleet: &FleetProfile, params: &DetectorParams) -> Expectation {
        let hour_factor = self.hour_factor(t, fleet, params);
        let dow_factor = self.dow_factor(weekday_of(t), fleet, params);
        let level = self.level;
        let mu = (level * hour_factor * dow_factor).max(params.floor_per_min);
        let memory = (self.minutes as f64).min(params.level_tau_minutes);
        Expectation {
            mu,
            inv_r: self.inv_r(params),
            level_reports: level * memory,
            hour_factor,
            dow_factor,
        }
    }

    /// The count that would be learnt: clipped at `mu + clip_sd * sd + clip_slack`
    /// so that an outage that slipped past the detector moves the baseline little.
    pub fn clip(&self, x: f64, e: &Expectation, params: &DetectorParams) -> f64 {
        x.min(e.mu + params.clip_sd * e.sd() + params.clip_slack)
    }

    /// Learns the count `x` of the minute starting at `t`, whose expectation
    /// (computed before the count was seen) is `e`.
    pub fn learn(
        &mut self,
        t: i64,
        x: f64,
        e: &Expectation,
        fleet: &FleetProfile,
        params: &DetectorParams,
    ) {
        let day = t.div_euclid(DAY);
        match self.last_day {
            Some(last) if day > last => {
                let days = (day - last) as f64;
                let hour_decay = (-days / params.hour_tau_days).exp();
                let dow_decay = (-days / params.dow_tau_days).exp();
                for h in 0..24 {
                    self.hour_sum[h] *= hour_decay;
                    self.hour_exp[h] *= hour_decay;
                }
                for d in 0..7 {
                    self.dow_sum[d] *= dow_decay;
                    self.dow_exp[d] *= dow_decay;
                }
                self.last_day = Some(day);
            }
            Some(_) => {}
            None => self.last_day = Some(day),
        }

        let xc = self.clip(x, e, params);
        // Plain mean at first (1/(n+1)), then the slow average: a new scope
        // learns its level in hours, an old one moves slowly.
        let n = self.minutes as f64 + 1.0;
        let (h, d) = (hour_of(t), weekday_of(t));
        self.hour_sum[h] += xc / e.dow_factor.max(1e-6);
        self.hour_exp[h] += 1.0;
        self.dow_sum[d] += xc / e.hour_factor.max(1e-6);
        self.dow_exp[d] += 1.0;

        if self.minutes < u64::from(params.warmup_minutes) {
            // Warm-up: the level is the one the own hour shape implies
            // (reports per unit of fleet shape over the hours seen), so level
            // and shape agree while the shape is still being discovered; an
            // average of counts over a partly seen day would not.
            let scale = self.hour_scale(fleet);
            if scale.is_finite() {
                self.level = scale;
            }
        } else {
            let a_level = (1.0 / params.level_tau_minutes).max(1.0 / n);
            let seasonal = (e.hour_factor * e.dow_factor).max(1e-6);
            self.level += a_level * (xc / seasonal - self.level);
        }

        let a_disp = (1.0 / params.dispersion_tau_minutes).max(1.0 / n);
        let resid = xc - e.mu;
        self.disp_num += a_disp * ((resid * resid - xc) - self.disp_num);
        self.disp_den += a_disp * (e.mu * e.mu - self.disp_den);
        self.minutes += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers_match_known_dates() {
        // 2022-10-25T07:00:00Z was a Tuesday.
        let t = 1_666_681_200;
        assert_eq!(hour_of(t), 7);
        assert_eq!(weekday_of(t), 1);
        assert_eq!(weekday_of(0), 3);
        assert_eq!(weekday_of(-DAY), 2);
        assert_eq!(hour_of(-1), 23);
    }

    #[test]
    fn fleet_profile_is_sanitised_to_mean_one() {
        let mut hour = [2.0; 24];
        hour[3] = f64::NAN;
        hour[4] = -1.0;
        let f = FleetProfile::new(hour, [0.0; 7]);
        let mean: f64 = f.hour().iter().sum::<f64>() / 24.0;
        assert!((mean - 1.0).abs() < 1e-9);
        assert!(f.hour()[3] < f.hour()[0]);
        assert_eq!(f.dow(), &[1.0; 7]);
    }

    #[test]
    fn level_learns_a_constant_rate_quickly_then_holds() {
        let p = DetectorParams::default();
        let fleet = FleetProfile::flat();
        let mut b = Baseline::default();
        for i in 0..600 {
            let t = i * 60;
            let e = b.expected(t, &fleet, &p);
            b.learn(t, 10.0, &e, &fleet, &p);
        }
        let mu = b.expected(600 * 60, &fleet, &p).mu;
        assert!((mu - 10.0).abs() < 0.5, "mu {mu}");
    }

    #[test]
    fn clip_keeps_the_plus_one_for_sparse_series() {
        let p = DetectorParams::default();
        let b = Baseline::default();
        let e = b.expected(0, &FleetProfile::flat(), &p);
        // mu is the floor; one report must survive clipping whole.
        assert!(b.clip(1.0, &e, &p) >= 1.0);
        assert!(b.clip(1000.0, &e, &p) < 10.0);
    }
}
