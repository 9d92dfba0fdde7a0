//! `downwatch bench detect`: the detector's evaluation on synthetic series
//! (the table in docs/detection.md) and the cost of a live tick, measured
//! against the budget of 100 µs of CPU per service per tick.

use anyhow::Context;
use downwatch_core::detector::eval::{self, EvalConfig, Rng};
use downwatch_core::detector::{DetectorParams, FleetProfile};
use downwatch_core::{NewService, ProblemList, Slug};
use downwatch_detector::engine::{Engine, LOOKBACK_MINUTES, ServiceCounts};
use downwatch_detector::live::{Live, LiveConfig, TickOutcome};
use downwatch_detector::metrics::DetectorMetrics;
use downwatch_windows::{Increment, MemoryWindows, WindowStore};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The budget of issue 3: 10,000 services in one core-second.
const BUDGET_US_PER_SERVICE: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct DetectBench {
    /// A small evaluation (seconds) instead of the published one.
    pub quick: bool,
    /// Services of the engine tick measurement.
    pub services: usize,
    /// Services of the full live tick (embedded storage).
    pub live_services: usize,
}

pub async fn detect(b: &DetectBench) -> anyhow::Result<String> {
    let mut out = String::new();
    let config = if b.quick {
        EvalConfig::quick()
    } else {
        EvalConfig::default()
    };
    let params = DetectorParams::default();
    let started = Instant::now();
    let results = eval::run(&config, &params);
    let _ = writeln!(out, "## Detection quality (synthetic series)\n");
    out.push_str(&eval::render_markdown(&results));
    let _ = writeln!(
        out,
        "\n(evaluation took {:.1} s)\n",
        started.elapsed().as_secs_f64()
    );

    let engine_us = engine_tick(b.services, &params)?;
    let (quiet_us, storm_us) = live_tick(b.live_services).await?;
    let _ = writeln!(out, "## Cost of a tick\n");
    let _ = writeln!(
        out,
        "| measurement | services | µs per service per tick (wall) | share of the 100 µs budget |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    for (name, n, us) in [
        (
            "engine only (global + 2 country scopes each)",
            b.services,
            engine_us,
        ),
        (
            "full live tick, embedded, quiet minutes",
            b.live_services,
            quiet_us,
        ),
        (
            "full live tick, embedded, every service in an outage (SQLite writes)",
            b.live_services,
            storm_us,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {n} | {us:.2} | {:.3}x |",
            us / BUDGET_US_PER_SERVICE
        );
    }
    Ok(out)
}

/// The engine alone: `services` services, each a global and two country
/// scopes with Poisson counts, one minute per tick after a day of warm-up.
fn engine_tick(services: usize, params: &DetectorParams) -> anyhow::Result<f64> {
    let mut engine = Engine::new(params.clone(), FleetProfile::flat());
    engine.country_warmup = 60 * LOOKBACK_MINUTES;
    let mut rng = Rng::new(42);
    // A UTC midnight.
    let t0: i64 = 1_700_006_400;
    let warm = 1440;
    let ticks = 60;
    let len = (LOOKBACK_MINUTES as usize) + warm + ticks;
    let start = t0 - 60 * LOOKBACK_MINUTES;
    let feeds: Vec<ServiceCounts> = (0..services)
        .map(|i| {
            let mut c = ServiceCounts::new(i as i64, start, len);
            let rate = 0.5 + (i % 50) as f64;
            for m in 0..len {
                let minute = start + 60 * m as i64;
                let g = rng.poisson(rate) as u32;
                c.set("global", minute, g);
                c.set("US", minute, g / 2);
                c.set("FR", minute, g / 4);
            }
            c
        })
        .collect();
    let mut sink = Vec::new();
    let warm_until = t0 + 60 * (warm as i64 - 1);
    for c in &feeds {
        engine
            .advance(c, t0, warm_until, &mut sink)
            .context("warming the engine")?;
    }
    let started = Instant::now();
    for k in 0..ticks as i64 {
        let until = warm_until + 60 * (k + 1);
        for c in &feeds {
            engine
                .advance(c, until, until, &mut sink)
                .context("ticking the engine")?;
        }
        sink.clear();
    }
    let us = started.elapsed().as_secs_f64() * 1e6;
    Ok(us / (ticks as f64 * services as f64))
}

/// The whole live tick in embedded mode (in-process windows, states and
/// incidents in a temporary SQLite): quiet minutes, then minutes in which
/// every service has an open incident to update.
async fn live_tick(services: usize) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("downwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("bench.db");
    let _ = std::fs::remove_file(&db);
    let storage = downwatch_store::connect(&format!("sqlite://{}", db.display())).await?;
    storage.migrate().await?;
    let mut ids = Vec::with_capacity(services);
    for i in 0..services {
        let s = storage
            .create_service(&NewService {
                slug: Slug::parse(&format!("service-{i}")).map_err(anyhow::Error::msg)?,
                name: format!("Service {i}"),
                category: None,
                url: None,
                problems: ProblemList::defaults(),
            })
            .await?;
        ids.push(s.id);
    }
    let windows: Arc<dyn WindowStore> = Arc::new(MemoryWindows::new());
    let mut live = Live::new(
        storage.clone(),
        windows.clone(),
        DetectorParams::default(),
        LiveConfig {
            instance: "bench".to_owned(),
            persist_every: Duration::from_secs(3600),
            ..LiveConfig::default()
        },
        DetectorMetrics::default(),
    );
    let now0 = chrono::Utc::now().timestamp() / 60 * 60;
    // First tick: the 14-day warm-up of every service (not measured).
    live.tick(now0 + 3).await?;
    let ticks = 10;
    let mut quiet = Duration::ZERO;
    let mut storm = Duration::ZERO;
    for k in 0..2 * ticks {
        let minute = now0 + 60 * k;
        let stormy = k >= ticks;
        if stormy {
            // Every service in an outage: each tick writes every incident.
            let incs: Vec<Increment> = ids
                .iter()
                .map(|&id| Increment {
                    service_id: id,
                    scope: "global".to_owned(),
                    minute,
                    count: 400,
                })
                .collect();
            windows.add(&incs).await?;
        }
        let started = Instant::now();
        let outcome = live.tick(minute + 63).await?;
        *(if stormy { &mut storm } else { &mut quiet }) += started.elapsed();
        anyhow::ensure!(
            matches!(outcome, TickOutcome::Stepped { .. }),
            "tick {k} did not step: {outcome:?}"
        );
    }
    let open = storage.open_incidents().await?.len();
    anyhow::ensure!(
        open == services,
        "{open} of {services} services in an outage"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (ticks as f64 * services as f64);
    Ok((per(quiet), per(storm)))
}
