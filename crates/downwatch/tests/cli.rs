//! The `downwatch` binary as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn downwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_downwatch"));
    // Start from nothing: no setting leaks in from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("DOWNWATCH_") || k == "DATABASE_URL" || k == "REDIS_URL" {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    for (var, value) in [
        ("DOWNWATCH_BIND", "everywhere"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("DOWNWATCH_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("DOWNWATCH_ADMIN_TOKEN", "123"),
    ] {
        let out = downwatch().arg("serve").env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var} not named in: {err}");
    }
}

#[test]
fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = downwatch()
        .arg("migrate")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Ask SQLite: the schema may still sit in the write-ahead log.
    let tables: Vec<String> = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut c)
            .await
            .unwrap()
    });
    for t in ["incidents", "report_minutes", "reports", "services"] {
        assert!(tables.iter().any(|n| n == t), "{t} in {tables:?}");
    }
}

#[test]
fn serve_with_no_configuration_runs_embedded_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = downwatch()
        .arg("serve")
        .current_dir(dir.path())
        .env("DOWNWATCH_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ready = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                let body: serde_json::Value = r.json().await.unwrap();
                return Some(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    // SIGTERM: a graceful stop that drains the ingest queue.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    let body = ready.expect("the server became ready");
    assert_eq!(body["checks"]["database"]["backend"], "sqlite");
    assert_eq!(body["checks"]["window_store"]["backend"], "memory");
    assert!(dir.path().join("downwatch.db").exists());
    assert!(status.success(), "graceful exit, got {status:?}");
}
