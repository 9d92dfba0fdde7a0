//! The series endpoint, read from the per-minute rollups.

use crate::both_modes;
use crate::helpers::{Backing, assert_problem, new_client_ip, spawn_app};
use serde_json::{Value, json};

both_modes!(
    series_counts_counted_reports_at_every_step,
    series_refuses_bad_parameters_naming_them
);

fn reports_in(series: &Value) -> i64 {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reports"].as_i64().unwrap())
        .sum()
}

async fn series_counts_counted_reports_at_every_step(b: Backing) {
    let app = spawn_app(&b).await;
    let repeat = new_client_ip();
    for i in 0..6 {
        let country = if i < 4 { "FR" } else { "DE" };
        app.report(
            "youtube",
            &json!({"problem": "streaming", "country": country}),
        )
        .await;
    }
    // Two more from one client: one counts.
    app.report_as("youtube", &repeat, &json!({"problem": "app"}))
        .await;
    app.report_as("youtube", &repeat, &json!({"problem": "app"}))
        .await;
    // Another service's reports are not this one's.
    app.report("netflix", &json!({"problem": "streaming"}))
        .await;

    let now = chrono::Utc::now();
    let from =
        (now - chrono::Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for step in [60, 300, 900, 3600, 86400] {
        let (status, s) = app
            .get_json(&format!(
                "/api/v1/services/youtube/series?from={from}&to={to}&step={step}"
            ))
            .await;
        assert_eq!(status, 200);
        assert_eq!(s["step"], step);
        assert_eq!(s["service"], "youtube");
        assert_eq!(reports_in(&s), 7, "step {step}");
        let points = s["points"].as_array().unwrap();
        let times: Vec<i64> = points
            .iter()
            .map(|p| {
                chrono::DateTime::parse_from_rfc3339(p["t"].as_str().unwrap())
                    .unwrap()
                    .timestamp()
            })
            .collect();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == step),
            "contiguous at step {step}"
        );
        assert_eq!(times[0] % step, 0, "aligned to the step");
    }
    let (_, fr) = app
        .get_json(&format!(
            "/api/v1/services/youtube/series?from={from}&to={to}&step=3600&country=FR"
        ))
        .await;
    assert_eq!(reports_in(&fr), 4);
    assert_eq!(fr["country"], "FR");
    let (_, us) = app
        .get_json(&format!(
            "/api/v1/services/youtube/series?from={from}&to={to}&country=US"
        ))
        .await;
    assert_eq!(reports_in(&us), 0);
    // Default: the last 24 hours at 15 minutes.
    let (_, d) = app.get_json("/api/v1/services/youtube/series").await;
    assert_eq!(d["step"], 900);
    assert_eq!(reports_in(&d), 7);
    let n = d["points"].as_array().unwrap().len();
    assert!((96..=97).contains(&n), "{n} points");
    app.stop().await;
}

async fn series_refuses_bad_parameters_naming_them(b: Backing) {
    let app = spawn_app(&b).await;
    let get = |q: &str| {
        app.client
            .get(app.url(&format!("/api/v1/services/youtube/series?{q}")))
            .send()
    };
    assert_problem(get("step=61").await.unwrap(), 400, Some("step")).await;
    assert_problem(get("from=yesterday").await.unwrap(), 400, Some("from")).await;
    assert_problem(
        get("to=2024-13-01T00:00:00Z").await.unwrap(),
        400,
        Some("to"),
    )
    .await;
    assert_problem(
        get("from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z")
            .await
            .unwrap(),
        400,
        Some("from"),
    )
    .await;
    // More than 10,000 points.
    assert_problem(
        get("from=2000-01-01T00:00:00Z&to=2024-01-01T00:00:00Z&step=60")
            .await
            .unwrap(),
        400,
        Some("from"),
    )
    .await;
    assert_problem(get("country=fr").await.unwrap(), 400, Some("country")).await;
    let r = app.get("/api/v1/services/nope/series").await;
    assert_problem(r, 404, None).await;
    app.stop().await;
}
