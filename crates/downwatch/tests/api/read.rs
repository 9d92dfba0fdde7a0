//! The read API over a real outage: status, incident history (JSON, CSV,
//! Atom), one incident with its series, breakdowns, the chart and the
//! event stream, in both modes.

use crate::both_modes;
use crate::detector::{app, burst, live, now, stepped};
use crate::helpers::{ADMIN_TOKEN, Backing, TestApp, assert_problem, new_client_ip};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    status_incidents_and_exports_tell_the_story_of_an_outage,
    breakdowns_count_problems_and_places_exactly,
    the_chart_is_svg_and_escapes_the_service_name,
    the_stream_carries_detector_events,
    read_parameters_are_bounded_and_named_when_wrong,
);

/// A burst of 40 reports from France opens a global and a French incident;
/// the detector is ticked right after it. Returns the burst's minutes.
async fn outage(app: &TestApp) -> (i64, i64) {
    let mut detector = live(app, "reader");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let minutes = burst(app, "chatapp", 40, Some("FR")).await;
    assert!(stepped(&detector.tick(minutes.1 + 63).await.unwrap()));
    minutes
}

async fn resolve(app: &TestApp, last: i64) {
    let mut detector = live(app, "reader");
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));
}

async fn status_incidents_and_exports_tell_the_story_of_an_outage(b: Backing) {
    let app = app(&b).await;
    let (first, last) = outage(&app).await;

    // What is down now.
    let (code, status) = app.get_json("/api/v1/status").await;
    assert_eq!(code, 200, "{status}");
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{status}");
    let s = &services[0];
    assert_eq!(
        (s["slug"].as_str(), s["level"].as_str()),
        (Some("chatapp"), Some("outage"))
    );
    assert_eq!(s["name"], "ChatApp");
    assert!(s["incident_id"].as_i64().is_some());
    // The burst is within the last 15 minutes unless the test was very slow.
    if now() - last < 600 {
        assert_eq!(s["reports_15m"], 40, "{s}");
        assert!(s["ratio"].as_f64().unwrap() > 10.0, "{s}");
    }
    assert!(s["baseline_15m"].as_f64().unwrap() < 1.0, "{s}");
    let (_, fr) = app.get_json("/api/v1/status?country=FR").await;
    assert_eq!(fr["services"][0]["slug"], "chatapp", "{fr}");
    assert_ne!(fr["services"][0]["incident_id"], s["incident_id"]);
    let (_, de) = app.get_json("/api/v1/status?country=DE").await;
    assert_eq!(de["services"], json!([]));

    // The series now has a baseline and a threshold.
    let (_, series) = app
        .get_json("/api/v1/services/chatapp/series?step=60")
        .await;
    let p = series["points"].as_array().unwrap().last().unwrap().clone();
    assert!(p["baseline"].as_f64().is_some(), "{p}");
    assert!(p["threshold"].as_f64().unwrap() >= p["baseline"].as_f64().unwrap());

    resolve(&app, last).await;

    // The history: newest first, filters, pages.
    let (code, list) = app.get_json("/api/v1/incidents").await;
    assert_eq!(code, 200, "{list}");
    let all = list["incidents"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{list}");
    assert!(list["next_cursor"].is_null());
    for i in all {
        assert_eq!(i["service"], "chatapp");
        assert_eq!(i["status"], "resolved");
        assert_eq!(i["total_reports"], 40);
        assert_eq!(
            i["started_at"],
            chrono::DateTime::from_timestamp(first, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        );
        assert_eq!(i["duration_s"], last + 60 - first);
        assert_eq!(
            i["top_problems"],
            json!([{"problem": "messaging", "share": 1.0}])
        );
        assert_eq!(
            i["top_locations"],
            json!([{"country": "FR", "city": null, "share": 1.0}])
        );
    }
    let (_, fr) = app.get_json("/api/v1/incidents?country=FR").await;
    assert_eq!(fr["incidents"].as_array().unwrap().len(), 1);
    assert_eq!(fr["incidents"][0]["scope"], "FR");
    let (_, open) = app.get_json("/api/v1/incidents?status=open").await;
    assert_eq!(open["incidents"], json!([]));
    let (_, quiet) = app.get_json("/api/v1/incidents?service=quiet").await;
    assert_eq!(quiet["incidents"], json!([]));
    let (_, page1) = app.get_json("/api/v1/incidents?limit=1").await;
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = app
        .get_json(&format!("/api/v1/incidents?limit=1&cursor={cursor}"))
        .await;
    assert!(page2["next_cursor"].is_null());
    let ids: Vec<&Value> = [&page1, &page2]
        .iter()
        .map(|p| &p["incidents"][0]["id"])
        .collect();
    let all_ids: Vec<&Value> = all.iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, all_ids);

    // CSV, by header and by parameter, read back by a CSV parser.
    for req in [
        app.client
            .get(app.url("/api/v1/incidents"))
            .header("Accept", "text/csv"),
        app.client.get(app.url("/api/v1/incidents?format=csv")),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let body = resp.bytes().await.unwrap();
        assert!(body.starts_with(b"\xEF\xBB\xBF"), "a BOM for spreadsheets");
        let mut rows = csv::Reader::from_reader(&body[3..]);
        let header = rows.headers().unwrap().clone();
        let records: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
        assert_eq!(records.len(), 2);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        for (rec, json) in records.iter().zip(all) {
            assert_eq!(rec[col("id")], json["id"].to_string());
            assert_eq!(
                &rec[col("started_at")],
                json["started_at"].as_str().unwrap()
            );
            assert_eq!(&rec[col("ended_at")], json["ended_at"].as_str().unwrap());
            assert_eq!(rec[col("total_reports")], *"40");
            assert_eq!(&rec[col("top_problem")], "messaging");
            assert_eq!(&rec[col("top_country")], "FR");
        }
    }

    // One incident with its series around it.
    let id = all[1]["id"].as_i64().unwrap();
    let (code, one) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["incident"], all[1]);
    assert_eq!(one["series"]["step"], 60);
    let points = one["series"]["points"].as_array().unwrap();
    assert!(points.len() >= 120, "an hour either side");
    let total: i64 = points.iter().map(|p| p["reports"].as_i64().unwrap()).sum();
    assert_eq!(total, 40);
    assert!(points.iter().all(|p| p["baseline"].is_number()));
    assert_problem(app.get("/api/v1/incidents/999999").await, 404, None).await;
    assert_problem(app.get("/api/v1/incidents/abc").await, 400, Some("id")).await;

    // The Atom feed, read by a feed parser and by an XML parser.
    let resp = app.get("/api/v1/services/chatapp/incidents.atom").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let xml = resp.text().await.unwrap();
    let feed: atom_syndication::Feed = xml.parse().unwrap();
    assert_eq!(feed.entries().len(), 2);
    assert!(feed.title().as_str().contains("ChatApp"));
    for e in feed.entries() {
        assert!(
            e.title().as_str().starts_with("ChatApp: problems"),
            "{}",
            e.title().as_str()
        );
        assert!(e.links()[0].href().contains("/incidents/"));
    }
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "feed");
    let (_, empty) = (
        (),
        app.get("/api/v1/services/quiet/incidents.atom")
            .await
            .text()
            .await
            .unwrap(),
    );
    let quiet_feed: atom_syndication::Feed = empty.parse().unwrap();
    assert!(quiet_feed.entries().is_empty());
    app.stop().await;
}

async fn breakdowns_count_problems_and_places_exactly(b: Backing) {
    let app = app(&b).await;
    let t0 = now();
    let sends = [
        ("login", Some("FR"), Some("Paris")),
        ("login", Some("FR"), Some("Paris")),
        ("login", Some("FR"), Some("Lyon")),
        ("app", Some("DE"), None),
        ("app", None, None),
    ];
    for (problem, country, city) in sends {
        let mut body = json!({"problem": problem});
        if let Some(c) = country {
            body["country"] = json!(c);
        }
        if let Some(c) = city {
            body["city"] = json!(c);
        }
        let r = app.report("chatapp", &body).await;
        assert_eq!(r.status(), 201);
    }
    // A repeat from one client is stored but does not count.
    let ip = new_client_ip();
    for _ in 0..2 {
        app.report_as("chatapp", &ip, &json!({"problem": "other"}))
            .await;
    }
    let (code, b) = app.get_json("/api/v1/services/chatapp/breakdown").await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["total"], 6);
    assert_eq!(
        b["problems"],
        json!([
            {"problem": "login", "reports": 3, "share": 0.5},
            {"problem": "app", "reports": 2, "share": 0.333},
            {"problem": "other", "reports": 1, "share": 0.167},
        ])
    );
    assert_eq!(
        b["locations"],
        json!([
            {"country": "FR", "city": "Paris", "reports": 2, "share": 0.333},
            {"country": "DE", "city": null, "reports": 1, "share": 0.167},
            {"country": "FR", "city": "Lyon", "reports": 1, "share": 0.167},
        ])
    );
    let (_, fr) = app
        .get_json("/api/v1/services/chatapp/breakdown?country=FR")
        .await;
    assert_eq!(fr["total"], 3);
    // Ranges that cut hours are exact too: whole hours come from the
    // facets, the partial hours at the edges from the reports.
    let t1 = now() + 1;
    for (from, to, expect) in [
        (t0 - 3600, t1 + 3600, 6),
        (t0 - 90_000, t1, 6),
        (t0, t1, 6),
        (t0 - 7200, t0 - 3600, 0),
        (t1, t1 + 7200, 0),
    ] {
        let q = format!(
            "/api/v1/services/chatapp/breakdown?from={}&to={}",
            rfc(from),
            rfc(to)
        );
        let (code, r) = app.get_json(&q).await;
        assert_eq!(code, 200, "{q}: {r}");
        assert_eq!(r["total"], expect, "{q}: {r}");
    }
    let (_, none) = app.get_json("/api/v1/services/quiet/breakdown").await;
    assert_eq!(none["total"], 0);
    assert_eq!(none["problems"], json!([]));
    app.stop().await;
}

fn rfc(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn the_chart_is_svg_and_escapes_the_service_name(b: Backing) {
    let app = app(&b).await;
    let (_, _) = outage(&app).await;
    let resp = app.get("/api/v1/services/chatapp/chart.svg").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "image/svg+xml; charset=utf-8"
    );
    assert!(resp.headers().contains_key("content-security-policy"));
    let svg = resp.text().await.unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        texts.iter().any(|t| t.contains("ChatApp: user reports")),
        "{texts:?}"
    );

    // A name holding markup is text, not markup.
    let name = r#"<script>alert("x")</script> & "Co""#;
    let created = app
        .client
        .post(app.url("/api/v1/services"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "markup", "name": name}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let svg = app
        .get("/api/v1/services/markup/chart.svg?width=800&height=400&country=FR")
        .await
        .text()
        .await
        .unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(doc.descendants().all(|n| n.tag_name().name() != "script"));
    // Long titles are cut with an ellipsis; the name itself is all there.
    assert!(
        doc.descendants()
            .filter_map(|n| n.text())
            .any(|t| t.trim().starts_with(name)),
        "{svg}"
    );
    assert_problem(
        app.get("/api/v1/services/chatapp/chart.svg?width=5").await,
        400,
        Some("width"),
    )
    .await;
    app.stop().await;
}

async fn the_stream_carries_detector_events(b: Backing) {
    let app = app(&b).await;
    let mut detector = live(&app, "streamer");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let resp = app.get("/api/v1/stream").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = resp.bytes_stream();
    // The greeting arrives at once: the client is subscribed.
    let hello = body.next().await.unwrap().unwrap();
    assert!(hello.starts_with(b"retry: 3000"));
    let (_, last) = burst(&app, "chatapp", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(text.contains("event: incident") && text.contains("event: counts")) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for frame in text.split("\n\n").filter(|f| f.starts_with("event: ")) {
        let mut lines = frame.lines();
        let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], event, "{frame}");
        if event == "incident" {
            assert_eq!(data["transition"], "opened");
            assert_eq!(data["incident"]["service"], "chatapp");
        }
        if event == "status" {
            assert_eq!(data["level"], "outage");
        }
    }
    assert!(text.contains("event: status"), "{text}");
    app.stop().await;
}

async fn read_parameters_are_bounded_and_named_when_wrong(b: Backing) {
    let app = app(&b).await;
    for (path, field) in [
        ("/api/v1/status?country=XX1", "country"),
        ("/api/v1/incidents?limit=0", "limit"),
        ("/api/v1/incidents?limit=201", "limit"),
        ("/api/v1/incidents?status=closed", "status"),
        ("/api/v1/incidents?cursor=nope", "cursor"),
        ("/api/v1/incidents?format=xml", "format"),
        ("/api/v1/incidents?from=yesterday", "from"),
        (
            "/api/v1/incidents?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
        ),
        ("/api/v1/incidents?country=France", "country"),
        (
            "/api/v1/services/chatapp/breakdown?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
        ),
        ("/api/v1/services/chatapp/breakdown?to=never", "to"),
        ("/api/v1/services/chatapp/chart.svg?step=7", "step"),
        ("/api/v1/services/chatapp/chart.svg?height=99999", "height"),
        (
            "/api/v1/services/chatapp/chart.svg?from=2000-01-01T00:00:00Z&step=60",
            "from",
        ),
    ] {
        assert_problem(app.get(path).await, 400, Some(field)).await;
    }
    for path in [
        "/api/v1/services/nope/breakdown",
        "/api/v1/services/nope/chart.svg",
        "/api/v1/services/nope/incidents.atom",
        "/api/v1/incidents?service=nope",
    ] {
        assert_problem(app.get(path).await, 404, None).await;
    }
    app.stop().await;
}

/// Production only: a client of one instance hears the detector of another
/// (Redis pub/sub between them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_of_one_instance_carries_the_events_of_another() {
    let Some(b) = Backing::new(crate::helpers::Mode::Production).await else {
        return;
    };
    let detecting = app(&b).await;
    let serving = app(&b).await;
    let mut detector = live(&detecting, "detecting");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let resp = serving.get("/api/v1/stream").await;
    let mut body = resp.bytes_stream();
    let hello = body.next().await.unwrap().unwrap();
    assert!(hello.starts_with(b"retry: 3000"));
    let (_, last) = burst(&detecting, "chatapp", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("event: incident") {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the other instance's events within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("\"service\":\"chatapp\""), "{text}");
    serving.stop().await;
    detecting.stop().await;
}
