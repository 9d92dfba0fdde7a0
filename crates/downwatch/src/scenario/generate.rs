//! The seeded generator: reports as a Poisson process whose rate, minute by
//! minute, is the service's ordinary rate (shaped by its rhythm) plus its
//! outages' extra reports. Arrivals within a minute are drawn as
//! exponential gaps, so counts are Poisson and times spread over the minute.
//! Each service has a random stream of its own (from the scenario's seed
//! and the slug), so adding a service changes nothing of the others.

use super::format::{Place, Scenario};
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
pub fn generate(scenario: &Scenario, from: i64, to: i64) -> Vec<Report> {
    let mut out = Vec::new();
    for (si, service) in scenario.services.iter().enumerate() {
        let mut rng = stream(scenario.seed, service.slug.as_str());
        let outages: Vec<_> = scenario
            .outages
            .iter()
            .filter(|o| o.service == si)
            .collect();
        let mut minute = scenario.start;
        while minute < scenario.end().min(to) {
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
            let mut t = 0.0f64;
            if rate > 0.0 {
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
                    if at_ms >= from * 1000 && at_ms < to * 1000 {
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
            minute += 60;
        }
    }
    out.sort_by_key(|r| (r.at_ms, r.service));
    out
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
