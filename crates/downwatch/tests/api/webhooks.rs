//! Webhooks end to end: subscriptions over the admin API, incident events
//! from the detector (ticked by the test), deliveries to small actix
//! receivers on 127.0.0.1 (so the apps allow private addresses, except where
//! refusal is the point), in both modes.

use crate::both_modes;
use crate::detector::{burst, catalogue, incidents, live, now, stepped};
use crate::helpers::{ADMIN_TOKEN, Backing, TestApp, assert_problem, spawn_app_with};
use actix_web::{HttpRequest, HttpResponse, web};
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
