//! Synthetic evaluation of the detector (`downwatch bench detect`).
//!
//! A deterministic generator of per-minute report series (daily ±70% rhythm,
//! quieter weekends, Poisson or negative-binomial noise, injected outages)
//! and an evaluator that runs the detector over them and measures false
//! incidents, recall, delay and the accuracy of start and end. Everything
//! except the CPU timing is a pure function of [`EvalConfig::seed`].

use std::fmt::Write as _;
use std::time::Instant;

use super::baseline::FleetProfile;
use super::params::DetectorParams;
use super::scope::{Incident, ScopeDetector};
use crate::Level;

/// Monday 2024-01-01T00:00:00Z: every generated series starts here.
pub const SERIES_EPOCH: i64 = 1_704_067_200;
const MINUTES_PER_DAY: usize = 1440;

// ---------------------------------------------------------------------------
// Random numbers: xoshiro256++ seeded by SplitMix64, no dependency.

/// A small, fast, reproducible PRNG (xoshiro256++).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        Self {
            s: [
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
                splitmix64(&mut st),
            ],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, scale 1) (Marsaglia-Tsang).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let g = self.gamma(shape + 1.0);
            return g * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Poisson(lambda): multiplication for small means, PTRS (Hörmann's
    /// transformed rejection) above 10, exact in both cases.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda < 10.0 {
            let limit = (-lambda).exp();
            let mut k = 0;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let invalpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform() - 0.5;
            let v = self.uniform();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
                <= -lambda + k * loglam - ln_factorial(k)
            {
                return k as u64;
            }
        }
    }

    /// Negative binomial with mean `mean` and size `r` (a Gamma-Poisson
    /// mixture): `Var = mean + mean^2 / r`.
    pub fn neg_binomial(&mut self, mean: f64, r: f64) -> u64 {
        let lambda = mean * self.gamma(r) / r;
        self.poisson(lambda)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        (self.uniform() * n as f64) as u64 % n.max(1)
    }
}

/// `ln(k!)`: exact table below 10, Stirling series above.
fn ln_factorial(k: f64) -> f64 {
    const TABLE: [f64; 10] = [
        0.0,
        0.0,
        std::f64::consts::LN_2,
        1.791_759_469_228_055,
        3.178_053_830_347_945_8,
        4.787_491_742_782_046,
        6.579_251_212_010_101,
        8.525_161_361_065_415,
        10.604_602_902_745_25,
        12.801_827_480_081_469,
    ];
    if k < 10.0 {
        return TABLE[k.max(0.0) as usize];
    }
    let x = k + 1.0;
    let x2 = x * x;
    (x - 0.5) * x.ln() - x + 0.918_938_533_204_672_8 + 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x2 * x2 * x)
}

// ---------------------------------------------------------------------------
// Series.

/// Noise around the expected rate of each minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    Poisson,
    /// Gamma-Poisson per minute, `Var = mu + mu^2 / r`.
    NegBin {
        r: f64,
    },
}

/// An injected outage: during `[start, start + minutes)` (minutes from the
/// series start) the rate is `base * multiplier + extra_per_min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub start: usize,
    pub minutes: usize,
    pub multiplier: f64,
    pub extra_per_min: f64,
}

/// A synthetic per-minute series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// Mean reports per day (over a week).
    pub per_day: f64,
    pub days: usize,
    pub noise: Noise,
    /// Daily rhythm: `1 + amplitude * sin(...)`, peaking at `peak_hour` UTC.
    pub amplitude: f64,
    pub peak_hour: f64,
    /// Saturday and Sunday rate relative to weekdays.
    pub weekend_factor: f64,
    /// Standard deviation of a log-normal factor drawn for each day (busier
    /// and quieter days).
    pub day_jitter: f64,
    pub outages: Vec<Outage>,
}

impl SeriesSpec {
    /// The usual shape: ±70% daily rhythm peaking at 14:00 UTC, weekends at
    /// 70% of weekdays, 5% day-to-day jitter, no outage.
    pub fn ordinary(per_day: f64, days: usize, noise: Noise) -> Self {
        Self {
            per_day,
            days,
            noise,
            amplitude: 0.7,
            peak_hour: 14.0,
            weekend_factor: 0.7,
            day_jitter: 0.05,
            outages: Vec::new(),
        }
    }

    /// Expected reports in minute `i` without outages or day jitter.
    pub fn base_rate(&self, i: usize) -> f64 {
        let day = i / MINUTES_PER_DAY;
        let hour = (i % MINUTES_PER_DAY) as f64 / 60.0;
        let phase = (hour - self.peak_hour + 6.0) / 24.0 * std::f64::consts::TAU;
        let daily = 1.0 + self.amplitude * phase.sin();
        // SERIES_EPOCH is a Monday, so days 5 and 6 of each week are the weekend.
        let norm = 7.0 / (5.0 + 2.0 * self.weekend_factor);
        let weekly = if day % 7 >= 5 {
            self.weekend_factor * norm
        } else {
            norm
        };
        self.per_day / MINUTES_PER_DAY as f64 * daily * weekly
    }

    /// Draws the counts, one per minute from [`SERIES_EPOCH`].
    pub fn generate(&self, rng: &mut Rng) -> Vec<u32> {
        let n = self.days * MINUTES_PER_DAY;
        let mut rate = Vec::with_capacity(n);
        for day in 0..self.days {
            let jitter =
                (self.day_jitter * rng.normal() - self.day_jitter * self.day_jitter / 2.0).exp();
            for m in 0..MINUTES_PER_DAY {
                rate.push(self.base_rate(day * MINUTES_PER_DAY + m) * jitter);
            }
        }
        for o in &self.outages {
            for r in rate.iter_mut().skip(o.start).take(o.minutes) {
                *r = *r * o.multiplier + o.extra_per_min;
            }
        }
        rate.into_iter()
            .map(|mu| {
                let c = match self.noise {
                    Noise::Poisson => rng.poisson(mu),
                    Noise::NegBin { r } => rng.neg_binomial(mu, r),
                };
                c.min(u64::from(u32::MAX)) as u32
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Evaluation.

/// How much to run. [`EvalConfig::default`] is the published table (about
/// 30 s in release mode on one core); [`EvalConfig::quick`] is for tests.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    pub seed: u64,
    /// Days every scope learns before it is judged (false incidents during
    /// them are reported apart, as cold-start).
    pub warmup_days: usize,
    /// Scopes per rate in the false-incident runs.
    pub quiet_scopes: usize,
    /// Judged days per such scope.
    pub quiet_days: usize,
    /// Outages per outage class.
    pub trials_per_class: usize,
    /// Outages injected into one scope (two days apart).
    pub outages_per_scope: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            seed: 20_240_101,
            warmup_days: 14,
            quiet_scopes: 24,
            quiet_days: 120,
            trials_per_class: 100,
            outages_per_scope: 10,
        }
    }
}

impl EvalConfig {
    /// A small run (seconds in a debug build).
    pub fn quick() -> Self {
        Self {
            seed: 7,
            warmup_days: 7,
            quiet_scopes: 1,
            quiet_days: 14,
            trials_per_class: 6,
            outages_per_scope: 6,
        }
    }
}

/// False incidents on ordinary series of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct RateResult {
    pub label: String,
    pub per_day: f64,
    /// Judged service-days (after warm-up).
    pub service_days: f64,
    pub false_incidents: usize,
    pub per_1000_days: f64,
    /// False incidents during the warm-up days, starting from no history.
    pub cold_false_incidents: usize,
    pub cold_service_days: f64,
    /// Minutes at level `warning` per judged service-day.
    pub warning_minutes_per_day: f64,
}

/// Detection of one class of injected outage.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassResult {
    pub name: String,
    pub per_day: f64,
    pub multiplier: f64,
    pub trials: usize,
    pub detected: usize,
    pub recall: f64,
    /// Minutes from the true onset to `detected_at`.
    pub delay_median: Option<f64>,
    pub delay_p90: Option<f64>,
    pub delay_max: Option<f64>,
    /// `|started_at - onset|` in minutes.
    pub start_err_median: Option<f64>,
    pub start_err_p90: Option<f64>,
    /// `|ended_at - true end|` in minutes (resolved incidents).
    pub end_err_median: Option<f64>,
    pub end_err_p90: Option<f64>,
    /// Share of detections with start within 3 min and end within 15 min.
    pub within_bounds: Option<f64>,
    /// Incidents in these runs that match no outage (duplicates, false ones).
    pub extra_incidents: usize,
}

/// Everything [`run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResults {
    pub seed: u64,
    pub rates: Vec<RateResult>,
    pub classes: Vec<ClassResult>,
    pub steps: u64,
    /// CPU per minute-step of one scope (detector only, generation excluded).
    pub ns_per_step: f64,
}

/// One target of issue 3, checked against the results.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    pub target: String,
    pub met: bool,
    pub measured: String,
}

/// Incidents of one scope run and the detector's cost.
struct ScopeRun {
    incidents: Vec<Incident>,
    warning_minutes_after: u64,
    steps: u64,
    nanos: u128,
}

fn run_scope(
    counts: &[u32],
    params: &DetectorParams,
    fleet: &FleetProfile,
    judged_from: usize,
) -> ScopeRun {
    let mut det = ScopeDetector::new();
    let mut incidents: Vec<Incident> = Vec::new();
    let mut warning = 0;
    let started = Instant::now();
    for (i, &c) in counts.iter().enumerate() {
        let minute = SERIES_EPOCH + 60 * i as i64;
        let Ok(step) = det.step(params, fleet, minute, c) else {
            continue;
        };
        if i >= judged_from && step.level == Level::Warning {
            warning += 1;
        }
        for ev in step.events {
            match incidents
                .iter_mut()
                .rev()
                .find(|x| x.seq == ev.incident.seq)
            {
                Some(x) => *x = ev.incident,
                None => incidents.push(ev.incident),
            }
        }
    }
    let nanos = started.elapsed().as_nanos();
    ScopeRun {
        incidents,
        warning_minutes_after: warning,
        steps: counts.len() as u64,
        nanos,
    }
}

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[idx])
}

/// The fleet profile the scopes borrow: learnt from one ordinary, dense
/// reference scope over four weeks, as a live fleet would learn it.
fn learn_fleet(params: &DetectorParams, rng: &mut Rng) -> FleetProfile {
    let spec = SeriesSpec::ordinary(20_000.0, 28, Noise::Poisson);
    let counts = spec.generate(rng);
    let mut det = ScopeDetector::new();
    let flat = FleetProfile::flat();
    for (i, &c) in counts.iter().enumerate() {
        let _ = det.step(params, &flat, SERIES_EPOCH + 60 * i as i64, c);
    }
    FleetProfile::from_detectors([&det], &flat, params)
}

struct QuietKind {
    label: &'static str,
    per_day: f64,
    peak_hour: f64,
}

const QUIET: [QuietKind; 7] = [
    QuietKind {
        label: "3/day",
        per_day: 3.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "20/day",
        per_day: 20.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "200/day",
        per_day: 200.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "2,000/day",
        per_day: 2_000.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "20,000/day",
        per_day: 20_000.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "200,000/day",
        per_day: 200_000.0,
        peak_hour: 14.0,
    },
    QuietKind {
        label: "regional 30/day, peak 4 h off the fleet",
        per_day: 30.0,
        peak_hour: 18.0,
    },
];

/// The negative-binomial size used for the overdispersed half of the scopes.
const NB_R: f64 = 10.0;

fn noise_for(i: usize) -> Noise {
    if i.is_multiple_of(2) {
        Noise::Poisson
    } else {
        Noise::NegBin { r: NB_R }
    }
}

/// One family of injected outages.
struct ClassSpec {
    name: &'static str,
    per_day: f64,
    multiplier: f64,
    /// Extra reports spread over the outage (on top of the multiplier).
    extra_total: f64,
    minutes: usize,
    peak_hour: f64,
    /// A big outage the day before this one, at the same time of day.
    after_big: Option<(f64, usize)>,
}

const CLASSES: [ClassSpec; 11] = [
    ClassSpec {
        name: "x1000, 10 min, 2,000/day",
        per_day: 2_000.0,
        multiplier: 1000.0,
        extra_total: 0.0,
        minutes: 10,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x1000, 10 min, 20/day",
        per_day: 20.0,
        multiplier: 1000.0,
        extra_total: 0.0,
        minutes: 10,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x10, 1 h, 200/day",
        per_day: 200.0,
        multiplier: 10.0,
        extra_total: 0.0,
        minutes: 60,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x5, 1 h, 2,000/day",
        per_day: 2_000.0,
        multiplier: 5.0,
        extra_total: 0.0,
        minutes: 60,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x5, 2 h, 200,000/day",
        per_day: 200_000.0,
        multiplier: 5.0,
        extra_total: 0.0,
        minutes: 120,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x3, 30 min, 2,000/day",
        per_day: 2_000.0,
        multiplier: 3.0,
        extra_total: 0.0,
        minutes: 30,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x2, 30 min, 2,000/day",
        per_day: 2_000.0,
        multiplier: 2.0,
        extra_total: 0.0,
        minutes: 30,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x2, 1 h, 20,000/day",
        per_day: 20_000.0,
        multiplier: 2.0,
        extra_total: 0.0,
        minutes: 60,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "+15 reports in 30 min, 5/day",
        per_day: 5.0,
        multiplier: 1.0,
        extra_total: 15.0,
        minutes: 30,
        peak_hour: 14.0,
        after_big: None,
    },
    ClassSpec {
        name: "x3, 1 h, 2,000/day, a day after x20 for 6 h",
        per_day: 2_000.0,
        multiplier: 3.0,
        extra_total: 0.0,
        minutes: 60,
        peak_hour: 14.0,
        after_big: Some((20.0, 360)),
    },
    ClassSpec {
        name: "regional x10, 1 h, 30/day, peak 4 h off",
        per_day: 30.0,
        multiplier: 10.0,
        extra_total: 0.0,
        minutes: 60,
        peak_hour: 18.0,
        after_big: None,
    },
];

/// Runs the whole evaluation.
pub fn run(config: &EvalConfig, params: &DetectorParams) -> EvalResults {
    let mut rng = Rng::new(config.seed);
    let fleet = learn_fleet(params, &mut rng);
    let mut steps = 0u64;
    let mut nanos = 0u128;
    let warm = config.warmup_days * MINUTES_PER_DAY;

    let mut rates = Vec::new();
    for kind in &QUIET {
        let (mut false_n, mut cold_n, mut warn_min) = (0, 0, 0u64);
        for s in 0..config.quiet_scopes {
            let mut spec = SeriesSpec::ordinary(
                kind.per_day,
                config.warmup_days + config.quiet_days,
                noise_for(s),
            );
            spec.peak_hour = kind.peak_hour;
            let counts = spec.generate(&mut rng);
            let r = run_scope(&counts, params, &fleet, warm);
            steps += r.steps;
            nanos += r.nanos;
            warn_min += r.warning_minutes_after;
            let judged_from = SERIES_EPOCH + 60 * warm as i64;
            for inc in &r.incidents {
                if inc.detected_at > judged_from {
                    false_n += 1;
                } else {
                    cold_n += 1;
                }
            }
        }
        let days = (config.quiet_scopes * config.quiet_days) as f64;
        rates.push(RateResult {
            label: kind.label.to_string(),
            per_day: kind.per_day,
            service_days: days,
            false_incidents: false_n,
            per_1000_days: if days > 0.0 {
                false_n as f64 * 1000.0 / days
            } else {
                0.0
            },
            cold_false_incidents: cold_n,
            cold_service_days: (config.quiet_scopes * config.warmup_days) as f64,
            warning_minutes_per_day: if days > 0.0 {
                warn_min as f64 / days
            } else {
                0.0
            },
        });
    }

    let mut classes = Vec::new();
    for class in &CLASSES {
        let (result, big, s, n) = run_class(class, config, params, &fleet, &mut rng);
        steps += s;
        nanos += n;
        if let Some(big) = big {
            classes.push(big);
        }
        classes.push(result);
    }

    EvalResults {
        seed: config.seed,
        rates,
        classes,
        steps,
        ns_per_step: if steps > 0 {
            nanos as f64 / steps as f64
        } else {
            0.0
        },
    }
}

#[derive(Default)]
struct Tally {
    trials: usize,
    detected: usize,
    delays: Vec<f64>,
    start_errs: Vec<f64>,
    end_errs: Vec<f64>,
    within: usize,
    extra: usize,
}

impl Tally {
    /// Matches `truth` (onset, end as unix seconds) against the incidents:
    /// the first incident detected after the onset and at most 30 minutes
    /// after the end. Returns the matched incident's index.
    fn score(&mut self, incidents: &[Incident], onset: i64, end: i64) -> Option<usize> {
        self.trials += 1;
        let idx = incidents.iter().position(|i| {
            i.detected_at > onset && i.detected_at <= end + 1800 && i.started_at < end + 1800
        })?;
        let inc = &incidents[idx];
        self.detected += 1;
        self.delays.push((inc.detected_at - onset) as f64 / 60.0);
        let start_err = ((inc.started_at - onset) as f64 / 60.0).abs();
        self.start_errs.push(start_err);
        let end_err = inc.ended_at.map(|e| ((e - end) as f64 / 60.0).abs());
        if let Some(e) = end_err {
            self.end_errs.push(e);
        }
        if start_err <= 3.0 && end_err.is_some_and(|e| e <= 15.0) {
            self.within += 1;
        }
        Some(idx)
    }

    fn result(mut self, class: &ClassSpec, name: String, multiplier: f64) -> ClassResult {
        ClassResult {
            name,
            per_day: class.per_day,
            multiplier,
            trials: self.trials,
            detected: self.detected,
            recall: if self.trials > 0 {
                self.detected as f64 / self.trials as f64
            } else {
                0.0
            },
            delay_median: quantile(&mut self.delays, 0.5),
            delay_p90: quantile(&mut self.delays, 0.9),
            delay_max: quantile(&mut self.delays, 1.0),
            start_err_median: quantile(&mut self.start_errs, 0.5),
            start_err_p90: quantile(&mut self.start_errs, 0.9),
            end_err_median: quantile(&mut self.end_errs, 0.5),
            end_err_p90: quantile(&mut self.end_errs, 0.9),
            within_bounds: if self.detected > 0 {
                Some(self.within as f64 / self.detected as f64)
            } else {
                None
            },
            extra_incidents: self.extra,
        }
    }
}

/// Runs the scopes of one class. Returns the class result, the result of
/// the preceding big outages (if the class has them), steps and nanoseconds.
fn run_class(
    class: &ClassSpec,
    config: &EvalConfig,
    params: &DetectorParams,
    fleet: &FleetProfile,
    rng: &mut Rng,
) -> (ClassResult, Option<ClassResult>, u64, u128) {
    let per_scope = config.outages_per_scope.max(1);
    let scopes = config.trials_per_class.div_ceil(per_scope);
    // Two days between outages; four when a big one comes the day before.
    let spacing = if class.after_big.is_some() { 4 } else { 2 };
    let mut tally = Tally::default();
    let mut big_tally = Tally::default();
    let (mut steps, mut nanos) = (0, 0);
    let mut done = 0;
    for s in 0..scopes {
        let n = per_scope.min(config.trials_per_class - done);
        done += n;
        let days = config.warmup_days + n * spacing + 1;
        let mut spec = SeriesSpec::ordinary(class.per_day, days, noise_for(s));
        spec.peak_hour = class.peak_hour;
        let mut truths = Vec::new();
        let mut bigs = Vec::new();
        for k in 0..n {
            let mut day = config.warmup_days + k * spacing;
            let latest = MINUTES_PER_DAY - class.minutes.max(class.after_big.map_or(0, |b| b.1));
            let minute_of_day = rng.below(latest as u64) as usize;
            if let Some((mult, minutes)) = class.after_big {
                let start = day * MINUTES_PER_DAY + minute_of_day;
                spec.outages.push(Outage {
                    start,
                    minutes,
                    multiplier: mult,
                    extra_per_min: 0.0,
                });
                bigs.push((start, minutes));
                day += 1;
            }
            let start = day * MINUTES_PER_DAY + minute_of_day;
            spec.outages.push(Outage {
                start,
                minutes: class.minutes,
                multiplier: class.multiplier,
                extra_per_min: class.extra_total / class.minutes as f64,
            });
            truths.push((start, class.minutes));
        }
        let counts = spec.generate(rng);
        let run = run_scope(&counts, params, fleet, config.warmup_days * MINUTES_PER_DAY);
        steps += run.steps;
        nanos += run.nanos;
        let to_secs = |m: usize| SERIES_EPOCH + 60 * m as i64;
        let mut matched = vec![false; run.incidents.len()];
        for &(start, minutes) in &bigs {
            if let Some(i) =
                big_tally.score(&run.incidents, to_secs(start), to_secs(start + minutes))
            {
                matched[i] = true;
            }
        }
        for &(start, minutes) in &truths {
            // A big outage's incident must not count as detecting the small one.
            let (idx, list): (Vec<usize>, Vec<Incident>) = run
                .incidents
                .iter()
                .enumerate()
                .filter(|(i, _)| !matched[*i])
                .map(|(i, x)| (i, x.clone()))
                .unzip();
            if let Some(j) = tally.score(&list, to_secs(start), to_secs(start + minutes)) {
                matched[idx[j]] = true;
            }
        }
        let judged_from = to_secs(config.warmup_days * MINUTES_PER_DAY);
        tally.extra += run
            .incidents
            .iter()
            .zip(&matched)
            .filter(|(i, m)| !**m && i.detected_at > judged_from)
            .count();
    }
    let big = class.after_big.map(|(mult, minutes)| {
        big_tally.result(
            class,
            format!(
                "x{mult}, {} h, {}/day (the big one before)",
                minutes / 60,
                fmt_rate(class.per_day)
            ),
            mult,
        )
    });
    (
        tally.result(class, class.name.to_string(), class.multiplier),
        big,
        steps,
        nanos,
    )
}

fn fmt_rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.0}"))
}

fn find<'a>(r: &'a EvalResults, prefix: &str) -> Option<&'a ClassResult> {
    r.classes.iter().find(|c| c.name.starts_with(prefix))
}

/// The targets of issue 3, each checked against the results.
pub fn targets(r: &EvalResults) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let worst = r.rates.iter().map(|x| x.per_1000_days).fold(0.0, f64::max);
    out.push(TargetCheck {
        target: "≤ 1 false incident per 1,000 ordinary service-days at every rate".into(),
        met: worst <= 1.0,
        measured: format!("worst rate: {worst:.2} per 1,000"),
    });
    let bursts: Vec<&ClassResult> = r
        .classes
        .iter()
        .filter(|c| c.multiplier >= 1000.0)
        .collect();
    let burst_ok = bursts
        .iter()
        .all(|c| c.recall >= 1.0 && c.delay_max.is_some_and(|d| d <= 1.0));
    out.push(TargetCheck {
        target: "x1000 bursts detected within 1 minute of onset".into(),
        met: !bursts.is_empty() && burst_ok,
        measured: bursts
            .iter()
            .map(|c| {
                format!(
                    "{}: recall {:.0}%, max delay {} min",
                    c.name,
                    c.recall * 100.0,
                    opt(c.delay_max)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    });
    if let Some(c) = find(r, "x3, 30 min, 2,000/day") {
        out.push(TargetCheck {
            target: "x3 half-hours at 2,000/day: every one detected, median delay ≤ 5 min".into(),
            met: c.recall >= 1.0 && c.delay_median.is_some_and(|d| d <= 5.0),
            measured: format!(
                "recall {:.0}%, median delay {} min",
                c.recall * 100.0,
                opt(c.delay_median)
            ),
        });
    }
    if let Some(c) = find(r, "x2, 30 min, 2,000/day") {
        out.push(TargetCheck {
            target: "x2 half-hours at 2,000/day: ≥ 80% detected".into(),
            met: c.recall >= 0.8,
            measured: format!("recall {:.0}%", c.recall * 100.0),
        });
    }
    if let Some(c) = find(r, "+15 reports") {
        out.push(TargetCheck {
            target: "15 extra reports in half an hour on a 5/day service detected".into(),
            met: c.recall >= 0.95,
            measured: format!(
                "recall {:.0}%, median delay {} min",
                c.recall * 100.0,
                opt(c.delay_median)
            ),
        });
    }
    if let Some(c) = r.classes.iter().find(|c| c.name.contains("a day after")) {
        out.push(TargetCheck {
            target: "the small outage a day after a big one detected".into(),
            met: c.recall >= 0.95,
            measured: format!("recall {:.0}%", c.recall * 100.0),
        });
    }
    let big: Vec<&ClassResult> = r.classes.iter().filter(|c| c.multiplier >= 5.0).collect();
    let worst_within = big
        .iter()
        .filter_map(|c| c.within_bounds)
        .fold(1.0, f64::min);
    out.push(TargetCheck {
        target: "start within 3 min and end within 15 min for outages ≥ x5 (≥ 95% of detections)"
            .into(),
        met: worst_within >= 0.95,
        measured: big
            .iter()
            .map(|c| {
                let w = c
                    .within_bounds
                    .map_or_else(|| "–".to_string(), |w| format!("{:.0}%", w * 100.0));
                format!("{}: {w}", c.name)
            })
            .collect::<Vec<_>>()
            .join("; "),
    });
    out.push(TargetCheck {
        target: "≤ 100 µs CPU per minute-step per scope".into(),
        met: r.ns_per_step <= 100_000.0,
        measured: format!("{:.2} µs", r.ns_per_step / 1000.0),
    });
    out
}

/// The results as Markdown tables (the table in docs/detection.md).
pub fn render_markdown(r: &EvalResults) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Seed {}; {} minute-steps; detector CPU {:.2} µs per minute-step per scope.\n",
        r.seed,
        r.steps,
        r.ns_per_step / 1000.0
    );
    let _ = writeln!(
        s,
        "**False incidents on ordinary series** (half Poisson, half negative binomial r = {NB_R}; daily ±70%, weekends 70%, 5% day-to-day jitter):\n"
    );
    let _ = writeln!(
        s,
        "| series | judged service-days | false incidents | per 1,000 service-days | warning min/day | cold start (first days, no history) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for x in &r.rates {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} | {:.2} | {:.1} | {} in {:.0} days |",
            x.label,
            x.service_days,
            x.false_incidents,
            x.per_1000_days,
            x.warning_minutes_per_day,
            x.cold_false_incidents,
            x.cold_service_days
        );
    }
    let _ = writeln!(
        s,
        "\n**Injected outages** (onset uniform over the day; delay = `detected_at` − onset; errors are absolute, in minutes):\n"
    );
    let _ = writeln!(
        s,
        "| outage | trials | recall | delay median | delay p90 | delay max | start err median / p90 | end err median / p90 | start ≤3 & end ≤15 | extra incidents |"
    );
    let _ = writeln!(
        s,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for c in &r.classes {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0}% | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            c.name,
            c.trials,
            c.recall * 100.0,
            opt(c.delay_median),
            opt(c.delay_p90),
            opt(c.delay_max),
            opt(c.start_err_median),
            opt(c.start_err_p90),
            opt(c.end_err_median),
            opt(c.end_err_p90),
            c.within_bounds
                .map_or_else(|| "–".to_string(), |w| format!("{:.0}%", w * 100.0)),
            c.extra_incidents
        );
    }
    let _ = writeln!(s, "\n**Targets of issue 3:**\n");
    let _ = writeln!(s, "| target | met | measured |");
    let _ = writeln!(s, "| --- | --- | --- |");
    for t in targets(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t.target,
            if t.met { "yes" } else { "**no**" },
            t.measured
        );
    }
    s
}
