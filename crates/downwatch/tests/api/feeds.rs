//! The Atom feeds: every service's incidents and one service's, parsed as
//! Atom, and linked from the pages' `<head>`.

use crate::both_modes;
use crate::detector::{app, burst, catalogue, live, now, stepped};
use crate::helpers::{Backing, TestApp, spawn_app_with};
use atom_syndication::Feed;
use std::str::FromStr;

both_modes!(
    the_feed_of_all_incidents_parses_and_the_pages_link_to_it,
    absolute_links_never_take_a_clients_word_for_the_host,
);

async fn the_feed_of_all_incidents_parses_and_the_pages_link_to_it(b: Backing) {
    let app = app(&b).await;
    let mut detector = live(&app, "feeds");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    burst(&app, "chatapp", 40, Some("FR")).await;
    let (_, last) = burst(&app, "quiet", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    assert!(stepped(&detector.tick(last + 3 * 3600).await.unwrap()));

    let r = app.get("/api/v1/incidents.atom").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/atom+xml")
    );
    let text = r.text().await.unwrap();
    roxmltree::Document::parse(&text).expect("well-formed XML");
    let feed = atom_syndication::Feed::from_str(&text).expect("an Atom feed");
    assert!(feed.id().ends_with("/api/v1/incidents.atom"));
    // Both services' incidents: chatapp's global and French ones, quiet's.
    let titles: Vec<&str> = feed.entries().iter().map(|e| e.title().as_str()).collect();
    assert_eq!(titles.len(), 3, "{titles:?}");
    assert_eq!(
        titles
            .iter()
            .filter(|t| t.starts_with("ChatApp: problems"))
            .count(),
        2
    );
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("ChatApp: problems in FR from"))
    );
    assert!(titles.iter().any(|t| t.starts_with("Quiet: problems from")));
    for e in feed.entries() {
        assert!(e.id().contains("/api/v1/incidents/"));
        assert!(e.links()[0].href().contains("/incidents/"));
        assert!(e.summary().unwrap().as_str().contains("Status: resolved"));
    }
    let links: Vec<(&str, &str)> = feed.links().iter().map(|l| (l.rel(), l.href())).collect();
    assert!(
        links
            .iter()
            .any(|(rel, href)| *rel == "self" && href.ends_with("/api/v1/incidents.atom"))
    );
    assert!(
        links
            .iter()
            .any(|(rel, href)| *rel == "alternate" && href.ends_with("/history"))
    );

    // One service's feed holds its own only.
    let one = app.get("/api/v1/services/quiet/incidents.atom").await;
    let one = atom_syndication::Feed::from_str(&one.text().await.unwrap()).unwrap();
    assert_eq!(one.entries().len(), 1);

    // Every page names the feed of all incidents; a service page its own too.
    let all = r#"<link rel="alternate" type="application/atom+xml" title="Incidents of every service" href="/api/v1/incidents.atom">"#;
    for page in ["/", "/history", "/services/chatapp"] {
        let html = app.get(page).await.text().await.unwrap();
        let head = html.split("</head>").next().unwrap();
        assert!(head.contains(all), "{page}: {head}");
    }
    let html = app.get("/services/chatapp").await.text().await.unwrap();
    let head = html.split("</head>").next().unwrap();
    assert!(
        head.contains(r#"href="/api/v1/services/chatapp/incidents.atom""#),
        "{head}"
    );
    let html = app.get("/").await.text().await.unwrap();
    assert!(
        !html
            .split("</head>")
            .next()
            .unwrap()
            .contains("/api/v1/services/")
    );
    app.stop().await;
}

/// `path` fetched with `headers`, as a feed.
async fn feed_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Feed {
    let mut r = app.client.get(app.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let text = r.send().await.unwrap().text().await.unwrap();
    Feed::from_str(&text).unwrap()
}

/// Every absolute link of a feed: its id, its links, its entries' ids and links.
fn hrefs(feed: &Feed) -> Vec<String> {
    let mut out = vec![feed.id().to_owned()];
    out.extend(feed.links().iter().map(|l| l.href().to_owned()));
    for e in feed.entries() {
        out.push(e.id().to_owned());
        out.extend(e.links().iter().map(|l| l.href().to_owned()));
    }
    out
}

/// What a client may send to poison a cached feed.
const LIES: [(&str, &str); 4] = [
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("Forwarded", "host=evil.example;proto=https"),
    ("Host", "downwatch.example:8080"),
];

async fn absolute_links_never_take_a_clients_word_for_the_host(b: Backing) {
    // An incident to link to (reports from many clients, through the
    // tests' trusted proxy).
    let proxied = app(&b).await;
    let mut detector = live(&proxied, "links");
    assert!(stepped(&detector.tick(now()).await.unwrap()));
    let (_, last) = burst(&proxied, "chatapp", 40, None).await;
    assert!(stepped(&detector.tick(last + 63).await.unwrap()));
    // Behind a trusted proxy (the tests trust 127.0.0.1): what it forwards.
    let feed = feed_with(
        &proxied,
        "/api/v1/incidents.atom",
        &[
            ("X-Forwarded-Host", "status.example.org"),
            ("X-Forwarded-Proto", "https"),
        ],
    )
    .await;
    assert_eq!(
        feed.id(),
        "https://status.example.org/api/v1/incidents.atom"
    );
    assert!(
        hrefs(&feed)
            .iter()
            .all(|h| h.starts_with("https://status.example.org/")),
        "{:?}",
        hrefs(&feed)
    );
    proxied.stop().await;

    // A peer that is no trusted proxy: its Host, nothing it forwards.
    let direct = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue()),
            ("DOWNWATCH_TRUSTED_PROXIES", ""),
        ],
    )
    .await;
    for path in [
        "/api/v1/incidents.atom",
        "/api/v1/services/chatapp/incidents.atom",
    ] {
        let feed = feed_with(&direct, path, &LIES).await;
        assert_eq!(feed.entries().len(), 1);
        let links = hrefs(&feed);
        assert_eq!(links.len(), 5, "{links:?}");
        assert!(
            links
                .iter()
                .all(|h| h.starts_with("http://downwatch.example:8080/")),
            "{links:?}"
        );
        assert_eq!(feed.id(), format!("http://downwatch.example:8080{path}"));
        // Another Host, moments later: the contents come from memory,
        // the links from this request.
        let plain = feed_with(&direct, path, &[]).await;
        assert!(
            hrefs(&plain)
                .iter()
                .all(|h| h.starts_with(&format!("{}/", direct.address))),
            "{:?}",
            hrefs(&plain)
        );
    }
    // The incident page's embed snippet too.
    let feed = feed_with(&direct, "/api/v1/incidents.atom", &[]).await;
    let page = feed.entries()[0].links()[0]
        .href()
        .replace(&direct.address, "");
    let mut r = direct.client.get(direct.url(&page));
    for (k, v) in LIES {
        r = r.header(k, v);
    }
    let html = r.send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("http://downwatch.example:8080/api/v1/services/chatapp/chart.svg"),
        "{html}"
    );
    assert!(!html.contains("evil.example"));
    direct.stop().await;

    // DOWNWATCH_PUBLIC_URL: whatever anyone says.
    let public = spawn_app_with(
        &b,
        &[
            ("DOWNWATCH_SERVICES_FILE", catalogue()),
            ("DOWNWATCH_PUBLIC_URL", "https://status.example.org/dw/"),
        ],
    )
    .await;
    let feed = feed_with(&public, "/api/v1/services/chatapp/incidents.atom", &LIES).await;
    let links = hrefs(&feed);
    assert_eq!(links.len(), 5, "{links:?}");
    assert!(
        links
            .iter()
            .all(|h| h.starts_with("https://status.example.org/dw/")),
        "{links:?}"
    );
    assert_eq!(
        feed.id(),
        "https://status.example.org/dw/api/v1/services/chatapp/incidents.atom"
    );
    public.stop().await;
}
