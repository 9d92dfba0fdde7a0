//! A journalist's path: a month of history imported, `downwatch detect` run
//! over it, and the outage read back through the API with its start, end,
//! duration, top problem and top places.

use crate::both_modes;
use crate::detector::app;
use crate::helpers::{Backing, TestApp};
use serde_json::Value;
use std::fmt::Write as _;

both_modes!(an_imported_month_with_an_outage_reads_back_through_the_api);

/// 2026-10-01T00:00:00Z.
const MONTH: i64 = 1_790_812_800;
/// The outage: 2026-10-25 10:00 to 11:30 UTC.
const OUTAGE_START: i64 = MONTH + 24 * 86_400 + 10 * 3600;
const OUTAGE_END: i64 = OUTAGE_START + 90 * 60;

/// A small deterministic generator (the test must not depend on chance).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn stamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// About 300 reports a day with a daily rhythm, from the US and Britain,
/// and during the outage twenty times that, mostly logins from Paris and Berlin.
fn month_csv() -> String {
    let mut rng = Lcg(42);
    let mut csv = String::from("service,problem,country,city,reported_at\n");
    let background = ["app", "website", "messaging", "other"];
    for minute in (MONTH..MONTH + 31 * 86_400).step_by(60) {
        let hour = (minute % 86_400) / 3600;
        let rhythm = 0.4
            + 1.2
                * (std::f64::consts::PI * (hour as f64 - 3.0) / 24.0)
                    .sin()
                    .powi(2);
        let mut rate = 300.0 / 1440.0 * rhythm;
        let outage = (OUTAGE_START..OUTAGE_END).contains(&minute);
        if outage {
            rate *= 20.0;
        }
        // Poisson by inversion: few events per minute.
        let mut n = 0;
        let mut p = (-rate).exp();
        let mut cdf = p;
        let u = rng.next();
        while u > cdf && n < 200 {
            n += 1;
            p *= rate / f64::from(n);
            cdf += p;
        }
        for i in 0..n {
            let t = minute + (rng.next() * 60.0) as i64;
            let (problem, country, city) = if outage && rng.next() < 0.85 {
                if i % 3 == 2 {
                    ("login", "DE", "Berlin")
                } else {
                    ("login", "FR", "Paris")
                }
            } else {
                let p = background[(rng.next() * 4.0) as usize % 4];
                if rng.next() < 0.5 {
                    (p, "US", "")
                } else {
                    (p, "GB", "London")
                }
            };
            let _ = writeln!(csv, "chatapp,{problem},{country},{city},{}", stamp(t));
        }
    }
    csv
}

async fn an_imported_month_with_an_outage_reads_back_through_the_api(b: Backing) {
    let app: TestApp = app(&b).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("month.csv");
    std::fs::write(&file, month_csv()).unwrap();
    let storage = app.state.storage.clone();
    let imported = downwatch::import::run(storage.as_ref(), &file)
        .await
        .unwrap();
    assert!(imported.rows > 8000, "{imported:?}");

    // Detection over the last two weeks (it learns the two weeks before).
    let summary = downwatch::detect::run(
        storage.as_ref(),
        "2026-10-15T00:00:00Z",
        "2026-11-01T00:00:00Z",
        Some("chatapp"),
    )
    .await
    .unwrap();
    assert!(summary.incidents >= 1, "{summary:?}");

    let (code, list) = app
        .get_json("/api/v1/incidents?service=chatapp&country=global")
        .await;
    assert_eq!(code, 200, "{list}");
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "one outage, no false alarm: {list}");
    let i = &incidents[0];
    let secs = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let started = secs(&i["started_at"]);
    let ended = secs(&i["ended_at"]);
    assert!(
        (started - OUTAGE_START).abs() <= 180,
        "starts within 3 minutes of 10:00: {i}"
    );
    assert!(
        (ended - OUTAGE_END).abs() <= 900,
        "ends within 15 minutes of 11:30: {i}"
    );
    assert_eq!(i["duration_s"], ended - started);
    assert!(secs(&i["detected_at"]) > started);
    assert_eq!(i["status"], "resolved");
    assert_eq!(i["top_problems"][0]["problem"], "login", "{i}");
    assert!(i["top_problems"][0]["share"].as_f64().unwrap() > 0.6, "{i}");
    assert_eq!(i["top_locations"][0]["country"], "FR", "{i}");
    assert_eq!(i["top_locations"][0]["city"], "Paris", "{i}");
    assert_eq!(i["top_locations"][1]["country"], "DE", "{i}");
    assert!(i["total_reports"].as_i64().unwrap() > 300, "{i}");

    // France had its own incident, and the detail page's series holds it.
    let (_, fr) = app
        .get_json("/api/v1/incidents?service=chatapp&country=FR")
        .await;
    assert_eq!(fr["incidents"].as_array().unwrap().len(), 1, "{fr}");
    let id = i["id"].as_i64().unwrap();
    let (_, detail) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    let points = detail["series"]["points"].as_array().unwrap();
    let peak = points
        .iter()
        .map(|p| p["reports"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(peak as f64, i["peak_reports_per_min"].as_f64().unwrap());
    app.stop().await;
}
