//! `downwatch demo`: the embedded server over a SQLite file holding weeks
//! of generated history (imported, then run through `downwatch detect`),
//! on a clock that starts where the history ends and runs `--speed` times
//! faster than real time; then the live part of the demo scenario is
//! replayed into it over HTTP, so the dashboard shows WhatsApp's reports
//! rise, an incident open, and, minutes later, resolve.

use crate::config::Settings;
use crate::replay::{HttpOptions, Window, replay_http};
use crate::scenario::{self, Scenario};
use crate::startup::{Application, connect_storage};
use anyhow::{Context, bail};
use downwatch_core::time::rfc3339;
use downwatch_store::IncidentQuery;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub bind: SocketAddr,
    /// A new SQLite file to keep; default a temporary one, deleted at the end.
    pub database: Option<PathBuf>,
    /// How much faster than real time the server's clock runs.
    pub speed: f64,
    /// Days of history before the live part (14 are learnt from).
    pub history_days: i64,
    /// Stop once the live incident has resolved, instead of serving on
    /// until interrupted.
    pub exit_when_done: bool,
}

/// The bundled demo scenario, its live part moved to day `history_days`.
pub fn scenario(history_days: i64) -> anyhow::Result<Scenario> {
    let mut s = scenario::load("demo")?;
    // The file is written for 21 days of history.
    let shift = (history_days - 21) * 86_400;
    s.length += shift;
    s.outages.retain_mut(|o| {
        o.start += shift;
        o.start >= 0
    });
    Ok(s)
}

/// Deletes a temporary database (and its WAL files) when the demo ends.
struct Temporary(Option<PathBuf>);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let mut f = p.clone().into_os_string();
                f.push(suffix);
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

#[allow(clippy::print_stdout)]
pub async fn run(opts: &DemoOptions) -> anyhow::Result<()> {
    if !(1.0..=scenario_speed_max()).contains(&opts.speed) {
        bail!("--speed: from 1 to {}", scenario_speed_max());
    }
    if !(1..=60).contains(&opts.history_days) {
        bail!("--history-days: from 1 to 60");
    }
    let (path, _cleanup) = match &opts.database {
        Some(p) => {
            if p.exists() {
                bail!("--database: {} exists; name a new file", p.display());
            }
            (p.clone(), Temporary(None))
        }
        None => {
            let p = std::env::temp_dir().join(format!("downwatch-demo-{}.db", std::process::id()));
            (p.clone(), Temporary(Some(p)))
        }
    };
    let url = format!("sqlite://{}", path.display());
    let now = chrono::Utc::now().timestamp();
    let live = now - now.rem_euclid(60);
    let origin = live - opts.history_days * 86_400;
    let demo = scenario(opts.history_days)?.starting_at(origin);

    println!(
        "Downwatch demo: preparing {} days of history…",
        opts.history_days
    );
    let prepared = Instant::now();
    let mut env: HashMap<&str, String> = HashMap::new();
    env.insert("DATABASE_URL", url.clone());
    let base = Settings::from_lookup(|k| env.get(k).cloned())?;
    let storage = connect_storage(&base).await?;
    storage
        .seed_catalogue(&crate::catalogue::bundled()?)
        .await?;
    let csv = path.with_extension("history.csv");
    {
        let file = std::fs::File::create(&csv)
            .with_context(|| format!("cannot write {}", csv.display()))?;
        crate::replay::write_csv(
            &demo,
            Window {
                from: origin,
                to: live,
            },
            std::io::BufWriter::new(file),
        )?;
    }
    let imported = crate::import::run(storage.as_ref(), &csv).await;
    let _ = std::fs::remove_file(&csv);
    let imported = imported?;
    // Detection over what follows the first 14 days, which it learns from
    // (as `downwatch detect` does with the 14 days before `--from`).
    let checked = (origin + 14 * 86_400).min(live - 3600);
    let detected =
        crate::detect::run(storage.as_ref(), &rfc3339(checked), &rfc3339(live), None).await?;
    drop(storage);
    println!(
        "  {} reports imported and {} past incidents detected in {:.0} s.",
        imported.rows,
        detected.incidents,
        prepared.elapsed().as_secs_f64()
    );

    // The clock starts now, where the history ends.
    env.insert("DOWNWATCH_BIND", opts.bind.to_string());
    env.insert(
        "DOWNWATCH_CLOCK",
        format!("{}@{}", rfc3339(live), opts.speed),
    );
    env.insert("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1".to_owned());
    // The replay speaks for thousands of people through this machine.
    env.insert(
        "DOWNWATCH_TRUSTED_PROXIES",
        "127.0.0.1/32,::1/128".to_owned(),
    );
    // A tick a second: a few simulated seconds at the demo's speeds.
    env.insert("DOWNWATCH_DETECT_INTERVAL_MS", "1000".to_owned());
    let settings = Settings::from_lookup(|k| env.get(k).cloned())?;
    let app = Application::build(&settings).await?;
    let port = app.port();
    let state = app.state();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let address = format!("http://{}", SocketAddr::new(settings.bind.ip(), port));
    let started = Instant::now();

    let whatsapp = demo
        .outages
        .iter()
        .rfind(|o| o.start >= live - origin)
        .context("the demo scenario has no live outage")?;
    let slug = demo.services[whatsapp.service].slug.to_string();
    let real = |sim_secs: i64| sim_secs as f64 / opts.speed;
    let rise_at = real(whatsapp.start - (live - origin));
    let end_at =
        real(whatsapp.start - (live - origin) + whatsapp.rise + whatsapp.hold + whatsapp.fall);
    println!();
    println!("Open {address}/ and watch. (Ctrl-C to stop.)");
    println!("  {address}/services/{slug}  the service page: its 24-hour chart and status");
    println!("  {address}/history          past incidents, found in the generated history");
    println!();
    println!(
        "The server's clock runs {}x faster than yours: a minute of the dashboard passes every {:.1} s.",
        opts.speed,
        60.0 / opts.speed
    );
    println!(
        "  in about {:.0} s: reports for {slug} start rising",
        rise_at
    );
    println!("  seconds later: {slug} goes to \"warning\", then an incident opens (\"outage\")");
    println!("  in about {:.0} s: the reports are back to normal", end_at);
    // Calm means a quiet 15-minute window, for 30 minutes in a row.
    println!(
        "  about {:.0} s after that: the incident resolves, once reports have been calm for half an hour (of the demo's clock)",
        real(45 * 60)
    );
    println!();

    let replay = tokio::spawn({
        let opts = HttpOptions {
            target: address.clone(),
            speed: opts.speed,
            concurrency: 64,
            admin_token: None,
            verbose: false,
        };
        let demo = demo.clone();
        async move {
            replay_http(
                &demo,
                Window {
                    from: live,
                    to: demo.end(),
                },
                &opts,
            )
            .await
        }
    });

    let service_id = state
        .catalogue
        .get(&slug)
        .await?
        .context("the demo's service is missing")?
        .id;
    let mut opened = false;
    let mut resolved = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = ticker.tick() => {}
        }
        let rows = state
            .storage
            .incidents(&IncidentQuery {
                service_id: Some(service_id),
                scope: Some(downwatch_core::GLOBAL_SCOPE.to_owned()),
                from: Some(live),
                limit: 1,
                ..IncidentQuery::default()
            })
            .await;
        let Ok(rows) = rows else { continue };
        let Some(row) = rows.first() else { continue };
        if !opened {
            opened = true;
            println!(
                "{:>6.1} s  incident {} opened: {address}/incidents/{}",
                started.elapsed().as_secs_f64(),
                row.id,
                row.id
            );
        }
        if !resolved && row.record.ended_at.is_some() {
            resolved = true;
            println!(
                "{:>6.1} s  incident {} resolved ({} reports, peak {} a minute)",
                started.elapsed().as_secs_f64(),
                row.id,
                row.record.total_reports,
                row.record.peak_reports_per_min
            );
            if opts.exit_when_done {
                break;
            }
            println!("The demo's outage is over; the server keeps running until Ctrl-C.");
        }
    }
    replay.abort();
    handle.stop(true).await;
    let _ = server.await;
    Ok(())
}

fn scenario_speed_max() -> f64 {
    downwatch_core::clock::MAX_SPEED
}
