//! The spike detector core (see docs/detection.md).
//!
//! Pure and synchronous: the caller feeds per-minute counts of one *scope*
//! (a service's global rate, or one service and country) to a
//! [`ScopeDetector`], which keeps a seasonal [`Baseline`], tests the recent
//! windows for a significant rise and reports level changes and incident
//! transitions. Everything is serialisable, so a live loop can persist the
//! states and restore them after a restart, and `downwatch detect` over
//! stored rollups runs exactly the same code.
//!
//! ```
//! use downwatch_core::detector::{DetectorParams, FleetProfile, ScopeDetector};
//! let params = DetectorParams::default();
//! let fleet = FleetProfile::flat();
//! let mut scope = ScopeDetector::new();
//! let step = scope.step(&params, &fleet, 1_666_681_200, 3).unwrap();
//! assert!(step.events.is_empty());
//! ```

mod baseline;
pub mod eval;
mod params;
mod scope;
mod series;

pub use baseline::{Baseline, Expectation, FleetProfile, hour_of, weekday_of};
pub use params::{DetectorParams, ParamsError};
pub use scope::{
    DetectorError, Incident, IncidentEvent, ScopeDetector, Step, Transition, nb_llr,
    open_threshold, poisson_llr,
};
pub use series::{detect_series, detect_series_with, to_minutes};

/// Minutes of recent counts a scope keeps (windows, back-dating the start,
/// finding the end, reopening).
pub const RING_MINUTES: usize = 128;
/// Longest test window, in minutes.
pub const MAX_WINDOW: usize = RING_MINUTES / 2;

#[cfg(test)]
mod tests;
