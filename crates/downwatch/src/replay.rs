//! `downwatch replay SCENARIO`: a scenario's reports as an import file
//! (`--csv FILE`), or sent to a running server over HTTP (`--target URL`).
//!
//! The server stamps every report with its own clock, so over HTTP each
//! report is sent when the server's clock reaches the report's time: the
//! replay reads the server's time once (`generated_at` of
//! `/api/v1/status`) and assumes it moves at `--speed` (1 for a server on
//! the system clock; N for one started with `DOWNWATCH_CLOCK=…@N`).
//! Reports older than the server's clock are not sent (they would be
//! stamped at the wrong time): load those with `--csv` and `downwatch
//! import`. Each report comes from a client of its own, named in
//! `X-Forwarded-For`, so the server must trust this machine as a proxy
//! (`DOWNWATCH_TRUSTED_PROXIES`).

use crate::scenario::{Report, Reports, Scenario, parse_duration};
use anyhow::{Context, bail};
use downwatch_core::time::rfc3339;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The part of a scenario to replay, as unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: i64,
    pub to: i64,
}

impl Window {
    /// `--from` and `--until` (offsets such as `14d 8h` from the scenario's
    /// start; default its whole length).
    pub fn of(
        scenario: &Scenario,
        from: Option<&str>,
        until: Option<&str>,
    ) -> anyhow::Result<Self> {
        let offset = |v: Option<&str>, default: i64, name: &str| -> anyhow::Result<i64> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(s).map_err(|e| anyhow::anyhow!("--{name}: {e}")),
            }
        };
        let from = offset(from, 0, "from")?;
        let until = offset(until, scenario.length, "until")?;
        if from >= until || until > scenario.length {
            bail!(
                "--from must be before --until, and both within the scenario's length ({})",
                crate::scenario::format_duration(scenario.length)
            );
        }
        Ok(Window {
            from: scenario.start + from,
            to: scenario.start + until,
        })
    }
}

/// `--start`: the scenario's day 0, as a time, `now` (the current minute)
/// or `now-DURATION` (`now-14d`: day 14 is today, so history written with
/// `--until 14d` ends now and a replay `--from 14d` starts now); `now` is
/// the unix second given.
pub fn parse_start(s: &str, now: i64) -> anyhow::Result<i64> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let now = now - now.rem_euclid(60);
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest
            .strip_prefix('-')
            .map(parse_duration)
            .and_then(Result::ok)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--start: expected now, now-DURATION (now-14d) or a time, got {s:?}"
                )
            })?;
        return Ok(now - ago);
    }
    crate::detect::parse_time(s, "start")
}

/// `--start` resolved: `now` is the server's clock when there is a
/// `target` (its clock may be simulated, and is the one reports are
/// stamped by), this machine's otherwise (`--csv`).
pub async fn resolve_start(s: &str, target: Option<&str>) -> anyhow::Result<i64> {
    let now = match target {
        Some(base) if s.trim().starts_with("now") => {
            server_time(&http_client()?, base.trim_end_matches('/')).await?
        }
        _ => chrono::Utc::now().timestamp(),
    };
    parse_start(s, now)
}

/// `--speed`: how fast the server's clock runs, within what
/// `DOWNWATCH_CLOCK` accepts (a tiny one would put reports years away).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    let max = downwatch_core::clock::MAX_SPEED;
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (MIN_SPEED..=max).contains(v))
        .ok_or_else(|| format!("expected a number from {MIN_SPEED} to {max}, got {s:?}"))
}

/// The slowest server clock a replay accepts, as `DOWNWATCH_CLOCK` does.
pub const MIN_SPEED: f64 = 0.01;

/// How far off (real time) the first report may be before the replay
/// warns that `--start` or `--speed` are probably not what was meant.
const FAR_OFF: Duration = Duration::from_secs(300);

/// The warning to give when the first report of `window` is due more than
/// [`FAR_OFF`] after the server's `origin` at `speed`.
fn far_off_warning(window: Window, origin: i64, speed: f64) -> Option<String> {
    let wait = (window.from - origin) as f64 / speed;
    (wait > FAR_OFF.as_secs_f64()).then(|| {
        format!(
            "replay: warning: the first report is due in {:.0} min of real time (the server's \
             clock reads {}, the window starts at {}, at {speed}x); check --start and --speed",
            wait / 60.0,
            rfc3339(origin),
            rfc3339(window.from)
        )
    })
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?)
}

/// Writes the window's reports in `downwatch import`'s format, a minute at
/// a time (memory holds one minute's reports); returns how many.
pub fn write_csv(scenario: &Scenario, window: Window, out: impl Write) -> anyhow::Result<usize> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(crate::import::COLUMNS)?;
    let mut n = 0;
    for r in Reports::new(scenario, window.from, window.to) {
        n += 1;
        w.write_record([
            scenario.services[r.service].slug.as_str(),
            r.problem.as_str(),
            r.country.as_ref().map_or("", |c| c.as_str()),
            r.city.as_ref().map_or("", |c| c.as_str()),
            &rfc3339(r.at_ms.div_euclid(1000)),
        ])?;
    }
    w.flush()?;
    Ok(n)
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub target: String,
    /// How fast the server's clock runs.
    pub speed: f64,
    /// Reports in flight at once, at most.
    pub concurrency: usize,
    /// With it, services the scenario names that the server lacks are
    /// created, and problem kinds they lack added.
    pub admin_token: Option<String>,
    /// Progress lines on standard error.
    pub verbose: bool,
}

/// What a replay over HTTP did (printed as JSON).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Reports of the window.
    pub reports: usize,
    /// Stored by the server (201).
    pub stored: u64,
    /// Not sent: older than the server's clock when the replay began.
    pub skipped: usize,
    /// Refused or unanswered, after retries.
    pub failed: u64,
    /// Answered 429: the server does not take this machine's
    /// `X-Forwarded-For` (add it to `DOWNWATCH_TRUSTED_PROXIES`).
    pub rate_limited: u64,
    /// The largest difference, in seconds of the server's clock, between a
    /// report's scenario time and the time the server stamped on it.
    pub max_lag_s: f64,
    /// The server's clock when the replay began.
    pub server_time: String,
    /// The first refusal, to say why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// A distinct client address per report: 10.x.y.z from a per-run offset,
/// so two runs within the de-duplication window do not collide.
fn client_address(n: u64) -> String {
    let n = n & 0x00ff_ffff;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

async fn server_time(client: &reqwest::Client, base: &str) -> anyhow::Result<i64> {
    let url = format!("{base}/api/v1/status");
    let r = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("--target: cannot reach {url}"))?;
    if !r.status().is_success() {
        bail!("--target: {url} answered {}", r.status());
    }
    let body: Value = r
        .json()
        .await
        .context("--target: /api/v1/status is not JSON")?;
    let t = body["generated_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .context("--target: /api/v1/status has no generated_at time")?;
    Ok(t.timestamp())
}

/// The problem kinds each service's reports in `window` may have: its
/// own if it has ordinary reports, and those of its outages that overlap
/// the window.
fn kinds_in(scenario: &Scenario, window: Window) -> Vec<BTreeSet<&str>> {
    scenario
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut kinds: BTreeSet<&str> = BTreeSet::new();
            if s.per_hour > 0.0 {
                kinds.extend(s.problems.iter().map(|p| p.0.as_str()));
            }
            for o in scenario.outages.iter().filter(|o| o.service == i) {
                let last = o.places.iter().map(|p| o.end_of(p)).max().unwrap_or(0);
                let from = scenario.start + o.start;
                if from < window.to && from + last + o.fall > window.from {
                    kinds.extend(o.problems.iter().map(|p| p.0.as_str()));
                }
            }
            kinds
        })
        .collect()
}

/// Makes sure the server has the scenario's services with the problem
/// kinds the window may use (creating or extending them with an admin token).
async fn prepare_services(
    client: &reqwest::Client,
    opts: &HttpOptions,
    scenario: &Scenario,
    window: Window,
) -> anyhow::Result<()> {
    let base = opts.target.trim_end_matches('/');
    for (s, needed) in scenario.services.iter().zip(kinds_in(scenario, window)) {
        if needed.is_empty() {
            continue;
        }
        let url = format!("{base}/api/v1/services/{}", s.slug);
        let r = client.get(&url).send().await?;
        let (exists, mut kinds): (bool, Vec<String>) = match r.status().as_u16() {
            200 => {
                let v: Value = r.json().await?;
                let kinds = v["problems"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                (true, kinds)
            }
            404 => (false, Vec::new()),
            other => bail!("{url} answered {other}"),
        };
        let missing: Vec<&str> = needed
            .iter()
            .filter(|k| !kinds.iter().any(|have| have == *k))
            .copied()
            .collect();
        if exists && missing.is_empty() {
            continue;
        }
        let Some(token) = &opts.admin_token else {
            if exists {
                bail!(
                    "service {} on the server lacks the problem kinds {}: add them, or pass \
                     --admin-token to let the replay add them",
                    s.slug,
                    missing.join(", ")
                );
            }
            bail!(
                "the server has no service {}: create it, or pass --admin-token to let the \
                 replay create it",
                s.slug
            );
        };
        kinds.extend(missing.iter().map(|k| (*k).to_owned()));
        let r = if exists {
            client
                .patch(&url)
                .bearer_auth(token)
                .json(&json!({ "problems": kinds }))
                .send()
                .await?
        } else {
            client
                .post(format!("{base}/api/v1/services"))
                .bearer_auth(token)
                .json(&json!({ "slug": s.slug.as_str(), "name": s.name, "problems": kinds }))
                .send()
                .await?
        };
        if !r.status().is_success() {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            bail!("preparing service {} failed: {status} {body}", s.slug);
        }
    }
    Ok(())
}

/// Sends the window's reports as the server's clock reaches them, drawing
/// them a minute at a time.
pub async fn replay_http(
    scenario: &Scenario,
    window: Window,
    opts: &HttpOptions,
) -> anyhow::Result<Summary> {
    if !(opts.speed.is_finite()
        && (MIN_SPEED..=downwatch_core::clock::MAX_SPEED).contains(&opts.speed))
    {
        bail!(
            "--speed: must be a number from {MIN_SPEED} to {}",
            downwatch_core::clock::MAX_SPEED
        );
    }
    let base = opts.target.trim_end_matches('/').to_owned();
    let client = http_client()?;
    prepare_services(&client, opts, scenario, window).await?;
    let origin = server_time(&client, &base).await?;
    let started = Instant::now();
    let speed = opts.speed;
    // The last report's wait, the longest: refused when no clock can wait
    // that long, rather than failing (or panicking) report by report.
    let longest = (window.to - origin).max(0) as f64 / speed;
    let last_due = Duration::try_from_secs_f64(longest)
        .ok()
        .and_then(|d| started.checked_add(d))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--speed: at {speed}x the window's last report would be due in {longest:.0} s"
            )
        })?;
    if let Some(w) = far_off_warning(window, origin, speed) {
        eprintln!("{w}");
    }
    if opts.verbose {
        eprintln!(
            "replay: reports from {} to {} (server time {}, speed {}); those before the \
             server's time are skipped",
            rfc3339(window.from),
            rfc3339(window.to),
            rfc3339(origin),
            opts.speed,
        );
    }
    let summary = Arc::new(std::sync::Mutex::new(Summary {
        server_time: rfc3339(origin),
        ..Summary::default()
    }));
    let offset: u64 = rand::random::<u64>() & 0x00ff_ffff;
    let counter = Arc::new(AtomicU64::new(0));
    let slugs: Vec<String> = scenario
        .services
        .iter()
        .map(|s| s.slug.as_str().to_owned())
        .collect();
    // Reports older than the server's clock would be stamped at the wrong
    // time: counted and skipped as they are drawn.
    let due = Reports::new(scenario, window.from, window.to).filter(|r| {
        let late = r.at_ms < origin * 1000;
        if let Ok(mut s) = summary.lock() {
            s.reports += 1;
            s.skipped += usize::from(late);
        }
        !late
    });
    futures_util::stream::iter(due.enumerate())
        .map(|(i, r)| {
            let client = client.clone();
            let base = base.clone();
            let summary = summary.clone();
            let counter = counter.clone();
            let slug = slugs[r.service].clone();
            async move {
                let wait = (r.at_ms - origin * 1000) as f64 / 1000.0 / speed;
                let at = Duration::try_from_secs_f64(wait.max(0.0))
                    .ok()
                    .and_then(|d| started.checked_add(d))
                    .unwrap_or(last_due)
                    .min(last_due);
                tokio::time::sleep_until(at.into()).await;
                send(
                    &client,
                    &base,
                    &slug,
                    &r,
                    client_address(offset + i as u64),
                    &summary,
                )
                .await;
                let done = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if opts.verbose && done.is_multiple_of(1000) {
                    eprintln!("replay: {done} sent");
                }
            }
        })
        .buffered(opts.concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
    let out = summary.lock().map(|s| s.clone()).unwrap_or_default();
    if opts.verbose {
        eprintln!("replay: {} sent", out.stored + out.failed);
    }
    Ok(out)
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    slug: &str,
    r: &Report,
    address: String,
    summary: &std::sync::Mutex<Summary>,
) {
    let mut body = json!({ "problem": r.problem.as_str() });
    if let Some(c) = &r.country {
        body["country"] = json!(c.as_str());
    }
    if let Some(c) = &r.city {
        body["city"] = json!(c.as_str());
    }
    let url = format!("{base}/api/v1/services/{slug}/reports");
    let mut error = None;
    for attempt in 0..5 {
        let resp = client
            .post(&url)
            .header("X-Forwarded-For", &address)
            .json(&body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                error = Some(format!("{url}: {e}"));
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        match status {
            201 => {
                let lag = resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["received_at"].as_str().map(str::to_owned))
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| (t.timestamp_millis() - r.at_ms) as f64 / 1000.0);
                if let Ok(mut s) = summary.lock() {
                    s.stored += 1;
                    if let Some(lag) = lag {
                        s.max_lag_s = s.max_lag_s.max(lag.abs());
                    }
                }
                return;
            }
            429 | 503 => {
                if status == 429
                    && let Ok(mut s) = summary.lock()
                {
                    s.rate_limited += 1;
                }
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(5);
                error = Some(format!("{url} answered {status}"));
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            _ => {
                let text = resp.text().await.unwrap_or_default();
                error = Some(format!("{url} answered {status}: {text}"));
                break;
            }
        }
    }
    if let Ok(mut s) = summary.lock() {
        s.failed += 1;
        if s.first_error.is_none() {
            s.first_error = error;
        }
    }
}

/// `downwatch replay`'s arguments.
#[derive(Debug, Clone)]
pub struct Args {
    pub scenario: String,
    pub target: Option<String>,
    pub csv: Option<std::path::PathBuf>,
    pub speed: f64,
    pub start: Option<String>,
    pub from: Option<String>,
    pub until: Option<String>,
    pub concurrency: usize,
    pub admin_token: Option<String>,
}

/// `downwatch replay`: prints a JSON summary on standard output (on
/// standard error when the CSV goes to standard output).
#[allow(clippy::print_stdout)]
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let mut scenario = crate::scenario::load(&args.scenario)?;
    if let Some(start) = &args.start {
        let target = args
            .csv
            .is_none()
            .then_some(args.target.as_deref())
            .flatten();
        scenario = scenario.starting_at(resolve_start(start, target).await?);
    }
    let window = Window::of(&scenario, args.from.as_deref(), args.until.as_deref())?;
    match (&args.csv, &args.target) {
        (Some(path), _) => {
            let (n, to_stdout) = if path.as_os_str() == "-" {
                let stdout = std::io::stdout();
                (write_csv(&scenario, window, stdout.lock())?, true)
            } else {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("--csv: cannot write {}", path.display()))?;
                (
                    write_csv(&scenario, window, std::io::BufWriter::new(file))?,
                    false,
                )
            };
            let summary = json!({
                "scenario": scenario.name,
                "reports": n,
                "from": rfc3339(window.from),
                "to": rfc3339(window.to),
            });
            if to_stdout {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
        }
        (None, Some(target)) => {
            let opts = HttpOptions {
                target: target.clone(),
                speed: args.speed,
                concurrency: args.concurrency,
                admin_token: args.admin_token.clone(),
                verbose: true,
            };
            let summary = replay_http(&scenario, window, &opts).await?;
            println!("{}", serde_json::to_string(&summary)?);
            if summary.failed > 0 {
                bail!(
                    "{} of {} reports were not stored: {}",
                    summary.failed,
                    summary.reports,
                    summary.first_error.as_deref().unwrap_or("no answer")
                );
            }
        }
        (None, None) => bail!("give --target URL or --csv FILE"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_csv_is_an_import_file_of_the_window() {
        let s = crate::scenario::load("small-service-partial").unwrap();
        let w = Window::of(&s, Some("14d 19h"), Some("14d 20h")).unwrap();
        let mut out = Vec::new();
        let n = write_csv(&s, w, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("service,problem,country,city,reported_at")
        );
        assert_eq!(lines.clone().count(), n);
        // The outage: dozens of Deezer login reports from France in that hour.
        let logins = lines.filter(|l| l.starts_with("deezer,login,FR,")).count();
        assert!(logins > 60, "{logins}");
        assert!(text.contains("2024-03-18T19:"));
        assert!(Window::of(&s, Some("15d"), None).is_err());
        assert!(Window::of(&s, Some("2h"), Some("1h")).is_err());
        assert!(Window::of(&s, Some("soon"), None).is_err());
        assert_eq!(client_address(0x01_02_03), "10.1.2.3");
        let now = 1_710_720_030; // 2024-03-18T00:00:30Z
        assert_eq!(parse_start("now", now).unwrap(), 1_710_720_000);
        assert_eq!(
            parse_start("now-14d", now).unwrap(),
            1_710_720_000 - 14 * 86_400
        );
        assert_eq!(parse_start("2024-03-04", now).unwrap(), 1_709_510_400);
        assert!(parse_start("now+1d", now).is_err());
    }

    #[test]
    fn speeds_are_bounded_and_a_far_off_first_report_is_warned_of() {
        assert_eq!(parse_speed("200"), Ok(200.0));
        assert_eq!(parse_speed(" 0.01 "), Ok(0.01));
        for bad in ["0", "-1", "1e-300", "0.001", "NaN", "inf", "20000", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        let w = Window {
            from: 10_000,
            to: 20_000,
        };
        // 10,000 s ahead at 200x: 50 s away, fine; at 20x: 500 s, warned.
        assert_eq!(far_off_warning(w, 0, 200.0), None);
        let warning = far_off_warning(w, 0, 20.0).unwrap();
        assert!(warning.contains("due in 8 min"), "{warning}");
        assert_eq!(far_off_warning(w, 15_000, 0.01), None, "already due");
    }

    #[test]
    fn the_kinds_a_window_may_use_come_from_the_services_and_overlapping_outages() {
        let s = crate::scenario::load("small-service-partial").unwrap();
        let names = |w: Window| -> Vec<Vec<String>> {
            kinds_in(&s, w)
                .into_iter()
                .map(|k| k.into_iter().map(str::to_owned).collect())
                .collect()
        };
        let all = names(Window::of(&s, None, None).unwrap());
        let quiet = names(Window::of(&s, Some("1d"), Some("2d")).unwrap());
        // Every kind a report of the whole scenario has is prepared.
        for r in crate::scenario::generate(&s, s.start, s.start + 86_400) {
            assert!(all[r.service].iter().any(|k| k == r.problem.as_str()));
        }
        assert!(quiet.iter().zip(&all).all(|(q, a)| q.len() <= a.len()));
    }
}
