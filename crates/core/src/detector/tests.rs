//! Behavioural and property tests of the detector.

use proptest::prelude::*;

use super::eval::{self, Noise, Outage, Rng, SERIES_EPOCH, SeriesSpec};
use super::*;
use crate::Level;

const DAY_MIN: usize = 1440;

/// Feeds `counts` from `start` (unix seconds), returning every event.
fn feed(
    det: &mut ScopeDetector,
    params: &DetectorParams,
    fleet: &FleetProfile,
    start: i64,
    counts: &[u32],
) -> Vec<IncidentEvent> {
    let mut out = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        let step = det.step(params, fleet, start + 60 * i as i64, c).unwrap();
        out.extend(step.events);
    }
    out
}

fn opened(events: &[IncidentEvent]) -> Vec<&Incident> {
    events
        .iter()
        .filter(|e| e.transition == Transition::Opened)
        .map(|e| &e.incident)
        .collect()
}

/// A warm detector: `days` of an ordinary Poisson series at `per_day`.
fn warm(per_day: f64, days: usize, seed: u64) -> (ScopeDetector, SeriesSpec) {
    let params = DetectorParams::default();
    let spec = SeriesSpec::ordinary(per_day, days, Noise::Poisson);
    let counts = spec.generate(&mut Rng::new(seed));
    let mut det = ScopeDetector::new();
    let events = feed(
        &mut det,
        &params,
        &FleetProfile::flat(),
        SERIES_EPOCH,
        &counts,
    );
    assert!(
        opened(&events).is_empty(),
        "warm-up opened {:?}",
        opened(&events)
    );
    (det, spec)
}

/// Counts of `minutes` minutes of `spec` starting at minute `from`, with an
/// outage applied (minute indexes relative to the series start).
fn continue_series(
    spec: &SeriesSpec,
    from: usize,
    minutes: usize,
    outages: &[Outage],
    seed: u64,
) -> Vec<u32> {
    let mut s = spec.clone();
    s.days = (from + minutes).div_ceil(DAY_MIN);
    s.day_jitter = 0.0;
    s.outages = outages.to_vec();
    let all = s.generate(&mut Rng::new(seed));
    all[from..from + minutes].to_vec()
}

fn at(minute_index: usize) -> i64 {
    SERIES_EPOCH + 60 * minute_index as i64
}

#[test]
fn default_params_are_valid_and_bad_ones_are_named() {
    assert_eq!(DetectorParams::default().validate(), Ok(()));
    let p = DetectorParams {
        windows: vec![1, 500],
        ..DetectorParams::default()
    };
    assert_eq!(p.validate().unwrap_err().field, "windows");
    let p = DetectorParams {
        open_g: 1.0,
        ..DetectorParams::default()
    };
    assert_eq!(p.validate().unwrap_err().field, "open_g");
    let p = DetectorParams {
        floor_per_min: f64::NAN,
        ..DetectorParams::default()
    };
    assert_eq!(p.validate().unwrap_err().field, "floor_per_min");
}

#[test]
fn unaligned_and_out_of_order_minutes_are_refused() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let mut det = ScopeDetector::new();
    assert_eq!(
        det.step(&p, &f, 61, 1).unwrap_err(),
        DetectorError::Unaligned(61)
    );
    det.step(&p, &f, 120, 1).unwrap();
    assert_eq!(
        det.step(&p, &f, 120, 1).unwrap_err(),
        DetectorError::OutOfOrder {
            last: 120,
            got: 120
        }
    );
    assert!(det.step(&p, &f, 60, 1).is_err());
    assert_eq!(det.last_minute(), Some(120));
}

#[test]
fn gaps_are_zero_minutes_and_long_gaps_close_the_incident() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let (mut det, spec) = warm(2000.0, 3, 1);
    let learnt = det.baseline().minutes_learnt();
    let t = at(3 * DAY_MIN);
    det.step(&p, &f, t, 1).unwrap();
    det.step(&p, &f, t + 600, 1).unwrap();
    assert_eq!(det.baseline().minutes_learnt(), learnt + 11);
    assert_eq!(det.last_minute(), Some(t + 600));

    // An outage, then the data stops for longer than max_gap_minutes.
    let burst = continue_series(&spec, 3 * DAY_MIN + 11, 5, &[], 2)
        .iter()
        .map(|c| c + 500)
        .collect::<Vec<_>>();
    let events = feed(&mut det, &p, &f, t + 660, &burst);
    assert_eq!(opened(&events).len(), 1);
    let later = t + 660 + 60 * i64::from(p.max_gap_minutes + 100);
    let step = det.step(&p, &f, later, 0).unwrap();
    assert_eq!(step.events.len(), 1);
    assert_eq!(step.events[0].transition, Transition::Resolved);
    let ended = step.events[0].incident.ended_at.unwrap();
    assert!(ended <= t + 660 + 5 * 60, "ended {ended}");
    assert!(det.incident().is_none());
}

#[test]
fn x1000_burst_on_a_warm_service_opens_in_its_first_minute() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let (mut det, spec) = warm(2000.0, 4, 3);
    // 03:00 UTC, the quiet part of the day: hardest for a minimum count.
    let onset = 4 * DAY_MIN + 180;
    let quiet = continue_series(&spec, 4 * DAY_MIN, 180, &[], 4);
    assert!(opened(&feed(&mut det, &p, &f, at(4 * DAY_MIN), &quiet)).is_empty());
    let burst = continue_series(
        &spec,
        onset,
        10,
        &[Outage {
            start: onset,
            minutes: 10,
            multiplier: 1000.0,
            extra_per_min: 0.0,
        }],
        5,
    );
    let step = det.step(&p, &f, at(onset), burst[0]).unwrap();
    assert_eq!(step.level, Level::Outage);
    assert_eq!(step.events.len(), 1);
    let inc = &step.events[0].incident;
    assert_eq!(step.events[0].transition, Transition::Opened);
    assert_eq!(inc.started_at, at(onset));
    assert_eq!(inc.detected_at, at(onset) + 60);
    assert_eq!(inc.level_max, Level::Outage);
    assert_eq!(u64::from(burst[0]), inc.total_reports);
}

#[test]
fn state_round_trips_through_json_and_behaves_the_same() {
    let p = DetectorParams::default();
    let f = FleetProfile::new(
        std::array::from_fn(|h| 1.0 + 0.5 * ((h as f64) / 24.0 * std::f64::consts::TAU).sin()),
        [1.1, 1.1, 1.1, 1.1, 1.1, 0.75, 0.75],
    );
    let spec = SeriesSpec::ordinary(500.0, 3, Noise::NegBin { r: 5.0 });
    let counts = spec.generate(&mut Rng::new(9));
    let mut a = ScopeDetector::new();
    feed(&mut a, &p, &f, SERIES_EPOCH, &counts[..2 * DAY_MIN]);

    let json = serde_json::to_string(&a).unwrap();
    let mut b: ScopeDetector = serde_json::from_str(&json).unwrap();
    let fleet_json = serde_json::to_string(&f).unwrap();
    let f2: FleetProfile = serde_json::from_str(&fleet_json).unwrap();
    assert_eq!(b.last_minute(), a.last_minute());
    assert_eq!(b.baseline().minutes_learnt(), a.baseline().minutes_learnt());

    // Same future, with an outage in it: same incidents from both.
    let mut rest = counts[2 * DAY_MIN..].to_vec();
    for c in &mut rest[600..660] {
        *c += 40;
    }
    let ea = feed(&mut a, &p, &f, at(2 * DAY_MIN), &rest);
    let eb = feed(&mut b, &p, &f2, at(2 * DAY_MIN), &rest);
    assert!(!ea.is_empty());
    assert_eq!(ea.len(), eb.len());
    for (x, y) in ea.iter().zip(&eb) {
        assert_eq!(x.transition, y.transition);
        assert_eq!(
            (
                x.incident.seq,
                x.incident.started_at,
                x.incident.detected_at,
                x.incident.ended_at
            ),
            (
                y.incident.seq,
                y.incident.started_at,
                y.incident.detected_at,
                y.incident.ended_at
            )
        );
        assert_eq!(x.incident.total_reports, y.incident.total_reports);
        assert!(
            (x.incident.baseline_per_min_at_peak - y.incident.baseline_per_min_at_peak).abs()
                < 1e-9
        );
    }
    // A corrupted ring is refused rather than trusted.
    let bad = json.replacen("\"head\":", "\"head\":999999,\"x\":", 1);
    assert!(serde_json::from_str::<ScopeDetector>(&bad).is_err());
}

#[test]
fn learning_is_frozen_while_an_incident_is_open() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let (mut det, spec) = warm(2000.0, 3, 11);
    let start = 3 * DAY_MIN + 600;
    let outage = [Outage {
        start,
        minutes: 240,
        multiplier: 20.0,
        extra_per_min: 0.0,
    }];
    let counts = continue_series(&spec, 3 * DAY_MIN, 600 + 240, &outage, 12);
    feed(&mut det, &p, &f, at(3 * DAY_MIN), &counts[..602]);
    assert!(det.incident().is_some());
    assert!(det.learning_frozen(&p));
    let before = det.baseline().clone();
    feed(&mut det, &p, &f, at(3 * DAY_MIN + 602), &counts[602..]);
    assert!(
        det.incident().is_some(),
        "a 4-hour x20 outage is still open"
    );
    assert_eq!(det.baseline(), &before, "nothing learnt during the outage");
}

#[test]
fn relapse_within_grace_reopens_the_same_incident_and_later_ones_are_new() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let (mut det, spec) = warm(2000.0, 3, 21);
    let base = 3 * DAY_MIN + 600;
    let mut counts = continue_series(&spec, base, 600, &[], 22);
    // x10 for 30 min, then calm until it resolves, then a relapse.
    for c in &mut counts[0..30] {
        *c = *c * 10 + 10;
    }
    let mut events = Vec::new();
    let mut resolved_at = None;
    for (i, &c) in counts.iter().enumerate() {
        let step = det.step(&p, &f, at(base + i), c).unwrap();
        for e in &step.events {
            if e.transition == Transition::Resolved && resolved_at.is_none() {
                resolved_at = Some(i);
            }
        }
        events.extend(step.events);
        if resolved_at.is_some() {
            break;
        }
    }
    let r = resolved_at.expect("the outage resolves");
    assert!(r > 30 + p.calm_minutes as usize - 1);
    let first = events.last().unwrap().incident.clone();
    assert!(first.ended_at.is_some());
    // Relapse 10 minutes after the resolution.
    let relapse_at = r + 10;
    for (i, count) in counts.iter().enumerate().take(relapse_at + 15).skip(r + 1) {
        let c = if i >= relapse_at {
            count * 10 + 10
        } else {
            *count
        };
        events.extend(det.step(&p, &f, at(base + i), c).unwrap().events);
    }
    let reopened: Vec<_> = events
        .iter()
        .filter(|e| e.transition == Transition::Reopened)
        .collect();
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened[0].incident.seq, first.seq);
    assert_eq!(reopened[0].incident.started_at, first.started_at);
    assert_eq!(reopened[0].incident.ended_at, None);
    assert!(reopened[0].incident.total_reports > first.total_reports);
    assert_eq!(opened(&events).len(), 1);

    // Let it resolve, wait past the grace period, and burst again: a new one.
    let more = continue_series(&spec, base + 1000, 300, &[], 23);
    let ev = feed(&mut det, &p, &f, at(base + relapse_at + 15), &more[..200]);
    assert!(ev.iter().any(|e| e.transition == Transition::Resolved));
    assert!(det.incident().is_none());
    let burst: Vec<u32> = more[200..210].iter().map(|c| c * 10 + 30).collect();
    let ev = feed(&mut det, &p, &f, at(base + relapse_at + 215), &burst);
    let new = opened(&ev);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].seq, first.seq + 1);
}

#[test]
fn a_small_outage_the_day_after_a_big_one_is_still_seen() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let (mut det, spec) = warm(2000.0, 4, 31);
    let big = 4 * DAY_MIN + 600;
    let small = big + DAY_MIN;
    let outages = [
        Outage {
            start: big,
            minutes: 360,
            multiplier: 20.0,
            extra_per_min: 0.0,
        },
        Outage {
            start: small,
            minutes: 60,
            multiplier: 4.0,
            extra_per_min: 0.0,
        },
    ];
    let counts = continue_series(&spec, 4 * DAY_MIN, 2 * DAY_MIN, &outages, 32);
    let events = feed(&mut det, &p, &f, at(4 * DAY_MIN), &counts);
    let opened = opened(&events);
    assert_eq!(opened.len(), 2, "{opened:?}");
    assert!(opened[1].started_at >= at(small) - 180 && opened[1].detected_at <= at(small + 30));
}

#[test]
fn a_new_scope_flags_an_obvious_burst_but_not_its_first_quiet_reports() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let mut det = ScopeDetector::new();
    // A new service: a few reports an hour for an hour, some of them together.
    let mut counts = vec![0u32; 60];
    for i in [3, 4, 17, 30, 31, 32, 50] {
        counts[i] = 2;
    }
    let events = feed(&mut det, &p, &f, 0, &counts);
    assert!(opened(&events).is_empty());
    // Then 150 reports a minute: hundreds within minutes is an outage.
    let burst = vec![150u32; 5];
    let events = feed(&mut det, &p, &f, 3600, &burst);
    let o = opened(&events);
    assert_eq!(o.len(), 1);
    assert!(o[0].detected_at <= 3600 + 3 * 60, "{:?}", o[0]);
    assert_eq!(o[0].started_at, 3600);
}

#[test]
fn a_busy_service_starting_cold_does_not_stay_in_outage() {
    let p = DetectorParams::default();
    let f = FleetProfile::flat();
    let spec = SeriesSpec::ordinary(200_000.0, 2, Noise::Poisson);
    let counts = spec.generate(&mut Rng::new(41));
    let mut det = ScopeDetector::new();
    let events = feed(&mut det, &p, &f, SERIES_EPOCH, &counts);
    assert!(det.incident().is_none());
    for o in opened(&events) {
        assert!(
            o.started_at < SERIES_EPOCH + 3600,
            "only the very start may look like a burst: {o:?}"
        );
    }
    // And it has learnt its level (about 139 a minute on average).
    assert!(
        (det.baseline().level() - 139.0).abs() < 30.0,
        "{}",
        det.baseline().level()
    );
}

#[test]
fn fleet_profile_learnt_from_scopes_has_their_shape() {
    let p = DetectorParams::default();
    let (det, _) = warm(20_000.0, 8, 51);
    let fleet = FleetProfile::from_detectors([&det], &FleetProfile::flat(), &p);
    let peak = (0..24)
        .max_by(|&a, &b| fleet.hour()[a].total_cmp(&fleet.hour()[b]))
        .unwrap();
    assert!((13..=15).contains(&peak), "peak at {peak}");
    assert!(fleet.hour()[14] > 1.5 && fleet.hour()[2] < 0.5);
    assert!(fleet.dow()[6] < fleet.dow()[2]);
    // Nobody measured: the prior stays.
    let none: [&ScopeDetector; 0] = [];
    assert_eq!(FleetProfile::from_detectors(none, &fleet, &p), fleet);
}

#[test]
fn a_sparse_scope_borrows_the_fleet_shape() {
    let p = DetectorParams::default();
    let (big, _) = warm(20_000.0, 8, 61);
    let fleet = FleetProfile::from_detectors([&big], &FleetProfile::flat(), &p);
    let spec = SeriesSpec::ordinary(20.0, 3, Noise::Poisson);
    let counts = spec.generate(&mut Rng::new(62));
    let mut det = ScopeDetector::new();
    feed(&mut det, &p, &fleet, SERIES_EPOCH, &counts);
    let t = at(3 * DAY_MIN);
    let night = det.expected(&p, &fleet, t + 3 * 3600);
    let afternoon = det.expected(&p, &fleet, t + 14 * 3600);
    assert!(
        afternoon > 3.0 * night,
        "night {night}, afternoon {afternoon}"
    );
}

#[test]
fn detect_series_spreads_coarse_steps_and_finds_the_outage() {
    let p = DetectorParams::default();
    let spec = SeriesSpec::ordinary(5000.0, 4, Noise::Poisson);
    let minutes = spec.generate(&mut Rng::new(71));
    // 5-minute buckets, an x10 hour on day 3 at 12:00.
    let mut points: Vec<(i64, f64)> = minutes
        .chunks(5)
        .enumerate()
        .map(|(i, c)| {
            (
                SERIES_EPOCH + 300 * i as i64,
                f64::from(c.iter().sum::<u32>()),
            )
        })
        .collect();
    let onset = (3 * DAY_MIN + 720) / 5;
    for p in &mut points[onset..onset + 12] {
        p.1 *= 10.0;
    }
    let incidents = detect_series(&points, 300, &p);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let inc = &incidents[0];
    let truth = SERIES_EPOCH + 300 * onset as i64;
    assert!((inc.started_at - truth).abs() <= 300, "{inc:?}");
    let end = inc.ended_at.unwrap();
    assert!((end - (truth + 3600)).abs() <= 600, "{inc:?}");
    assert!(inc.detected_at <= truth + 600);
}

#[test]
fn quick_evaluation_is_deterministic_and_sane() {
    let p = DetectorParams::default();
    let a = eval::run(&eval::EvalConfig::quick(), &p);
    let burst = a
        .classes
        .iter()
        .find(|c| c.name.starts_with("x1000, 10 min, 2,000"))
        .unwrap();
    assert_eq!(burst.recall, 1.0);
    assert!(burst.delay_max.unwrap() <= 1.0);
    let false_total: usize = a.rates.iter().map(|r| r.false_incidents).sum();
    assert!(false_total <= 1, "{:?}", a.rates);
    assert!(a.ns_per_step > 0.0);
    let md = eval::render_markdown(&a);
    assert!(md.contains("| x3, 30 min, 2,000/day |"));
    assert!(md.contains("Targets of issue 3"));
    // Same seed, same numbers (timing aside).
    let b = eval::run(&eval::EvalConfig::quick(), &p);
    assert_eq!(a.rates, b.rates);
    assert_eq!(a.classes, b.classes);
}

#[test]
fn samplers_have_the_right_moments() {
    let mut rng = Rng::new(99);
    for lambda in [0.3, 4.0, 37.0, 900.0] {
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.poisson(lambda) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (mean - lambda).abs() < 4.0 * (lambda / n as f64).sqrt() + 1e-9,
            "{lambda}: {mean}"
        );
        assert!((var / lambda - 1.0).abs() < 0.06, "{lambda}: var {var}");
    }
    let n = 20_000;
    let xs: Vec<f64> = (0..n).map(|_| rng.neg_binomial(50.0, 5.0) as f64).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!((mean - 50.0).abs() < 1.0, "{mean}");
    assert!((var / (50.0 + 2500.0 / 5.0) - 1.0).abs() < 0.1, "{var}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Flat Poisson noise at any rate, from a cold start, never opens an
    /// incident, except the absolute-volume rule in the very first minutes
    /// of a busy scope with no history at all (hundreds of reports within
    /// minutes on a new scope count as a burst), which must resolve.
    #[test]
    fn flat_poisson_noise_never_opens(rate in 0.002f64..200.0, seed in any::<u64>()) {
        let p = DetectorParams::default();
        let f = FleetProfile::flat();
        let mut rng = Rng::new(seed);
        let mut det = ScopeDetector::new();
        for i in 0..(2 * DAY_MIN) {
            let step = det.step(&p, &f, 60 * i as i64, rng.poisson(rate) as u32).unwrap();
            for e in &step.events {
                let cold_burst = rate * 5.0 >= f64::from(p.cold_min_count) / 2.0 && e.incident.started_at < 600;
                prop_assert!(cold_burst, "minute {i}: {:?}", step.events);
            }
            if i > 120 {
                prop_assert!(det.incident().is_none(), "still open at minute {i}");
            }
        }
    }

    /// Incident fields are consistent whatever the outage.
    #[test]
    fn incident_fields_are_consistent(
        per_day in 50.0f64..50_000.0,
        mult in 3.0f64..200.0,
        minutes in 3usize..240,
        hour in 0usize..24,
        seed in any::<u64>(),
    ) {
        let p = DetectorParams::default();
        let f = FleetProfile::flat();
        let mut spec = SeriesSpec::ordinary(per_day, 4, Noise::NegBin { r: 8.0 });
        spec.outages.push(Outage { start: 2 * DAY_MIN + 60 * hour, minutes, multiplier: mult, extra_per_min: 0.5 });
        let counts = spec.generate(&mut Rng::new(seed));
        let mut det = ScopeDetector::new();
        let events = feed(&mut det, &p, &f, SERIES_EPOCH, &counts);
        let mut resolved = 0;
        for e in &events {
            let i = &e.incident;
            prop_assert!(i.started_at < i.detected_at);
            prop_assert!(i.started_at <= i.peak_at && i.peak_at < i.detected_at.max(i.ended_at.unwrap_or(i64::MAX)));
            prop_assert!(i.total_reports >= u64::from(i.peak_reports_per_min));
            prop_assert_eq!(i.level_max, Level::Outage);
            match e.transition {
                Transition::Resolved => {
                    resolved += 1;
                    let end = i.ended_at.unwrap();
                    prop_assert!(end > i.started_at && end > i.peak_at);
                    prop_assert!(end <= det.last_minute().unwrap() + 60);
                }
                _ => prop_assert!(i.ended_at.is_none()),
            }
        }
        prop_assert!(!opened(&events).is_empty(), "a x{mult} outage of {minutes} min was missed");
        prop_assert!(resolved >= 1, "nothing resolved");
    }

    /// The likelihood ratios: zero without a rise, NB below Poisson, NB
    /// tending to Poisson as the size grows.
    #[test]
    fn likelihood_ratios_behave(m in 0.01f64..1e4, ratio in 0.0f64..50.0, k in 0.1f64..1e4) {
        let x = m * ratio;
        let pois = poisson_llr(x, m);
        let nb = nb_llr(x, m, k);
        prop_assert!(pois >= 0.0 && nb >= 0.0);
        if ratio <= 1.0 {
            prop_assert_eq!(pois, 0.0);
            prop_assert_eq!(nb, 0.0);
        }
        prop_assert!(nb <= pois * (1.0 + 1e-9) + 1e-9);
        let big = nb_llr(x, m, 1e15);
        prop_assert!((big - pois).abs() <= 1e-6 * pois.max(1.0));
    }
}

#[test]
fn the_open_threshold_is_the_least_count_that_passes_every_gate() {
    use super::{Expectation, open_threshold};
    let p = DetectorParams::default();
    let det = ScopeDetector::new();
    let e: Expectation = det.baseline().expected(0, &FleetProfile::flat(), &p);
    for (mu, minutes) in [(0.001, 1.0), (5.0, 15.0), (60.0, 60.0), (5000.0, 60.0)] {
        let t = open_threshold(mu, minutes, &e, &p);
        assert!(t >= f64::from(p.open_min_count), "{mu}: {t}");
        assert!(t >= p.open_min_ratio * mu, "{mu}: {t}");
        assert!(t.is_finite() && t == t.ceil());
    }
    // More expected, higher threshold.
    let a = open_threshold(10.0, 15.0, &e, &p);
    let b = open_threshold(100.0, 15.0, &e, &p);
    assert!(b > a, "{a} {b}");
}
