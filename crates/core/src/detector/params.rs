//! Every tunable of the detector, with its default and the reason for it.

use serde::{Deserialize, Serialize};

use super::MAX_WINDOW;

/// A parameter set that cannot work (checked by [`DetectorParams::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid detector parameter {field}: {message}")]
pub struct ParamsError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> ParamsError {
    ParamsError {
        field,
        message: message.into(),
    }
}

/// The detector's parameters. One set serves every scope: the defaults are
/// meant to work without per-service tuning (see docs/detection.md, where the
/// evaluation that chose them is reproduced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectorParams {
    // ---- significance test -------------------------------------------------
    /// Window lengths, in minutes, over which counts are tested. Default
    /// `[1, 5, 15, 30, 60]`: 1 minute catches huge bursts at once, 60 minutes
    /// catches modest rises on small services; 30 was added to the usual
    /// 1/5/15/60 because half-hour outages are common and a window matching
    /// their length has the most power. At most 64 minutes each.
    pub windows: Vec<u32>,
    /// Overdispersion-corrected log likelihood ratio needed to open an
    /// incident. Default 14: `exp(-14)` ≈ 8e-7 bounds the Poisson tail of one
    /// window; with ~7,000 tests a day that keeps the measured false-incident
    /// rate under 1 per 1,000 service-days while x3 half-hours at 2,000
    /// reports a day are still caught in a few minutes.
    pub open_g: f64,
    /// Reports needed in the firing window to open an incident. Default 6:
    /// a handful of reports on a sparse service are too often one office or
    /// one family, whatever the p-value says.
    pub open_min_count: u32,
    /// Ratio of reports to expected reports needed in the firing window to
    /// open. Default 1.6: large services are so precisely measured that a 10%
    /// rise is "significant"; an outage has to be a clear multiple. Below 2 so
    /// that a x2 outage, whose windows fluctuate around ratio 2, still fires.
    pub open_min_ratio: f64,
    /// Likelihood ratio for level `warning`. Default 9 (p ≲ 1e-4 per window):
    /// a hint worth showing, not worth an incident.
    pub warn_g: f64,
    /// Reports needed in a window for `warning`. Default 4.
    pub warn_min_count: u32,
    /// Ratio needed for `warning`. Default 1.4.
    pub warn_min_ratio: f64,

    // ---- baseline ----------------------------------------------------------
    /// Lowest expected count per minute. Default 1/1440 (one report a day):
    /// services that get almost nothing must not make one report look like an
    /// infinite rise.
    pub floor_per_min: f64,
    /// Time constant of the level, in minutes. Default 4,320 (3 days): slow
    /// enough that one bad afternoon moves it little, fast enough to follow a
    /// service that grows.
    pub level_tau_minutes: f64,
    /// Time constant of the hour-of-day profile, in days. Default 14: each
    /// hour slot sees only 60 minutes a day, so it needs weeks of memory.
    pub hour_tau_days: f64,
    /// Time constant of the day-of-week profile, in days. Default 56 (8
    /// weeks): each weekday is seen once a week.
    pub dow_tau_days: f64,
    /// Time constant of the dispersion estimate, in minutes. Default 4,320.
    pub dispersion_tau_minutes: f64,
    /// Reports behind a scope's own hour profile at which it gets half the
    /// weight against the fleet profile (`w = n / (n + k)`). Default 2,000:
    /// with 2,000 reports an hour slot holds ~80, a ~11% estimate.
    pub shrink_hour_reports: f64,
    /// The same for the day-of-week profile. Default 5,000 (each weekday
    /// holds a seventh of the reports).
    pub shrink_dow_reports: f64,
    /// Counts are clipped at `mu + clip_sd * sd + clip_slack` before they are
    /// learnt. Default 3.
    pub clip_sd: f64,
    /// Default 1: without it every report of a sparse series would be clipped
    /// and its baseline would sink (a trap found in the notes).
    pub clip_slack: f64,
    /// Bounds of the learnt `1/r` (negative-binomial `Var = mu + mu^2 / r`).
    /// Default 0.0: Poisson is the least dispersion we assume.
    pub inv_r_min: f64,
    /// Default 4.0: beyond that the estimate is noise, not burstiness.
    pub inv_r_max: f64,
    /// Pseudo-reports added to the count behind the level when turning level
    /// uncertainty into extra variance (`Var += M^2 / (n + n0)`). Default 10.
    pub level_prior_reports: f64,

    // ---- warm-up -----------------------------------------------------------
    /// Minutes of own history after which the scope is trusted fully.
    /// Default 1,440 (one day). Before that the reports needed to open fall
    /// geometrically from `cold_min_count` to `open_min_count`, and learning
    /// goes on during an open incident so that a cold start cannot freeze an
    /// empty baseline.
    pub warmup_minutes: u32,
    /// Reports in one window that open an incident on a scope with no
    /// history at all (the absolute-volume rule). Default 300: "hundreds of
    /// reports within minutes on a new service is an outage".
    pub cold_min_count: u32,
    /// Minutes an incident may stay open before learning resumes (a safety
    /// valve for a permanent change of level). Default 1,440.
    pub resume_learning_after_minutes: u32,

    // ---- incident lifecycle ------------------------------------------------
    /// Window, in minutes, of the calm test. Default 15.
    pub calm_window: u32,
    /// Consecutive calm minutes that close an incident. Default 30.
    pub calm_minutes: u32,
    /// A minute is calm when the calm window's count is at most
    /// `max(calm_ratio * M, M + calm_sd * sd) + calm_slack`. Default 1.5.
    pub calm_ratio: f64,
    /// Default 3.
    pub calm_sd: f64,
    /// Default 2 (so a sparse service is calm with a straggler or two).
    pub calm_slack: f64,
    /// Minutes after a resolution during which a new significant rise
    /// reopens the same incident. Default 60.
    pub reopen_grace_minutes: u32,
    /// Gaps longer than this (minutes without any data point) are not filled
    /// with zeros: the open incident is closed and the windows restart.
    /// Default 10,080 (a week): a sparse service may get no report for days.
    pub max_gap_minutes: u32,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            windows: vec![1, 5, 15, 30, 60],
            open_g: 14.0,
            open_min_count: 6,
            open_min_ratio: 1.6,
            warn_g: 9.0,
            warn_min_count: 4,
            warn_min_ratio: 1.4,
            floor_per_min: 1.0 / 1440.0,
            level_tau_minutes: 4320.0,
            hour_tau_days: 14.0,
            dow_tau_days: 56.0,
            dispersion_tau_minutes: 4320.0,
            shrink_hour_reports: 2000.0,
            shrink_dow_reports: 5000.0,
            clip_sd: 3.0,
            clip_slack: 1.0,
            inv_r_min: 0.0,
            inv_r_max: 4.0,
            level_prior_reports: 10.0,
            warmup_minutes: 1440,
            cold_min_count: 300,
            resume_learning_after_minutes: 1440,
            calm_window: 15,
            calm_minutes: 30,
            calm_ratio: 1.5,
            calm_sd: 3.0,
            calm_slack: 2.0,
            reopen_grace_minutes: 60,
            max_gap_minutes: 10_080,
        }
    }
}

impl DetectorParams {
    /// Checks that the set can work; the detector assumes it was checked.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let max_window = MAX_WINDOW as u32;
        if self.windows.is_empty() {
            return Err(bad("windows", "needs at least one window"));
        }
        if self.windows.iter().any(|&w| w == 0 || w > max_window) {
            return Err(bad("windows", format!("each must be 1..={max_window}")));
        }
        if self.calm_window == 0 || self.calm_window > max_window {
            return Err(bad("calm_window", format!("must be 1..={max_window}")));
        }
        if self.calm_minutes == 0 {
            return Err(bad("calm_minutes", "must be at least 1"));
        }
        let positive = [
            ("open_g", self.open_g),
            ("warn_g", self.warn_g),
            ("open_min_ratio", self.open_min_ratio),
            ("warn_min_ratio", self.warn_min_ratio),
            ("floor_per_min", self.floor_per_min),
            ("level_tau_minutes", self.level_tau_minutes),
            ("hour_tau_days", self.hour_tau_days),
            ("dow_tau_days", self.dow_tau_days),
            ("dispersion_tau_minutes", self.dispersion_tau_minutes),
            ("shrink_hour_reports", self.shrink_hour_reports),
            ("shrink_dow_reports", self.shrink_dow_reports),
            ("calm_ratio", self.calm_ratio),
            ("level_prior_reports", self.level_prior_reports),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(field, "must be a positive number"));
            }
        }
        let non_negative = [
            ("clip_sd", self.clip_sd),
            ("clip_slack", self.clip_slack),
            ("inv_r_min", self.inv_r_min),
            ("inv_r_max", self.inv_r_max),
            ("calm_sd", self.calm_sd),
            ("calm_slack", self.calm_slack),
        ];
        for (field, v) in non_negative {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(field, "must be a non-negative number"));
            }
        }
        if self.inv_r_min > self.inv_r_max {
            return Err(bad("inv_r_min", "must not exceed inv_r_max"));
        }
        if self.open_g < self.warn_g {
            return Err(bad("open_g", "must be at least warn_g"));
        }
        Ok(())
    }
}
