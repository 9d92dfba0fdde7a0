//! What time it is for the server: the system clock, or a simulated clock
//! that starts at a chosen instant and runs `speed` times faster than real
//! time (demos and tests only, see `DOWNWATCH_CLOCK`).
//!
//! Reports are stamped by the server, and detection learns from weeks of
//! history, so a scenario can only be replayed over HTTP faster than real
//! time if the server's clock moves with the replay: every place that reads
//! "now" for reports, detection and the read side asks a [`Clock`].

use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clock {
    /// The system's UTC clock.
    #[default]
    System,
    /// `origin` at the real instant `started`, then `speed` simulated
    /// seconds per real second.
    Simulated {
        origin: DateTime<Utc>,
        started: Instant,
        speed: f64,
    },
}

/// The fastest simulated clock accepted: a day in under nine seconds.
pub const MAX_SPEED: f64 = 10_000.0;

impl Clock {
    /// A simulated clock that reads `origin` now.
    pub fn simulated(origin: DateTime<Utc>, speed: f64) -> Self {
        Clock::Simulated {
            origin,
            started: Instant::now(),
            speed,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Simulated {
                origin,
                started,
                speed,
            } => {
                let real = started.elapsed().as_secs_f64() * speed;
                let micros = (real * 1e6).min(i64::MAX as f64) as i64;
                *origin + chrono::Duration::microseconds(micros)
            }
        }
    }

    /// Unix seconds now.
    pub fn timestamp(&self) -> i64 {
        self.now().timestamp()
    }

    /// Simulated seconds per real second (1 for the system clock).
    pub fn speed(&self) -> f64 {
        match self {
            Clock::System => 1.0,
            Clock::Simulated { speed, .. } => *speed,
        }
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Clock::Simulated { .. })
    }

    /// How much clock time passes during `real` (whole seconds, at least
    /// the real ones): delays meant in real time, such as letting a batch
    /// commit before its minute is read, span more clock time when the
    /// clock runs fast.
    pub fn span(&self, real: Duration) -> i64 {
        (real.as_secs_f64() * self.speed().max(1.0)).ceil() as i64
    }

    /// Parses `START@SPEED` (`2024-03-18T00:00:00Z@60`, or `now@60`):
    /// `START` an RFC 3339 time or `now`, `SPEED` a number from 0.01 to
    /// [`MAX_SPEED`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let expected = "expected START@SPEED such as 2024-03-18T00:00:00Z@60 or now@60";
        let (start, speed) = s
            .trim()
            .rsplit_once('@')
            .ok_or_else(|| expected.to_owned())?;
        let origin = if start.trim() == "now" {
            Utc::now()
        } else {
            DateTime::parse_from_rfc3339(start.trim())
                .map_err(|_| format!("{expected}; {start:?} is not an RFC 3339 time"))?
                .with_timezone(&Utc)
        };
        let speed: f64 = speed
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && (0.01..=MAX_SPEED).contains(v))
            .ok_or_else(|| {
                format!("{expected}; the speed must be a number from 0.01 to {MAX_SPEED}")
            })?;
        Ok(Clock::simulated(origin, speed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_simulated_clock_starts_at_its_origin_and_runs_at_its_speed() {
        let origin = DateTime::parse_from_rfc3339("2024-03-18T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let started = Instant::now() - Duration::from_secs(2);
        let c = Clock::Simulated {
            origin,
            started,
            speed: 60.0,
        };
        let t = c.timestamp() - origin.timestamp();
        // Two real seconds and a little: two simulated minutes and a little.
        assert!((120..130).contains(&t), "{t}");
        assert_eq!(c.span(Duration::from_secs(2)), 120);
        assert_eq!(Clock::System.span(Duration::from_secs(2)), 2);
    }

    #[test]
    fn start_and_speed_are_parsed_and_bad_ones_refused() {
        let c = Clock::parse("2024-03-18T00:00:00Z@120").unwrap();
        assert!(c.is_simulated());
        assert_eq!(c.speed(), 120.0);
        assert!(c.timestamp() >= 1_710_720_000);
        assert!(Clock::parse(" now@2.5 ").unwrap().timestamp() >= Utc::now().timestamp() - 1);
        for bad in [
            "",
            "2024-03-18T00:00:00Z",
            "yesterday@10",
            "now@0",
            "now@-3",
            "now@fast",
            "now@1000000",
            "now@NaN",
        ] {
            assert!(Clock::parse(bad).is_err(), "{bad}");
        }
    }
}
