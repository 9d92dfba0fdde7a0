//! The live detector end to end: real reports over HTTP, the live loop's
//! ticks driven by a simulated clock (so an hour of hysteresis takes no
//! time), incidents read back from the database and the API, and
//! `downwatch detect` over the same history.

use crate::both_modes;
use crate::helpers::{Backing, Mode, TestApp, delete_redis_keys, spawn_app_with};
use downwatch_detector::events::{CHANNEL, Event};
use downwatch_detector::live::{Live, LiveConfig, TickOutcome};
use downwatch_store::{IncidentQuery, IncidentRecord, IncidentRow, IncidentWrite, ScopeStateRow};
use downwatch_windows::{Increment, ScopeRead};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;

both_modes!(
    a_burst_opens_incidents_that_resolve_and_detect_agrees,
    two_detectors_take_turns_on_one_lease_and_keep_one_incident,
    the_database_refuses_a_second_open_incident_for_a_scope,
    a_scope_at_warning_puts_its_service_at_warning,
    a_tick_reads_buckets_and_active_scopes_together,
);

/// Two services, so each tick's 14-day warm-up stays small.
pub(crate) fn catalogue() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "downwatch-detector-catalogue-{}.toml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "[[service]]\nslug = \"chatapp\"\nname = \"ChatApp\"\n\n\
             [[service]]\nslug = \"quiet\"\nname = \"Quiet\"\n",
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    })
}

pub(crate) async fn app(b: &Backing) -> TestApp {
    spawn_app_with(b, &[("DOWNWATCH_SERVICES_FILE", catalogue())]).await
}

pub(crate) fn live(app: &TestApp, instance: &str) -> Live {
    let s = &app.state;
    Live::new(
        s.storage.clone(),
        s.windows.clone(),
        Default::default(),
        LiveConfig {
            interval: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            instance: instance.to_owned(),
            lease_ttl: Duration::from_millis(1500),
            persist_every: Duration::from_secs(300),
            ..Default::default()
        },
        s.metrics.detector.clone(),
    )
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `n` reports from distinct clients, `country` set; returns the minutes
/// (epoch seconds) they were received in.
pub(crate) async fn burst(
    app: &TestApp,
    slug: &str,
    n: usize,
    country: Option<&str>,
) -> (i64, i64) {
    let mut body = json!({"problem": "messaging"});
    if let Some(c) = country {
        body["country"] = json!(c);
    }
    let answers: Vec<Value> = futures_util::stream::iter(0..n)
        .map(|_| async { app.report(slug, &body).await.json::<Value>().await.unwrap() })
        .buffer_unordered(16)
        .collect()
        .await;
    let minutes: Vec<i64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a["counted"], true, "{a}");
            let t = chrono::DateTime::parse_from_rfc3339(a["received_at"].as_str().unwrap())
                .unwrap()
                .timestamp();
            t / 60 * 60
        })
        .collect();
    (
        *minutes.iter().min().unwrap(),
        *minutes.iter().max().unwrap(),
    )
}

pub(crate) async fn incidents(app: &TestApp, slug: &str) -> Vec<IncidentRow> {
    let id = app.service_id(slug).await;
    let mut rows = app
        .state
        .storage
        .incidents(&IncidentQuery {
            service_id: Some(id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.sort_by(|a, b| a.record.scope.cmp(&b.record.scope));
    rows
}

pub(crate) fn stepped(outcome: &TickOutcome) -> bool {
    matches!(outcome, TickOutcome::Stepped { .. })
}

/// The facts live and backfill must agree on.
fn facts(r: &IncidentRecord) -> (String, i64, i64, i64, f64, Option<i64>, i64) {
    (
        r.scope.clone(),
        r.started_at,
        r.detected_at,
        r.peak_at,
        r.peak_reports_per_min,
        r.ended_at,
        r.total_reports,
    )
}

async fn a_burst_opens_incidents_that_resolve_and_detect_agrees(b: Backing) {
    let app = app(&b).await;
    let mut events = app.state.windows.subscribe(CHANNEL).await.unwrap();
    let mut detector = live(&app, "a");
    let t0 = now();
    // The first tick learns 14 days of (empty) history for both services.
    assert!(stepped(&detector.tick(t0).await.unwrap()));

    let (first, last) = burst(&app, "chatapp", 40, Some("FR")).await;
    let outcome = detector.tick(last + 60 + 3).await.unwrap();
    assert!(stepped(&outcome), "{outcome:?}");

    // One incident for the service and one for the country, both open.
    let open = incidents(&app, "chatapp").await;
    let scopes: Vec<&str> = open.iter().map(|r| r.record.scope.as_str()).collect();
    assert_eq!(scopes, ["FR", "global"], "{open:?}");
    for r in &open {
        assert_eq!(r.record.status(), "open");
        assert_eq!(r.record.started_at, first, "back-dated to the first minute");
        assert!(r.record.detected_at > r.record.started_at);
        assert!(r.record.detected_at <= last + 60);
        assert_eq!(r.record.total_reports, 40);
    }
    assert!(incidents(&app, "quiet").await.is_empty());
    let global_id = open[1].id;
    let (status, service) = app.get_json("/api/v1/services/chatapp").await;
    assert_eq!(status, 200);
    assert_eq!(service["status"]["level"], "outage");
    assert_eq!(service["status"]["incident_id"], global_id);
    let (_, quiet) = app.get_json("/api/v1/services/quiet").await;
    assert_eq!(quiet["status"]["level"], "ok");

    // The events went out: outage for the service, the incident opened.
    let mut seen = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        let e: Event = serde_json::from_str(&m).unwrap();
        let done = matches!(&e, Event::Incident { incident, .. } if incident.id == global_id);
        seen.push(e);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|e| matches!(e, Event::Status { service, scope, level, .. }
            if service == "chatapp" && scope == "global" && *level == downwatch_core::Level::Outage)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Incident { transition, incident }
            if *transition == downwatch_core::detector::Transition::Opened
                && incident.id == global_id && incident.service == "chatapp"
                && incident.ended_at.is_none())),
        "{seen:?}"
    );

    // Three quiet hours later both have resolved, as the same rows.
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    let resolved = incidents(&app, "chatapp").await;
    assert_eq!(resolved.len(), 2, "{resolved:?}");
    for (r, before) in resolved.iter().zip(&open) {
        assert_eq!(r.id, before.id);
        assert_eq!(r.record.status(), "resolved");
        assert_eq!(r.record.ended_at, Some(last + 60), "ends with the burst");
        assert_eq!(r.record.started_at, before.record.started_at);
        assert_eq!(r.record.total_reports, 40);
    }
    let (_, service) = app.get_json("/api/v1/services/chatapp").await;
    assert_eq!(service["status"]["level"], "ok");

    // The backfill over the same history finds the same incidents, and
    // running it again changes nothing.
    let live_facts: Vec<_> = resolved.iter().map(|r| facts(&r.record)).collect();
    let from = chrono::DateTime::from_timestamp(t0 - 3600, 0)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp(last + 3 * 3600, 0)
        .unwrap()
        .to_rfc3339();
    let storage = app.state.storage.clone();
    let summary = downwatch::detect::run(storage.as_ref(), &from, &to, None)
        .await
        .unwrap();
    assert_eq!((summary.services, summary.incidents), (2, 2));
    assert_eq!(summary.replaced, 2, "the live rows are replaced");
    let backfilled: Vec<_> = incidents(&app, "chatapp")
        .await
        .iter()
        .map(|r| facts(&r.record))
        .collect();
    assert_eq!(backfilled, live_facts);
    let again = downwatch::detect::run(storage.as_ref(), &from, &to, Some("chatapp"))
        .await
        .unwrap();
    assert_eq!((again.incidents, again.replaced), (2, 2));
    let rows = incidents(&app, "chatapp").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows.iter().map(|r| facts(&r.record)).collect::<Vec<_>>(),
        live_facts
    );
    app.stop().await;
}

async fn two_detectors_take_turns_on_one_lease_and_keep_one_incident(b: Backing) {
    let a_app = app(&b).await;
    // In production mode the second detector is a second instance with its
    // own connections; embedded mode has one process, so it shares them.
    let c_app = if b.mode == Mode::Production {
        Some(app(&b).await)
    } else {
        None
    };
    let mut a = live(&a_app, "a");
    let mut c = live(c_app.as_ref().unwrap_or(&a_app), "c");
    let t0 = now();
    assert!(stepped(&a.tick(t0).await.unwrap()));
    assert_eq!(c.tick(t0).await.unwrap(), TickOutcome::Standby);

    let (_, last) = burst(&a_app, "chatapp", 40, None).await;
    assert!(stepped(&a.tick(last + 63).await.unwrap()));
    assert_eq!(c.tick(last + 63).await.unwrap(), TickOutcome::Standby);
    let open = incidents(&a_app, "chatapp").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].record.status(), "open");

    // `a` stops ticking (it died); once its lease runs out `c` takes over
    // from the saved states and resolves the same incident.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(stepped(&c.tick(last + 3 * 3600).await.unwrap()));
    assert_eq!(a.tick(last + 3 * 3600).await.unwrap(), TickOutcome::Standby);
    let after = incidents(&a_app, "chatapp").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].id, open[0].id);
    assert_eq!(after[0].record.status(), "resolved");
    assert_eq!(after[0].record.started_at, open[0].record.started_at);
    if let Some(c_app) = c_app {
        c_app.stop().await;
    }
    a_app.stop().await;
}

async fn the_database_refuses_a_second_open_incident_for_a_scope(b: Backing) {
    let app = app(&b).await;
    let service_id = app.service_id("chatapp").await;
    let record = |started_at: i64, ended_at: Option<i64>| IncidentRecord {
        service_id,
        scope: "global".to_owned(),
        level_max: "outage".to_owned(),
        started_at,
        detected_at: started_at + 120,
        peak_at: started_at + 60,
        peak_reports_per_min: 50.0,
        baseline_per_min_at_peak: 0.5,
        ended_at,
        total_reports: 90,
    };
    let write = |r: IncidentRecord| IncidentWrite {
        id: None,
        record: r,
    };
    let storage = app.state.storage.clone();
    // Two instances that both believe they opened it (a split brain).
    let first = storage
        .save_detection(&[write(record(1_700_000_000, None))], &[])
        .await
        .unwrap();
    let second = storage
        .save_detection(&[write(record(1_700_000_060, None))], &[])
        .await
        .unwrap();
    assert_eq!(first, second, "the second adopts the open row");
    let rows = incidents(&app, "chatapp").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record.started_at, 1_700_000_060);
    // A resolved incident beside it is no conflict; nor is a new open one
    // once the first has resolved.
    let resolved = record(1_600_000_000, Some(1_600_003_600));
    storage
        .save_detection(&[write(resolved.clone())], &[])
        .await
        .unwrap();
    let closed = IncidentWrite {
        id: Some(first[0]),
        record: record(1_700_000_060, Some(1_700_007_200)),
    };
    storage.save_detection(&[closed], &[]).await.unwrap();
    let next = storage
        .save_detection(&[write(record(1_800_000_000, None))], &[])
        .await
        .unwrap();
    assert_ne!(next, first);
    let rows = incidents(&app, "chatapp").await;
    assert_eq!(rows.len(), 3);
    let got = storage.incident(first[0]).await.unwrap().unwrap();
    assert_eq!(got.record.ended_at, Some(1_700_007_200));
    assert_eq!(got.record.status(), "resolved");
    app.stop().await;
}

async fn a_scope_at_warning_puts_its_service_at_warning(b: Backing) {
    let app = app(&b).await;
    let id = app.service_id("chatapp").await;
    let state = |level: &str| ScopeStateRow {
        service_id: id,
        scope: "DE".to_owned(),
        last_minute: 1_700_000_040,
        level: level.to_owned(),
        expected: 0.2,
        incident_id: None,
        state: "{}".to_owned(),
    };
    let storage = app.state.storage.clone();
    storage
        .save_detection(&[], &[state("warning")])
        .await
        .unwrap();
    let (_, s) = app.get_json("/api/v1/services/chatapp").await;
    assert_eq!(s["status"], json!({"level": "warning"}));
    let (_, list) = app.get_json("/api/v1/services").await;
    let levels: Vec<(&str, &str)> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["slug"].as_str().unwrap(),
                s["status"]["level"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(levels, [("chatapp", "warning"), ("quiet", "ok")]);
    storage.save_detection(&[], &[state("ok")]).await.unwrap();
    let (_, s) = app.get_json("/api/v1/services/chatapp").await;
    assert_eq!(s["status"], json!({"level": "ok"}));
    app.stop().await;
}

async fn a_tick_reads_buckets_and_active_scopes_together(b: Backing) {
    let app = app(&b).await;
    let w = app.state.windows.clone();
    let m = now() / 60 * 60;
    let inc = |service_id: i64, scope: &str, minute: i64, count: u32| Increment {
        service_id,
        scope: scope.to_owned(),
        minute,
        count,
    };
    w.add(&[
        inc(1, "global", m - 120, 3),
        inc(1, "IT", m - 120, 2),
        inc(1, "global", m, 4),
        inc(2, "global", m - 3600, 1),
    ])
    .await
    .unwrap();
    let read = |service_id: i64, scope: &str, n: usize| ScopeRead {
        service_id,
        scope: scope.to_owned(),
        from_minute: m - 120,
        n,
    };
    let (counts, scopes) = w
        .read_tick(
            &[read(1, "global", 3), read(1, "IT", 0), read(2, "global", 3)],
            &[1, 2, 3],
            m - 180,
        )
        .await
        .unwrap();
    assert_eq!(counts, vec![vec![3, 0, 4], vec![], vec![0, 0, 0]]);
    assert_eq!(
        scopes,
        vec![vec!["IT".to_owned(), "global".to_owned()], vec![], vec![]]
    );
    app.stop().await;
}

/// Production only: after Redis loses its data, the next tick refills the
/// minute buckets from the database rollups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_come_back_from_the_database_after_redis_loses_them() {
    let Some(b) = Backing::new(Mode::Production).await else {
        return;
    };
    let app = app(&b).await;
    let mut detector = live(&app, "a");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let (first, last) = burst(&app, "chatapp", 12, Some("GB")).await;
    let id = app.service_id("chatapp").await;
    let n = ((last - first) / 60 + 1) as usize;
    let read = |scope: &'static str| {
        let w = app.state.windows.clone();
        async move {
            w.minutes(id, scope, first, n)
                .await
                .unwrap()
                .iter()
                .sum::<u32>()
        }
    };
    assert_eq!((read("global").await, read("GB").await), (12, 12));
    assert!(delete_redis_keys(&b.redis_prefix).await > 0);
    assert_eq!(read("global").await, 0, "Redis lost everything");
    assert!(!app.state.windows.is_filled().await.unwrap());
    detector.tick(now()).await.unwrap();
    assert!(app.state.windows.is_filled().await.unwrap());
    assert_eq!((read("global").await, read("GB").await), (12, 12));
    let active = app.state.windows.active_scopes(&[id], first).await.unwrap();
    assert_eq!(active, vec![vec!["GB".to_owned(), "global".to_owned()]]);
    app.stop().await;
}

/// Production only: Redis loses its data while an incident is open. The
/// incident stays open (no lost incident), no second one opens (no false
/// incident from counts counted twice), and it resolves as it would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_incident_survives_redis_losing_its_data() {
    let Some(b) = Backing::new(Mode::Production).await else {
        return;
    };
    let app = app(&b).await;
    let mut detector = live(&app, "a");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let (first, last) = burst(&app, "chatapp", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    let open = incidents(&app, "chatapp").await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].record.status(), "open");

    assert!(delete_redis_keys(&b.redis_prefix).await > 0);
    // The next ticks refill the windows first and carry on.
    detector.tick(last + 123).await.unwrap();
    detector.tick(last + 183).await.unwrap();
    let id = app.service_id("chatapp").await;
    let n = ((last - first) / 60 + 1) as usize;
    let counts: u32 = app
        .state
        .windows
        .minutes(id, "global", first, n)
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(counts, 40, "the burst is back in the windows, once");
    let still = incidents(&app, "chatapp").await;
    assert_eq!(still.len(), 1, "no second incident: {still:?}");
    assert_eq!(still[0].id, open[0].id);
    assert_eq!(still[0].record.status(), "open");

    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    let resolved = incidents(&app, "chatapp").await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].id, open[0].id);
    assert_eq!(resolved[0].record.status(), "resolved");
    assert_eq!(resolved[0].record.ended_at, Some(last + 60));
    assert_eq!(resolved[0].record.total_reports, 40);
    app.stop().await;
}

/// `downwatch serve` runs the loop by itself: its ticks show in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_detector_loop() {
    let Some(b) = Backing::new(Mode::Embedded).await else {
        return;
    };
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue()),
            ("DOWNWATCH_DETECTOR", "on"),
            ("DOWNWATCH_DETECT_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let mut scopes = String::new();
    for _ in 0..200 {
        let text = app.get("/metrics").await.text().await.unwrap();
        scopes = text
            .lines()
            .find(|l| l.starts_with("downwatch_detector_scopes "))
            .unwrap_or_default()
            .to_owned();
        if scopes == "downwatch_detector_scopes 2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(scopes, "downwatch_detector_scopes 2");
    let states = b.scalar_i64("SELECT COUNT(*) FROM detector_scopes").await;
    assert_eq!(states, 2, "both services' states are saved");
    app.stop().await;
}
