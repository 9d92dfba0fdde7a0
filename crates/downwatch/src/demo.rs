//! `downwatch demo`: the embedded server over a SQLite file holding weeks
//! of generated history (imported, then run through `downwatch detect`),
//! on a clock that starts where the history ends and runs `--speed` times
//! faster than real time; then the live part of the demo scenario is
//! replayed into it over HTTP, so the dashboard shows WhatsApp's reports
//! rise, an incident open, and, minutes later, resolve.

use crate::config::Settings;
use crate::replay::{HttpOptions, Summary, Window, replay_http};
use crate::scenario::{self, Scenario};
use crate::startup::{Application, connect_storage};
use anyhow::{Context, bail};
use downwatch_core::time::rfc3339;
use downwatch_store::{IncidentQuery, IncidentRow};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The fewest days of history: the detector learns from 14, and the
/// history's own incidents are found in what follows them.
pub const MIN_HISTORY_DAYS: i64 = 15;
pub const MAX_HISTORY_DAYS: i64 = 60;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub bind: SocketAddr,
    /// A new SQLite file to keep; default a temporary one, deleted at the end.
    pub database: Option<PathBuf>,
    /// How much faster than real time the server's clock runs.
    pub speed: f64,
    /// Days of history before the live part (14 are learnt from; at least
    /// [`MIN_HISTORY_DAYS`]).
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

/// What the watcher saw of the live incident.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Nothing,
    Open(IncidentRow),
    Resolved(IncidentRow),
}

/// Follows the live part: reports the incident as it opens and resolves
/// (`poll` reads it), and the replay's end. Returns once the incident has
/// resolved with `exit_when_done`, when `stop` completes (Ctrl-C), or with
/// an error when the replay failed or (with `exit_when_done`) nothing
/// resolved within `patience` of the replay's end, so the demo never waits
/// forever on a replay that is gone. Pages are linked under `address`.
pub async fn watch<P, F>(
    address: &str,
    mut replay: JoinHandle<anyhow::Result<Summary>>,
    mut poll: P,
    stop: impl Future<Output = ()>,
    exit_when_done: bool,
    patience: Duration,
    mut say: impl FnMut(String),
) -> anyhow::Result<()>
where
    P: FnMut() -> F,
    F: Future<Output = Seen>,
{
    let started = Instant::now();
    let mut replayed: Option<Instant> = None;
    let mut opened = false;
    let mut resolved = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            done = &mut replay, if replayed.is_none() => {
                replayed = Some(Instant::now());
                let failure = match done {
                    Ok(Ok(s)) if s.failed == 0 => None,
                    Ok(Ok(s)) => Some(anyhow::anyhow!(
                        "{} of {} reports were not stored: {}",
                        s.failed,
                        s.reports,
                        s.first_error.as_deref().unwrap_or("no answer")
                    )),
                    Ok(Err(e)) => Some(e),
                    Err(e) => Some(anyhow::anyhow!("it stopped: {e}")),
                };
                if let Some(e) = failure {
                    let e = e.context("the live replay failed");
                    if exit_when_done {
                        break Err(e);
                    }
                    say(format!("{e:#}; the server keeps running until Ctrl-C."));
                }
            }
            _ = ticker.tick() => {}
        }
        let row = match poll().await {
            Seen::Nothing => None,
            Seen::Open(row) => Some((row, false)),
            Seen::Resolved(row) => Some((row, true)),
        };
        if let Some((row, ended)) = row {
            if !opened {
                opened = true;
                say(format!(
                    "{:>6.1} s  incident {} opened: {address}/incidents/{}",
                    started.elapsed().as_secs_f64(),
                    row.id,
                    row.id
                ));
            }
            if ended && !resolved {
                resolved = true;
                say(format!(
                    "{:>6.1} s  incident {} resolved ({} reports, peak {} a minute)",
                    started.elapsed().as_secs_f64(),
                    row.id,
                    row.record.total_reports,
                    row.record.peak_reports_per_min
                ));
                if exit_when_done {
                    break Ok(());
                }
                say("The demo's outage is over; the server keeps running until Ctrl-C.".to_owned());
            }
        }
        if exit_when_done && !resolved && replayed.is_some_and(|t| t.elapsed() > patience) {
            break Err(anyhow::anyhow!(
                "the live replay ended {:.0} s ago and no incident {}",
                patience.as_secs_f64(),
                if opened { "resolved" } else { "opened" }
            ));
        }
    };
    replay.abort();
    outcome
}

#[allow(clippy::print_stdout)]
pub async fn run(opts: &DemoOptions) -> anyhow::Result<()> {
    if !(1.0..=scenario_speed_max()).contains(&opts.speed) {
        bail!("--speed: from 1 to {}", scenario_speed_max());
    }
    if !(MIN_HISTORY_DAYS..=MAX_HISTORY_DAYS).contains(&opts.history_days) {
        bail!(
            "--history-days: from {MIN_HISTORY_DAYS} (the detector learns from 14) to \
             {MAX_HISTORY_DAYS}"
        );
    }
    // A temporary database lives in a directory of its own with an
    // unpredictable name (its WAL files beside it), deleted at the end.
    let temporary;
    let path = match &opts.database {
        Some(p) => {
            if p.exists() {
                bail!("--database: {} exists; name a new file", p.display());
            }
            p.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("downwatch-demo-")
                .tempdir()
                .context("cannot make a temporary directory for the demo's database")?;
            temporary.path().join("demo.db")
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
    // The history as an import file of an unpredictable name (created
    // exclusively, readable by this user only), deleted when dropped.
    let csv = tempfile::Builder::new()
        .prefix("downwatch-demo-history-")
        .suffix(".csv")
        .tempfile()
        .context("cannot make a temporary file for the demo's history")?;
    crate::replay::write_csv(
        &demo,
        Window {
            from: origin,
            to: live,
        },
        std::io::BufWriter::new(csv.as_file()),
    )?;
    let imported = crate::import::run(storage.as_ref(), csv.path()).await?;
    drop(csv);
    // Detection over what follows the first 14 days, which it learns from
    // (as `downwatch detect` does with the 14 days before `--from`).
    let checked = origin + 14 * 86_400;
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
    let poll = || {
        let state = state.clone();
        async move {
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
            match rows.ok().and_then(|r| r.into_iter().next()) {
                None => Seen::Nothing,
                Some(row) if row.record.ended_at.is_some() => Seen::Resolved(row),
                Some(row) => Seen::Open(row),
            }
        }
    };
    // The replay ends with the outage's last reports; the incident resolves
    // about 45 simulated minutes later. Twice that, and a minute, is patience.
    let patience = Duration::from_secs_f64(2.0 * real(45 * 60) + 60.0);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let outcome = watch(
        &address,
        replay,
        poll,
        stop,
        opts.exit_when_done,
        patience,
        |line| println!("{line}"),
    )
    .await;
    handle.stop(true).await;
    let _ = server.await;
    outcome
}

fn scenario_speed_max() -> f64 {
    downwatch_core::clock::MAX_SPEED
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use downwatch_store::IncidentRecord;
    use std::sync::{Arc, Mutex};

    fn row(ended: bool) -> IncidentRow {
        IncidentRow {
            id: 7,
            record: IncidentRecord {
                service_id: 1,
                scope: "global".to_owned(),
                level_max: "outage".to_owned(),
                started_at: 0,
                detected_at: 60,
                peak_at: 60,
                peak_reports_per_min: 100.0,
                baseline_per_min_at_peak: 1.0,
                ended_at: ended.then_some(600),
                total_reports: 500,
            },
        }
    }

    async fn run_watch(
        replay: JoinHandle<anyhow::Result<Summary>>,
        seen: Seen,
        exit: bool,
    ) -> (anyhow::Result<()>, Vec<String>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let out = {
            let said = said.clone();
            watch(
                "http://demo",
                replay,
                || {
                    let seen = seen.clone();
                    async move { seen }
                },
                std::future::pending(),
                exit,
                Duration::from_millis(600),
                move |l| said.lock().unwrap().push(l),
            )
            .await
        };
        let said = said.lock().unwrap().clone();
        (out, said)
    }

    #[tokio::test]
    async fn a_failed_replay_ends_the_demo_with_its_error_instead_of_waiting() {
        let failed = tokio::spawn(async { Err(anyhow::anyhow!("connection refused")) });
        let (out, _) = run_watch(failed, Seen::Nothing, true).await;
        let e = format!("{:#}", out.unwrap_err());
        assert!(
            e.contains("the live replay failed") && e.contains("connection refused"),
            "{e}"
        );

        let refused = tokio::spawn(async {
            Ok(Summary {
                reports: 10,
                failed: 4,
                first_error: Some("answered 429".to_owned()),
                ..Summary::default()
            })
        });
        let e = format!(
            "{:#}",
            run_watch(refused, Seen::Nothing, true).await.0.unwrap_err()
        );
        assert!(
            e.contains("4 of 10 reports were not stored: answered 429"),
            "{e}"
        );

        let panicked = tokio::spawn(async { panic!("boom") });
        let e = format!(
            "{:#}",
            run_watch(panicked, Seen::Nothing, true)
                .await
                .0
                .unwrap_err()
        );
        assert!(e.contains("the live replay failed"), "{e}");
    }

    #[tokio::test]
    async fn a_replay_that_ends_without_an_incident_is_not_waited_for_forever() {
        let done = tokio::spawn(async { Ok(Summary::default()) });
        let e = run_watch(done, Seen::Nothing, true).await.0.unwrap_err();
        assert!(e.to_string().contains("no incident opened"), "{e}");
        let done = tokio::spawn(async { Ok(Summary::default()) });
        let e = run_watch(done, Seen::Open(row(false)), true)
            .await
            .0
            .unwrap_err();
        assert!(e.to_string().contains("no incident resolved"), "{e}");
    }

    #[tokio::test]
    async fn the_demo_reports_the_incident_and_ends_once_it_resolved() {
        let long = tokio::spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Summary::default())
        });
        let (out, said) = run_watch(long, Seen::Resolved(row(true)), true).await;
        out.unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].ends_with("incident 7 opened: http://demo/incidents/7"));
        assert!(said[1].contains("incident 7 resolved (500 reports, peak 100 a minute)"));
    }
}
