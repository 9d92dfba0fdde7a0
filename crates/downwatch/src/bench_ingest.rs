//! `downwatch bench ingest`: report submission over real HTTP, Downwatch
//! against a minimal actix-web endpoint in the same run.
//!
//! Every server is a child process of the bench (this same binary), so its
//! CPU time and peak memory are its own: `downwatch serve` in production
//! mode (a throwaway PostgreSQL database and Redis key prefix) and in
//! embedded mode (a temporary SQLite file), and `bench minimal-server`, which
//! parses the same JSON body and answers 201 without storing anything. `wrk`
//! drives each with the same script (`bench_ingest.lua`): one report per
//! request, each from a distinct client address behind a trusted proxy,
//! most for one service in an outage. After the run every 201 is looked up
//! in the database.

use anyhow::{Context, bail, ensure};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("bench_ingest.lua");

/// The targets, printed beside the figures.
const TARGET_PRODUCTION_RATIO: f64 = 0.5;
const TARGET_EMBEDDED_RATIO: f64 = 0.3;
const TARGET_REPORTS_PER_SEC: f64 = 20_000.0;
const TARGET_P99_MS: f64 = 50.0;
const TARGET_PEAK_MB: f64 = 200.0;

#[derive(Debug, Clone)]
pub struct IngestBench {
    /// Length of each measured phase.
    pub duration: Duration,
    /// wrk connections in the measured phase (the overload phase multiplies them).
    pub connections: u32,
    /// wrk threads.
    pub threads: u32,
    /// Connections of the overload phase, as a multiple of `connections`.
    pub overload: u32,
    /// HTTP workers of every server.
    pub workers: usize,
    /// PostgreSQL server (a URL to any database on it).
    pub database_url: String,
    pub redis_url: String,
    /// Which Downwatch modes to measure.
    pub production: bool,
    pub embedded: bool,
}

/// What wrk's `done()` prints (see the script).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct WrkResult {
    requests: u64,
    duration_us: u64,
    non2xx: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    p50_us: u64,
    p99_us: u64,
}

impl WrkResult {
    fn ok(&self) -> u64 {
        self.requests - self.non2xx
    }
    fn per_sec(&self) -> f64 {
        self.ok() as f64 / (self.duration_us as f64 / 1e6)
    }
    fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }
}

/// One measured phase against one server.
#[derive(Debug, Clone, Copy)]
struct Phase {
    wrk: WrkResult,
    /// CPU seconds of the server process during the phase.
    server_cpu: f64,
    /// CPU seconds of the whole machine (every process) during the phase.
    machine_cpu: f64,
    /// Peak resident memory of the server so far, and the largest and last
    /// resident sizes sampled during the phase, in MiB.
    peak_mb: f64,
    max_rss_mb: f64,
    end_rss_mb: f64,
}

impl Phase {
    fn server_cpu_us(&self) -> f64 {
        self.server_cpu * 1e6 / self.wrk.ok().max(1) as f64
    }
    fn machine_cpu_us(&self) -> f64 {
        self.machine_cpu * 1e6 / self.wrk.ok().max(1) as f64
    }
}

/// A server of the bench, killed when dropped.
struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(
        name: &'static str,
        args: &[&str],
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DOWNWATCH_BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting the {name} server"))?;
        let mut server = Self {
            name,
            child,
            port,
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the {} server exited ({status}):\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok((200, _)) = http_get(self.port, "/readyz") {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the {} server did not become ready",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A port nobody listens on now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A bare HTTP/1.0 GET on loopback: status and body.
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// CPU seconds (user + system) a process has used.
fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

/// CPU seconds the whole machine has spent busy (every core).
fn machine_cpu() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = v.iter().take(8).sum::<f64>() - v[3] - v.get(4).copied().unwrap_or(0.0);
    Ok(busy / clock_ticks())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture we run on.
    100.0
}

/// A `kB` line of /proc/<pid>/status, in MiB.
fn status_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("bad status line")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// One run of wrk.
struct WrkRun<'a> {
    targets: &'a str,
    connections: u32,
    secs: u64,
    /// Keeps this phase's client addresses apart from every other phase's.
    base: u64,
    /// Where the script writes the ids of the 201 answers, if anywhere.
    record_ids: Option<&'a Path>,
}

/// Runs wrk against a server, sampling the server's memory meanwhile.
fn run_wrk(b: &IngestBench, dir: &Path, server: &Server, run: &WrkRun) -> anyhow::Result<Phase> {
    let WrkRun {
        targets,
        connections,
        secs,
        base,
        record_ids,
    } = *run;
    let script = dir.join("bench_ingest.lua");
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", b.threads.min(connections)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("30s")
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("--")
        .arg(targets)
        .arg(base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = record_ids {
        cmd.env("DW_BENCH_RECORD_IDS", path);
    }
    let cpu0 = process_cpu(server.pid())?;
    let machine0 = machine_cpu()?;
    let child = cmd.spawn().context(
        "cannot run wrk; install it (Debian: apt-get install wrk) and run the bench again",
    )?;
    let pid = server.pid();
    let (mut max_rss, mut end_rss) = (0.0f64, 0.0);
    let out = {
        let wait = std::thread::spawn(move || child.wait_with_output());
        while !wait.is_finished() {
            if let Ok(rss) = status_mb(pid, "VmRSS") {
                max_rss = max_rss.max(rss);
                end_rss = rss;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        wait.join()
            .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??
    };
    let server_cpu = process_cpu(pid)? - cpu0;
    let machine_cpu = machine_cpu()? - machine0;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(json) = stdout.lines().find_map(|l| l.strip_prefix("DW_RESULT ")) else {
        bail!(
            "wrk printed no result:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let wrk: WrkResult = serde_json::from_str(json)?;
    Ok(Phase {
        wrk,
        server_cpu,
        machine_cpu,
        peak_mb: status_mb(pid, "VmHWM")?,
        max_rss_mb: max_rss,
        end_rss_mb: end_rss,
    })
}

/// Measured figures of one server.
struct Measured {
    name: String,
    load: Phase,
    overload: Option<Phase>,
    /// 201s answered in every phase, rows stored, and the ids recorded in
    /// the verification phase that were found in the database.
    check: Option<DurabilityCheck>,
}

struct DurabilityCheck {
    acknowledged: u64,
    rows: u64,
    recorded: u64,
    found: u64,
}

/// Where a Downwatch server keeps its reports, to check them afterwards.
enum Database {
    Pg(String),
    Sqlite(String),
}

impl Database {
    async fn rows(&self) -> anyhow::Result<u64> {
        use sqlx::Connection;
        let sql = "SELECT COUNT(*) FROM reports";
        let n: i64 = match self {
            Self::Pg(url) => {
                let mut c = sqlx::PgConnection::connect(url).await?;
                sqlx::query_scalar(sql).fetch_one(&mut c).await?
            }
            Self::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await?;
                sqlx::query_scalar(sql).fetch_one(&mut c).await?
            }
        };
        Ok(n as u64)
    }

    /// How many of `ids` are stored reports.
    async fn found(&self, ids: &[i64]) -> anyhow::Result<u64> {
        use sqlx::Connection;
        let mut found = 0i64;
        match self {
            Self::Pg(url) => {
                let mut c = sqlx::PgConnection::connect(url).await?;
                found = sqlx::query_scalar("SELECT COUNT(*) FROM reports WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_one(&mut c)
                    .await?;
            }
            Self::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await?;
                // The ids as a JSON array: one statement whatever their number.
                let list = serde_json::to_string(ids)?;
                found += sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM reports WHERE id IN (SELECT value FROM json_each(?))",
                )
                .bind(list)
                .fetch_one(&mut c)
                .await?;
            }
        }
        Ok(found as u64)
    }
}

/// The `slug:kind|kind,…` list the script sends to: the first service
/// takes most reports (the outage), the rest share the remainder.
fn targets_of(port: u16) -> anyhow::Result<String> {
    let (status, body) = http_get(port, "/api/v1/services")?;
    ensure!(status == 200, "listing services answered {status}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let services = v["services"].as_array().context("no services")?;
    let mut out = Vec::new();
    for s in services.iter().take(20) {
        let slug = s["slug"].as_str().context("a service without a slug")?;
        let kinds: Vec<&str> = s["problems"]
            .as_array()
            .context("a service without problems")?
            .iter()
            .filter_map(|k| k.as_str())
            .collect();
        out.push(format!("{slug}:{}", kinds.join("|")));
    }
    ensure!(!out.is_empty(), "the catalogue is empty");
    Ok(out.join(","))
}

/// Measures one server: warm-up, the measured phase, the verification
/// phase (ids recorded), and the overload phase.
async fn measure(
    b: &IngestBench,
    dir: &Path,
    server: &Server,
    database: Option<&Database>,
    label: &str,
) -> anyhow::Result<Measured> {
    let targets = targets_of(server.port)?;
    let secs = b.duration.as_secs().max(1);
    let mut base = 0u64;
    let mut phase = |connections, secs, record_ids: Option<&Path>| {
        // 2^30 addresses per phase: distinct from every other phase's.
        base += 1 << 30;
        let run = WrkRun {
            targets: &targets,
            connections,
            secs,
            base,
            record_ids,
        };
        run_wrk(b, dir, server, &run)
    };
    let warm = phase(b.connections, 2, None)?;
    let load = phase(b.connections, secs, None)?;
    let ids_file = dir.join(format!("{}-ids.txt", server.name));
    let verify = phase(b.connections, 2, Some(&ids_file))?;
    let overload = if b.overload > 1 {
        Some(phase(b.connections * b.overload, secs, None)?)
    } else {
        None
    };
    let check = match database {
        None => None,
        Some(db) => {
            // Whatever the server still had queued is committed or refused
            // by now; answers already given are what count.
            let acknowledged = [Some(&warm), Some(&load), Some(&verify), overload.as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.wrk.ok())
                .sum();
            let ids: Vec<i64> = std::fs::read_to_string(&ids_file)?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            Some(DurabilityCheck {
                acknowledged,
                rows: db.rows().await?,
                recorded: ids.len() as u64,
                found: db.found(&ids).await?,
            })
        }
    };
    Ok(Measured {
        name: label.to_owned(),
        load,
        overload,
        check,
    })
}

fn mode_env(b: &IngestBench) -> Vec<(&'static str, String)> {
    vec![
        ("DOWNWATCH_TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
        ("DOWNWATCH_HTTP_WORKERS", b.workers.to_string()),
    ]
}

pub async fn ingest(b: &IngestBench) -> anyhow::Result<String> {
    ensure!(b.connections > 0 && b.threads > 0, "nothing to measure");
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("downwatch-bench-ingest-{pid}"));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    std::fs::write(dir.join("bench_ingest.lua"), SCRIPT)?;

    let mut results = Vec::new();
    let minimal = Server::spawn("minimal", &["bench", "minimal-server"], &mode_env(b), &dir)?;
    results.push(
        measure(
            b,
            &dir,
            &minimal,
            None,
            "minimal actix-web endpoint (parses, stores nothing)",
        )
        .await?,
    );
    drop(minimal);

    if b.production {
        let name = format!("dw_bench_ingest_{pid}");
        let url = downwatch_store::create_pg_database(&b.database_url, &name)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let prefix = format!("dwbench{pid}:");
        let measured = async {
            let mut env = mode_env(b);
            env.push(("DATABASE_URL", url.clone()));
            env.push(("REDIS_URL", b.redis_url.clone()));
            env.push(("DOWNWATCH_REDIS_PREFIX", prefix.clone()));
            let server = Server::spawn("production", &["serve"], &env, &dir)?;
            let db = Database::Pg(url.clone());
            let m = measure(b, &dir, &server, Some(&db), "Downwatch, PostgreSQL + Redis").await;
            drop(server);
            m
        }
        .await;
        let dropped = downwatch_store::drop_pg_database(&b.database_url, &name).await;
        forget_redis_prefix(&b.redis_url, &prefix).await;
        results.push(measured?);
        dropped.with_context(|| format!("dropping database {name}"))?;
    }

    if b.embedded {
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let mut env = mode_env(b);
        env.push(("DATABASE_URL", url.clone()));
        let server = Server::spawn("embedded", &["serve"], &env, &dir)?;
        let db = Database::Sqlite(url);
        let m = measure(
            b,
            &dir,
            &server,
            Some(&db),
            "Downwatch, embedded (SQLite + in-process windows)",
        )
        .await?;
        drop(server);
        results.push(m);
    }
    Ok(report(b, &results))
}

/// Deletes the bench's Redis keys.
async fn forget_redis_prefix(url: &str, prefix: &str) {
    if let Ok(w) = downwatch_windows::RedisWindows::connect(url, prefix).await {
        let _ = w.forget_all().await;
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report(b: &IngestBench, results: &[Measured]) -> String {
    let mut out = String::new();
    let minimal = results[0].load.wrk.per_sec();
    let _ = writeln!(
        out,
        "wrk: {} thread(s), {} connections, {} s per phase; overload: {}x the connections; \
         {} HTTP workers per server; {} cores.\n",
        b.threads,
        b.connections,
        b.duration.as_secs(),
        b.overload,
        b.workers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        out,
        "| server | reports/s | p50 ms | p99 ms | server CPU µs/report | machine CPU µs/report | peak memory MB | ratio to minimal |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for m in results {
        let p = &m.load;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {:.2}x |",
            m.name,
            p.wrk.per_sec(),
            p.wrk.p50_us as f64 / 1e3,
            p.wrk.p99_us as f64 / 1e3,
            p.server_cpu_us(),
            p.machine_cpu_us(),
            p.peak_mb,
            p.wrk.per_sec() / minimal,
        );
    }
    let _ = writeln!(
        out,
        "\nOverload ({}x the connections):\n\n| server | 2xx/s | 503 and other non-2xx | socket errors | p99 ms | RSS max MB | RSS at end MB | peak memory MB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        b.overload
    );
    for m in results {
        if let Some(o) = &m.overload {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} |",
                m.name,
                o.wrk.per_sec(),
                o.wrk.non2xx,
                o.wrk.errors(),
                o.wrk.p99_us as f64 / 1e3,
                o.max_rss_mb,
                o.end_rss_mb,
                o.peak_mb,
            );
        }
    }
    let _ = writeln!(
        out,
        "\nDurability: every 201 of every phase against the rows stored, and the ids of the verification phase looked up.\n\n| server | 201 answered | rows stored | ids recorded | ids found | verdict |\n| --- | ---: | ---: | ---: | ---: | --- |"
    );
    for m in results {
        if let Some(c) = &m.check {
            let ok = c.rows >= c.acknowledged && c.found == c.recorded;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                m.name,
                c.acknowledged,
                c.rows,
                c.recorded,
                c.found,
                if ok {
                    "every 201 stored"
                } else {
                    "**201s missing**"
                }
            );
        }
    }
    let _ = writeln!(out, "\nTargets:");
    for m in &results[1..] {
        let p = &m.load;
        let ratio = p.wrk.per_sec() / minimal;
        let embedded = m.name.contains("embedded");
        let target = if embedded {
            TARGET_EMBEDDED_RATIO
        } else {
            TARGET_PRODUCTION_RATIO
        };
        let _ = writeln!(
            out,
            "- {}: ratio {ratio:.2}x (target {target}x: {}){}; peak memory {:.0} MB (target {TARGET_PEAK_MB}: {})",
            m.name,
            verdict(ratio >= target),
            if embedded {
                String::new()
            } else {
                format!(
                    ", {:.0} reports/s (target {TARGET_REPORTS_PER_SEC}: {}), p99 {:.1} ms (target {TARGET_P99_MS}: {})",
                    p.wrk.per_sec(),
                    verdict(p.wrk.per_sec() >= TARGET_REPORTS_PER_SEC),
                    p.wrk.p99_us as f64 / 1e3,
                    verdict(p.wrk.p99_us as f64 / 1e3 <= TARGET_P99_MS),
                )
            },
            m.overload.as_ref().map_or(p.peak_mb, |o| o.peak_mb),
            verdict(m.overload.as_ref().map_or(p.peak_mb, |o| o.peak_mb) <= TARGET_PEAK_MB),
        );
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// The baseline: the same route and JSON body, parsed and answered, nothing stored.
pub mod minimal {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        problem: String,
        country: Option<String>,
        city: Option<String>,
        #[allow(dead_code)]
        client_id: Option<String>,
    }

    #[derive(Serialize)]
    struct Created<'a> {
        id: i64,
        service: &'a str,
        problem: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        country: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        city: Option<&'a str>,
        counted: bool,
        received_at: String,
    }

    static NEXT: AtomicI64 = AtomicI64::new(1);

    async fn submit(slug: web::Path<String>, body: web::Json<Body>) -> HttpResponse {
        HttpResponse::Created().json(Created {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            service: &slug,
            problem: &body.problem,
            country: body.country.as_deref(),
            city: body.city.as_deref(),
            counted: true,
            received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }

    async fn services() -> HttpResponse {
        HttpResponse::Ok().json(serde_json::json!({
            "services": [{"slug": "whatsapp", "problems": ["messaging", "login", "app"]},
                         {"slug": "instagram", "problems": ["app", "login"]}]
        }))
    }

    /// Serves on `DOWNWATCH_BIND` with `DOWNWATCH_HTTP_WORKERS` workers until killed.
    pub async fn serve() -> anyhow::Result<()> {
        let bind = std::env::var("DOWNWATCH_BIND").unwrap_or_else(|_| "127.0.0.1:8081".into());
        let workers = std::env::var("DOWNWATCH_HTTP_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        HttpServer::new(|| {
            App::new()
                .app_data(web::JsonConfig::default().limit(4096))
                .route("/api/v1/services/{slug}/reports", web::post().to(submit))
                .route("/api/v1/services", web::get().to(services))
                .route("/readyz", web::get().to(HttpResponse::Ok))
        })
        .workers(workers)
        .bind(bind)?
        .run()
        .await?;
        Ok(())
    }
}
