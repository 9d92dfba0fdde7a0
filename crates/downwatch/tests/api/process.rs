//! `downwatch serve` as a real child process, for the faults an in-process
//! server cannot suffer (`kill -9`), and a load of reports that records
//! every acknowledged id.

use crate::helpers::Backing;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct ServeProcess {
    child: Child,
    pub address: String,
    pub log: tempfile::NamedTempFile,
}

impl ServeProcess {
    /// Starts `downwatch serve` over `backing` and waits until it is ready.
    pub async fn start(backing: &Backing, extra: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![("DOWNWATCH_BIND", &bind), ("RUST_LOG", "warn")];
        all.extend_from_slice(extra);
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_downwatch"))
            .arg("serve")
            .env_clear()
            .envs(backing.env(&all))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut p = Self {
            child,
            address: format!("http://{bind}"),
            log,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("downwatch serve exited ({status}): {}", self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.address)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGKILL: no shutdown handler runs, nothing is drained.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a load saw: the ids answered 201, and how the other answers went.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub acknowledged: Vec<i64>,
    pub refused: u64,
    /// Requests that got no answer (the server died under them).
    pub failed: u64,
}

/// Sends reports from distinct clients to the servers (round-robin) on
/// `concurrency` connections until `stop` is set, then returns what was
/// answered. A connection error ends that sender's work on that server.
pub async fn load(
    servers: Vec<String>,
    slug: &'static str,
    concurrency: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> LoadResult {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let client = client.clone();
            let servers = servers.clone();
            let stop = stop.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut r = LoadResult::default();
                let mut n = 0u32;
                let mut dead = vec![false; servers.len()];
                while !stop.load(Ordering::Relaxed) && dead.iter().any(|d| !d) {
                    n += 1;
                    let s = (worker + n as usize) % servers.len();
                    if dead[s] {
                        continue;
                    }
                    let ip = format!("11.{}.{}.{}", worker, (n >> 8) & 255, n & 255);
                    let answer = client
                        .post(format!("{}/api/v1/services/{slug}/reports", servers[s]))
                        .header("X-Forwarded-For", ip)
                        .json(&json!({"problem": "messaging", "country": "FR"}))
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Ok(resp) if resp.status() == 201 => match resp.json::<Value>().await {
                            Ok(v) => r.acknowledged.push(v["id"].as_i64().unwrap()),
                            // The body never arrived whole: not acknowledged.
                            Err(_) => r.failed += 1,
                        },
                        Ok(_) => r.refused += 1,
                        Err(_) => {
                            r.failed += 1;
                            dead[s] = true;
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut all = LoadResult::default();
    for t in tasks {
        let r = t.await.unwrap();
        all.acknowledged.extend(r.acknowledged);
        all.refused += r.refused;
        all.failed += r.failed;
    }
    all
}

/// How many of `ids` are stored reports.
pub async fn stored_among(b: &Backing, ids: &[i64]) -> i64 {
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    if list.is_empty() {
        return 0;
    }
    b.scalar_i64(&format!(
        "SELECT COUNT(*) FROM reports WHERE id IN ({list})"
    ))
    .await
}
