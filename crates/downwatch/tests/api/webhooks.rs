//! Webhooks end to end: subscriptions over the admin API, incident events
//! from the detector (ticked by the test), deliveries to small actix
//! receivers on 127.0.0.1 (so the apps allow private addresses, except where
//! refusal is the point), in both modes.

use crate::both_modes;
use crate::detector::{burst, catalogue, incidents, live, now, stepped};
use crate::helpers::{ADMIN_TOKEN, Backing, Mode, TestApp, assert_problem, spawn_app_with};
use actix_web::{HttpRequest, HttpResponse, web};
use downwatch_store::webhooks::{Attempt, AttemptOutcome, NewWebhook, Recorded};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

both_modes!(
    deliveries_are_signed_json_for_the_matching_subscriptions,
    failed_deliveries_are_retried_with_back_off_in_order,
    a_delivery_is_given_up_after_its_last_attempt,
    private_addresses_are_refused_at_creation_and_at_delivery,
    each_event_is_delivered_once_by_two_instances_on_one_database,
    webhook_admin_needs_the_token,
    a_failed_deliverys_error_does_not_quote_the_url,
    webhook_answers_are_marked_no_store,
    a_worker_whose_lease_was_taken_over_cannot_undo_the_new_holders_write,
    a_subscription_whose_deliveries_keep_being_given_up_is_disabled_until_enabled,
    deliveries_pending_for_over_a_day_are_given_up_as_the_server_starts,
    a_server_keeps_at_most_a_hundred_subscriptions,
);

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    event: String,
    delivery: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Received>>,
    /// Requests to answer 500 before answering 200.
    fail_first: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
    handle: actix_web::dev::ServerHandle,
}

async fn hook(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    inbox.got.lock().unwrap().push(Received {
        at: Instant::now(),
        event: header("x-downwatch-event"),
        delivery: header("x-downwatch-delivery"),
        signature: header("x-downwatch-signature"),
        body: body.to_vec(),
    });
    let failing = inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        HttpResponse::InternalServerError().body("not now")
    } else {
        HttpResponse::Ok().body("thanks")
    }
}

async fn receiver(fail_first: usize) -> Receiver {
    let inbox = Arc::new(Inbox {
        fail_first: AtomicUsize::new(fail_first),
        ..Inbox::default()
    });
    let data = web::Data::from(inbox.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .route("/{tail:.*}", web::post().to(hook))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        inbox,
        handle,
    }
}

impl Receiver {
    fn got(&self) -> Vec<Received> {
        self.inbox.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived (a guard against hanging, not
    /// a measure: deliveries come within a second or two).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries arrived: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// An app over the two-service catalogue, allowed to deliver to loopback,
/// with a fast back-off; `extra` overrides.
async fn app_with(b: &Backing, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("DOWNWATCH_SERVICES_FILE", catalogue()),
        ("DOWNWATCH_WEBHOOK_ALLOW_PRIVATE", "1"),
        ("DOWNWATCH_WEBHOOK_BACKOFF_MS", "300"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(b, &settings).await
}

async fn subscribe(app: &TestApp, body: Value) -> Value {
    let r = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.unwrap()
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

/// A French burst on chatapp, opened by a tick: a global and a French
/// incident. Returns the detector and the burst's last minute.
async fn outage(app: &TestApp) -> (downwatch_detector::live::Live, i64) {
    let mut detector = live(app, "webhooks");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let (_, last) = burst(app, "chatapp", 40, Some("FR")).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    (detector, last)
}

async fn deliveries_are_signed_json_for_the_matching_subscriptions(b: Backing) {
    let app = app_with(&b, &[]).await;
    let all = receiver(0).await;
    let french_ends = receiver(0).await;
    let quiet = receiver(0).await;
    let secret = "a-shared-secret-of-some-length";
    let hook = subscribe(&app, json!({"url": all.url, "secret": secret})).await;
    assert_eq!(hook["secret"], secret);
    assert_eq!(hook["services"], Value::Null);
    subscribe(
        &app,
        json!({"url": french_ends.url, "services": ["chatapp"], "scopes": ["FR"],
               "events": ["incident.resolved"]}),
    )
    .await;
    subscribe(&app, json!({"url": quiet.url, "services": ["quiet"]})).await;

    let (mut detector, last) = outage(&app).await;
    let rows = incidents(&app, "chatapp").await;
    let ids: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| (r.record.scope.clone(), r.id))
        .collect();
    assert_eq!(ids.len(), 2, "{rows:?}");

    // Opened, twice (global and France), signed with the secret.
    let got = all.wait_for(2).await;
    let mut scopes = Vec::new();
    for r in &got {
        assert!(
            downwatch_webhooks::verify(secret.as_bytes(), &r.body, &r.signature),
            "{r:?}"
        );
        assert!(!downwatch_webhooks::verify(
            b"another secret",
            &r.body,
            &r.signature
        ));
        let body = r.json();
        assert_eq!(body["type"], "incident.opened");
        assert_eq!(r.event, "incident.opened");
        assert!(r.delivery.parse::<i64>().unwrap() > 0);
        let incident = &body["incident"];
        assert_eq!(incident["service"], "chatapp");
        assert_eq!(incident["status"], "open");
        let scope = incident["scope"].as_str().unwrap().to_owned();
        assert_eq!(incident["id"], ids[&scope], "{body}");
        assert_eq!(incident["total_reports"], 40);
        // SPEC's incident JSON, breakdowns included: the burst's 40 French
        // messaging reports.
        assert_eq!(
            incident["top_problems"],
            json!([{"problem": "messaging", "share": 1.0}]),
            "{body}"
        );
        assert_eq!(
            incident["top_locations"],
            json!([{"country": "FR", "city": null, "share": 1.0}]),
            "{body}"
        );
        scopes.push(scope);
    }
    scopes.sort();
    assert_eq!(scopes, ["FR", "global"]);

    // Three quiet hours later both resolve: two more for the first
    // subscriber, the French one only for the second.
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    let got = all.wait_for(4).await;
    let resolved: Vec<Value> = got[2..].iter().map(Received::json).collect();
    for body in &resolved {
        assert_eq!(body["type"], "incident.resolved", "{body}");
        assert_eq!(body["incident"]["status"], "resolved");
        assert!(body["incident"]["ended_at"].is_string());
    }
    let french = french_ends.wait_for(1).await;
    let body = french[0].json();
    assert_eq!(
        (&body["type"], &body["incident"]["scope"]),
        (&json!("incident.resolved"), &json!("FR"))
    );

    // What the admin sees.
    let list = admin_get(&app, "/api/v1/webhooks").await;
    let first = &list["webhooks"][0];
    assert_eq!(
        first["deliveries"],
        json!({"pending": 0, "delivered": 4, "failed": 0})
    );
    assert_eq!(first["last_status"], 200);
    let detail = admin_get(&app, &format!("/api/v1/webhooks/{}", hook["id"])).await;
    let recent = detail["recent_deliveries"].as_array().unwrap();
    assert_eq!(recent.len(), 4);
    assert!(
        recent
            .iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1)
    );
    assert_eq!(list["webhooks"][2]["deliveries"]["delivered"], 0);
    // Nothing more for anyone, and nothing at all for the quiet service's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(all.got().len(), 4);
    assert_eq!(french_ends.got().len(), 1);
    assert!(quiet.got().is_empty());
    for r in [all, french_ends, quiet] {
        r.stop().await;
    }
    app.stop().await;
}

async fn failed_deliveries_are_retried_with_back_off_in_order(b: Backing) {
    let app = app_with(&b, &[]).await;
    let flaky = receiver(3).await;
    let hook = subscribe(
        &app,
        json!({"url": flaky.url, "scopes": ["global"], "secret": "0123456789abcdef"}),
    )
    .await;
    let (mut detector, last) = outage(&app).await;
    // The resolution is written while the opening is still being retried.
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));

    let got = flaky.wait_for(5).await;
    // Four attempts of the opening (three answered 500), then the resolution.
    let opened: Vec<&Received> = got.iter().take(4).collect();
    assert!(opened.iter().all(|r| r.delivery == opened[0].delivery));
    assert!(opened.iter().all(|r| r.event == "incident.opened"));
    assert!(
        opened.iter().all(|r| r.body == opened[0].body),
        "the same body each time"
    );
    assert_eq!(got[4].event, "incident.resolved");
    assert_ne!(got[4].delivery, opened[0].delivery);
    // Each wait at least the back-off: 300 ms, then 600, then 1200.
    for (i, pair) in opened.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let backoff = Duration::from_millis(300 << i);
        assert!(gap >= backoff, "attempt {}: {gap:?} < {backoff:?}", i + 2);
    }

    let detail = admin_get(&app, &format!("/api/v1/webhooks/{}", hook["id"])).await;
    let recent = detail["recent_deliveries"].as_array().unwrap();
    let (resolved, opened) = (&recent[0], &recent[1]);
    assert_eq!(opened["event"], "incident.opened");
    assert_eq!(opened["attempts"], 4);
    assert_eq!(opened["state"], "delivered");
    assert_eq!(opened["last_status"], 200);
    assert_eq!(resolved["attempts"], 1);
    assert_eq!(
        detail["deliveries"],
        json!({"pending": 0, "delivered": 2, "failed": 0})
    );
    assert_eq!(detail["retry_at"], Value::Null);
    flaky.stop().await;
    app.stop().await;
}

async fn a_delivery_is_given_up_after_its_last_attempt(b: Backing) {
    let app = app_with(&b, &[("DOWNWATCH_WEBHOOK_MAX_ATTEMPTS", "2")]).await;
    let down = receiver(usize::MAX).await;
    let hook = subscribe(&app, json!({"url": down.url, "scopes": ["global"]})).await;
    let (mut detector, last) = outage(&app).await;
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    // Two attempts each: the opening is given up, then the resolution goes
    // (and fails twice too).
    let got = down.wait_for(4).await;
    let events: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(
        events,
        [
            "incident.opened",
            "incident.opened",
            "incident.resolved",
            "incident.resolved"
        ]
    );
    let path = format!("/api/v1/webhooks/{}", hook["id"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let detail = loop {
        let d = admin_get(&app, &path).await;
        if d["deliveries"]["failed"] == 2 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        detail["deliveries"],
        json!({"pending": 0, "delivered": 0, "failed": 2})
    );
    assert_eq!(detail["last_status"], 500);
    assert!(
        detail["last_error"].as_str().unwrap().contains("500"),
        "{detail}"
    );
    for d in detail["recent_deliveries"].as_array().unwrap() {
        assert_eq!((&d["state"], &d["attempts"]), (&json!("failed"), &json!(2)));
        assert_eq!(d["next_attempt_at"], Value::Null);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("downwatch_webhook_attempts_total{outcome=\"given_up\"} 2"),
        "{metrics}"
    );
    down.stop().await;
    app.stop().await;
}

async fn private_addresses_are_refused_at_creation_and_at_delivery(b: Backing) {
    let listening = receiver(0).await;
    let port = listening
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // Without the setting: refused when subscribing, naming the field.
    let strict = spawn_app_with(&b, &[("DOWNWATCH_SERVICES_FILE", catalogue())]).await;
    for url in [
        listening.url.clone(),
        format!("http://localhost:{port}/hook"),
        "http://10.1.2.3/hook".to_owned(),
        "http://[::1]/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
    ] {
        let r = strict
            .client
            .post(strict.url("/api/v1/webhooks"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, 422, Some("url")).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("private"),
            "{url}: {problem}"
        );
    }
    for bad in ["ftp://example.com/x", "not a url", ""] {
        let r = strict
            .client
            .post(strict.url("/api/v1/webhooks"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"url": bad}))
            .send()
            .await
            .unwrap();
        assert_problem(r, 422, Some("url")).await;
    }
    strict.stop().await;

    // With it, both subscribe (an address, and a name that resolves to one).
    let lenient = app_with(&b, &[]).await;
    let literal = subscribe(
        &lenient,
        json!({"url": listening.url, "scopes": ["global"]}),
    )
    .await;
    let named = subscribe(
        &lenient,
        json!({"url": format!("http://localhost:{port}/hook"), "scopes": ["global"]}),
    )
    .await;
    lenient.stop().await;

    // An instance without the setting delivers neither: the address is
    // checked again when sending (a name may resolve elsewhere by then).
    let strict = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue()),
            ("DOWNWATCH_WEBHOOK_BACKOFF_MS", "60000"),
        ],
    )
    .await;
    let (_detector, _) = outage(&strict).await;
    for hook in [&literal, &named] {
        let path = format!("/api/v1/webhooks/{}", hook["id"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let detail = loop {
            let d = admin_get(&strict, &path).await;
            if d["recent_deliveries"][0]["attempts"] == 1 || Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let d = &detail["recent_deliveries"][0];
        assert_eq!(d["state"], "pending", "{detail}");
        assert_eq!(d["last_status"], Value::Null, "no answer: never sent");
        let error = d["last_error"].as_str().unwrap();
        assert!(error.contains("private"), "{error}");
        assert!(d["next_attempt_at"].is_string());
        assert!(detail["retry_at"].is_string());
    }
    assert!(listening.got().is_empty(), "nothing reached the receiver");
    listening.stop().await;
    strict.stop().await;
}

async fn each_event_is_delivered_once_by_two_instances_on_one_database(b: Backing) {
    let one = app_with(&b, &[]).await;
    let two = app_with(&b, &[]).await;
    let rx = receiver(0).await;
    // Several subscriptions, so both instances' workers find work at once.
    let mut hooks = Vec::new();
    for _ in 0..6 {
        hooks.push(
            subscribe(&one, json!({"url": rx.url})).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (mut detector, last) = outage(&one).await;
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    // Two incidents, opened and resolved: four events for each subscription.
    let expected = hooks.len() * 4;
    rx.wait_for(expected).await;
    // Time for a second delivery of anything to arrive, if there were one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = rx.got();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *seen.entry(r.delivery.clone()).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    assert_eq!(got.len(), expected);
    let mut events: BTreeMap<(String, String, i64), usize> = BTreeMap::new();
    for r in &got {
        let body = r.json();
        *events
            .entry((
                r.event.clone(),
                body["incident"]["scope"].as_str().unwrap().to_owned(),
                body["incident"]["id"].as_i64().unwrap(),
            ))
            .or_default() += 1;
    }
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.values().all(|n| *n == hooks.len()), "{events:?}");
    let list = admin_get(&two, "/api/v1/webhooks").await;
    for w in list["webhooks"].as_array().unwrap() {
        assert_eq!(
            w["deliveries"],
            json!({"pending": 0, "delivered": 4, "failed": 0})
        );
    }
    rx.stop().await;
    two.stop().await;
    one.stop().await;
}

async fn webhook_admin_needs_the_token(b: Backing) {
    let app = app_with(&b, &[]).await;
    let routes = [
        (reqwest::Method::POST, "/api/v1/webhooks"),
        (reqwest::Method::GET, "/api/v1/webhooks"),
        (reqwest::Method::GET, "/api/v1/webhooks/1"),
        (reqwest::Method::DELETE, "/api/v1/webhooks/1"),
    ];
    let body = json!({"url": "http://127.0.0.1:9/x"});
    for (m, path) in &routes {
        let anonymous = app
            .client
            .request(m.clone(), app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(anonymous, 401, None).await;
        let wrong = app
            .client
            .request(m.clone(), app.url(path))
            .bearer_auth("not-the-admin-token-at-all")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_problem(wrong, 403, None).await;
    }
    // Nothing was created by those.
    assert_eq!(
        admin_get(&app, "/api/v1/webhooks").await["webhooks"],
        json!([])
    );
    // Bad members are named.
    let r = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"url": "http://127.0.0.1:9/x", "scopes": ["france"], "events": [],
                      "secret": "short", "colour": "red"}),
        )
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 422, Some("scopes")).await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["secret", "scopes", "events", "colour"],
        "{problem}"
    );
    app.stop().await;

    // No token configured: admin is off, never open.
    let closed = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue()),
            ("DOWNWATCH_ADMIN_TOKEN", ""),
        ],
    )
    .await;
    for (m, path) in &routes {
        let r = closed
            .client
            .request(m.clone(), closed.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(r, 403, None).await;
        assert!(problem["detail"].as_str().unwrap().contains("disabled"));
    }
    closed.stop().await;
}

/// A listener that accepts and never answers, so requests time out.
async fn silent_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (format!("http://127.0.0.1:{port}"), task)
}

/// Waits until the subscription's latest delivery has had an attempt.
async fn first_attempt(app: &TestApp, id: &Value) -> Value {
    let path = format!("/api/v1/webhooks/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = admin_get(app, &path).await;
        if d["recent_deliveries"][0]["attempts"].as_i64() >= Some(1) {
            return d;
        }
        assert!(Instant::now() < deadline, "no attempt: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_failed_deliverys_error_does_not_quote_the_url(b: Backing) {
    // Slack- and Discord-style URLs carry their credential in the path or
    // the query; reqwest's errors quote the whole URL.
    let app = app_with(
        &b,
        &[
            ("DOWNWATCH_WEBHOOK_TIMEOUT_MS", "300"),
            ("DOWNWATCH_WEBHOOK_BACKOFF_MS", "60000"),
        ],
    )
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (silent, silent_task) = silent_receiver().await;
    let secret_path = "/services/T0KEN-IN-THE-PATH/B0T";
    let secret_query = "?token=QUERY-SECRET";
    let refused = subscribe(
        &app,
        json!({"url": format!("http://127.0.0.1:{closed}{secret_path}{secret_query}"),
               "scopes": ["global"]}),
    )
    .await;
    let timed_out = subscribe(
        &app,
        json!({"url": format!("{silent}{secret_path}{secret_query}"), "scopes": ["global"]}),
    )
    .await;
    let (_detector, _) = outage(&app).await;
    for hook in [&refused, &timed_out] {
        let detail = first_attempt(&app, &hook["id"]).await;
        let delivery = &detail["recent_deliveries"][0];
        assert_eq!(delivery["last_status"], Value::Null, "{detail}");
        let list = admin_get(&app, "/api/v1/webhooks").await;
        let listed = list["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == hook["id"])
            .unwrap()
            .clone();
        for error in [
            &delivery["last_error"],
            &detail["last_error"],
            &listed["last_error"],
        ] {
            let error = error.as_str().unwrap();
            assert!(error.contains("error sending request"), "{error}");
            assert!(!error.contains("T0KEN"), "{error}");
            assert!(!error.contains("B0T"), "{error}");
            assert!(!error.contains("QUERY-SECRET"), "{error}");
        }
    }
    silent_task.abort();
    app.stop().await;
}

fn no_store(r: &reqwest::Response) -> bool {
    r.headers()
        .get("cache-control")
        .is_some_and(|v| v.to_str().unwrap() == "no-store")
}

async fn webhook_answers_are_marked_no_store(b: Backing) {
    let app = app_with(&b, &[]).await;
    let admin = |m: reqwest::Method, path: &str| {
        app.client
            .request(m, app.url(path))
            .bearer_auth(ADMIN_TOKEN)
    };
    // The creation, which shows the secret once.
    let created = admin(reqwest::Method::POST, "/api/v1/webhooks")
        .json(&json!({"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    assert!(no_store(&created), "{:?}", created.headers());
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["secret"], "0123456789abcdef-secret");
    let path = format!("/api/v1/webhooks/{}", body["id"]);
    // Every other answer too, errors included; none shows the secret.
    for (m, p, status) in [
        (reqwest::Method::GET, "/api/v1/webhooks".to_owned(), 200),
        (reqwest::Method::GET, path.clone(), 200),
        (reqwest::Method::GET, "/api/v1/webhooks/999".to_owned(), 404),
    ] {
        let r = admin(m, &p).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{p}");
        assert!(no_store(&r), "{p}: {:?}", r.headers());
        assert!(!r.text().await.unwrap().contains("0123456789abcdef-secret"));
    }
    let patched = admin(reqwest::Method::PATCH, &path)
        .json(&json!({"state": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 200);
    assert!(no_store(&patched));
    let deleted = admin(reqwest::Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert!(no_store(&deleted));
    let anonymous = app.get("/api/v1/webhooks").await;
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(no_store(&anonymous));
    app.stop().await;
}

/// Runs `sql` with `{now_ms}` replaced by the current epoch milliseconds.
async fn plant(b: &Backing, sql: &str) {
    let now = chrono::Utc::now().timestamp_millis();
    b.execute(&sql.replace("{now_ms}", &now.to_string())).await;
}

async fn delivery_state(b: &Backing, id: i64) -> (String, i64) {
    let cast = if b.mode == Mode::Production {
        "::BIGINT"
    } else {
        ""
    };
    let sql = format!(
        "SELECT (CASE state WHEN 'pending' THEN 0 WHEN 'delivered' THEN 1 ELSE 2 END){cast}
         FROM webhook_deliveries WHERE id = {id}"
    );
    let state = b.scalar_i64(&sql).await;
    let attempts = b
        .scalar_i64(&format!(
            "SELECT attempts FROM webhook_deliveries WHERE id = {id}"
        ))
        .await;
    let name = ["pending", "delivered", "failed"][state as usize].to_owned();
    (name, attempts)
}

async fn a_worker_whose_lease_was_taken_over_cannot_undo_the_new_holders_write(b: Backing) {
    // The store alone: no server, so no delivery worker but the two here.
    let storage = downwatch::startup::connect_storage(&b.settings(&[]))
        .await
        .unwrap();
    let hook = storage
        .create_webhook(
            &NewWebhook {
                url: "http://127.0.0.1:9/hook".to_owned(),
                secret: "0123456789abcdef".to_owned(),
                services: None,
                scopes: None,
                events: None,
                description: None,
            },
            0,
            100,
        )
        .await
        .unwrap()
        .unwrap();
    plant(
        &b,
        &format!(
            "INSERT INTO webhook_deliveries (webhook_id, event, event_key, incident_id, payload,
             created_at) VALUES ({}, 'incident.opened', 'k1', 1, '{{}}', {{now_ms}})",
            hook.id
        ),
    )
    .await;
    let delivery = storage.pending_deliveries(hook.id, 10).await.unwrap()[0].id;
    let attempt = |outcome| Attempt {
        delivery_id: delivery,
        webhook_id: hook.id,
        status: Some(200),
        error: None,
        outcome,
        disable_after: 3,
        disable_reason: "test".to_owned(),
    };
    // Slow takes the lease for no time at all (as if its lease ran out
    // while it waited on a receiver); fast claims it next and delivers.
    let slow = storage.claim_webhook("slow", 0).await.unwrap().unwrap();
    assert_eq!(slow.id, hook.id);
    let fast = storage
        .claim_webhook("fast", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fast.id, hook.id);
    assert_eq!(
        storage
            .record_attempt("fast", &attempt(AttemptOutcome::Delivered))
            .await
            .unwrap(),
        Recorded::Written { disabled: false }
    );
    // Slow's late failure must not turn the delivered row back to pending,
    // nor give it up, nor make the subscription wait.
    for outcome in [AttemptOutcome::RetryAfter(60_000), AttemptOutcome::GaveUp] {
        assert_eq!(
            storage
                .record_attempt("slow", &attempt(outcome))
                .await
                .unwrap(),
            Recorded::Fenced
        );
    }
    assert_eq!(
        delivery_state(&b, delivery).await,
        ("delivered".to_owned(), 1)
    );
    let w = storage.webhook(hook.id).await.unwrap().unwrap();
    assert_eq!(w.retry_at, None);
    assert_eq!((w.pending, w.delivered, w.failed), (0, 1, 0));
    // Nor can the holder itself record twice on a row that is done.
    assert_eq!(
        storage
            .record_attempt("fast", &attempt(AttemptOutcome::GaveUp))
            .await
            .unwrap(),
        Recorded::Fenced
    );
    // A lease that is held (60 s, by the database's clock) is not claimed.
    plant(
        &b,
        &format!(
            "INSERT INTO webhook_deliveries (webhook_id, event, event_key, incident_id, payload,
             created_at) VALUES ({}, 'incident.resolved', 'k2', 1, '{{}}', {{now_ms}})",
            hook.id
        ),
    )
    .await;
    assert!(
        storage
            .claim_webhook("slow", 60_000)
            .await
            .unwrap()
            .is_none()
    );
    storage.release_webhook(hook.id, "fast").await.unwrap();
    assert!(
        storage
            .claim_webhook("slow", 60_000)
            .await
            .unwrap()
            .is_some()
    );
}

/// Polls a subscription's detail until `done` holds.
async fn detail_until(app: &TestApp, id: &Value, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/api/v1/webhooks/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = admin_get(app, &path).await;
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "never came: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn patch_state(app: &TestApp, id: &Value, state: &str) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap()
}

async fn a_subscription_whose_deliveries_keep_being_given_up_is_disabled_until_enabled(b: Backing) {
    // One attempt each: every failed delivery is given up at once.
    let app = app_with(&b, &[("DOWNWATCH_WEBHOOK_MAX_ATTEMPTS", "1")]).await;
    let dead = receiver(usize::MAX).await;
    let muted = receiver(0).await;
    let hook = subscribe(&app, json!({"url": dead.url})).await;
    assert_eq!(hook["state"], "active");
    assert_eq!(hook["disabled_reason"], Value::Null);
    let other = subscribe(&app, json!({"url": muted.url})).await;
    // An admin disables one by hand: it gets nothing enqueued.
    let r = patch_state(&app, &other["id"], "disabled").await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["state"], &v["disabled_reason"]),
        (&json!("disabled"), &json!("disabled by an admin"))
    );
    assert!(v["disabled_at"].is_string());

    // Two openings and two resolutions: the third give-up in a row
    // disables the subscription, and the fourth delivery is not tried.
    let (mut detector, last) = outage(&app).await;
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
    let detail = detail_until(&app, &hook["id"], |d| d["state"] == "disabled").await;
    assert_eq!(
        detail["deliveries"],
        json!({"pending": 1, "delivered": 0, "failed": 3}),
        "{detail}"
    );
    let reason = detail["disabled_reason"].as_str().unwrap();
    assert!(
        reason.contains("3 deliveries in a row were given up"),
        "{reason}"
    );
    assert!(reason.contains("500"), "{reason}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dead.got().len(), 3, "nothing is sent once disabled");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("downwatch_webhooks_disabled_total 1"),
        "{metrics}"
    );
    let other_detail = admin_get(&app, &format!("/api/v1/webhooks/{}", other["id"])).await;
    assert_eq!(
        other_detail["deliveries"],
        json!({"pending": 0, "delivered": 0, "failed": 0}),
        "a disabled subscription is not enqueued for"
    );
    assert!(muted.got().is_empty());

    // The receiver is back and the admin enables the subscription: what
    // was left pending goes out.
    dead.inbox.fail_first.store(0, Ordering::SeqCst);
    let r = patch_state(&app, &hook["id"], "active").await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "active");
    assert_eq!(
        (&v["disabled_at"], &v["disabled_reason"]),
        (&Value::Null, &Value::Null)
    );
    let detail = detail_until(&app, &hook["id"], |d| d["deliveries"]["delivered"] == 1).await;
    assert_eq!(
        detail["deliveries"],
        json!({"pending": 0, "delivered": 1, "failed": 3})
    );
    assert_eq!(dead.got()[3].event, "incident.resolved");

    // Bad changes are named; unknown subscriptions are 404.
    let r = patch_state(&app, &hook["id"], "paused").await;
    assert_problem(r, 422, Some("state")).await;
    let r = patch_state(&app, &json!(999), "active").await;
    assert_problem(r, 404, None).await;
    for r in [dead, muted] {
        r.stop().await;
    }
    app.stop().await;
}

async fn deliveries_pending_for_over_a_day_are_given_up_as_the_server_starts(b: Backing) {
    let rx = receiver(0).await;
    let first = app_with(&b, &[]).await;
    let hook = subscribe(&first, json!({"url": rx.url})).await;
    first.stop().await;
    // While the server was down: one delivery left from 25 hours ago, one
    // from now.
    for (key, age_ms) in [("old", 25 * 3_600_000), ("new", 0)] {
        plant(
            &b,
            &format!(
                "INSERT INTO webhook_deliveries (webhook_id, event, event_key, incident_id,
                 payload, created_at)
                 VALUES ({}, 'incident.opened', '{key}', 1, '{{}}', {{now_ms}} - {age_ms})",
                hook["id"]
            ),
        )
        .await;
    }
    let app = app_with(&b, &[]).await;
    let detail = detail_until(&app, &hook["id"], |d| {
        d["deliveries"]["pending"] == 0 && d["deliveries"]["delivered"] == 1
    })
    .await;
    assert_eq!(
        detail["deliveries"],
        json!({"pending": 0, "delivered": 1, "failed": 1})
    );
    let recent = detail["recent_deliveries"].as_array().unwrap();
    let (new, old) = (&recent[0], &recent[1]);
    assert_eq!(
        (&old["state"], &old["attempts"]),
        (&json!("failed"), &json!(0))
    );
    assert!(
        old["last_error"]
            .as_str()
            .unwrap()
            .contains("not delivered within 24 h"),
        "{old}"
    );
    // Only the recent one was sent: the old one not even once.
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery, new["id"].to_string());
    rx.stop().await;
    app.stop().await;
}

async fn a_server_keeps_at_most_a_hundred_subscriptions(b: Backing) {
    let app = app_with(&b, &[]).await;
    let mut last = Value::Null;
    for i in 0..100 {
        last = subscribe(&app, json!({"url": format!("http://127.0.0.1:9/hook/{i}")})).await;
    }
    let create = || {
        app.client
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"url": "http://127.0.0.1:9/one-too-many"}))
            .send()
    };
    let problem = assert_problem(create().await.unwrap(), 409, None).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("100 webhook subscriptions"),
        "{problem}"
    );
    let listed = admin_get(&app, "/api/v1/webhooks").await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 100);
    // Deleting one makes room for one.
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{}", last["id"])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(create().await.unwrap().status().as_u16(), 201);
    assert_eq!(create().await.unwrap().status().as_u16(), 409);
    // Lists are bounded before their entries are looked at.
    let long: Vec<String> = (0..301).map(|i| format!("s{i}")).collect();
    let r = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"url": "http://127.0.0.1:9/x", "services": long}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(r, 422, Some("services")).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 300"),
        "{problem}"
    );
    app.stop().await;
}
