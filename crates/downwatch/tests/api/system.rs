//! Health, readiness, metrics, errors of the framework itself, durability
//! across restarts, and two instances sharing PostgreSQL and Redis.

use crate::both_modes;
use crate::helpers::{Backing, Mode, assert_problem, new_client_ip, spawn_app, spawn_app_with};
use serde_json::{Value, json};

both_modes!(
    healthz_and_readyz_answer_naming_the_backends,
    metrics_count_reports_by_outcome,
    unknown_routes_and_methods_are_problems,
    acknowledged_reports_survive_a_restart,
    graceful_shutdown_stores_every_queued_report,
    windows_count_counted_reports_per_minute_and_scope,
);

async fn healthz_and_readyz_answer_naming_the_backends(b: Backing) {
    let app = spawn_app(&b).await;
    let (status, h) = app.get_json("/healthz").await;
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")));
    let (status, r) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    let (db, windows) = match b.mode {
        Mode::Embedded => ("sqlite", "memory"),
        Mode::Production => ("postgres", "redis"),
    };
    assert_eq!(r["checks"]["database"]["backend"], db);
    assert_eq!(r["checks"]["window_store"]["backend"], windows);
    assert_eq!(r["checks"]["database"]["ok"], true);
    assert_eq!(r["checks"]["window_store"]["ok"], true);
    app.stop().await;
}

async fn metrics_count_reports_by_outcome(b: Backing) {
    let app = spawn_app(&b).await;
    let ip = new_client_ip();
    app.report_as("whatsapp", &ip, &json!({"problem": "app"}))
        .await;
    app.report_as("whatsapp", &ip, &json!({"problem": "app"}))
        .await;
    app.report("whatsapp", &json!({"problem": "nope"})).await;
    app.report("nope", &json!({"problem": "app"})).await;
    assert_eq!(app.metric("downwatch_reports_received_total").await, 4.0);
    assert_eq!(app.metric("downwatch_reports_stored_total").await, 2.0);
    assert_eq!(app.metric("downwatch_reports_counted_total").await, 1.0);
    assert_eq!(
        app.metric("downwatch_reports_rejected_total{reason=\"invalid\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("downwatch_reports_rejected_total{reason=\"unknown_service\"}")
            .await,
        1.0
    );
    assert_eq!(app.metric("downwatch_ingest_queue_depth").await, 0.0);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("downwatch_ingest_flush_seconds_bucket"));
    assert!(
        text.contains("route=\"/api/v1/services/{slug}/reports\""),
        "routes by pattern, not path"
    );
    app.stop().await;
}

async fn unknown_routes_and_methods_are_problems(b: Backing) {
    let app = spawn_app(&b).await;
    let r = app.get("/api/v1/nothing-here").await;
    assert_problem(r, 404, None).await;
    let r = app
        .client
        .delete(app.url("/api/v1/services"))
        .send()
        .await
        .unwrap();
    let allow = r.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_problem(r, 405, None).await;
    let r = app.get("/api/v1/services/whatsapp/reports").await;
    assert_problem(r, 405, None).await;
    let r = app.get("/api/v1/services?q=a&q=b").await;
    assert_problem(r, 400, Some("query")).await;
    app.stop().await;
}

async fn acknowledged_reports_survive_a_restart(b: Backing) {
    let app = spawn_app(&b).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        let r = app.report("signal", &json!({"problem": "messaging"})).await;
        assert_eq!(r.status(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    app.stop().await;
    let app = spawn_app(&b).await;
    let (_, s) = app
        .get_json("/api/v1/services/signal/series?step=3600")
        .await;
    let total: i64 = s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reports"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 25);
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    assert_eq!(
        b.scalar_i64(&format!(
            "SELECT COUNT(*) FROM reports WHERE id IN ({list})"
        ))
        .await,
        25
    );
    // Ids keep growing after the restart.
    let r: Value = app
        .report("signal", &json!({"problem": "messaging"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(r["id"].as_i64().unwrap() > *ids.iter().max().unwrap());
    app.stop().await;
}

async fn graceful_shutdown_stores_every_queued_report(b: Backing) {
    let app = spawn_app_with(&b, &[("DOWNWATCH_COMMIT_TIMEOUT_MS", "30000")]).await;
    // Reports pile up behind a held write lock...
    let block = b.block_writes().await;
    let body = json!({"problem": "messaging"});
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/api/v1/services/whatsapp/reports");
            let body = body.clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("X-Forwarded-For", new_client_ip())
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(b.stored_reports().await, 0);
    // ...the server is asked to stop while they wait...
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...and once the database takes writes, every one is stored and answered.
    block.release().await;
    for s in sends {
        assert_eq!(s.await.unwrap(), 201);
    }
    stopping.await.unwrap();
    assert_eq!(b.stored_reports().await, 8);
}

async fn windows_count_counted_reports_per_minute_and_scope(b: Backing) {
    let app = spawn_app(&b).await;
    for country in ["FR", "FR", "GB"] {
        app.report("steam", &json!({"problem": "login", "country": country}))
            .await;
    }
    let id = app.service_id("steam").await;
    let minute = chrono::Utc::now().timestamp() / 60 * 60;
    // The minute may have turned between the reports and now: read two.
    let read = |scope: &'static str| {
        let w = app.state.windows.clone();
        async move {
            w.minutes(id, scope, minute - 60, 2)
                .await
                .unwrap()
                .iter()
                .sum::<u32>()
        }
    };
    assert_eq!(read("global").await, 3);
    assert_eq!(read("FR").await, 2);
    assert_eq!(read("GB").await, 1);
    app.stop().await;
}

/// Production only: two instances over the same PostgreSQL and Redis agree
/// on who already reported, and on the counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_deduplication_and_counts() {
    let Some(b) = Backing::new(Mode::Production).await else {
        return;
    };
    let a = spawn_app(&b).await;
    let c = spawn_app(&b).await;
    let ip = new_client_ip();
    let body = json!({"problem": "messaging"});
    let first: Value = a.report_json("whatsapp", &ip, &body).await;
    let second: Value = c.report_json("whatsapp", &ip, &body).await;
    assert_eq!(first["counted"], true);
    assert_eq!(
        second["counted"], false,
        "the other instance knows this client already counted"
    );
    let other: Value = c.report("whatsapp", &body).await.json().await.unwrap();
    assert_eq!(other["counted"], true);
    let id = a.service_id("whatsapp").await;
    let minute = chrono::Utc::now().timestamp() / 60 * 60;
    let seen_by_a: u32 = a
        .state
        .windows
        .minutes(id, "global", minute - 60, 2)
        .await
        .unwrap()
        .iter()
        .sum();
    let seen_by_c: u32 = c
        .state
        .windows
        .minutes(id, "global", minute - 60, 2)
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!((seen_by_a, seen_by_c), (2, 2));
    // Admin changes on one are served by the other.
    let r = a
        .client
        .post(a.url("/api/v1/services"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"slug": "shared-new", "name": "Shared"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        c.report("shared-new", &json!({"problem": "app"}))
            .await
            .status(),
        201
    );
    assert_eq!(b.stored_reports().await, 4);
    a.stop().await;
    c.stop().await;
}
