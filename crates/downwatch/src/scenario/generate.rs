//! The seeded generator: reports as a Poisson process whose rate, minute by
//! minute, is the service's ordinary rate (shaped by its rhythm) plus its
//! outages' extra reports. Arrivals within a minute are drawn as
//! exponential gaps, so counts are Poisson and times spread over the minute.
//! Each service has a random stream of its own (from the scenario's seed
//! and the slug), so adding a service changes nothing of the others.

use super::format::{Outage, Place, Scenario};
use downwatch_core::{City, CountryCode, ProblemKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// One generated report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Index into [`Scenario::services`].
    pub service: usize,
    pub problem: ProblemKind,
    pub country: Option<CountryCode>,
    pub city: Option<City>,
    /// Unix milliseconds.
    pub at_ms: i64,
}

fn stream(seed: u64, slug: &str) -> StdRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(slug.as_bytes());
    StdRng::from_seed(h.finalize().into())
}

/// Picks an index by weight; `u` uniform in [0, 1).
fn pick(weights: impl Iterator<Item = f64> + Clone, u: f64) -> usize {
    let total: f64 = weights.clone().sum();
    let mut x = u * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        last = i;
        if x < w {
            return i;
        }
        x -= w;
    }
    last
}

/// The reports of `scenario` received in `[from, to)` (unix seconds), in
/// time order. The same scenario gives the same reports whatever window is
/// asked for: every minute from the start is drawn, and only the window kept.
/// Holds them all: for long windows, iterate [`Reports`] instead.
pub fn generate(scenario: &Scenario, from: i64, to: i64) -> Vec<Report> {
    Reports::new(scenario, from, to).collect()
}

/// The reports of a window one minute at a time, in time order: memory
/// holds one minute's reports, whatever the window's length. Each service
/// draws from its own random stream minute after minute, so going minute by
/// minute across services gives exactly what [`generate`] gives.
pub struct Reports<'a> {
    scenario: &'a Scenario,
    from_ms: i64,
    to_ms: i64,
    /// The next minute to draw, and the first not to.
    minute: i64,
    end: i64,
    streams: Vec<StdRng>,
    /// Each service's outages.
    outages: Vec<Vec<&'a Outage>>,
    ready: std::vec::IntoIter<Report>,
}

impl<'a> Reports<'a> {
    pub fn new(scenario: &'a Scenario, from: i64, to: i64) -> Self {
        let streams = scenario
            .services
            .iter()
            .map(|s| stream(scenario.seed, s.slug.as_str()))
            .collect();
        let outages = (0..scenario.services.len())
            .map(|si| {
                scenario
                    .outages
                    .iter()
                    .filter(|o| o.service == si)
                    .collect()
            })
            .collect();
        Self {
            scenario,
            from_ms: from.saturating_mul(1000),
            to_ms: to.saturating_mul(1000),
            minute: scenario.start,
            end: scenario.end().min(to),
            streams,
            outages,
            ready: Vec::new().into_iter(),
        }
    }

    /// Draws service `si`'s reports of `minute`, keeping those in the window.
    fn draw(&mut self, si: usize, minute: i64, out: &mut Vec<Report>) {
        let scenario = self.scenario;
        let service = &scenario.services[si];
        let outages = &self.outages[si];
        let rng = &mut self.streams[si];
        let mid = minute + 30;
        let background = service.per_hour / 60.0 * service.rhythm.factor(mid);
        // Each outage place's extra reports in this minute.
        let mut extra: Vec<(usize, usize, f64)> = Vec::new();
        for (oi, o) in outages.iter().enumerate() {
            let total: f64 = o.places.iter().map(|p| p.weight).sum();
            for (pi, p) in o.places.iter().enumerate() {
                let dt = mid - (scenario.start + o.start);
                let rate = o.peak_per_min * p.weight / total * o.shape(p, dt);
                if rate > 0.0 {
                    extra.push((oi, pi, rate));
                }
            }
        }
        let rate = background + extra.iter().map(|e| e.2).sum::<f64>();
        if rate <= 0.0 {
            return;
        }
        let mut t = 0.0f64;
        loop {
            // An exponential gap (in minutes) of a Poisson process at `rate`.
            let u: f64 = rng.random();
            t += -(1.0 - u).ln() / rate;
            if t >= 1.0 {
                break;
            }
            let at_ms = minute * 1000 + (t * 60_000.0) as i64;
            let which: f64 = rng.random::<f64>() * rate;
            let (problems, place): (&[(ProblemKind, f64)], &Place) = if which < background {
                let p = pick(service.places.iter().map(|p| p.weight), rng.random());
                (&service.problems, &service.places[p])
            } else {
                let e = pick(extra.iter().map(|e| e.2), rng.random());
                let (oi, pi, _) = extra[e];
                (&outages[oi].problems, &outages[oi].places[pi])
            };
            let problem = problems[pick(problems.iter().map(|p| p.1), rng.random())]
                .0
                .clone();
            if at_ms >= self.from_ms && at_ms < self.to_ms {
                out.push(Report {
                    service: si,
                    problem,
                    country: place.country,
                    city: place.city.clone(),
                    at_ms,
                });
            }
        }
    }
}

impl Iterator for Reports<'_> {
    type Item = Report;

    fn next(&mut self) -> Option<Report> {
        loop {
            if let Some(r) = self.ready.next() {
                return Some(r);
            }
            if self.minute >= self.end {
                return None;
            }
            let minute = self.minute;
            let mut out = Vec::new();
            for si in 0..self.scenario.services.len() {
                self.draw(si, minute, &mut out);
            }
            // Stable: equal times keep their services' order, as in one sort
            // of everything.
            out.sort_by_key(|r| (r.at_ms, r.service));
            self.ready = out.into_iter();
            self.minute += 60;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TWO_DAYS: &str = r#"
        seed = 11
        start = "2024-03-04T00:00:00Z"
        length = "2d"
        learn = "1d"
        [[service]]
        slug = "acme"
        per_hour = 60
        problems = { login = 3, app = 1 }
        places = [{ country = "FR", city = "Paris", weight = 3 }, {}]
        [[service]]
        slug = "other"
        per_hour = 6
        problems = { app = 1 }
        [[outage]]
        service = "acme"
        start = "1d 12h"
        rise = "5m"
        hold = "30m"
        fall = "5m"
        peak_per_min = 100
        problems = { app = 1 }
        places = [{ country = "DE", city = "Berlin" }]
    "#;

    #[test]
    fn reports_follow_the_rate_the_mixes_and_the_outage_and_repeat_with_the_seed() {
        let s = Scenario::parse(TWO_DAYS, "t").unwrap();
        let all = generate(&s, s.start, s.end());
        assert_eq!(all, generate(&s, s.start, s.end()), "seeded");
        assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let acme: Vec<&Report> = all.iter().filter(|r| r.service == 0).collect();
        let outage_start = (s.start + 86_400 + 12 * 3600) * 1000;
        let outage_end = outage_start + 40 * 60_000;
        let (during, ordinary): (Vec<&&Report>, Vec<&&Report>) = acme
            .iter()
            .partition(|r| r.at_ms >= outage_start && r.at_ms < outage_end);
        // 2 days at 60 an hour: 2,880 expected (Poisson: sd about 54).
        assert!(
            (2_650..3_110).contains(&ordinary.len()),
            "{}",
            ordinary.len()
        );
        // The outage: 100 a minute for 32.5 minutes' worth, plus ordinary ones.
        assert!((3_000..3_600).contains(&during.len()), "{}", during.len());
        let berlin = during
            .iter()
            .filter(|r| r.city.as_ref().is_some_and(|c| c.as_str() == "Berlin"))
            .count();
        assert!(berlin > during.len() * 9 / 10);
        let paris = ordinary
            .iter()
            .filter(|r| r.country.is_some_and(|c| c.as_str() == "FR"))
            .count() as f64
            / ordinary.len() as f64;
        assert!((0.7..0.8).contains(&paris), "{paris}");
        let login = ordinary
            .iter()
            .filter(|r| r.problem.as_str() == "login")
            .count() as f64
            / ordinary.len() as f64;
        assert!((0.7..0.8).contains(&login), "{login}");
        // Daytime is busier than night (the default rhythm).
        let hour = |r: &&&Report| (r.at_ms / 3_600_000) % 24;
        let night = ordinary.iter().filter(|r| hour(r) < 5).count();
        let day = ordinary
            .iter()
            .filter(|r| (10..15).contains(&hour(r)))
            .count();
        assert!(day > night * 3, "{day} {night}");
        // A window is a slice of the whole, and the other service is unaffected
        // by acme's stream.
        let from = s.start + 86_400;
        let window = generate(&s, from, from + 3600);
        let slice: Vec<Report> = all
            .iter()
            .filter(|r| r.at_ms >= from * 1000 && r.at_ms < (from + 3600) * 1000)
            .cloned()
            .collect();
        assert_eq!(window, slice);
        let mut changed = s.clone();
        changed.services[0].per_hour = 120.0;
        let other = |v: &[Report]| {
            v.iter()
                .filter(|r| r.service == 1)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(other(&generate(&changed, s.start, s.end())), other(&all));
    }
}
