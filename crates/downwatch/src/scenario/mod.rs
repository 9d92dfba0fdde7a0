//! Scenarios: a small TOML description of services' ordinary reports (a
//! rate with its daily and weekly rhythm, problem and place mixes) and of
//! outages (start, shape, size, problem mix, places, and when each place
//! recovers), with the incidents detection is expected to find. A seeded
//! generator ([`generate`]) turns one into reports, the same every time.
//! The format is documented in docs/scenarios.md; the bundled scenarios are
//! the files of `scenarios/`, compiled into the binary.

mod format;
pub mod generate;

pub use format::{Expectation, Outage, Place, Rhythm, Scenario, ServiceSpec};
pub use generate::{Report, Reports, generate};

use anyhow::{Context, bail};
use std::path::Path;

/// The bundled scenarios: (name, TOML). The first four are the outages
/// (and the quiet stretch) detection is tested against; `demo` is what
/// `downwatch demo` plays.
pub const BUNDLED: [(&str, &str); 5] = [
    (
        "worldwide-messaging",
        include_str!("../../../../scenarios/worldwide-messaging.toml"),
    ),
    (
        "regional-europe",
        include_str!("../../../../scenarios/regional-europe.toml"),
    ),
    (
        "small-service-partial",
        include_str!("../../../../scenarios/small-service-partial.toml"),
    ),
    (
        "quiet-week",
        include_str!("../../../../scenarios/quiet-week.toml"),
    ),
    ("demo", include_str!("../../../../scenarios/demo.toml")),
];

/// A scenario by bundled name, or from a file path.
pub fn load(name_or_path: &str) -> anyhow::Result<Scenario> {
    if let Some((name, text)) = BUNDLED.iter().find(|(n, _)| *n == name_or_path) {
        return Scenario::parse(text, name).with_context(|| format!("bundled scenario {name}"));
    }
    let path = Path::new(name_or_path);
    if !path.is_file() {
        let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
        bail!(
            "{name_or_path:?} is neither a bundled scenario ({}) nor a readable file",
            names.join(", ")
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let stem = path.file_stem().map_or_else(
        || "scenario".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    Scenario::parse(&text, &stem).with_context(|| format!("{}", path.display()))
}

/// A duration such as `14d 8h30m`, `90s` or `0m`: whole numbers with the
/// units d, h, m and s, in that order, spaces allowed. Returns seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let expected = || format!("expected a duration such as \"14d 8h30m\" or \"45m\", got {s:?}");
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut last_unit = 0usize;
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else if c.is_whitespace() {
            if !number.is_empty() {
                return Err(expected());
            }
        } else {
            let (rank, unit) = match c {
                'd' => (1, 86_400),
                'h' => (2, 3_600),
                'm' => (3, 60),
                's' => (4, 1),
                _ => return Err(expected()),
            };
            if number.is_empty() || rank <= last_unit {
                return Err(expected());
            }
            let n: i64 = number.parse().map_err(|_| expected())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(expected)?;
            number.clear();
            last_unit = rank;
            any = true;
        }
    }
    if !any || !number.is_empty() {
        return Err(expected());
    }
    Ok(total)
}

/// A duration written back in the form [`parse_duration`] reads.
pub fn format_duration(secs: i64) -> String {
    let mut out = String::new();
    let mut rest = secs.max(0);
    for (unit, width) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if rest >= width {
            out.push_str(&format!("{}{unit}", rest / width));
            rest %= width;
        }
    }
    if out.is_empty() {
        out.push_str("0m");
    }
    out
}

/// One incident found by detection, as [`check`] compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub service: String,
    pub scope: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// Compares incidents found over a scenario (unix seconds) with what it
/// expects: every expectation must be met by one incident of its service
/// and scope whose start and end are within the scenario's tolerance, and
/// no other incident may have been found. Returns what is wrong, one line
/// each (empty when all is well).
pub fn check(scenario: &Scenario, found: &[Found]) -> Vec<String> {
    let tol = scenario.tolerance;
    let mut problems = Vec::new();
    let mut used = vec![false; found.len()];
    for e in &scenario.expect {
        let start = scenario.start + e.start;
        let end = scenario.start + e.end;
        let hit = found.iter().enumerate().position(|(i, f)| {
            !used[i]
                && f.service == e.service
                && f.scope == e.scope
                && (f.started_at - start).abs() <= tol
                && f.ended_at.is_some_and(|t| (t - end).abs() <= tol)
        });
        match hit {
            Some(i) => used[i] = true,
            None => {
                let near: Vec<String> = found
                    .iter()
                    .filter(|f| f.service == e.service && f.scope == e.scope)
                    .map(|f| describe(scenario, f))
                    .collect();
                problems.push(format!(
                    "expected {} {} from {} to {} (± {}); found {}",
                    e.service,
                    e.scope,
                    format_duration(e.start),
                    format_duration(e.end),
                    format_duration(tol),
                    if near.is_empty() {
                        "none of that service and scope".to_owned()
                    } else {
                        near.join(", ")
                    }
                ));
            }
        }
    }
    for (f, used) in found.iter().zip(used) {
        if !used {
            problems.push(format!("unexpected incident {}", describe(scenario, f)));
        }
    }
    problems
}

fn describe(scenario: &Scenario, f: &Found) -> String {
    let at = |t: i64| format_duration(t - scenario.start);
    format!(
        "{} {} from {} to {}",
        f.service,
        f.scope,
        at(f.started_at),
        f.ended_at.map_or_else(|| "(open)".to_owned(), at)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_read_days_hours_minutes_and_seconds_in_order() {
        assert_eq!(
            parse_duration("14d 8h30m").unwrap(),
            14 * 86_400 + 8 * 3600 + 1800
        );
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration(" 2h ").unwrap(), 7200);
        assert_eq!(parse_duration("0m").unwrap(), 0);
        for bad in [
            "",
            "5",
            "m",
            "1x",
            "30m 2h",
            "1h1h",
            "-5m",
            "1 h",
            "999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for secs in [0, 59, 60, 3661, 14 * 86_400 + 8 * 3600 + 1800] {
            assert_eq!(parse_duration(&format_duration(secs)).unwrap(), secs);
        }
    }

    #[test]
    fn every_bundled_scenario_loads() {
        for (name, _) in BUNDLED {
            let s = load(name).unwrap();
            assert_eq!(s.name, name);
            assert!(!s.services.is_empty());
        }
        assert!(load("no-such-scenario").is_err());
    }
}
