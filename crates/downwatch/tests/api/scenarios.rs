//! The bundled scenarios, replayed and detected: each one's reports written
//! as an import file (`downwatch replay --csv`), imported, and run through
//! `downwatch detect` over what follows its 14 learnt days must give exactly
//! the incidents the scenario expects (service, scope, start and end within
//! its tolerance, 10 minutes) and nothing else; and one replayed live over
//! HTTP into a server whose clock runs 200 times faster than real time.

use crate::both_modes;
use crate::helpers::{Backing, spawn_app_with};
use downwatch::replay::{HttpOptions, Window, replay_http, resolve_start, write_csv};
use downwatch::scenario::{self, Found, Scenario};
use downwatch_store::{IncidentQuery, Storage};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

both_modes!(
    a_worldwide_messaging_outage_is_found_globally_and_in_each_country,
    a_regional_outage_ends_country_by_country_in_order,
    a_small_services_short_partial_outage_is_found,
    an_ordinary_quiet_week_has_no_incident,
    a_scenario_replayed_over_http_on_an_accelerated_clock_is_detected_live,
    replay_places_now_by_the_servers_clock_and_refuses_a_speed_too_slow,
);

/// The incidents stored, as [`scenario::check`] reads them.
async fn found(storage: &dyn Storage) -> Vec<Found> {
    let slugs: HashMap<i64, String> = storage
        .list_services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.slug.to_string()))
        .collect();
    storage
        .incidents(&IncidentQuery {
            limit: 1000,
            ..IncidentQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| Found {
            service: slugs[&r.record.service_id].clone(),
            scope: r.record.scope.clone(),
            started_at: r.record.started_at,
            ended_at: r.record.ended_at,
        })
        .collect()
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339()
}

/// `replay --csv`, `import`, then `detect` over everything after the
/// learnt history; returns the scenario and what was found.
async fn replay_import_detect(b: &Backing, name: &str) -> (Scenario, Vec<Found>) {
    let scenario = scenario::load(name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join(format!("{name}.csv"));
    let all = Window::of(&scenario, None, None).unwrap();
    let rows = write_csv(&scenario, all, std::fs::File::create(&csv).unwrap()).unwrap();
    let storage = downwatch::startup::connect_storage(&b.settings(&[]))
        .await
        .unwrap();
    let summary = downwatch::import::run(storage.as_ref(), &csv)
        .await
        .unwrap();
    assert_eq!(summary.rows as usize, rows);
    assert_eq!(summary.services_created as usize, scenario.services.len());
    downwatch::detect::run(
        storage.as_ref(),
        &time(scenario.checked_from()),
        &time(scenario.end()),
        None,
    )
    .await
    .unwrap();
    let found = found(storage.as_ref()).await;
    (scenario, found)
}

fn assert_as_expected(scenario: &Scenario, found: &[Found]) {
    let problems = scenario::check(scenario, found);
    assert!(
        problems.is_empty(),
        "{}:\n{}\nfound: {found:#?}",
        scenario.name,
        problems.join("\n")
    );
}

async fn a_worldwide_messaging_outage_is_found_globally_and_in_each_country(b: Backing) {
    let (scenario, found) = replay_import_detect(&b, "worldwide-messaging").await;
    assert_eq!(found.len(), 7, "global and six countries");
    assert!(found.iter().all(|f| f.service == "whatsapp"));
    assert_as_expected(&scenario, &found);
}

async fn a_regional_outage_ends_country_by_country_in_order(b: Backing) {
    let (scenario, found) = replay_import_detect(&b, "regional-europe").await;
    assert_as_expected(&scenario, &found);
    // Berlin recovers first, then London, Madrid and Rome.
    let mut countries: Vec<&Found> = found.iter().filter(|f| f.scope != "global").collect();
    countries.sort_by_key(|f| f.ended_at);
    let order: Vec<&str> = countries.iter().map(|f| f.scope.as_str()).collect();
    assert_eq!(order, ["DE", "GB", "ES", "IT"]);
}

async fn a_small_services_short_partial_outage_is_found(b: Backing) {
    let (scenario, found) = replay_import_detect(&b, "small-service-partial").await;
    assert_as_expected(&scenario, &found);
    assert!(
        found.iter().all(|f| f.service == "deezer"),
        "nothing for Spotify"
    );
}

async fn an_ordinary_quiet_week_has_no_incident(b: Backing) {
    let (scenario, found) = replay_import_detect(&b, "quiet-week").await;
    assert!(scenario.expect.is_empty());
    assert_eq!(scenario.end() - scenario.checked_from(), 7 * 86_400);
    assert_as_expected(&scenario, &found);
}

/// The small service's outage, live: its first 14 days and 19 hours
/// imported, then a server whose clock starts there and runs at 200x gets
/// the next hour over HTTP (18 s), and its own detector loop finds the
/// outage and, as its clock moves on, sees it resolve, as it would in
/// production.
async fn a_scenario_replayed_over_http_on_an_accelerated_clock_is_detected_live(b: Backing) {
    let scenario = scenario::load("small-service-partial").unwrap();
    let history = Window::of(&scenario, None, Some("14d 19h")).unwrap();
    let live = Window::of(&scenario, Some("14d 19h"), Some("14d 20h")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("history.csv");
    write_csv(&scenario, history, std::fs::File::create(&csv).unwrap()).unwrap();
    let catalogue = dir.path().join("services.toml");
    std::fs::write(
        &catalogue,
        "[[service]]\nslug = \"deezer\"\nname = \"Deezer\"\nproblems = [\"streaming\", \"app\", \"login\"]\n\n\
         [[service]]\nslug = \"spotify\"\nname = \"Spotify\"\nproblems = [\"streaming\", \"app\", \"login\"]\n",
    )
    .unwrap();
    {
        let storage = downwatch::startup::connect_storage(&b.settings(&[]))
            .await
            .unwrap();
        downwatch::import::run(storage.as_ref(), &csv)
            .await
            .unwrap();
    }

    // A report sent late is stamped late: at 200x the scenario's 10-minute
    // tolerance is 3 real seconds, far more than a loaded machine's lag.
    let speed = 200.0;
    let clock = format!("{}@{speed}", time(live.from));
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue.to_str().unwrap()),
            ("DOWNWATCH_CLOCK", &clock),
            ("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1"),
            ("DOWNWATCH_DETECTOR", "on"),
            ("DOWNWATCH_DETECT_INTERVAL_MS", "250"),
        ],
    )
    .await;
    let summary = replay_http(
        &scenario,
        live,
        &HttpOptions {
            target: app.address.clone(),
            speed,
            concurrency: 32,
            admin_token: None,
            verbose: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert_eq!(summary.rate_limited, 0);
    assert_eq!(summary.stored as usize + summary.skipped, summary.reports);
    assert!(summary.stored > 100, "{summary:?}");
    // Each report stamped within the detection tolerance of its scenario
    // time (10 simulated minutes: 3 real seconds at 200x; about 86
    // simulated seconds were seen under the whole suite on 2 cores).
    assert!(summary.max_lag_s < 600.0, "{summary:?}");

    // The live detector finds the outage and, half an hour (of its clock)
    // of calm later, resolves it; the incidents carry the server's
    // simulated times, which the scenario's expectations are written in.
    let deadline = Instant::now() + Duration::from_secs(60);
    let incidents = loop {
        let (_, page) = app.get_json("/api/v1/incidents?limit=20").await;
        let incidents: Vec<Value> = page["incidents"].as_array().cloned().unwrap();
        if incidents.len() >= 2 && incidents.iter().all(|i| i["status"] == "resolved") {
            break incidents;
        }
        assert!(
            Instant::now() < deadline,
            "the live detector did not resolve the outage: {incidents:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let found: Vec<Found> = incidents
        .iter()
        .map(|i| Found {
            service: i["service"].as_str().unwrap().to_owned(),
            scope: i["scope"].as_str().unwrap().to_owned(),
            started_at: parse(&i["started_at"]),
            ended_at: Some(parse(&i["ended_at"])),
        })
        .collect();
    assert_as_expected(&scenario, &found);
    app.stop().await;
}

async fn replay_places_now_by_the_servers_clock_and_refuses_a_speed_too_slow(b: Backing) {
    // A server whose clock reads 2024-03-18 19:00 and barely moves.
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_CLOCK", "2024-03-18T19:00:00Z@0.01"),
            ("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1"),
        ],
    )
    .await;
    // `now` is the server's minute, not this machine's.
    let day0 = resolve_start("now-14d 19h", Some(&app.address))
        .await
        .unwrap();
    assert_eq!(time(day0), "2024-03-04T00:00:00+00:00");
    let here = resolve_start("now", None).await.unwrap();
    assert!((here - chrono::Utc::now().timestamp()).abs() <= 60);
    // A speed too slow to wait for is an error, before anything is sent.
    let scenario = scenario::load("small-service-partial")
        .unwrap()
        .starting_at(day0);
    let window = Window::of(&scenario, Some("14d 19h"), Some("14d 20h")).unwrap();
    for speed in [1e-300, 0.0, f64::NAN] {
        let e = replay_http(
            &scenario,
            window,
            &HttpOptions {
                target: app.address.clone(),
                speed,
                concurrency: 4,
                admin_token: None,
                verbose: false,
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("--speed"), "{e}");
    }
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}
