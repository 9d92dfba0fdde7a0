//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, with fantoccini).
//!
//! Each test starts its own chromedriver on a free port and stops it at the
//! end. Without Chromium or chromedriver the tests say so and pass, unless
//! CI=true, where their absence fails the run. With DOWNWATCH_SCREENSHOTS=1
//! the screenshot test writes `docs/screenshots/*.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use downwatch_detector::live::{Live, LiveConfig};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::StreamExt;
use helpers::{ADMIN_TOKEN, Backing, Mode, TestApp, spawn_app_with};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

// ---------------------------------------------------------------- browser

/// A chromedriver of this test and a session of headless Chromium.
struct Browser {
    driver: Child,
    client: Option<Client>,
}

impl Browser {
    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, url: &str) {
        self.client().goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.wait_for(css).await.text().await.unwrap()
    }

    async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client()
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn js(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.unwrap()
    }

    /// Polls a script until it returns true.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn finish(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium at `size`, or `None` (outside CI) when it is not installed.
async fn browser(size: (u32, u32)) -> Option<Browser> {
    let Some(driver_bin) = chromedriver().filter(|_| Path::new(CHROMIUM).is_file()) else {
        let why = "the browser tests need chromium and chromedriver \
                   (apt-get install chromium chromium-driver)";
        assert!(!in_ci(), "CI=true: {why}");
        eprintln!("SKIPPING: {why}");
        return None;
    };
    let port = free_port();
    let driver = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let mut options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--window-size={},{}", size.0, size.1),
            ],
    });
    // Headless windows are at least 500 px wide: a phone is emulated.
    if size.0 < 500 {
        options["mobileEmulation"] = json!({
            "deviceMetrics": {"width": size.0, "height": size.1, "pixelRatio": 1.0, "touch": true},
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let mut b = Browser {
        driver,
        client: None,
    };
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => {
                b.client = Some(c);
                return Some(b);
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "chromedriver did not start: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

// ---------------------------------------------------------------- app

fn catalogue() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "downwatch-browser-catalogue-{}.toml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "[[service]]\nslug = \"chatapp\"\nname = \"ChatApp\"\ncategory = \"Messaging\"\n\n\
             [[service]]\nslug = \"quiet\"\nname = \"Quiet\"\ncategory = \"Tools\"\n",
        )
        .unwrap();
        path.to_string_lossy().into_owned()
    })
}

async fn app(b: &Backing) -> TestApp {
    spawn_app_with(b, &[("DOWNWATCH_SERVICES_FILE", catalogue())]).await
}

fn live(app: &TestApp) -> Live {
    let s = &app.state;
    Live::new(
        s.storage.clone(),
        s.windows.clone(),
        Default::default(),
        LiveConfig {
            interval: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            instance: "browser".to_owned(),
            lease_ttl: Duration::from_millis(1500),
            persist_every: Duration::from_secs(300),
            ..Default::default()
        },
        s.metrics.detector.clone(),
    )
}

/// `n` reports from distinct clients; the last minute they fell in.
async fn burst(app: &TestApp, slug: &str, n: usize, country: &str) -> i64 {
    let problems = ["messaging", "messaging", "login", "app"];
    let cities = ["Paris", "Lyon", "", "Marseille"];
    let answers: Vec<Value> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let mut body = json!({"problem": problems[i % 4], "country": country});
            if !cities[i % 4].is_empty() {
                body["city"] = json!(cities[i % 4]);
            }
            app.report(slug, &body).await.json::<Value>().await.unwrap()
        })
        .buffer_unordered(16)
        .collect()
        .await;
    answers
        .iter()
        .map(|a| {
            assert_eq!(a["counted"], true, "{a}");
            chrono::DateTime::parse_from_rfc3339(a["received_at"].as_str().unwrap())
                .unwrap()
                .timestamp()
                / 60
                * 60
        })
        .max()
        .unwrap()
}

/// An app where ChatApp is in outage (an incident open), and its id.
async fn app_in_outage(b: &Backing) -> (TestApp, i64) {
    let app = app(b).await;
    let mut detector = live(&app);
    detector.tick(chrono::Utc::now().timestamp()).await.unwrap();
    let last = burst(&app, "chatapp", 40, "FR").await;
    detector.tick(last + 63).await.unwrap();
    let (status, service) = app.get_json("/api/v1/services/chatapp").await;
    assert_eq!(status, 200);
    assert_eq!(service["status"]["level"], "outage", "{service}");
    let id = service["status"]["incident_id"].as_i64().unwrap();
    (app, id)
}

async fn embedded() -> Backing {
    Backing::new(Mode::Embedded).await.unwrap()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_home_page_lists_a_service_in_outage() {
    let Some(browser) = browser(DESKTOP).await else {
        return;
    };
    let b = embedded().await;
    let (app, _) = app_in_outage(&b).await;

    let resp = app.get("/").await;
    let csp = resp.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(resp.headers()["x-frame-options"], "DENY");

    browser.goto(&app.url("/")).await;
    let down = browser.text(".down-list").await;
    assert!(down.contains("ChatApp"), "{down}");
    assert!(down.contains("Outage"), "{down}");
    assert!(!down.contains("Quiet"), "{down}");
    let link = browser
        .client()
        .find(Locator::Css(".down-list a"))
        .await
        .unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/services/chatapp")
    );
    // The search filters the catalogue on the server.
    browser.goto(&app.url("/?q=qui")).await;
    let all = browser.text(".service-grid").await;
    assert!(all.contains("Quiet") && !all.contains("ChatApp"), "{all}");

    browser.finish().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_page_shows_its_chart_and_takes_a_report() {
    let Some(browser) = browser(DESKTOP).await else {
        return;
    };
    let b = embedded().await;
    let app = app(&b).await;
    browser.goto(&app.url("/services/chatapp")).await;
    let banner = browser.text("#banner-text").await;
    assert_eq!(banner, "No current problems at ChatApp");
    browser
        .until(
            "the chart to load",
            "var i = document.getElementById('chart'); return i.complete && i.naturalWidth > 0;",
        )
        .await;
    let alt = browser
        .wait_for("#chart")
        .await
        .attr("alt")
        .await
        .unwrap()
        .unwrap();
    assert!(alt.contains("ChatApp") && alt.contains("24 hours"), "{alt}");

    browser
        .wait_for("input[name=problem][value=login]")
        .await
        .click()
        .await
        .unwrap();
    browser
        .wait_for("#report-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the answer",
            "return document.getElementById('report-result').textContent.indexOf('counted') >= 0;",
        )
        .await;
    assert_eq!(
        browser.text("#report-result").await,
        "Thanks — your report counted."
    );
    // Answered inline by the script, through the API: no navigation.
    assert!(
        browser
            .client()
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/services/chatapp")
    );
    assert_eq!(b.stored_reports().await, 1);

    // A second report within the window is stored but not counted.
    browser
        .wait_for("#report-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    browser
        .until(
            "the second answer",
            "return document.getElementById('report-result').textContent.indexOf('already') >= 0;",
        )
        .await;

    browser.finish().await;
    app.stop().await;
}

/// The service page follows /api/v1/stream: with no reload, its banner and
/// badge turn to an outage when the detector opens an incident, and back
/// when it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_page_follows_the_stream_without_a_reload() {
    let Some(browser) = browser(DESKTOP).await else {
        return;
    };
    let b = embedded().await;
    let app = app(&b).await;
    let mut detector = live(&app);
    detector.tick(chrono::Utc::now().timestamp()).await.unwrap();
    browser.goto(&app.url("/services/chatapp")).await;
    assert_eq!(
        browser.text("#banner-text").await,
        "No current problems at ChatApp"
    );
    // A reload would lose this mark; events published before the page
    // listens would be lost, so wait for the stream to be open.
    browser.js("window.stayed = true; return true;").await;
    browser
        .until(
            "the stream to open",
            "return document.documentElement.getAttribute('data-live') === 'on';",
        )
        .await;

    let last = burst(&app, "chatapp", 40, "FR").await;
    detector.tick(last + 63).await.unwrap();
    browser
        .until(
            "the banner to show the outage",
            "return document.getElementById('banner-text').textContent \
             .indexOf('User reports indicate problems at ChatApp since') === 0;",
        )
        .await;
    let badge = browser.text("[data-level-for=chatapp]").await;
    assert_eq!(badge, "Outage");
    assert_eq!(
        browser.js("return window.stayed === true;").await,
        json!(true)
    );

    // Three quiet hours later the incident resolves; so does the page.
    detector.tick(last + 3 * 3600).await.unwrap();
    browser
        .until(
            "the banner to say all is well again",
            "return document.getElementById('banner-text').textContent === 'No current problems at ChatApp';",
        )
        .await;
    assert_eq!(
        browser.js("return window.stayed === true;").await,
        json!(true)
    );
    browser.finish().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_form_works_without_javascript() {
    let b = embedded().await;
    let app = app(&b).await;
    let post = |body: &'static str| {
        app.client
            .post(app.url("/services/chatapp/report"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Forwarded-For", "10.9.9.9")
            .body(body)
            .send()
    };
    let resp = post("problem=login&country=fr&city=Paris").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("Thanks — your report counted."), "{html}");
    let again = post("problem=login").await.unwrap().text().await.unwrap();
    assert!(again.contains("already counted"), "{again}");
    let bad = post("problem=teleport").await.unwrap();
    assert_eq!(bad.status(), 422);
    let bad = bad.text().await.unwrap();
    assert!(bad.contains("not a problem kind of chatapp"), "{bad}");
    assert!(
        bad.contains("<form id=\"report-form\""),
        "the form again: {bad}"
    );
    assert_eq!(b.stored_reports().await, 2);
    // Unknown pages answer HTML, the API keeps problem+json.
    let missing = app.get("/services/nope").await;
    assert_eq!(missing.status(), 404);
    assert!(
        missing.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let api = app.get("/api/v1/services/nope").await;
    assert!(
        api.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json")
    );
    assert_eq!(app.get("/incidents/999").await.status(), 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_page_shows_its_facts() {
    let Some(browser) = browser(DESKTOP).await else {
        return;
    };
    let b = embedded().await;
    let (app, id) = app_in_outage(&b).await;
    let (_, json) = app.get_json(&format!("/api/v1/incidents/{id}")).await;
    let started = json["incident"]["started_at"].as_str().unwrap().to_owned();
    // 2026-12-02T07:02:00Z → "07:02 UTC"
    let hhmm = format!("{} UTC", &started[11..16]);

    browser.goto(&app.url(&format!("/incidents/{id}"))).await;
    let start = browser.text("#fact-started").await;
    assert!(start.ends_with(&hhmm), "{start} vs {started}");
    assert_eq!(browser.text("#fact-total").await, "40");
    let problems = browser.text("#top-problems").await;
    assert!(
        problems.starts_with("Messaging"),
        "the most reported first: {problems}"
    );
    let snippet = browser.text(".snippet code").await;
    assert!(
        snippet.starts_with("<img src=\"http") && snippet.contains("chart.svg?from="),
        "{snippet}"
    );
    browser
        .until(
            "the chart to load",
            "var i = document.getElementById('chart'); return i.complete && i.naturalWidth > 0;",
        )
        .await;

    browser.finish().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_name_with_markup_is_shown_as_text() {
    let Some(browser) = browser(DESKTOP).await else {
        return;
    };
    let b = embedded().await;
    let app = app(&b).await;
    let evil = "<img src=x onerror=alert(1)>";
    let created = app
        .client
        .post(app.url("/api/v1/services"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"slug": "markup", "name": evil, "category": evil}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    for path in ["/services/markup", "/", "/history?service=markup"] {
        browser.goto(&app.url(path)).await;
        let text = browser.text("body").await;
        assert!(text.contains(evil), "{path}: {text}");
        let injected = browser
            .client()
            .find_all(Locator::Css("img[src=x]"))
            .await
            .unwrap();
        assert!(injected.is_empty(), "{path}: markup became an element");
    }

    browser.finish().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_fit_desktop_and_phone_and_make_screenshots() {
    let Some(desktop) = browser(DESKTOP).await else {
        return;
    };
    let Some(phone) = browser(PHONE).await else {
        return;
    };
    let b = embedded().await;
    let (app, id) = app_in_outage(&b).await;
    for (slug, name, category) in [
        ("mailbox", "Mailbox", "Email"),
        ("streamflix", "StreamFlix", "Video"),
        ("banknow", "BankNow", "Finance"),
        ("photogram", "PhotoGram", "Social"),
        ("mapit", "MapIt", "Tools"),
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/services"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"slug": slug, "name": name, "category": category}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let write = std::env::var("DOWNWATCH_SCREENSHOTS").is_ok_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let pages = [
        ("home", "/".to_owned()),
        ("service", "/services/chatapp".to_owned()),
        ("incident", format!("/incidents/{id}")),
        ("history", "/history".to_owned()),
    ];
    for (browser, width) in [(&desktop, "desktop"), (&phone, "phone")] {
        for (name, path) in &pages {
            browser.goto(&app.url(path)).await;
            browser.wait_for("main h1").await;
            // Images loaded, and nothing wider than the screen.
            browser
                .until(
                    "images to load",
                    "return Array.from(document.images).every(function (i) { return i.complete; });",
                )
                .await;
            let (fits, wide) = (
                browser
                    .js("return document.documentElement.scrollWidth <= window.innerWidth;")
                    .await,
                browser.js("return window.innerWidth;").await,
            );
            assert_eq!(
                wide.as_u64(),
                Some(u64::from(if width == "phone" {
                    PHONE.0
                } else {
                    DESKTOP.0
                })),
                "{name} at {width}"
            );
            assert_eq!(fits, json!(true), "{name} overflows at {width}");
            if write {
                let png = browser.client().screenshot().await.unwrap();
                std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
            }
        }
    }
    desktop.finish().await;
    phone.finish().await;
    app.stop().await;
}
