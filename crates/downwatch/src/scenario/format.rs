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

fn places(raw: &[RawPlace], at: &str, ends: bool) -> anyhow::Result<Vec<Place>> {
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
                (Some(e), true) => Some(duration(e, &format!("{at}.end"))?),
                (Some(_), false) => bail!("{at}.end: only an outage's places end"),
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
        let tolerance = duration(raw.tolerance.as_deref().unwrap_or("10m"), "tolerance")?;
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
            if !s.per_hour.is_finite() || s.per_hour < 0.0 {
                bail!("{at}.per_hour: must be a number of reports an hour, 0 or more");
            }
            let name = match &s.name {
                Some(n) => {
                    downwatch_core::parse_name(n).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?
                }
                None => s.slug.clone(),
            };
            let mut spec_places = places(&s.places, &at, false)?;
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
            let start = duration(&o.start, &format!("{at}.start"))?;
            let rise = duration(o.rise.as_deref().unwrap_or("0m"), &format!("{at}.rise"))?;
            let hold = duration(&o.hold, &format!("{at}.hold"))?;
            let fall = duration(o.fall.as_deref().unwrap_or("0m"), &format!("{at}.fall"))?;
            if !o.peak_per_min.is_finite() || o.peak_per_min <= 0.0 {
                bail!("{at}.peak_per_min: must be a positive number of reports a minute");
            }
            let outage_places = match &o.places {
                Some(p) if !p.is_empty() => places(p, &at, true)?,
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
            if start < 0 || start + last + fall > length {
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
            let start = duration(&e.start, &format!("{at}.start"))?;
            let end = duration(&e.end, &format!("{at}.end"))?;
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
        Ok(Scenario {
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
        })
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
