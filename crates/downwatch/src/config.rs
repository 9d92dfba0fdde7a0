//! Configuration from the environment. Every setting has a default that
//! works on a laptop; a bad value stops start-up naming the variable.

use actix_web::http::header::HeaderName;
use downwatch_api::ratelimit::RateLimit;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// `DOWNWATCH_BIND`: where the HTTP server listens.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://…` (embedded) or `postgres://…`.
    pub database_url: String,
    /// `REDIS_URL`: unset for in-process windows.
    pub redis_url: Option<String>,
    /// `DOWNWATCH_REDIS_PREFIX`: prefix of every Redis key.
    pub redis_prefix: String,
    /// `DOWNWATCH_ADMIN_TOKEN`: unset disables the admin endpoints.
    pub admin_token: Option<String>,
    /// `DOWNWATCH_TRUSTED_PROXIES`: CIDRs whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `DOWNWATCH_COUNTRY_HEADER`: header naming the client's country.
    pub country_header: Option<HeaderName>,
    /// `DOWNWATCH_SERVICES_FILE`: catalogue to seed instead of the bundled one.
    pub services_file: Option<PathBuf>,
    /// `DOWNWATCH_PUBLIC_URL`: the base of absolute links (feeds, embeds),
    /// without a trailing slash; unset: the request's `Host`.
    pub public_url: Option<String>,
    /// `DOWNWATCH_WEBHOOK_ALLOW_PRIVATE`: deliver webhooks to private addresses.
    pub webhook_allow_private: bool,
    /// `DOWNWATCH_WEBHOOK_BACKOFF_MS`, `DOWNWATCH_WEBHOOK_MAX_ATTEMPTS`,
    /// `DOWNWATCH_WEBHOOK_TIMEOUT_MS`: how failed deliveries are retried.
    pub webhook_backoff: Duration,
    pub webhook_max_attempts: u32,
    pub webhook_timeout: Duration,
    /// `DOWNWATCH_CLOCK` (with `DOWNWATCH_ALLOW_SIMULATED_CLOCK=1`): a
    /// simulated clock for demos and tests; the system clock otherwise.
    pub clock: downwatch_core::Clock,
    /// `DOWNWATCH_RATE_LIMIT_PER_MINUTE` and `DOWNWATCH_RATE_LIMIT_BURST`.
    pub rate_limit: RateLimit,
    /// `DOWNWATCH_DEDUP_WINDOW_SECS`: one counted report per client per service per window.
    pub dedup_window: Duration,
    /// `DOWNWATCH_COUNTED_PER_ADDRESS`: counted reports per address per service per window.
    pub counted_per_address: u32,
    /// `DOWNWATCH_INGEST_QUEUE`: reports that may wait for the batcher.
    pub ingest_queue: usize,
    /// `DOWNWATCH_INGEST_MAX_BATCH`: most reports per transaction.
    pub ingest_max_batch: usize,
    /// `DOWNWATCH_INGEST_WORKERS`: batches committing at once on PostgreSQL
    /// (SQLite has one writer, so one). Default one: every batch upserts
    /// the same hot rollup rows, so a second batch mostly waits on the
    /// first's row locks, and one worker gathers bigger batches.
    pub ingest_workers: usize,
    /// `DOWNWATCH_COMMIT_TIMEOUT_MS`: how long a submission waits for its commit.
    pub commit_timeout: Duration,
    /// `DOWNWATCH_HTTP_WORKERS`: HTTP worker threads (default: one per core).
    pub http_workers: usize,
    /// `DOWNWATCH_DETECTOR`: run the live detector loop (default on; off
    /// for an instance that only serves, or for tests that drive it).
    pub detector: bool,
    /// `DOWNWATCH_DETECT_INTERVAL_MS`: time between detector ticks.
    pub detect_interval: Duration,
    /// `DOWNWATCH_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the log filter, checked at start.
    pub log_filter: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let err = |var: &'static str, message: String| ConfigError { var, message };

        let bind = match get("DOWNWATCH_BIND") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.parse().map_err(|_| {
                err("DOWNWATCH_BIND", format!("expected an address and port such as 127.0.0.1:8080 or [::]:8080, got {v:?}"))
            })?,
        };
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "sqlite://downwatch.db".to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "DATABASE_URL",
                "expected sqlite://FILE or postgres://USER@HOST/DB".to_owned(),
            ));
        }
        let redis_url = get("REDIS_URL");
        if let Some(u) = &redis_url
            && !(u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("unix://"))
        {
            return Err(err(
                "REDIS_URL",
                "expected redis://HOST:PORT[/DB]".to_owned(),
            ));
        }
        let redis_prefix = get("DOWNWATCH_REDIS_PREFIX").unwrap_or_else(|| "dw:".to_owned());
        downwatch_windows::validate_prefix(&redis_prefix)
            .map_err(|m| err("DOWNWATCH_REDIS_PREFIX", m))?;
        let admin_token = get("DOWNWATCH_ADMIN_TOKEN");
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err(err(
                "DOWNWATCH_ADMIN_TOKEN",
                "expected at least 16 characters (e.g. `openssl rand -hex 32`)".to_owned(),
            ));
        }
        let trusted_proxies = match get("DOWNWATCH_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            err(
                                "DOWNWATCH_TRUSTED_PROXIES",
                                format!("expected comma-separated CIDRs such as 10.0.0.0/8,127.0.0.1; {s:?} is not one"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let country_header = get("DOWNWATCH_COUNTRY_HEADER")
            .map(|h| {
                HeaderName::try_from(h.as_str()).map_err(|_| {
                    err(
                        "DOWNWATCH_COUNTRY_HEADER",
                        format!("expected an HTTP header name such as CF-IPCountry, got {h:?}"),
                    )
                })
            })
            .transpose()?;
        let services_file = get("DOWNWATCH_SERVICES_FILE").map(PathBuf::from);
        if let Some(p) = &services_file
            && !p.is_file()
        {
            return Err(err(
                "DOWNWATCH_SERVICES_FILE",
                format!(
                    "expected a readable catalogue file, {} is not one",
                    p.display()
                ),
            ));
        }
        let public_url = get("DOWNWATCH_PUBLIC_URL")
            .map(|v| public_url(&v).map_err(|m| err("DOWNWATCH_PUBLIC_URL", m)))
            .transpose()?;
        let webhook_allow_private = parse_bool(&get, "DOWNWATCH_WEBHOOK_ALLOW_PRIVATE", false)?;
        let webhook_backoff = Duration::from_millis(parse_num(
            &get,
            "DOWNWATCH_WEBHOOK_BACKOFF_MS",
            10_000,
            10,
            3_600_000,
        )?);
        let webhook_max_attempts = parse_num(&get, "DOWNWATCH_WEBHOOK_MAX_ATTEMPTS", 10, 1, 50)?;
        let webhook_timeout = Duration::from_millis(parse_num(
            &get,
            "DOWNWATCH_WEBHOOK_TIMEOUT_MS",
            10_000,
            100,
            60_000,
        )?);
        let clock = match get("DOWNWATCH_CLOCK") {
            None => downwatch_core::Clock::System,
            Some(v) => {
                // A server whose clock lies stamps reports with the wrong
                // time: only on purpose, for demos and tests.
                if !parse_bool(&get, "DOWNWATCH_ALLOW_SIMULATED_CLOCK", false)? {
                    return Err(err(
                        "DOWNWATCH_CLOCK",
                        "a simulated clock is for demos and tests only; set \
                         DOWNWATCH_ALLOW_SIMULATED_CLOCK=1 as well to use it"
                            .to_owned(),
                    ));
                }
                downwatch_core::Clock::parse(&v).map_err(|m| err("DOWNWATCH_CLOCK", m))?
            }
        };
        let per_minute =
            parse_num::<u32>(&get, "DOWNWATCH_RATE_LIMIT_PER_MINUTE", 30, 1, 1_000_000)?;
        let burst = parse_num::<u32>(&get, "DOWNWATCH_RATE_LIMIT_BURST", 30, 1, 1_000_000)?;
        let rate_limit = RateLimit {
            per_minute: NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        };
        let dedup_window = Duration::from_secs(parse_num(
            &get,
            "DOWNWATCH_DEDUP_WINDOW_SECS",
            900,
            1,
            86_400,
        )?);
        let counted_per_address = parse_num(&get, "DOWNWATCH_COUNTED_PER_ADDRESS", 10, 1, 100_000)?;
        let ingest_queue = parse_num(&get, "DOWNWATCH_INGEST_QUEUE", 20_000, 1, 10_000_000)?;
        let ingest_max_batch = parse_num(&get, "DOWNWATCH_INGEST_MAX_BATCH", 1_000, 1, 50_000)?;
        let ingest_workers = parse_num(&get, "DOWNWATCH_INGEST_WORKERS", 1, 1, 64)?;
        let commit_timeout = Duration::from_millis(parse_num(
            &get,
            "DOWNWATCH_COMMIT_TIMEOUT_MS",
            10_000,
            10,
            600_000,
        )?);
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let http_workers = parse_num(&get, "DOWNWATCH_HTTP_WORKERS", cores, 1, 1024)?;
        let detector = parse_bool(&get, "DOWNWATCH_DETECTOR", true)?;
        let detect_interval = Duration::from_millis(parse_num(
            &get,
            "DOWNWATCH_DETECT_INTERVAL_MS",
            5_000,
            100,
            60_000,
        )?);
        let log_format = match get("DOWNWATCH_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    "DOWNWATCH_LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ));
            }
        };
        let log_filter =
            get("RUST_LOG").unwrap_or_else(|| "info,sqlx=warn,actix_server=warn".to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(err(
                "RUST_LOG",
                format!("expected a filter such as info or downwatch=debug: {e}"),
            ));
        }
        Ok(Self {
            bind,
            database_url,
            redis_url,
            redis_prefix,
            admin_token,
            trusted_proxies,
            country_header,
            services_file,
            public_url,
            webhook_allow_private,
            webhook_backoff,
            webhook_max_attempts,
            webhook_timeout,
            clock,
            rate_limit,
            dedup_window,
            counted_per_address,
            ingest_queue,
            ingest_max_batch,
            ingest_workers,
            commit_timeout,
            http_workers,
            detector,
            detect_interval,
            log_format,
            log_filter,
        })
    }
}

/// An absolute http(s) URL with a host and nothing after its path, as the
/// base of links (its trailing slash dropped).
fn public_url(v: &str) -> Result<String, String> {
    let expected = || {
        format!(
            "expected the server's public base URL such as https://status.example.org or \
             https://example.org/downwatch (no query, fragment or user name), got {v:?}"
        )
    };
    let u = reqwest::Url::parse(v).map_err(|_| expected())?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host_str().is_none_or(str::is_empty)
        || !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(expected());
    }
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(var).map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError {
            var,
            message: format!("expected 1/true/yes/on or 0/false/no/off, got {other:?}"),
        }),
    }
}

fn parse_num<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(v) = get(var) else {
        return Ok(default);
    };
    v.parse::<T>()
        .ok()
        .filter(|n| *n >= min && *n <= max)
        .ok_or_else(|| ConfigError {
            var,
            message: format!("expected a whole number from {min} to {max}, got {v:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_configured_is_the_embedded_default() {
        let s = with(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.database_url, "sqlite://downwatch.db");
        assert_eq!(s.redis_url, None);
        assert_eq!(s.admin_token, None);
        assert_eq!(s.dedup_window, Duration::from_secs(900));
        assert!(!s.webhook_allow_private);
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases = [
            ("DOWNWATCH_BIND", "localhost"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "localhost:6379"),
            ("DOWNWATCH_ADMIN_TOKEN", "short"),
            ("DOWNWATCH_TRUSTED_PROXIES", "10.0.0.0/8,nope"),
            ("DOWNWATCH_COUNTRY_HEADER", "bad header"),
            ("DOWNWATCH_SERVICES_FILE", "/no/such/file.toml"),
            ("DOWNWATCH_WEBHOOK_ALLOW_PRIVATE", "maybe"),
            ("DOWNWATCH_PUBLIC_URL", "status.example.org"),
            ("DOWNWATCH_PUBLIC_URL", "ftp://status.example.org"),
            ("DOWNWATCH_PUBLIC_URL", "https://status.example.org/?x=1"),
            ("DOWNWATCH_PUBLIC_URL", "https://user@status.example.org"),
            ("DOWNWATCH_WEBHOOK_BACKOFF_MS", "5"),
            ("DOWNWATCH_WEBHOOK_MAX_ATTEMPTS", "0"),
            ("DOWNWATCH_WEBHOOK_TIMEOUT_MS", "soon"),
            ("DOWNWATCH_CLOCK", "2024-03-18T00:00:00Z@60"),
            ("DOWNWATCH_RATE_LIMIT_PER_MINUTE", "0"),
            ("DOWNWATCH_DEDUP_WINDOW_SECS", "-5"),
            ("DOWNWATCH_INGEST_QUEUE", "lots"),
            ("DOWNWATCH_LOG_FORMAT", "xml"),
            ("DOWNWATCH_REDIS_PREFIX", "a{b}"),
            ("DOWNWATCH_COUNTED_PER_ADDRESS", "0"),
            ("DOWNWATCH_DETECTOR", "maybe"),
            ("DOWNWATCH_DETECT_INTERVAL_MS", "5"),
            ("RUST_LOG", "info,foo=notalevel"),
        ];
        for (var, value) in cases {
            let e = with(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{value}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn production_settings_parse() {
        let s = with(&[
            ("DATABASE_URL", "postgres://localhost/dw"),
            ("REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("DOWNWATCH_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("DOWNWATCH_COUNTRY_HEADER", "CF-IPCountry"),
            ("DOWNWATCH_WEBHOOK_ALLOW_PRIVATE", "1"),
            ("DOWNWATCH_BIND", "[::]:9000"),
        ])
        .unwrap();
        assert_eq!(s.trusted_proxies.len(), 2);
        assert!(s.trusted_proxies[1].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(s.country_header.unwrap().as_str(), "cf-ipcountry");
        assert!(s.webhook_allow_private);
        assert_eq!(s.bind.port(), 9000);
        assert_eq!(s.public_url, None);
        for (given, base) in [
            ("https://Status.Example.org/", "https://status.example.org"),
            (
                "http://example.org:8080/downwatch/",
                "http://example.org:8080/downwatch",
            ),
        ] {
            let s = with(&[("DOWNWATCH_PUBLIC_URL", given)]).unwrap();
            assert_eq!(s.public_url.as_deref(), Some(base));
        }
        assert!(!s.clock.is_simulated());
    }

    #[test]
    fn a_simulated_clock_needs_its_explicit_permission() {
        let e = with(&[("DOWNWATCH_CLOCK", "now@60")]).unwrap_err();
        assert_eq!(e.var, "DOWNWATCH_CLOCK");
        assert!(e.message.contains("DOWNWATCH_ALLOW_SIMULATED_CLOCK"), "{e}");
        let s = with(&[
            ("DOWNWATCH_CLOCK", "2024-03-18T00:00:00Z@60"),
            ("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1"),
        ])
        .unwrap();
        assert!(s.clock.is_simulated());
        assert_eq!(s.clock.speed(), 60.0);
        let e = with(&[
            ("DOWNWATCH_CLOCK", "2024-03-18@60"),
            ("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "DOWNWATCH_CLOCK");
    }
}
