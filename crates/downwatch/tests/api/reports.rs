//! Report submission: one test per row of SPEC.md's status table, then
//! de-duplication, proxies and the country header.

use crate::both_modes;
use crate::helpers::{Backing, assert_problem, new_client_ip, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    accepted_report_is_201_with_its_body_and_already_in_the_database,
    unknown_service_is_404,
    malformed_json_is_400_naming_the_body,
    unknown_problem_kind_is_422_naming_problem,
    bad_country_code_is_422_naming_country,
    city_too_long_is_422_naming_city,
    unknown_and_mistyped_fields_are_422_naming_them,
    body_over_4_kib_is_413,
    body_that_is_not_json_is_415,
    client_over_its_rate_limit_gets_429_with_retry_after,
    full_queue_is_503_with_retry_after_and_never_201,
    database_down_is_503_then_recovers_and_the_retry_counts,
    second_report_of_a_client_is_stored_but_not_counted,
    dedup_window_expires,
    a_client_who_reported_before_midnight_does_not_count_again_after_it,
    one_address_cannot_multiply_its_count_with_client_ids,
    forwarded_for_is_believed_only_from_trusted_proxies,
    country_header_fills_in_a_missing_country,
    concurrent_burst_is_all_stored_with_distinct_ids,
);

async fn accepted_report_is_201_with_its_body_and_already_in_the_database(b: Backing) {
    let app = spawn_app(&b).await;
    let ip = "10.200.1.2";
    let before = chrono::Utc::now();
    let r = app
        .report_as(
            "whatsapp",
            ip,
            &json!({"problem": "messaging", "country": "FR", "city": "  Paris ", "client_id": "abc"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert!(body["id"].as_i64().unwrap() > 0);
    assert_eq!(body["service"], "whatsapp");
    assert_eq!(body["problem"], "messaging");
    assert_eq!(body["country"], "FR");
    assert_eq!(body["city"], "Paris");
    assert_eq!(body["counted"], true);
    let received: chrono::DateTime<chrono::Utc> =
        body["received_at"].as_str().unwrap().parse().unwrap();
    assert!(received >= before - chrono::Duration::seconds(1) && received <= chrono::Utc::now());

    // Read through another connection, without stopping the app: committed.
    assert_eq!(b.stored_reports().await, 1);
    let id = body["id"].as_i64().unwrap();
    assert_eq!(
        b.scalar_i64(&format!(
            "SELECT COUNT(*) FROM reports WHERE id = {id} AND city = 'Paris' AND country = 'FR'"
        ))
        .await,
        1
    );
    // The address is kept only as a 16-byte salted hash.
    assert_eq!(
        b.scalar_i64(&format!(
            "SELECT COUNT(*) FROM reports WHERE id = {id} AND LENGTH(client_hash) = 16"
        ))
        .await,
        1
    );
    assert!(b.report_texts().await.iter().all(|t| !t.contains(ip)));
    app.stop().await;
}

async fn unknown_service_is_404(b: Backing) {
    let app = spawn_app(&b).await;
    let r = app
        .report("no-such-service", &json!({"problem": "app"}))
        .await;
    assert_problem(r, 404, None).await;
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}

async fn malformed_json_is_400_naming_the_body(b: Backing) {
    let app = spawn_app(&b).await;
    for raw in [
        "{\"problem\": ",
        "[1, 2]",
        "\"app\"",
        "{\"problem\": \"app\"} trailing",
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/services/whatsapp/reports"))
            .header("content-type", "application/json")
            .header("X-Forwarded-For", new_client_ip())
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_problem(r, 400, Some("body")).await;
    }
    // Invalid UTF-8 is malformed too.
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .header("content-type", "application/json")
        .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'])
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, Some("body")).await;
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}

async fn unknown_problem_kind_is_422_naming_problem(b: Backing) {
    let app = spawn_app(&b).await;
    // "mobile-banking" is a kind of banks, not of WhatsApp.
    let r = app
        .report("whatsapp", &json!({"problem": "mobile-banking"}))
        .await;
    let body = assert_problem(r, 422, Some("problem")).await;
    assert!(
        body["detail"].as_str().unwrap().contains("messaging"),
        "lists the valid kinds"
    );
    let r = app.report("whatsapp", &json!({"country": "FR"})).await;
    assert_problem(r, 422, Some("problem")).await;
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}

async fn bad_country_code_is_422_naming_country(b: Backing) {
    let app = spawn_app(&b).await;
    for bad in [json!("fr"), json!("ZZ"), json!("FRA"), json!(33)] {
        let r = app
            .report("whatsapp", &json!({"problem": "app", "country": bad}))
            .await;
        assert_problem(r, 422, Some("country")).await;
    }
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}

async fn city_too_long_is_422_naming_city(b: Backing) {
    let app = spawn_app(&b).await;
    let r = app
        .report(
            "whatsapp",
            &json!({"problem": "app", "city": "x".repeat(81)}),
        )
        .await;
    assert_problem(r, 422, Some("city")).await;
    // 80 characters of multi-byte text is fine.
    let r = app
        .report(
            "whatsapp",
            &json!({"problem": "app", "city": "é".repeat(80)}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(b.stored_reports().await, 1);
    app.stop().await;
}

async fn unknown_and_mistyped_fields_are_422_naming_them(b: Backing) {
    let app = spawn_app(&b).await;
    let r = app
        .report(
            "whatsapp",
            &json!({"problem": "app", "contry": "FR", "client_id": 7}),
        )
        .await;
    let body = assert_problem(r, 422, Some("contry")).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"client_id"), "{fields:?}");
    app.stop().await;
}

async fn body_over_4_kib_is_413(b: Backing) {
    let app = spawn_app(&b).await;
    let big = json!({"problem": "app", "city": "x".repeat(5000)});
    let r = app.report("whatsapp", &big).await;
    assert_problem(r, 413, None).await;
    // Without a Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"city\": \"".to_vec()),
        Ok(vec![b'y'; 5000]),
        Ok(b"\"}".to_vec()),
    ];
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .header("content-type", "application/json")
        .header("X-Forwarded-For", new_client_ip())
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_problem(r, 413, None).await;
    assert_eq!(b.stored_reports().await, 0);
    app.stop().await;
}

async fn body_that_is_not_json_is_415(b: Backing) {
    let app = spawn_app(&b).await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(app.url("/api/v1/services/whatsapp/reports"))
            .header("X-Forwarded-For", new_client_ip())
            .body("{\"problem\": \"app\"}");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_problem(req.send().await.unwrap(), 415, None).await;
    }
    // JSON with a charset parameter is JSON.
    let r = app
        .client
        .post(app.url("/api/v1/services/whatsapp/reports"))
        .header("content-type", "application/json; charset=utf-8")
        .header("X-Forwarded-For", new_client_ip())
        .body("{\"problem\": \"app\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.stop().await;
}

async fn client_over_its_rate_limit_gets_429_with_retry_after(b: Backing) {
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_RATE_LIMIT_PER_MINUTE", "2"),
            ("DOWNWATCH_RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    let ip = new_client_ip();
    let body = json!({"problem": "app"});
    assert_eq!(app.report_as("whatsapp", &ip, &body).await.status(), 201);
    // Many client ids from one address do not escape the limit.
    let with_id = json!({"problem": "app", "client_id": "other-device"});
    assert_eq!(app.report_as("whatsapp", &ip, &with_id).await.status(), 201);
    let r = app.report_as("instagram", &ip, &body).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_problem(r, 429, None).await;
    // Another address is not affected.
    assert_eq!(app.report("whatsapp", &body).await.status(), 201);
    assert_eq!(b.stored_reports().await, 3);
    app.stop().await;
}

async fn full_queue_is_503_with_retry_after_and_never_201(b: Backing) {
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_INGEST_QUEUE", "2"),
            ("DOWNWATCH_COMMIT_TIMEOUT_MS", "1500"),
        ],
    )
    .await;
    let block = b.block_writes().await;
    let body = json!({"problem": "app"});
    let sends = (0..12).map(|_| app.report("whatsapp", &body));
    let answers = futures_util::future::join_all(sends).await;
    let mut queue_full = 0;
    for r in answers {
        assert!(r.headers().contains_key("retry-after"));
        let body = assert_problem(r, 503, None).await;
        if body["detail"]
            .as_str()
            .unwrap()
            .contains("waiting to be stored")
        {
            queue_full += 1;
        }
    }
    assert!(
        queue_full >= 1,
        "some were refused because the queue was full"
    );
    block.release().await;
    // Once the database takes writes again and the backlog is stored, so
    // does the API (a client honouring Retry-After retries).
    let mut id = None;
    for _ in 0..40 {
        let r = app.report("whatsapp", &json!({"problem": "app"})).await;
        if r.status() == 201 {
            id = r.json::<Value>().await.unwrap()["id"].as_i64();
            break;
        }
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("accepted again once the database is back");
    assert_eq!(
        b.scalar_i64(&format!("SELECT COUNT(*) FROM reports WHERE id = {id}"))
            .await,
        1
    );
    app.stop().await;
}

async fn database_down_is_503_then_recovers_and_the_retry_counts(b: Backing) {
    // SQLite gives up after its 5 s busy timeout; the commit timeout is longer
    // so the 503 comes from the failed transaction itself.
    let app = spawn_app_with(&b, &[("DOWNWATCH_COMMIT_TIMEOUT_MS", "20000")]).await;
    let ip = new_client_ip();
    let body = json!({"problem": "login"});
    let outage = b.take_database_down().await;
    if b.mode == crate::helpers::Mode::Production {
        // Readiness names what is down (SQLite held busy still answers reads).
        let r = app.get("/readyz").await;
        let problem = assert_problem(r, 503, None).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("database"),
            "{problem}"
        );
        assert_eq!(problem["checks"]["database"]["ok"], false);
        assert_eq!(problem["checks"]["window_store"]["ok"], true);
    }
    let r = app.report_as("whatsapp", &ip, &body).await;
    assert!(r.headers().contains_key("retry-after"));
    let problem = assert_problem(r, 503, None).await;
    let text = problem.to_string().to_lowercase();
    for leak in ["sqlite", "postgres", "sql", "locked", "terminat"] {
        assert!(
            !text.contains(leak),
            "internal detail {leak:?} leaked: {problem}"
        );
    }
    outage.restore().await;
    // The same client's retry is stored and counted: the failed attempt's
    // de-duplication claim was given back.
    let mut answer = None;
    for _ in 0..20 {
        let r = app.report_as("whatsapp", &ip, &body).await;
        if r.status() == 201 {
            answer = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = answer.expect("the API recovers without a restart");
    assert_eq!(answer["counted"], true);
    assert_eq!(
        b.scalar_i64("SELECT COUNT(*) FROM reports WHERE counted")
            .await,
        1
    );
    app.stop().await;
}

async fn second_report_of_a_client_is_stored_but_not_counted(b: Backing) {
    let app = spawn_app(&b).await;
    let ip = new_client_ip();
    let r1: Value = app
        .report_json("whatsapp", &ip, &json!({"problem": "app"}))
        .await;
    let r2: Value = app
        .report_json("whatsapp", &ip, &json!({"problem": "login"}))
        .await;
    // Another service, and another device behind the same address, count.
    let r3: Value = app
        .report_json("instagram", &ip, &json!({"problem": "app"}))
        .await;
    let r4: Value = app
        .report_json(
            "whatsapp",
            &ip,
            &json!({"problem": "app", "client_id": "phone-2"}),
        )
        .await;
    assert_eq!(
        [
            &r1["counted"],
            &r2["counted"],
            &r3["counted"],
            &r4["counted"]
        ],
        [true, false, true, true]
    );
    assert_eq!(b.stored_reports().await, 4);
    assert_eq!(
        b.scalar_i64("SELECT COUNT(*) FROM reports WHERE counted")
            .await,
        3
    );
    // The windows count only counted reports.
    let id = app.service_id("whatsapp").await;
    let minute = chrono::Utc::now().timestamp() / 60 * 60;
    let counts = app
        .state
        .windows
        .minutes(id, "global", minute - 60, 2)
        .await
        .unwrap();
    assert_eq!(counts.iter().sum::<u32>(), 2);
    app.stop().await;
}

async fn dedup_window_expires(b: Backing) {
    let app = spawn_app_with(&b, &[("DOWNWATCH_DEDUP_WINDOW_SECS", "1")]).await;
    let ip = new_client_ip();
    let body = json!({"problem": "app"});
    let counted = |v: Value| v["counted"].as_bool().unwrap();
    assert!(counted(app.report_json("whatsapp", &ip, &body).await));
    assert!(!counted(app.report_json("whatsapp", &ip, &body).await));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(counted(app.report_json("whatsapp", &ip, &body).await));
    app.stop().await;
}

async fn one_address_cannot_multiply_its_count_with_client_ids(b: Backing) {
    let app = spawn_app_with(&b, &[("DOWNWATCH_COUNTED_PER_ADDRESS", "2")]).await;
    let ip = new_client_ip();
    let mut counted = Vec::new();
    for id in ["a", "b", "c", "d"] {
        let r: Value = app
            .report_json("whatsapp", &ip, &json!({"problem": "app", "client_id": id}))
            .await;
        counted.push(r["counted"].as_bool().unwrap());
    }
    assert_eq!(counted, [true, true, false, false]);
    // The cap is per service, and other addresses are not affected.
    let other: Value = app
        .report_json(
            "instagram",
            &ip,
            &json!({"problem": "app", "client_id": "e"}),
        )
        .await;
    assert_eq!(other["counted"], true);
    let elsewhere: Value = app
        .report("whatsapp", &json!({"problem": "app"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(elsewhere["counted"], true);
    // Everything is stored; only the counted ones count.
    assert_eq!(b.stored_reports().await, 6);
    assert_eq!(
        b.scalar_i64("SELECT COUNT(*) FROM reports WHERE counted")
            .await,
        4
    );
    app.stop().await;
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(b: Backing) {
    let body = json!({"problem": "app"});
    let counted = |v: Value| v["counted"].as_bool().unwrap();
    // Trusted loopback proxy: two forwarded clients are two clients.
    let app = spawn_app(&b).await;
    assert!(counted(
        app.report_json("whatsapp", "198.51.100.1", &body).await
    ));
    assert!(counted(
        app.report_json("whatsapp", "198.51.100.2", &body).await
    ));
    // A client cannot spoof its way past the proxy by prepending hops.
    let spoof = "203.0.113.66, 198.51.100.1";
    assert!(!counted(app.report_json("whatsapp", spoof, &body).await));
    app.stop().await;
    // No trusted proxy: the header is ignored, every request is the peer.
    let app = spawn_app_with(&b, &[("DOWNWATCH_TRUSTED_PROXIES", "")]).await;
    assert!(counted(
        app.report_json("instagram", "198.51.100.3", &body).await
    ));
    assert!(!counted(
        app.report_json("instagram", "198.51.100.4", &body).await
    ));
    app.stop().await;
}

async fn country_header_fills_in_a_missing_country(b: Backing) {
    let app = spawn_app_with(&b, &[("DOWNWATCH_COUNTRY_HEADER", "CF-IPCountry")]).await;
    let send = |country_header: &'static str, body: Value| {
        let req = app
            .client
            .post(app.url("/api/v1/services/whatsapp/reports"))
            .header("X-Forwarded-For", new_client_ip())
            .header("CF-IPCountry", country_header)
            .json(&body);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(send("gb", json!({"problem": "app"})).await["country"], "GB");
    // The report's own country wins; placeholders such as XX are ignored.
    assert_eq!(
        send("GB", json!({"problem": "app", "country": "IE"})).await["country"],
        "IE"
    );
    assert!(
        send("XX", json!({"problem": "app"}))
            .await
            .get("country")
            .is_none()
    );
    app.stop().await;
}

async fn concurrent_burst_is_all_stored_with_distinct_ids(b: Backing) {
    let app = spawn_app(&b).await;
    let n = 300;
    let bodies: Vec<Value> = (0..n)
        .map(|i| json!({"problem": "messaging", "country": if i % 3 == 0 { "DE" } else { "FR" }}))
        .collect();
    let sends = bodies.iter().map(|body| app.report("whatsapp", body));
    let answers = futures_util::future::join_all(sends).await;
    let mut ids = Vec::new();
    for r in answers {
        assert_eq!(r.status(), 201);
        ids.push(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n);
    assert_eq!(b.stored_reports().await, n as i64);
    assert_eq!(
        b.scalar_i64("SELECT SUM(counted) FROM report_minutes WHERE scope = 'global'")
            .await,
        n as i64
    );
    assert_eq!(
        b.scalar_i64("SELECT SUM(counted) FROM report_minutes WHERE scope = 'DE'")
            .await,
        100
    );
    app.stop().await;
}

/// The salt of client hashes changes at midnight UTC; a client who reported
/// just before still counts once, not again just after.
async fn a_client_who_reported_before_midnight_does_not_count_again_after_it(b: Backing) {
    // Ten simulated seconds per real one: midnight comes three seconds
    // after the settings are read, time enough for the app to start.
    let app = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_CLOCK", "2024-03-18T23:59:30Z@10"),
            ("DOWNWATCH_ALLOW_SIMULATED_CLOCK", "1"),
            ("DOWNWATCH_COUNTED_PER_ADDRESS", "2"),
        ],
    )
    .await;
    let body = json!({"problem": "app"});
    // An address that fills its cap of 2 with two client ids before midnight.
    let capped = new_client_ip();
    for id in ["a", "b"] {
        let r = app
            .report_json(
                "whatsapp",
                &capped,
                &json!({"problem": "app", "client_id": id}),
            )
            .await;
        assert_eq!(r["counted"], true, "{r}");
    }
    let (ip, with_id) = (new_client_ip(), new_client_ip());
    let with_id_body = json!({"problem": "app", "client_id": "tab-1"});
    let first = app.report_json("whatsapp", &ip, &body).await;
    assert_eq!(first["counted"], true);
    assert!(
        first["received_at"].as_str().unwrap() < "2024-03-19",
        "{first}"
    );
    assert_eq!(
        app.report_json("whatsapp", &with_id, &with_id_body).await["counted"],
        true
    );
    // Wait for midnight on the server's clock.
    let after = loop {
        let r = app.report_json("instagram", &new_client_ip(), &body).await;
        if r["received_at"].as_str().unwrap() >= "2024-03-19" {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after["counted"], true);
    let again = app.report_json("whatsapp", &ip, &body).await;
    assert!(again["received_at"].as_str().unwrap() >= "2024-03-19");
    assert_eq!(again["counted"], false, "counted before midnight: {again}");
    assert_eq!(
        app.report_json("whatsapp", &with_id, &with_id_body).await["counted"],
        false
    );
    // Nor does a third client id of the capped address: its cap still holds.
    let third = app
        .report_json(
            "whatsapp",
            &capped,
            &json!({"problem": "app", "client_id": "c"}),
        )
        .await;
    assert_eq!(
        third["counted"], false,
        "over the cap across midnight: {third}"
    );
    // Someone new after midnight counts.
    assert_eq!(
        app.report_json("whatsapp", &new_client_ip(), &body).await["counted"],
        true
    );
    app.stop().await;
}
