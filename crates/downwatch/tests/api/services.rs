//! The catalogue: listing, search, status, and the admin endpoints.

use crate::both_modes;
use crate::helpers::{ADMIN_TOKEN, Backing, assert_problem, spawn_app, spawn_app_with};
use serde_json::{Value, json};

both_modes!(
    catalogue_is_seeded_on_first_start_with_search_and_category_filters,
    a_service_with_an_open_incident_is_at_outage,
    admin_endpoints_are_closed_without_a_configured_token,
    admin_create_needs_the_right_bearer_token,
    admin_create_validates_and_refuses_an_existing_slug,
    admin_patch_renames_and_changes_problem_kinds,
    services_file_replaces_the_bundled_catalogue_and_seeding_happens_once,
);

async fn catalogue_is_seeded_on_first_start_with_search_and_category_filters(b: Backing) {
    let app = spawn_app(&b).await;
    let (status, all) = app.get_json("/api/v1/services").await;
    assert_eq!(status, 200);
    let all = all["services"].as_array().unwrap();
    assert!(all.len() >= 50, "{} services", all.len());
    assert!(all.iter().all(|s| s["status"]["level"] == "ok"));
    let (_, found) = app.get_json("/api/v1/services?q=WHATS").await;
    let slugs: Vec<&str> = found["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["whatsapp"]);
    let (_, banks) = app.get_json("/api/v1/services?category=banks").await;
    let banks = banks["services"].as_array().unwrap();
    assert!(banks.len() >= 5);
    assert!(banks.iter().all(|s| s["category"] == "banks"));
    let (status, one) = app.get_json("/api/v1/services/whatsapp").await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "WhatsApp");
    assert!(
        one["problems"]
            .as_array()
            .unwrap()
            .contains(&json!("messaging"))
    );
    let r = app.get("/api/v1/services/nope").await;
    assert_problem(r, 404, None).await;
    let r = app
        .get(&format!("/api/v1/services?q={}", "a".repeat(101)))
        .await;
    assert_problem(r, 400, Some("q")).await;
    app.stop().await;
}

async fn a_service_with_an_open_incident_is_at_outage(b: Backing) {
    let app = spawn_app(&b).await;
    let id = app.service_id("discord").await;
    b.execute(&format!(
        "INSERT INTO incidents (service_id, scope, status, level_max, started_at, detected_at, peak_at,
                                peak_reports_per_min, baseline_per_min_at_peak)
         VALUES ({id}, 'global', 'open', 'outage', {t}, {t}, {t}, 120, 2)",
        t = if b.mode == crate::helpers::Mode::Embedded { "1700000000000000".to_owned() } else { "now()".to_owned() }
    ))
    .await;
    let (_, one) = app.get_json("/api/v1/services/discord").await;
    assert_eq!(one["status"]["level"], "outage");
    assert!(one["status"]["incident_id"].as_i64().unwrap() > 0);
    let (_, all) = app.get_json("/api/v1/services").await;
    let others_ok = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["slug"] != "discord")
        .all(|s| s["status"]["level"] == "ok");
    assert!(others_ok);
    app.stop().await;
}

fn new_service() -> Value {
    json!({"slug": "acme-cloud", "name": "ACME Cloud", "category": "cloud",
           "url": "https://acme.example", "problems": ["console", "api"]})
}

async fn admin_endpoints_are_closed_without_a_configured_token(b: Backing) {
    let app = spawn_app_with(&b, &[("DOWNWATCH_ADMIN_TOKEN", "")]).await;
    for auth in [None, Some(format!("Bearer {ADMIN_TOKEN}"))] {
        let mut req = app
            .client
            .post(app.url("/api/v1/services"))
            .json(&new_service());
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        assert_problem(req.send().await.unwrap(), 403, None).await;
    }
    let r = app
        .client
        .patch(app.url("/api/v1/services/whatsapp"))
        .json(&json!({"name": "Owned"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, None).await;
    let (_, one) = app.get_json("/api/v1/services/whatsapp").await;
    assert_eq!(one["name"], "WhatsApp");
    app.stop().await;
}

async fn admin_create_needs_the_right_bearer_token(b: Backing) {
    let app = spawn_app(&b).await;
    let post = || {
        app.client
            .post(app.url("/api/v1/services"))
            .json(&new_service())
    };
    let r = post().send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_problem(r, 401, None).await;
    let r = post()
        .header("Authorization", "Bearer wrong-token-of-some-length")
        .send()
        .await
        .unwrap();
    assert_problem(r, 403, None).await;
    let r = post()
        .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, None).await;
    let r = post().bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/api/v1/services/acme-cloud");
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["problems"], json!(["console", "api"]));
    // It takes reports of its own kinds at once.
    let r = app
        .report("acme-cloud", &json!({"problem": "console"}))
        .await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

async fn admin_create_validates_and_refuses_an_existing_slug(b: Backing) {
    let app = spawn_app(&b).await;
    let post = |body: Value| {
        app.client
            .post(app.url("/api/v1/services"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r =
        post(json!({"slug": "Bad Slug", "name": "", "url": "ftp://x", "problems": ["ok", "ok"]}))
            .await
            .unwrap();
    let body = assert_problem(r, 422, Some("slug")).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for f in ["name", "url", "problems"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let r = post(json!({"name": "No slug"})).await.unwrap();
    assert_problem(r, 422, Some("slug")).await;
    let r = post(json!({"slug": "whatsapp", "name": "Another WhatsApp"}))
        .await
        .unwrap();
    assert_problem(r, 409, None).await;
    // Default problem kinds when none are given.
    let r = post(json!({"slug": "plain", "name": "Plain"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["problems"],
        json!([
            "app",
            "website",
            "login",
            "connection",
            "messaging",
            "other"
        ])
    );
    app.stop().await;
}

async fn admin_patch_renames_and_changes_problem_kinds(b: Backing) {
    let app = spawn_app(&b).await;
    let patch = |slug: &str, body: Value| {
        app.client
            .patch(app.url(&format!("/api/v1/services/{slug}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let r = patch("telegram", json!({"name": "Telegram Messenger", "category": null, "problems": ["messaging", "stickers"]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["name"], "Telegram Messenger");
    assert_eq!(body["category"], Value::Null);
    assert_eq!(body["url"], "https://telegram.org", "untouched fields stay");
    let (_, one) = app.get_json("/api/v1/services/telegram").await;
    assert_eq!(one["problems"], json!(["messaging", "stickers"]));
    // The new kinds are what reports may name now.
    assert_eq!(
        app.report("telegram", &json!({"problem": "stickers"}))
            .await
            .status(),
        201
    );
    let r = app.report("telegram", &json!({"problem": "login"})).await;
    assert_problem(r, 422, Some("problem")).await;
    // The slug is the address and cannot change; bad values are named.
    let r = patch(
        "telegram",
        json!({"slug": "tg", "name": "  ", "problems": []}),
    )
    .await
    .unwrap();
    let body = assert_problem(r, 422, Some("slug")).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"name") && fields.contains(&"problems"),
        "{fields:?}"
    );
    let r = patch("no-such-service", json!({"name": "X"}))
        .await
        .unwrap();
    assert_problem(r, 404, None).await;
    // Unauthenticated patches change nothing.
    let r = app
        .client
        .patch(app.url("/api/v1/services/telegram"))
        .json(&json!({"name": "Pwned"}))
        .send()
        .await
        .unwrap();
    assert_problem(r, 401, None).await;
    let (_, one) = app.get_json("/api/v1/services/telegram").await;
    assert_eq!(one["name"], "Telegram Messenger");
    app.stop().await;
}

async fn services_file_replaces_the_bundled_catalogue_and_seeding_happens_once(b: Backing) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.toml");
    std::fs::write(
        &file,
        "[[service]]\nslug = \"local-bank\"\nname = \"Local Bank\"\ncategory = \"banks\"\nproblems = [\"cards\"]\n",
    )
    .unwrap();
    let path = file.to_str().unwrap().to_owned();
    let app = spawn_app_with(&b, &[("DOWNWATCH_SERVICES_FILE", &path)]).await;
    let (_, all) = app.get_json("/api/v1/services").await;
    let slugs: Vec<&str> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["local-bank"]);
    app.stop().await;
    // A restart with the bundled catalogue does not seed again.
    let app = spawn_app(&b).await;
    let (_, all) = app.get_json("/api/v1/services").await;
    assert_eq!(all["services"].as_array().unwrap().len(), 1);
    app.stop().await;
}
