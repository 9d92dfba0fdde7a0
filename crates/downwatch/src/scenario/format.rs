//! The scenario file, parsed and checked into values the generator can use
//! without checking again. Times in the file are offsets from `start`
//! (durations such as `14d 8h30m`); here they are seconds.

use super::parse_duration;
use anyhow::{Context, bail};
use downwatch_core::{City, CountryCode, ProblemKind, Slug};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The longest scenario accepted.
const MAX_LENGTH_DAYS: i64 = 400;
/// A service's ordinary reports an hour, at most.
pub const MAX_PER_HOUR: f64 = 1e6;
/// An outage's extra reports a minute at its peak, at most.
pub const MAX_PEAK_PER_MIN: f64 = 1e5;
/// The reports a scenario may make, at most (by [`Scenario::report_bound`]):
/// a file from anyone must not make `replay` run for days.
pub const MAX_REPORTS: f64 = 5e7;
/// Services, outages, expectations, and places of one service or outage, at
/// most: the generator scans places for every report it draws.
const MAX_ITEMS: usize = 1000;

/// A typical day of reports, by UTC hour (mean 1): quiet at night, busy
/// from morning to evening.
const DAILY: [f64; 24] = [
    0.45, 0.35, 0.3, 0.3, 0.35, 0.5, 0.75, 1.0, 1.2, 1.3, 1.35, 1.35, 1.4, 1.35, 1.3, 1.3, 1.3,
    1.35, 1.4, 1.45, 1.4, 1.2, 0.95, 0.65,
];
/// Monday first (mean 1): a little quieter at the weekend.
const WEEKLY: [f64; 7] = [1.02, 1.02, 1.02, 1.02, 1.04, 0.94, 0.94];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: String,
    seed: u64,
    start: String,
    length: String,
    learn: Option<String>,
    tolerance: Option<String>,
    rhythm: Option<RawRhythm>,
    #[serde(default)]
    service: Vec<RawService>,
    #[serde(default)]
    outage: Vec<RawOutage>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawRhythm {
    daily: Option<Vec<f64>>,
    weekly: Option<Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    slug: String,
    name: Option<String>,
    per_hour: f64,
    problems: BTreeMap<String, f64>,
    #[serde(default)]
    places: Vec<RawPlace>,
    rhythm: Option<RawRhythm>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawPlace {
    country: Option<String>,
    city: Option<String>,
    weight: Option<f64>,
    end: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutage {
    service: String,
    start: String,
    rise: Option<String>,
    hold: String,
    fall: Option<String>,
    peak_per_min: f64,
    problems: Option<BTreeMap<String, f64>>,
    places: Option<Vec<RawPlace>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    service: String,
    scope: String,
    start: String,
    end: String,
}

/// Hourly and weekday factors, each scaled to a mean of 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Rhythm {
    pub daily: [f64; 24],
    pub weekly: [f64; 7],
}

impl Rhythm {
    /// The largest factor any minute can have.
    pub fn peak(&self) -> f64 {
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        max(&self.daily) * max(&self.weekly)
    }

    /// The factor of unix second `t`: the hourly factors are taken at the
    /// middle of their hour and interpolated between, so the rate has no
    /// steps on the hour.
    pub fn factor(&self, t: i64) -> f64 {
        let secs_of_day = t.rem_euclid(86_400) as f64;
        let pos = secs_of_day / 3600.0 - 0.5;
        let lo = pos.floor();
        let frac = pos - lo;
        let i = (lo as i64).rem_euclid(24) as usize;
        let j = (i + 1) % 24;
        let hour = self.daily[i] * (1.0 - frac) + self.daily[j] * frac;
        // 1970-01-01 was a Thursday: index 3 with Monday first.
        let weekday = (t.div_euclid(86_400) + 3).rem_euclid(7) as usize;
        hour * self.weekly[weekday]
    }
}

fn rhythm(raw: Option<&RawRhythm>, base: &Rhythm, at: &str) -> anyhow::Result<Rhythm> {
    let mut out = base.clone();
    let Some(raw) = raw else {
        return Ok(out);
    };
    if let Some(d) = &raw.daily {
        out.daily = normalised(d, at, "daily")?;
    }
    if let Some(w) = &raw.weekly {
        out.weekly = normalised(w, at, "weekly")?;
    }
    Ok(out)
}

fn normalised<const N: usize>(v: &[f64], at: &str, what: &str) -> anyhow::Result<[f64; N]> {
    let arr: [f64; N] = v
        .try_into()
        .map_err(|_| anyhow::anyhow!("{at}: rhythm.{what} needs {N} factors, found {}", v.len()))?;
    if arr.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        bail!("{at}: rhythm.{what} factors must be positive numbers");
    }
    let mean = arr.iter().sum::<f64>() / N as f64;
    if !mean.is_finite() {
        bail!("{at}: rhythm.{what} factors are too large");
    }
    Ok(arr.map(|x| x / mean))
}

/// Where reports come from, with a weight; `end` (seconds after an
/// outage's start) is when that place recovers, for outage places.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    pub weight: f64,
    pub end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub slug: Slug,
    pub name: String,
    /// Reports an hour on average over a week (the rhythm shapes it).
    pub per_hour: f64,
    /// Problem kinds and their weights.
    pub problems: Vec<(ProblemKind, f64)>,
    pub places: Vec<Place>,
    pub rhythm: Rhythm,
}

/// Extra reports on top of a service's ordinary ones: from `start` they
/// rise linearly to `peak_per_min` over `rise`, hold, and fall linearly to
/// nothing over `fall`. A place with an `end` starts falling then, instead
/// of after `rise + hold`. Times are seconds from the scenario's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    /// Index into [`Scenario::services`].
    pub service: usize,
    pub start: i64,
    pub rise: i64,
    pub hold: i64,
    pub fall: i64,
    pub peak_per_min: f64,
    pub problems: Vec<(ProblemKind, f64)>,
    pub places: Vec<Place>,
}

impl Outage {
    /// When a place starts falling, seconds after the outage's start.
    pub fn end_of(&self, place: &Place) -> i64 {
        place.end.unwrap_or(self.rise + self.hold)
    }

    /// The place's share of the peak (0 to 1) at `dt` seconds after the start.
    pub fn shape(&self, place: &Place, dt: i64) -> f64 {
        let end = self.end_of(place);
        if dt < 0 || dt >= end + self.fall {
            return 0.0;
        }
        let up = if self.rise == 0 || dt >= self.rise {
            1.0
        } else {
            dt as f64 / self.rise as f64
        };
        let down = if dt < end {
            1.0
        } else {
            1.0 - (dt - end) as f64 / self.fall.max(1) as f64
        };
        up.min(down).max(0.0)
    }
}

/// An incident detection should find: service, scope (`global` or a
/// country code), start and end in seconds from the scenario's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub service: String,
    pub scope: String,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// Unix seconds of "day 0".
    pub start: i64,
    /// Seconds.
    pub length: i64,
    /// The first `learn` seconds are history the detector learns from;
    /// detection is checked over the rest (default 14 days, the detector's
    /// warm-up).
    pub learn: i64,
    /// How far a found incident's start and end may be from the expected.
    pub tolerance: i64,
    pub services: Vec<ServiceSpec>,
    pub outages: Vec<Outage>,
    pub expect: Vec<Expectation>,
}

fn duration(s: &str, at: &str) -> anyhow::Result<i64> {
    parse_duration(s).map_err(|e| anyhow::anyhow!("{at}: {e}"))
}

/// A duration no longer than the scenario's `length`, so that sums of a
/// few of them cannot overflow.
fn within(s: &str, at: &str, length: i64) -> anyhow::Result<i64> {
    let d = duration(s, at)?;
    if d > length {
        bail!("{at}: longer than the scenario's length");
    }
    Ok(d)
}

fn problems(raw: &BTreeMap<String, f64>, at: &str) -> anyhow::Result<Vec<(ProblemKind, f64)>> {
    if raw.is_empty() {
        bail!("{at}: problems must name at least one problem kind");
    }
    raw.iter()
        .map(|(k, w)| {
            let kind =
                ProblemKind::parse(k).map_err(|e| anyhow::anyhow!("{at}: problems.{k}: {e}"))?;
            if !w.is_finite() || *w <= 0.0 {
                bail!("{at}: problems.{k}: the weight must be a positive number");
            }
            Ok((kind, *w))
        })
        .collect()
}

/// `places` of a service (`ends: None`) or of an outage (`ends`: the
/// scenario's length, which each place's end must not pass).
fn places(raw: &[RawPlace], at: &str, ends: Option<i64>) -> anyhow::Result<Vec<Place>> {
    if raw.len() > MAX_ITEMS {
        bail!("{at}.places: at most {MAX_ITEMS}");
    }
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{at}: places[{i}]");
            let country = p
                .country
                .as_deref()
                .map(CountryCode::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{at}.country: {e}"))?;
            let city = match &p.city {
                None => None,
                Some(c) => City::parse(c).map_err(|e| anyhow::anyhow!("{at}.city: {e}"))?,
            };
            if city.is_some() && country.is_none() {
                bail!("{at}: a city needs its country");
            }
            let weight = p.weight.unwrap_or(1.0);
            if !weight.is_finite() || weight <= 0.0 {
                bail!("{at}.weight: must be a positive number");
            }
            let end = match (&p.end, ends) {
                (None, _) => None,
                (Some(e), Some(length)) => Some(within(e, &format!("{at}.end"), length)?),
                (Some(_), None) => bail!("{at}.end: only an outage's places end"),
            };
            Ok(Place {
                country,
                city,
                weight,
                end,
            })
        })
        .collect()
}

impl Scenario {
    /// Parses and checks a scenario file; `default_name` names it when the
    /// file does not.
    pub fn parse(text: &str, default_name: &str) -> anyhow::Result<Self> {
        let raw: RawScenario = toml::from_str(text).context("not a valid scenario")?;
        let start = chrono::DateTime::parse_from_rfc3339(raw.start.trim())
            .with_context(|| format!("start: expected an RFC 3339 time, got {:?}", raw.start))?
            .timestamp();
        let length = duration(&raw.length, "length")?;
        if length <= 0 || length > MAX_LENGTH_DAYS * 86_400 {
            bail!("length: from a minute to {MAX_LENGTH_DAYS} days");
        }
        let learn = duration(raw.learn.as_deref().unwrap_or("14d"), "learn")?;
        if learn >= length {
            bail!("learn: must be shorter than the length, which it is the start of");
        }
        let tolerance = within(
            raw.tolerance.as_deref().unwrap_or("10m"),
            "tolerance",
            length,
        )?;
        for (n, what) in [
            (raw.service.len(), "[[service]]"),
            (raw.outage.len(), "[[outage]]"),
            (raw.expect.len(), "[[expect]]"),
        ] {
            if n > MAX_ITEMS {
                bail!("{what}: at most {MAX_ITEMS}");
            }
        }
        let base = rhythm(
            raw.rhythm.as_ref(),
            &Rhythm {
                daily: DAILY,
                weekly: WEEKLY,
            },
            "rhythm",
        )?;
        let base = Rhythm {
            daily: normalised(&base.daily, "rhythm", "daily")?,
            weekly: normalised(&base.weekly, "rhythm", "weekly")?,
        };
        if raw.service.is_empty() {
            bail!("a scenario needs at least one [[service]]");
        }
        let mut services: Vec<ServiceSpec> = Vec::with_capacity(raw.service.len());
        for (i, s) in raw.service.iter().enumerate() {
            let at = format!("service[{i}] ({})", s.slug);
            let slug = Slug::parse(&s.slug).map_err(|e| anyhow::anyhow!("{at}.slug: {e}"))?;
            if services.iter().any(|o| o.slug == slug) {
                bail!("{at}: the slug appears twice");
            }
            if !s.per_hour.is_finite() || !(0.0..=MAX_PER_HOUR).contains(&s.per_hour) {
                bail!(
                    "{at}.per_hour: must be a number of reports an hour, from 0 to {MAX_PER_HOUR}"
                );
            }
            let name = match &s.name {
                Some(n) => {
                    downwatch_core::parse_name(n).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?
                }
                None => s.slug.clone(),
            };
            let mut spec_places = places(&s.places, &at, None)?;
            if spec_places.is_empty() {
                spec_places.push(Place {
                    country: None,
                    city: None,
                    weight: 1.0,
                    end: None,
                });
            }
            services.push(ServiceSpec {
                slug,
                name,
                per_hour: s.per_hour,
                problems: problems(&s.problems, &at)?,
                places: spec_places,
                rhythm: rhythm(s.rhythm.as_ref(), &base, &at)?,
            });
        }
        let mut outages = Vec::with_capacity(raw.outage.len());
        for (i, o) in raw.outage.iter().enumerate() {
            let at = format!("outage[{i}] ({})", o.service);
            let service = services
                .iter()
                .position(|s| s.slug.as_str() == o.service)
                .with_context(|| format!("{at}.service: not a [[service]] of this scenario"))?;
            // Each at most the length, so start + end + fall cannot overflow.
            let start = within(&o.start, &format!("{at}.start"), length)?;
            let rise = within(
                o.rise.as_deref().unwrap_or("0m"),
                &format!("{at}.rise"),
                length,
            )?;
            let hold = within(&o.hold, &format!("{at}.hold"), length)?;
            let fall = within(
                o.fall.as_deref().unwrap_or("0m"),
                &format!("{at}.fall"),
                length,
            )?;
            if !o.peak_per_min.is_finite()
                || o.peak_per_min <= 0.0
                || o.peak_per_min > MAX_PEAK_PER_MIN
            {
                bail!(
                    "{at}.peak_per_min: must be a positive number of reports a minute, at most \
                     {MAX_PEAK_PER_MIN}"
                );
            }
            let outage_places = match &o.places {
                Some(p) if !p.is_empty() => places(p, &at, Some(length))?,
                Some(_) => bail!("{at}.places: leave it out for the service's places"),
                None => services[service].places.clone(),
            };
            let outage = Outage {
                service,
                start,
                rise,
                hold,
                fall,
                peak_per_min: o.peak_per_min,
                problems: match &o.problems {
                    Some(p) => problems(p, &at)?,
                    None => services[service].problems.clone(),
                },
                places: outage_places,
            };
            let last = outage
                .places
                .iter()
                .map(|p| outage.end_of(p))
                .max()
                .unwrap_or(0);
            if start + last + fall > length {
                bail!("{at}: the outage must lie within the scenario's length");
            }
            outages.push(outage);
        }
        let mut expect = Vec::with_capacity(raw.expect.len());
        for (i, e) in raw.expect.iter().enumerate() {
            let at = format!("expect[{i}] ({} {})", e.service, e.scope);
            if !services.iter().any(|s| s.slug.as_str() == e.service) {
                bail!("{at}.service: not a [[service]] of this scenario");
            }
            if e.scope != downwatch_core::GLOBAL_SCOPE {
                CountryCode::parse(&e.scope).map_err(|m| anyhow::anyhow!("{at}.scope: {m}"))?;
            }
            let start = within(&e.start, &format!("{at}.start"), length)?;
            let end = within(&e.end, &format!("{at}.end"), length)?;
            if end <= start || start < learn || end > length {
                bail!(
                    "{at}: must start after the learnt history and end after it starts, within the length"
                );
            }
            expect.push(Expectation {
                service: e.service.clone(),
                scope: e.scope.clone(),
                start,
                end,
            });
        }
        let scenario = Scenario {
            name: raw.name.unwrap_or_else(|| default_name.to_owned()),
            description: raw.description.trim().to_owned(),
            seed: raw.seed,
            start,
            length,
            learn,
            tolerance,
            services,
            outages,
            expect,
        };
        // What each part may make, and the whole: refused above the limit,
        // naming the largest part.
        let parts = scenario.report_bounds();
        let total: f64 = parts.iter().map(|p| p.1).sum();
        if total > MAX_REPORTS {
            let (field, n) = parts
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .cloned()
                .unwrap_or_default();
            bail!(
                "{field}: the scenario would make up to about {:.0} reports ({:.0} from here), \
                 more than {MAX_REPORTS:.0}; lower it, or shorten the length",
                total,
                n
            );
        }
        Ok(scenario)
    }

    /// An upper bound of the reports each part makes (named by its field),
    /// from its rate at its peak: a service's `per_hour` times its
    /// rhythm's largest factor over the whole length, an outage's
    /// `peak_per_min` over its whole span.
    fn report_bounds(&self) -> Vec<(String, f64)> {
        let hours = self.length as f64 / 3600.0;
        let services = self.services.iter().enumerate().map(|(i, s)| {
            (
                format!("service[{i}] ({}).per_hour", s.slug),
                s.per_hour * s.rhythm.peak() * hours,
            )
        });
        let outages = self.outages.iter().enumerate().map(|(i, o)| {
            let last = o.places.iter().map(|p| o.end_of(p)).max().unwrap_or(0);
            (
                format!(
                    "outage[{i}] ({}).peak_per_min",
                    self.services[o.service].slug
                ),
                o.peak_per_min * (last + o.fall) as f64 / 60.0,
            )
        });
        services.chain(outages).collect()
    }

    /// An upper bound of the reports the whole scenario makes (at most
    /// [`MAX_REPORTS`] for a parsed one).
    pub fn report_bound(&self) -> f64 {
        self.report_bounds().iter().map(|p| p.1).sum()
    }

    /// The same scenario with "day 0" at `start` (unix seconds).
    pub fn starting_at(mut self, start: i64) -> Self {
        self.start = start;
        self
    }

    /// Unix seconds of the scenario's end.
    pub fn end(&self) -> i64 {
        self.start + self.length
    }

    /// Unix seconds of the end of the learnt history: where detection is checked from.
    pub fn checked_from(&self) -> i64 {
        self.start + self.learn
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SMALL: &str = r#"
        seed = 3
        start = "2024-03-04T00:00:00Z"
        length = "2d"
        learn = "1d"
        [[service]]
        slug = "acme"
        per_hour = 10
        problems = { login = 1 }
        places = [{ country = "FR", city = "Paris", weight = 2 }, {}]
        [[outage]]
        service = "acme"
        start = "1d 9h"
        rise = "10m"
        hold = "1h"
        fall = "20m"
        peak_per_min = 30
        places = [{ country = "FR", end = "30m" }, { country = "DE" }]
        [[expect]]
        service = "acme"
        scope = "global"
        start = "1d 9h"
        end = "1d 10h20m"
    "#;

    #[test]
    fn a_scenario_parses_into_seconds_and_checked_values() {
        let s = Scenario::parse(SMALL, "small").unwrap();
        assert_eq!(s.name, "small");
        assert_eq!(s.start, 1_709_510_400);
        assert_eq!(s.length, 2 * 86_400);
        assert_eq!(s.tolerance, 600);
        assert_eq!(s.services[0].places.len(), 2);
        let o = &s.outages[0];
        assert_eq!(
            (o.start, o.rise, o.hold, o.fall),
            (86_400 + 9 * 3600, 600, 3600, 1200)
        );
        assert_eq!(o.end_of(&o.places[0]), 1800);
        assert_eq!(o.end_of(&o.places[1]), 4200);
        // Rising, at its peak, falling, over.
        assert_eq!(o.shape(&o.places[1], 300), 0.5);
        assert_eq!(o.shape(&o.places[1], 3000), 1.0);
        assert_eq!(o.shape(&o.places[1], 4200 + 600), 0.5);
        assert_eq!(o.shape(&o.places[1], 4200 + 1200), 0.0);
        assert_eq!(o.shape(&o.places[0], 1800 + 600), 0.5);
        assert_eq!(s.expect[0].end, 86_400 + 10 * 3600 + 1200);
        let r = &s.services[0].rhythm;
        assert!((r.daily.iter().sum::<f64>() - 24.0).abs() < 1e-9);
        assert!((r.weekly.iter().sum::<f64>() - 7.0).abs() < 1e-9);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("seed = 1", "start"),
            (&SMALL.replace("per_hour = 10", "per_hour = -1"), "per_hour"),
            (&SMALL.replace("login = 1", "\"Bad Kind\" = 1"), "problems"),
            (
                &SMALL.replace("country = \"DE\"", "country = \"de\""),
                "country",
            ),
            (
                &SMALL.replace("start = \"1d 9h\"", "start = \"1d 23h\""),
                "within",
            ),
            (
                &SMALL.replace(
                    "service = \"acme\"\n        start",
                    "service = \"nope\"\n        start",
                ),
                "service",
            ),
            (
                &SMALL.replace("per_hour = 10", "per_hour = 10\n        colour = 1"),
                "colour",
            ),
            (
                &SMALL.replace("scope = \"global\"", "scope = \"world\""),
                "scope",
            ),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Scenario::parse(text, "x").unwrap_err());
            assert!(e.contains(needle), "{needle} not in: {e}");
        }
    }

    #[test]
    fn hostile_sizes_and_durations_are_refused_naming_the_field() {
        let cases = [
            (SMALL.replace("per_hour = 10", "per_hour = 2e6"), "per_hour"),
            (
                SMALL.replace("peak_per_min = 30", "peak_per_min = 1e6"),
                "peak_per_min",
            ),
            (
                SMALL.replace("hold = \"1h\"", "hold = \"106751991167300d\""),
                "hold: longer than the scenario's length",
            ),
            (
                SMALL.replace("end = \"30m\"", "end = \"9223372036854775807s\""),
                "places[0].end",
            ),
            (
                SMALL.replace("fall = \"20m\"", "fall = \"3d\""),
                "fall: longer",
            ),
            // 1e6 an hour for 2 days, at the rhythm's peak: ~73 million.
            (
                SMALL.replace("per_hour = 10", "per_hour = 1e6"),
                "service[0] (acme).per_hour: the scenario would make up to about",
            ),
            (
                SMALL
                    .replace("length = \"2d\"", "length = \"400d\"")
                    .replace("per_hour = 10", "per_hour = 1000")
                    .replace("peak_per_min = 30", "peak_per_min = 1e5")
                    .replace("hold = \"1h\"", "hold = \"20d\""),
                "outage[0] (acme).peak_per_min: the scenario would make",
            ),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Scenario::parse(&text, "x").unwrap_err());
            assert!(e.contains(needle), "{needle} not in: {e}");
        }
        // The bundled ones are well within.
        for (name, text) in crate::scenario::BUNDLED {
            let s = Scenario::parse(text, name).unwrap();
            assert!(s.report_bound() < 1e7, "{name}: {}", s.report_bound());
        }
    }

    mod properties {
        use super::super::*;
        use super::SMALL;
        use proptest::prelude::*;

        /// A duration as a file might give it: mostly sane, sometimes huge
        /// or malformed.
        fn a_duration() -> impl Strategy<Value = String> {
            prop_oneof![
                40 => (0u64..600).prop_map(|m| format!("{m}m")),
                2 => (0u64..500).prop_map(|d| format!("{d}d 3h")),
                1 => any::<u64>().prop_map(|n| format!("{n}s")),
                1 => any::<u64>().prop_map(|n| format!("{n}d")),
                1 => "[0-9dhms ]{0,12}",
            ]
        }

        /// A number as a file might give it: mostly sane, sometimes huge,
        /// negative, NaN or infinite.
        fn a_number() -> impl Strategy<Value = String> {
            prop_oneof![
                60 => (0.001f64..1e4).prop_map(|x| format!("{x:?}")),
                2 => (0.0f64..1e8).prop_map(|x| format!("{x:?}")),
                1 => any::<f64>().prop_map(|x| format!("{x:?}")),
                1 => Just("nan".to_owned()),
                1 => Just("inf".to_owned()),
                1 => Just("-inf".to_owned()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
            ]
            .prop_map(|s| s.replace("NaN", "nan"))
        }

        fn a_scenario() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    6 => (1u64..400).prop_map(|d| format!("{d}d")),
                    1 => a_duration(),
                ],
                a_number(),
                a_duration(),
                a_duration(),
                a_duration(),
                a_duration(),
                a_number(),
                a_duration(),
                proptest::option::weighted(0.2, proptest::collection::vec(a_number(), 24)),
            )
                .prop_map(
                    |(length, per_hour, start, rise, hold, fall, peak, end, daily)| {
                        let rhythm = daily.map_or_else(String::new, |d| {
                            format!("rhythm = {{ daily = [{}] }}", d.join(", "))
                        });
                        format!(
                            r#"
                            seed = 1
                            start = "2024-03-04T00:00:00Z"
                            length = "{length}"
                            learn = "1m"
                            {rhythm}
                            [[service]]
                            slug = "acme"
                            per_hour = {per_hour}
                            problems = {{ login = 1 }}
                            [[outage]]
                            service = "acme"
                            start = "{start}"
                            rise = "{rise}"
                            hold = "{hold}"
                            fall = "{fall}"
                            peak_per_min = {peak}
                            places = [{{ country = "FR", end = "{end}" }}, {{}}]
                            "#
                        )
                    },
                )
        }

        #[test]
        fn enough_generated_scenarios_are_accepted_for_the_limits_to_be_tested() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let strategy = a_scenario();
            let accepted = (0..500)
                .filter(|_| {
                    let text = strategy.new_tree(&mut runner).unwrap().current();
                    Scenario::parse(&text, "x").is_ok()
                })
                .count();
            assert!(accepted >= 75, "{accepted} of 500");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
                let _ = Scenario::parse(&text, "x");
            }

            #[test]
            fn the_parser_never_panics_on_a_scenario_with_a_part_replaced(
                at in 0..SMALL.len(),
                cut in 0usize..40,
                with in "[ -~\n]{0,40}",
            ) {
                let mut text = SMALL.to_owned();
                let end = (at + cut).min(text.len());
                text.replace_range(at..end, &with);
                let _ = Scenario::parse(&text, "x");
            }

            #[test]
            fn accepted_scenarios_stay_within_the_limits(text in a_scenario()) {
                if let Ok(s) = Scenario::parse(&text, "x") {
                    prop_assert!(s.length > 0 && s.length <= MAX_LENGTH_DAYS * 86_400);
                    prop_assert!(s.report_bound() <= MAX_REPORTS);
                    for sv in &s.services {
                        prop_assert!(sv.per_hour.is_finite());
                        prop_assert!((0.0..=MAX_PER_HOUR).contains(&sv.per_hour));
                        prop_assert!(sv.rhythm.peak().is_finite());
                    }
                    for o in &s.outages {
                        prop_assert!(o.peak_per_min > 0.0 && o.peak_per_min <= MAX_PEAK_PER_MIN);
                        let last = o.places.iter().map(|p| o.end_of(p)).max().unwrap_or(0);
                        let end = o.start.checked_add(last).and_then(|t| t.checked_add(o.fall));
                        prop_assert!(end.is_some_and(|e| e <= s.length));
                        // The generator's shape is a share of the peak.
                        for p in &o.places {
                            for dt in [0, o.rise / 2, o.rise, last, last + o.fall / 2] {
                                let x = o.shape(p, dt);
                                prop_assert!((0.0..=1.0).contains(&x), "{x}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_rhythm_is_interpolated_within_the_day_and_follows_the_weekday() {
        let r = Rhythm {
            daily: std::array::from_fn(|h| if h == 12 { 2.0 } else { 1.0 }),
            weekly: [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5],
        };
        let monday = 1_709_510_400; // 2024-03-04, a Monday
        assert_eq!(r.factor(monday + 12 * 3600 + 1800), 2.0);
        assert_eq!(r.factor(monday + 12 * 3600), 1.5);
        assert_eq!(r.factor(monday + 5 * 86_400 + 3 * 3600), 0.5);
    }
}
