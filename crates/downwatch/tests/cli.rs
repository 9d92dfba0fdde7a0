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
    for t in [
        "detector_scopes",
        "incidents",
        "report_minutes",
        "reports",
        "services",
    ] {
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

/// Three quiet days at about two reports a minute, then half an hour at
/// 100 a minute: one incident, dated to the burst.
#[test]
fn detect_series_finds_a_burst_in_a_bare_series_and_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whatsapp.csv");
    let start = 1_700_006_400; // 2023-11-15T00:00:00Z, a Wednesday
    let minutes = 3 * 1440 + 120;
    let burst_from = 3 * 1440 + 30;
    let mut csv = String::from("timestamp,count\n");
    let mut x: u64 = 42;
    for m in 0..minutes {
        // A small deterministic jitter around 2 per minute.
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let quiet = 1 + (x >> 62);
        let count = if (burst_from..burst_from + 30).contains(&m) {
            100
        } else {
            quiet
        };
        let t = chrono::DateTime::from_timestamp(start + 60 * m, 0).unwrap();
        csv.push_str(&format!("{},{count}\n", t.format("%Y-%m-%d %H:%M:%S")));
    }
    std::fs::write(&file, csv).unwrap();
    let out = downwatch()
        .arg("detect-series")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let i = &lines[0];
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(i[k].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let onset = start + 60 * burst_from;
    assert_eq!(i["service"], "whatsapp");
    assert_eq!(i["scope"], "global");
    assert_eq!(i["status"], "resolved");
    assert!(
        (onset - 180..=onset).contains(&at("started_at")),
        "started {}",
        i["started_at"]
    );
    assert!(
        at("detected_at") <= onset + 120,
        "detected {}",
        i["detected_at"]
    );
    assert!(
        (at("ended_at") - (onset + 1800)).abs() <= 15 * 60,
        "ended {}",
        i["ended_at"]
    );
    assert_eq!(i["peak_reports_per_min"], 100);
    assert!(i["total_reports"].as_u64().unwrap() >= 3000);
    for key in [
        "id",
        "level_max",
        "peak_at",
        "baseline_per_min_at_peak",
        "duration_s",
        "top_problems",
        "top_locations",
    ] {
        assert!(i.get(key).is_some(), "{key}");
    }

    // A bad row is named by line and field, and nothing is printed.
    std::fs::write(
        &file,
        "timestamp,count\n2024-01-01T00:00:00Z,1\n2024-01-01T00:01:00Z,lots\n",
    )
    .unwrap();
    let out = downwatch()
        .arg("detect-series")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("count"), "{err}");
}

#[test]
fn detect_over_an_empty_history_writes_nothing_and_bad_times_name_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let run = |from: &str, to: &str| {
        downwatch()
            .args([
                "detect",
                "--from",
                from,
                "--to",
                to,
                "--service",
                "whatsapp",
            ])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    // A new database: migrated, no services (detect does not seed them).
    let out = downwatch()
        .args(["detect", "--from", "2026-01-01", "--to", "2026-01-02"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"services":0,"incidents":0,"replaced":0}"#
    );
    let out = run("2026-01-01", "2026-01-02T12:00:00Z");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--service: no service \"whatsapp\""), "{err}");
    for (from, to, named) in [
        ("yesterday", "2026-01-02", "--from"),
        ("2026-01-01", "soon", "--to"),
        ("2026-01-02", "2026-01-01", "--from must be before --to"),
    ] {
        let out = run(from, to);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{named} not in {err}");
    }
}

#[test]
fn bench_detect_prints_the_quality_and_tick_cost_tables() {
    let out = downwatch()
        .args([
            "bench",
            "detect",
            "--quick",
            "--services",
            "20",
            "--live-services",
            "5",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("## Detection quality"), "{text}");
    assert!(
        text.contains("False incidents on ordinary series"),
        "{text}"
    );
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| engine only") || l.starts_with("| full live tick"))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let us: f64 = cells[3].parse().unwrap();
        assert!(us > 0.0 && us.is_finite(), "{row}");
    }
}

/// Reports in a SQLite database, read straight from it.
fn sqlite_reports(url: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM reports")
            .fetch_one(&mut c)
            .await
            .unwrap()
    })
}

#[test]
fn import_loads_a_file_prints_a_summary_and_names_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("i.db").display());
    let file = dir.path().join("reports.csv");
    std::fs::write(
        &file,
        "service,problem,country,city,reported_at\n\
         acme,app,FR,Paris,2024-03-01T10:00:00Z\n\
         acme,billing,,,2024-03-01 10:00:30\n\
         acme,app,,,2024-03-01 10:01:30\n",
    )
    .unwrap();
    let out = downwatch()
        .arg("import")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"rows":3,"services_created":1,"problems_added":0}"#
    );
    assert_eq!(sqlite_reports(&url), 3);

    // A bad row: named by line and field, nothing stored, nothing printed.
    std::fs::write(
        &file,
        "service,problem,country,city,reported_at\n\
         acme,app,FR,,2024-03-01T10:00:00Z\n\
         other,app,FR,,2024-03-01T10:00:00Z\n\
         acme,app,FR,,not-a-time\n",
    )
    .unwrap();
    let out = downwatch()
        .arg("import")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4, field reported_at: expected RFC 3339 or YYYY-MM-DD HH:MM:SS"),
        "{err}"
    );
    assert_eq!(sqlite_reports(&url), 3);

    // A file that is not there, and a header with an extra column.
    let out = downwatch()
        .arg("import")
        .arg(dir.path().join("missing.csv"))
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));
    std::fs::write(&file, "service,problem,country,city,reported_at,ip\n").unwrap();
    let out = downwatch()
        .arg("import")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1, field header: unknown column \"ip\""),
        "{err}"
    );
}

/// `replay --csv`, `import`, `detect` as an operator types them: the small
/// service's partial outage, detected over its fifteenth day.
#[test]
fn a_replayed_scenario_imports_and_detects_as_its_outage() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("small.csv");
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let out = downwatch()
        .args(["replay", "small-service-partial", "--csv"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = std::fs::read_to_string(&csv).unwrap().lines().count();
    assert_eq!(summary["reports"].as_u64().unwrap() as usize, lines - 1);
    assert_eq!(summary["scenario"], "small-service-partial");
    for args in [
        vec!["import".to_owned(), csv.display().to_string()],
        ["detect", "--from", "2024-03-18", "--to", "2024-03-19"]
            .map(str::to_owned)
            .to_vec(),
    ] {
        let out = downwatch()
            .args(&args)
            .env("DATABASE_URL", &db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows: Vec<(String, String, i64)> = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::query_as(
            "SELECT s.slug, i.scope, i.started_at / 1000000 FROM incidents i
             JOIN services s ON s.id = i.service_id ORDER BY i.scope",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    });
    let outage = 1_710_789_000; // 2024-03-18T19:10:00Z
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (slug, _, started) in &rows {
        assert_eq!(slug, "deezer");
        assert!((started - outage).abs() <= 600, "{rows:?}");
    }
    assert_eq!((rows[0].1.as_str(), rows[1].1.as_str()), ("FR", "global"));

    // A name that is neither bundled nor a file is refused, naming the bundled ones.
    let out = downwatch()
        .args(["replay", "no-such-scenario", "--csv", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("worldwide-messaging") && err.contains("quiet-week"),
        "{err}"
    );
    // And one of --target or --csv is needed.
    let out = downwatch().args(["replay", "quiet-week"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A speed the server's clock cannot have is refused before anything
    // is asked of the target (nothing listens on port 9).
    for speed in ["0.001", "1e-300", "NaN", "0", "100000"] {
        let out = downwatch()
            .args(["replay", "quiet-week", "--target", "http://127.0.0.1:9"])
            .args(["--speed", speed])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{speed}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--speed") && err.contains("0.01 to 10000"),
            "{err}"
        );
    }
    // The demo needs the 14 days the detector learns from, and one more.
    let out = downwatch()
        .args(["demo", "--history-days", "14", "--exit"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--history-days"));
}

/// A scenario file too big for anyone to have meant it is refused at once,
/// naming its field, before a single report is drawn.
#[test]
fn a_hostile_scenario_file_is_refused_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("huge.toml");
    std::fs::write(
        &file,
        "seed = 1\nstart = \"2024-01-01T00:00:00Z\"\nlength = \"400d\"\n\
         [[service]]\nslug = \"acme\"\nper_hour = 900000\nproblems = { app = 1 }\n",
    )
    .unwrap();
    let out = downwatch()
        .args(["replay"])
        .arg(&file)
        .args(["--csv", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing written");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("service[0] (acme).per_hour"), "{err}");
    assert!(err.contains("more than 50000000"), "{err}");
}

/// `downwatch demo` at a high speed with a short history: it says where to
/// look, the live outage opens an incident the API shows, and with `--exit`
/// it stops once that has resolved.
#[test]
fn the_demo_opens_an_incident_on_its_live_outage_and_resolves_it() {
    use std::io::{BufRead, BufReader};
    let mut child = downwatch()
        .args([
            "demo",
            "--bind",
            "127.0.0.1:0",
            "--speed",
            "200",
            "--history-days",
            "15",
            "--exit",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the demo says where to look");
        let found = line
            .strip_prefix("Open ")
            .and_then(|l| l.split('/').nth(2))
            .map(|host| format!("http://{host}"));
        printed.push(line);
        if let Some(a) = found {
            break a;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let incident = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(r) = client
                .get(format!("{address}/api/v1/incidents?service=whatsapp"))
                .send()
                .await
                && let Ok(body) = r.json::<serde_json::Value>().await
                // Newest first: a country's incident may open after the global one.
                && let Some(i) = body["incidents"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| i["scope"] == "global"))
            {
                return Some(i.clone());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    });
    let incident = incident.expect("an incident for the demo's outage");
    assert_eq!(incident["service"], "whatsapp");
    assert_eq!(incident["scope"], "global");
    // It resolves, and the demo stops by itself.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(180)) {
        printed.push(line);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {printed:#?}");
    let text = printed.join("\n");
    assert!(text.contains(" opened: "), "{text}");
    assert!(text.contains(" resolved ("), "{text}");
}
