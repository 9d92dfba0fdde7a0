//! spawn_app(): a real server on a random port over a database and window
//! store of its own, in either mode.
//!
//! Production mode needs PostgreSQL and Redis (DOWNWATCH_TEST_PG_URL,
//! DOWNWATCH_TEST_REDIS_URL; defaults on 127.0.0.1). When they are absent the
//! production half of each test says so and passes, unless CI=true, where
//! their absence fails the run.

use actix_web::dev::ServerHandle;
use downwatch::config::Settings;
use downwatch::startup::Application;
use serde_json::Value;
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Embedded,
    Production,
}

fn pg_admin_url() -> String {
    std::env::var("DOWNWATCH_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("DOWNWATCH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
        "{prefix}_{secs}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The storage of one test: a SQLite file in a temporary directory, or a
/// PostgreSQL database and a Redis key prefix of its own. Dropped with the test.
pub struct Backing {
    pub mode: Mode,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pg_database: Option<String>,
    /// The server the database was made on, to drop it.
    pg_admin: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backing {
    /// `None` when production mode cannot run here (and CI is not set).
    pub async fn new(mode: Mode) -> Option<Self> {
        match mode {
            Mode::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("downwatch.db").display());
                Some(Self {
                    mode,
                    database_url: url,
                    redis_url: None,
                    redis_prefix: String::new(),
                    pg_database: None,
                    pg_admin: String::new(),
                    _dir: Some(dir),
                })
            }
            Mode::Production => Self::production_on(&pg_admin_url()).await,
        }
    }

    /// Production mode on the PostgreSQL server `admin` points at (any
    /// database on it): a database of its own there, and a Redis prefix.
    pub async fn production_on(admin: &str) -> Option<Self> {
        let mut conn = match sqlx::PgConnection::connect(admin).await {
            Ok(c) => c,
            Err(e) => return unavailable(&format!("PostgreSQL at {admin}: {e}")),
        };
        let redis = redis_url();
        if let Err(e) = ping_redis(&redis).await {
            return unavailable(&format!("Redis at {redis}: {e}"));
        }
        sweep_stale_databases(&mut conn).await;
        let name = unique("dwt");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        Some(Self {
            mode: Mode::Production,
            database_url: format!("{base}/{name}"),
            redis_url: Some(redis),
            redis_prefix: format!("{}:", unique("dwt")),
            pg_database: Some(name),
            pg_admin: admin.to_owned(),
            _dir: None,
        })
    }

    /// The environment of an app over this backing; `extra` overrides it
    /// (an empty value removes the variable).
    pub fn env(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = HashMap::new();
        let mut set = |k: &str, v: &str| {
            env.insert(k.to_owned(), v.to_owned());
        };
        set("DOWNWATCH_BIND", "127.0.0.1:0");
        set("DATABASE_URL", &self.database_url);
        if let Some(r) = &self.redis_url {
            set("REDIS_URL", r);
            set("DOWNWATCH_REDIS_PREFIX", &self.redis_prefix);
        }
        set("DOWNWATCH_ADMIN_TOKEN", ADMIN_TOKEN);
        // Tests speak for many clients through X-Forwarded-For from loopback.
        set("DOWNWATCH_TRUSTED_PROXIES", "127.0.0.1/32");
        set("DOWNWATCH_RATE_LIMIT_PER_MINUTE", "100000");
        set("DOWNWATCH_RATE_LIMIT_BURST", "100000");
        set("DOWNWATCH_HTTP_WORKERS", "2");
        // Tests that need the detector drive it with their own clock.
        set("DOWNWATCH_DETECTOR", "off");
        for (k, v) in extra {
            if v.is_empty() {
                env.remove(*k);
            } else {
                env.insert((*k).to_owned(), (*v).to_owned());
            }
        }
        env
    }

    /// Settings for an app over this backing; `extra` overrides them.
    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let env = self.env(extra);
        Settings::from_lookup(|k| env.get(k).cloned()).unwrap()
    }

    /// Counts stored reports (counted or not) straight from the database.
    pub async fn stored_reports(&self) -> i64 {
        self.scalar_i64("SELECT COUNT(*) FROM reports").await
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        match self.mode {
            Mode::Embedded => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
            Mode::Production => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
            }
        }
    }

    /// Runs a statement directly (e.g. to plant an incident).
    pub async fn execute(&self, sql: &str) {
        match self.mode {
            Mode::Embedded => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Mode::Production => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Every stored report's text columns, to check no address is kept in clear.
    pub async fn report_texts(&self) -> Vec<String> {
        let sql = "SELECT problem || '|' || COALESCE(country, '') || '|' || COALESCE(city, '') FROM reports";
        match self.mode {
            Mode::Embedded => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
            Mode::Production => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
            }
        }
    }

    /// Holds the database's write lock until the guard is released, so the
    /// ingest batcher cannot commit.
    pub async fn block_writes(&self) -> WriteBlock {
        match self.mode {
            Mode::Embedded => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteBlock::Sqlite(c)
            }
            Mode::Production => {
                let mut c = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE reports IN EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .unwrap();
                WriteBlock::Pg(c)
            }
        }
    }

    /// Makes the database refuse the app (PostgreSQL: connections refused and
    /// cut; SQLite: its write lock held past the busy timeout) until `restore`.
    pub async fn take_database_down(&self) -> Outage {
        match (self.mode, &self.pg_database) {
            (Mode::Production, Some(name)) => {
                let mut c = sqlx::PgConnection::connect(&self.pg_admin).await.unwrap();
                sqlx::query(&format!(
                    "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
                ))
                .execute(&mut c)
                .await
                .unwrap();
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(name)
                .execute(&mut c)
                .await
                .unwrap();
                Outage::Pg(c, name.clone())
            }
            _ => Outage::Sqlite(self.block_writes().await),
        }
    }
}

pub enum WriteBlock {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl WriteBlock {
    pub async fn release(self) {
        match self {
            WriteBlock::Sqlite(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
            WriteBlock::Pg(mut c) => {
                sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

pub enum Outage {
    Sqlite(WriteBlock),
    Pg(sqlx::PgConnection, String),
}

impl Outage {
    pub async fn restore(self) {
        match self {
            Outage::Sqlite(b) => b.release().await,
            Outage::Pg(mut c, name) => {
                sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        let prefix = self.redis_prefix.clone();
        let admin = self.pg_admin.clone();
        // Drop cannot await: clean up on a thread of its own and wait for it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                }
                delete_redis_keys(&prefix).await;
            });
        })
        .join();
    }
}

/// Deletes every Redis key under `prefix` (what losing Redis's data does to one deployment).
pub async fn delete_redis_keys(prefix: &str) -> usize {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return 0;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
    keys.len()
}

fn unavailable(why: &str) -> Option<Backing> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true requires PostgreSQL and Redis for the production-mode tests: {why}");
    }
    eprintln!("SKIPPING production mode (not CI): {why}");
    None
}

async fn ping_redis(url: &str) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

/// Drops test databases left by crashed runs more than two hours ago.
async fn sweep_stale_databases(conn: &mut sqlx::PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'dwt\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for name in names {
        let created: Option<u64> = name.split('_').nth(1).and_then(|s| s.parse().ok());
        if created.is_some_and(|t| t + 7200 < now) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: actix_web::web::Data<downwatch_api::state::AppState>,
    handle: ServerHandle,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app(backing: &Backing) -> TestApp {
    spawn_app_with(backing, &[]).await
}

pub async fn spawn_app_with(backing: &Backing, extra: &[(&str, &str)]) -> TestApp {
    let settings = backing.settings(extra);
    let app = Application::build(&settings).await.expect("the app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let state = app.state();
    let join = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        // Idle connections are dropped well before the server's keep-alive
        // (5 s) closes them, so a request never races that close (the
        // server's close arriving as the request goes out reads as an
        // incomplete message).
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_millis(2500))
            .build()
            .unwrap(),
        state,
        handle,
        join,
    }
}

static CLIENT: AtomicU32 = AtomicU32::new(1);

/// A fresh client address, as a trusted proxy would forward it.
pub fn new_client_ip() -> String {
    let n = CLIENT.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Submits a report as client `ip` with a JSON body.
    pub async fn report_as(&self, slug: &str, ip: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/services/{slug}/reports")))
            .header("X-Forwarded-For", ip)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Submits a report as client `ip` and reads the JSON answer.
    pub async fn report_json(&self, slug: &str, ip: &str, body: &Value) -> Value {
        self.report_as(slug, ip, body).await.json().await.unwrap()
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Submits a report from a new client.
    pub async fn report(&self, slug: &str, body: &Value) -> reqwest::Response {
        self.report_as(slug, &new_client_ip(), body).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A counter or gauge of `/metrics` (the first line starting with `name`).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    pub async fn service_id(&self, slug: &str) -> i64 {
        self.state.catalogue.get(slug).await.unwrap().unwrap().id
    }

    /// Graceful stop: in-flight requests finish, the ingest queue drains.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        self.join.await.unwrap().unwrap();
    }
}

/// Asserts a problem+json answer with `status` whose `errors` name `field`.
pub async fn assert_problem(resp: reqwest::Response, status: u16, field: Option<&str>) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        ct.starts_with("application/problem+json"),
        "content type {ct}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    for key in ["type", "title", "detail"] {
        assert!(body[key].is_string(), "problem member {key} in {body}");
    }
    if let Some(field) = field {
        let errors = body["errors"].as_array().expect("errors");
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["message"].is_string()),
            "no error names {field}: {body}"
        );
    }
    body
}

/// Runs a behavioural test in both modes.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    if let Some(b) = $crate::helpers::Backing::new($crate::helpers::Mode::Embedded).await {
                        super::$name(b).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn production() {
                    if let Some(b) = $crate::helpers::Backing::new($crate::helpers::Mode::Production).await {
                        super::$name(b).await;
                    }
                }
            }
        )*
    };
}
